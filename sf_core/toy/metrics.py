"""Ground-truth metrics of generated toy videos, per frame index.

A generated video is measured against what its prompt prescribes (shape, colour, direction, speed) and
against the physics of the world (straight motion at one of its velocities, bouncing off the walls):

1. detect, per frame, inside the walls: foreground = pixels brighter than FG_THRESHOLD (the background is
   black); the object
   is *present* if MIN_AREA to MAX_AREA pixels are foreground; its centre is the intensity-weighted centroid,
   its colour the mean colour of its bright core, its shape the template (rendered at the detected centroid)
   with the highest soft IoU against the object's estimated coverage;
2. fit the motion: the generator chooses where the object starts (and may not follow the prompted motion),
   so the reference trajectory is the world trajectory -- straight at one of the world's velocities, or
   static, bouncing off the walls -- that best explains the first `fit_frames` frames (6 = the first two
   chunks; a grid search over start centres, 0.25 px). Later frames are measured against it: that is
   *drift*, the thing exposure bias causes; following the prompt is measured separately;
3. per frame: `shape_acc`, `colour_acc` (1 if present and right, else 0), `colour_err` (RGB distance to the
   prompted colour), `prompt_motion` (1 if the fitted motion is the prompted direction and speed; one value
   per video), `moving` (1 if the fitted motion is not static; one value per video: every world object moves,
   and a still object trivially has no drift), `pos_err` (pixels from the fitted trajectory), `motion_err`
   (error of the frame-to-frame displacement, px/frame), `flicker` (mean absolute change of background pixels
   between consecutive frames, intensity in [0, 1]; the walls are left out in a world with a clock, whose ticker
   moves by design) and `present`.
Errors are capped (pos 4 px = a quarter of the frame, motion 1 px/frame = the fast speed, colour 1) and an
absent object scores the cap, so a method cannot look good by losing the object; the caps are where the
object is lost anyway.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .text import parse_prompt
from .world import (COLOURS, DIRECTIONS, SHAPES, SPEEDS, WorldSpec, bounce, coverage, shape_centroid_offset,
                    trajectory)

FG_THRESHOLD = 0.35
MIN_AREA = 6  # pixels (the smallest shape, the triangle, covers 18)
MAX_AREA = 96  # 2.7x the largest shape (the square, 36): a frame full of blobs or noise has no *object*
POS_CAP, MOTION_CAP, COLOUR_CAP = 4.0, 1.0, 1.0
METRICS = ("shape_acc", "colour_acc", "colour_err", "prompt_motion", "moving", "pos_err", "motion_err", "flicker",
           "present")


def detect(video: torch.Tensor, spec: WorldSpec) -> dict[str, torch.Tensor | list]:
    """Per-frame detections of a video [3, T, H, W] in [-1, 1].

    Returns present [T] bool, area [T], centre [T, 2] (x, y; NaN if absent), rgb [T, 3], mask [T, H, W],
    colour (list of names or None), shape (list of names or None).
    """
    img = ((video.float() + 1) / 2).clamp(0, 1)  # [3, T, H, W]
    inten = img.max(dim=0).values * (1 - spec.walls())  # [T, H, W]; the walls are not the object
    mask = inten > FG_THRESHOLD
    area = mask.sum(dim=(1, 2)).float()
    present = (area >= MIN_AREA) & (area <= MAX_AREA)
    t, h, w = inten.shape
    ys = torch.arange(h, dtype=torch.float32).view(1, -1, 1) + 0.5
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, -1) + 0.5
    wgt = inten * mask
    tot = wgt.sum(dim=(1, 2)).clamp(min=1e-6)
    centre = torch.stack([(wgt * xs).sum(dim=(1, 2)) / tot, (wgt * ys).sum(dim=(1, 2)) / tot], dim=1)
    centre[~present] = float("nan")
    # colour from the object's core (>= 90 % of its peak brightness): anti-aliased edge pixels are dimmer
    core = mask & (inten >= 0.9 * inten.flatten(1).max(dim=1).values.view(-1, 1, 1))
    rgb = (img * core).sum(dim=(2, 3)).T / core.sum(dim=(1, 2)).clamp(min=1).unsqueeze(1)  # [T, 3]
    palette = torch.tensor(list(COLOURS.values()))
    names = list(COLOURS)
    nearest = torch.cdist(rgb, palette).argmin(dim=1)
    colour = [names[int(i)] if p else None for i, p in zip(nearest, present)]
    safe_centre = torch.nan_to_num(centre, nan=0.0)
    # soft IoU of the estimated coverage (brightness relative to the object's peak) with each template's
    # anti-aliased coverage: at 6x6 pixels, hard masks at different thresholds confuse triangles and circles
    peak = inten.flatten(1).max(dim=1).values.clamp(min=1e-6).view(-1, 1, 1)
    est = torch.where(inten > 0.1, inten / peak, torch.zeros_like(inten)).clamp(0, 1)
    ious = []
    for s in SHAPES:
        off = torch.tensor(shape_centroid_offset(s, spec.size))
        tmpl = coverage(s, safe_centre - off, spec)
        ious.append(torch.minimum(tmpl, est).sum(dim=(1, 2)) / torch.maximum(tmpl, est).sum(dim=(1, 2)).clamp(min=1e-6))
    best = torch.stack(ious, dim=1).argmax(dim=1)
    shape = [SHAPES[int(i)] if p else None for i, p in zip(best, present)]
    return {"present": present, "area": area, "centre": centre, "rgb": rgb, "mask": mask, "colour": colour,
            "shape": shape}


def fit_start(centres: torch.Tensor, velocity: tuple[float, float], spec: WorldSpec, fit_frames: int = 6,
              step: float = 0.25) -> tuple[tuple[float, float], float] | None:
    """(start centre, mean squared error) of the world trajectory with `velocity` that best matches the detected
    centres [T, 2] of the first `fit_frames` frames (grid search); None if none of them has a detection."""
    c = centres[:fit_frames]
    ok = ~torch.isnan(c[:, 0])
    if not ok.any():
        return None
    (xl, xh), (yl, yh) = spec.bounds
    gx = torch.arange(xl, xh + 1e-6, step, dtype=torch.float64)
    gy = torch.arange(yl, yh + 1e-6, step, dtype=torch.float64)
    t = torch.arange(c.shape[0], dtype=torch.float64)
    tx = bounce(gx[:, None] + velocity[0] * t[None], xl, xh).float()  # [Gx, n] candidate trajectories
    ty = bounce(gy[:, None] + velocity[1] * t[None], yl, yh).float()
    ex = ((tx[:, ok] - c[ok, 0]) ** 2).sum(dim=1)
    ey = ((ty[:, ok] - c[ok, 1]) ** 2).sum(dim=1)
    err = float(ex.min() + ey.min()) / int(ok.sum())
    return (float(gx[ex.argmin()]), float(gy[ey.argmin()])), err


MOTIONS: dict[str, tuple[float, float]] = {"static": (0.0, 0.0), **{
    f"{d} {s}": (dx * v, dy * v) for d, (dx, dy) in DIRECTIONS.items() for s, v in SPEEDS.items()}}


def fit_motion(centres: torch.Tensor, spec: WorldSpec, fit_frames: int = 6, prefer: str | None = None):
    """The world motion (a direction and speed of the world, or static) and start centre that best explain the
    first `fit_frames` detected centres: (motion name, start, velocity), or None without detections.

    `prefer` wins ties (a start at the wall moving away from it fits "towards the wall" equally well)."""
    fits = {}
    for name, v in MOTIONS.items():
        fit = fit_start(centres, v, spec, fit_frames)
        if fit is not None:
            fits[name] = (name, fit[0], v, fit[1])
    if not fits:
        return None
    best = min(fits.values(), key=lambda f: f[3])
    if prefer in fits and fits[prefer][3] <= best[3] + 1e-3:
        best = fits[prefer]
    return best[:3]


def fitted_motion(det: dict, want: dict, spec: WorldSpec, fit_frames: int = 6):
    """(name, start, velocity, offset) of the world motion that best fits the detections `det` (`detect`) of a
    video whose prompt parses to `want`, or None when the object is lost. Detections are area centroids and the
    world moves box centres (they differ for the triangle): offset is that difference, already taken out."""
    off = torch.tensor(shape_centroid_offset(want["shape"], spec.size))
    fit = fit_motion(det["centre"] - off, spec, fit_frames, prefer=f"{want['direction']} {want['speed']}")
    return None if fit is None else (*fit, off)


def score_video(video: torch.Tensor, prompt: str, spec: WorldSpec | None = None, fit_frames: int = 6
                ) -> dict[str, torch.Tensor]:
    """Per-frame metrics {name: [T]} of one video [3, T, H, W] against its prompt (see module docstring)."""
    spec = spec or WorldSpec()
    want = parse_prompt(prompt)
    missing = [k for k, v in want.items() if v is None]
    if missing:
        raise ValueError(f"prompt {prompt!r} does not name the {missing} of the object; metrics need a full "
                         f"prompt like 'a red square moving left fast'")
    det = detect(video, spec)
    t = video.shape[1]
    present = det["present"]
    out = {"present": present.float()}
    out["shape_acc"] = torch.tensor([float(s == want["shape"]) for s in det["shape"]])
    out["colour_acc"] = torch.tensor([float(c == want["colour"]) for c in det["colour"]])
    target = torch.tensor(COLOURS[want["colour"]])
    cerr = (det["rgb"] - target).norm(dim=1).clamp(max=COLOUR_CAP)
    out["colour_err"] = torch.where(present, cerr, torch.full_like(cerr, COLOUR_CAP))

    asked = f"{want['direction']} {want['speed']}"
    fit = fitted_motion(det, want, spec, fit_frames)
    if fit is None:
        out["pos_err"] = torch.full((t,), POS_CAP)
        out["motion_err"] = torch.full((t,), MOTION_CAP)
        out["prompt_motion"] = torch.zeros(t)
        out["moving"] = torch.zeros(t)
    else:
        name, start, v, off = fit
        out["prompt_motion"] = torch.full((t,), float(name == asked))
        out["moving"] = torch.full((t,), float(name != "static"))  # a still object has no drift to show
        gt = trajectory(start, v, t, spec) + off
        d = (det["centre"] - gt).norm(dim=1)
        out["pos_err"] = torch.nan_to_num(d, nan=POS_CAP).clamp(max=POS_CAP)
        step = (det["centre"][1:] - det["centre"][:-1]) - (gt[1:] - gt[:-1])
        m = torch.nan_to_num(step.norm(dim=1), nan=MOTION_CAP).clamp(max=MOTION_CAP)
        out["motion_err"] = torch.cat([torch.full((1,), float("nan")), m])

    img = ((video.float() + 1) / 2).clamp(0, 1)
    fg = F.max_pool2d(det["mask"].float().unsqueeze(1), 3, stride=1, padding=1).squeeze(1) > 0  # dilate 1 px
    bg = ~(fg[1:] | fg[:-1])  # [T-1, H, W]
    if spec.clock:  # the ticker changes two wall pixels every frame by design: not flicker
        bg = bg & (spec.walls() == 0)
    diff = (img[:, 1:] - img[:, :-1]).abs().mean(dim=0)
    flick = (diff * bg).sum(dim=(1, 2)) / bg.sum(dim=(1, 2)).clamp(min=1)
    out["flicker"] = torch.cat([torch.full((1,), float("nan")), flick])
    return out


def score_batch(videos: torch.Tensor, prompts: list[str], spec: WorldSpec | None = None, fit_frames: int = 6
                ) -> dict[str, torch.Tensor]:
    """{name: [B, T]} for videos [B, 3, T, H, W] and their prompts."""
    if len(prompts) != videos.shape[0]:
        raise ValueError(f"{videos.shape[0]} videos but {len(prompts)} prompts")
    per = [score_video(v, p, spec, fit_frames) for v, p in zip(videos, prompts)]
    return {k: torch.stack([d[k] for d in per]) for k in METRICS}


def per_frame(scores: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Mean over videos per frame index ({name: [T]}; NaN at frame 0 for motion and flicker)."""
    return {k: v.nanmean(dim=0).tolist() for k, v in scores.items()}


def summarize(scores: dict[str, torch.Tensor], start: int = 0, end: int | None = None) -> dict[str, float]:
    """Mean of each metric over videos and the frames [start, end)."""
    out = {}
    for k, v in scores.items():
        m = v[:, start:end].nanmean().item()
        out[k] = m if not math.isnan(m) else float("nan")
    return out
