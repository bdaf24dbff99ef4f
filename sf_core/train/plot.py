"""Loss curves as a PNG, drawn with Pillow (already a dependency; matplotlib is not, and is not needed for
a few line charts). One panel per metric, stacked, each with its own y range, a faint raw curve and a
moving average."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]


def _smooth(ys: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= k:
            acc -= ys[i - k]
        out.append(acc / min(i + 1, k))
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def plot_metrics(rows: Sequence[dict], keys: Sequence[str], path: str | Path, *, width: int = 800,
                 panel_height: int = 220, title: str = "") -> Path | None:
    """Draw `keys` of metric rows ({"step": int, key: float, ...}) against step; returns the PNG path, or
    None when there is nothing to draw yet."""
    series = []
    for key in keys:
        pts = [(int(r["step"]), float(r[key])) for r in rows if key in r and r[key] == r[key]]  # skip NaN
        if pts:
            series.append((key, pts))
    if not series:
        return None
    font = ImageFont.load_default()
    top = 24 if title else 6
    img = Image.new("RGB", (width, top + panel_height * len(series)), "white")
    d = ImageDraw.Draw(img)
    if title:
        d.text((8, 6), title, fill="black", font=font)
    left, right, pad = 64, 12, 18
    for n, (key, pts) in enumerate(series):
        y0 = top + n * panel_height
        x_lo, x_hi = pts[0][0], max(pts[-1][0], pts[0][0] + 1)
        ys = [p[1] for p in pts]
        lo, hi = min(ys), max(ys)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        box = (left, y0 + pad, width - right, y0 + panel_height - pad)
        d.rectangle(box, outline=(160, 160, 160))

        def xy(step: float, v: float) -> tuple[float, float]:
            fx = (step - x_lo) / (x_hi - x_lo)
            fy = (v - lo) / (hi - lo)
            return box[0] + fx * (box[2] - box[0]), box[3] - fy * (box[3] - box[1])

        color = COLORS[n % len(COLORS)]
        faint = tuple(int(c + (255 - c) * 0.6) for c in color)
        raw = [xy(s, v) for s, v in pts]
        smooth = [xy(s, v) for (s, _), v in zip(pts, _smooth(ys, max(1, len(ys) // 20)))]
        if len(raw) > 1:
            d.line(raw, fill=faint, width=1)
            d.line(smooth, fill=color, width=2)
        else:
            d.ellipse([raw[0][0] - 2, raw[0][1] - 2, raw[0][0] + 2, raw[0][1] + 2], fill=color)
        d.text((left + 6, y0 + 2), f"{key}  (last {_fmt(ys[-1])})", fill=color, font=font)
        d.text((4, box[1] - 4), _fmt(hi), fill="black", font=font)
        d.text((4, box[3] - 8), _fmt(lo), fill="black", font=font)
        d.text((box[0], box[3] + 3), str(x_lo), fill="black", font=font)
        d.text((box[2] - 6 * len(str(x_hi)), box[3] + 3), str(x_hi), fill="black", font=font)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)
    return path
