"""Figure (not a test): six prompts of the shipped toy student, 48 frames each, every second frame shown.

    .venv/bin/python bench/plot_toy_samples.py                  # writes docs/toy_world_samples.png (needs matplotlib)
    .venv/bin/python bench/plot_toy_samples.py --weights runs/toy/seed0/sf.safetensors --out /tmp/samples.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red square moving right fast", "a green circle moving up slow", "a blue triangle moving left fast",
           "a yellow circle moving down slow", "a magenta square moving up fast", "a cyan triangle moving right slow"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="toy transformer weights (default: the shipped student)")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--scale", type=int, default=4, help="pixels per world pixel")
    ap.add_argument("--out", default=str(ROOT / "docs" / "toy_world_samples.png"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import matplotlib.pyplot as plt

    from sf_core.sampling.pipeline import as_bundle, generate
    from sf_core.sampling.session import new_session
    from sf_core.toy import load_toy_bundle

    b = as_bundle(load_toy_bundle(args.weights, upscale=1))  # 16x16 frames; --scale enlarges them here
    rows = []
    for i, prompt in enumerate(PROMPTS):
        s = new_session(b.transformer, b.text_encoder.encode([prompt]), latent_hw=b.latent_hw, seed=i,
                        settings=b.settings)
        video = b.decoder.decode(generate(b.transformer, s, num_frames=args.frames))[0]  # [3, T, H, W] in [-1, 1]
        tiles = []
        for t in range(0, args.frames, 2):
            img = ((video[:, t] + 1) / 2).clamp(0, 1).repeat_interleave(args.scale, 1).repeat_interleave(args.scale, 2)
            tiles.append(torch.nn.functional.pad(img, (2, 2, 2, 2), value=1.0))  # white frame lines
        rows.append(torch.cat(tiles, dim=2))
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
    plt.imsave(args.out, grid)
    print(args.out, grid.shape)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
