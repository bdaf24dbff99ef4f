"""Thumbnails of the template cards: `example_workflows/<title>.jpg` (a developer tool, run after a change).

    python workflows/make_thumbnails.py --shots DIR     # DIR: screenshots from tests/browser/workflows_check.mjs

A workflow of the toy model shows its own video: four frames (start, 1/3, 2/3, end) of what the embedded toy
model generates for its prompt, on a 2x2 grid. The Wan2.1 and training workflows show their graph as loaded in
ComfyUI's editor (a screenshot by the browser check), since no Wan2.1 weights ship with the pack.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

SIZE = 512


def toy_frames(prompt: str, frames: int = 48, seed: int = 0) -> list[Image.Image]:
    """Frames of the shipped toy model for `prompt` (python -m sf_core generate, the same code as the nodes)."""
    import av

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "toy.mp4"
        subprocess.run([sys.executable, "-m", "sf_core", "generate", "--model", "toy", "--prompt", prompt,
                        "--frames", str(frames), "--seed", str(seed), "-o", str(out)], check=True, cwd=ROOT,
                       capture_output=True)
        with av.open(str(out)) as c:
            return [f.to_image() for f in c.decode(video=0)]


def grid(frames: list[Image.Image]) -> Image.Image:
    picks = [frames[round(i * (len(frames) - 1) / 3)] for i in range(4)]
    half = SIZE // 2
    img = Image.new("RGB", (SIZE, SIZE), (24, 24, 24))
    for i, f in enumerate(picks):
        img.paste(f.resize((half - 4, half - 4), Image.NEAREST), ((i % 2) * half + 2, (i // 2) * half + 2))
    return img


def graph_shot(png: Path) -> Image.Image:
    """The editor's screenshot of the graph's nodes, fitted into the square card (the canvas colour around it)."""
    shot = Image.open(png).convert("RGB")
    scale = SIZE / max(shot.size)
    shot = shot.resize((max(1, round(shot.width * scale)), max(1, round(shot.height * scale))), Image.LANCZOS)
    img = Image.new("RGB", (SIZE, SIZE), shot.getpixel((0, 0)))
    img.paste(shot, ((SIZE - shot.width) // 2, (SIZE - shot.height) // 2))
    return img


def main(argv=None) -> int:
    from build_workflows import TEMPLATES_DIR, WORKFLOWS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shots", type=Path, help="folder of <title>.png editor screenshots (workflows_check.mjs)")
    args = ap.parse_args(argv)
    for wf in WORKFLOWS:
        target = TEMPLATES_DIR / f"{wf.title}.jpg"
        if wf.toy_prompt:
            img = grid(toy_frames(wf.toy_prompt))
        elif args.shots and (args.shots / f"{wf.title}.png").is_file():
            img = graph_shot(args.shots / f"{wf.title}.png")
        else:
            print(f"skipped (no screenshot): {target.name}")
            continue
        img.save(target, quality=88)
        print(target.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
