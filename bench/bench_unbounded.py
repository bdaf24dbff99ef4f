"""Benchmark (not a test): toy videos of 20,000 latent frames, past the 1024-frame RoPE table.

    .venv/bin/python bench/bench_unbounded.py                       # ~15 min on 2 CPU cores
    .venv/bin/python bench/bench_unbounded.py --frames 3000 --skip-cli   # quicker

1. The CLI: `python -m sf_core generate --model toy --latent-frames N` (default positions "auto") runs to the end;
   its peak RSS against a 300-frame run; the mp4 has every frame.
2. Quality over time, in-process, for each position mode that can go that far ("auto": absolute until the table
   ends, then relative; "relative" from the start): a batch of videos (one per prompt), every 12-frame window
   scored by the toy world's ground-truth metrics (shape and colour accuracy, presence, motion error, flicker;
   motion fitted per window), compared with frames 36-47; per-chunk CPU time of the last 100 chunks against chunks
   10-110. Writes the curves to docs/unbounded_toy.json and a plot to docs/unbounded_toy.png.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red square moving right slow", "a blue circle moving down fast", "a green triangle moving left slow",
           "a yellow square moving up fast", "a cyan circle moving left fast", "a magenta triangle moving up slow",
           "a red triangle moving down slow", "a green circle moving right fast"]
BIN = 50  # windows per bin (600 frames) for the binned means
METRICS = ("shape_acc", "colour_acc", "present", "motion_err", "flicker")
WINDOW = 12


def cli_run(frames: int, threads: int) -> dict:
    from sf_core.video import probe_video

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as d:
        out = {}
        for n in (300, frames):
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", "import resource, runpy, sys; sys.argv = sys.argv[1:]; "
                                "rc = 0\ntry:\n runpy.run_module('sf_core', run_name='__main__')\nexcept SystemExit as e:"
                                "\n rc = e.code or 0\nprint('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF)"
                                ".ru_maxrss / 1024)\nsys.exit(rc)",
                                "sf_core", "generate", "--model", "toy", "--prompt", PROMPTS[0], "-q", "--threads",
                                str(threads), "--latent-frames", str(n), "-o", f"{d}/v{n}.mp4"],
                               capture_output=True, text=True, env=env)
            if p.returncode:
                raise RuntimeError(p.stderr[-2000:])
            rss = float(p.stdout.split("PEAK_RSS_MB")[-1])
            out[n] = {"rc": p.returncode, "peak_rss_mb": round(rss, 1), "wall_s": round(time.perf_counter() - t0, 1),
                      "mp4_frames": probe_video(f"{d}/v{n}.mp4")["frames"],
                      "summary": json.loads(p.stdout.splitlines()[0])}
    out["rss_ratio"] = round(out[frames]["peak_rss_mb"] / out[300]["peak_rss_mb"], 3)
    return out


def quality_run(mode: str, frames: int, threads: int) -> dict:
    import dataclasses

    import torch

    from sf_core.sampling.pipeline import as_bundle, generate
    from sf_core.sampling.session import new_session
    from sf_core.toy import load_toy_bundle
    from sf_core.toy.codec import ToyDecoder
    from sf_core.toy.metrics import score_video

    torch.set_num_threads(threads)
    b = as_bundle(load_toy_bundle())
    settings = dataclasses.replace(b.settings, positions=mode)
    ctx = b.text_encoder.encode(PROMPTS)
    sess = new_session(b.transformer, ctx, latent_hw=b.latent_hw, batch=len(PROMPTS), seed=0, settings=settings)
    dec = ToyDecoder()
    buf: list = []
    curves = {k: [] for k in METRICS}
    cpu: list[float] = []
    state = {"t": time.process_time()}

    def on_chunk(r):
        now = time.process_time()
        cpu.append(now - state["t"])
        state["t"] = now
        buf.append(r.frames)
        have = sum(f.shape[2] for f in buf)
        if have >= WINDOW:
            win = torch.cat(buf, dim=2)
            w, rest = win[:, :, :WINDOW], win[:, :, WINDOW:]
            buf[:] = [rest] if rest.shape[2] else []
            per = [score_video(w[i], PROMPTS[i]) for i in range(len(PROMPTS))]
            for k in METRICS:
                curves[k].append(float(torch.stack([p[k] for p in per]).nanmean()))

    generate(b.transformer, sess, num_frames=frames, decoder=dec, on_chunk=on_chunk, keep_latents=False)
    base = {k: curves[k][3] for k in METRICS}  # window 3 = frames 36-47
    worst = {}
    for k in METRICS:
        ref = base[k]
        devs = [abs(v - ref) / max(abs(ref), 1e-6) for v in curves[k][4:]]
        bins = [statistics.mean(curves[k][i:i + BIN]) for i in range(4, len(curves[k]) - BIN + 1, BIN)]
        bin_devs = [abs(v - ref) / max(abs(ref), 1e-6) for v in bins]
        worst[k] = {"frames_36_47": round(ref, 4), "max_rel_dev": round(max(devs), 3),
                    "median_rel_dev": round(statistics.median(devs), 3), "last_window": round(curves[k][-1], 4),
                    "first_bin_mean": round(bins[0], 4) if bins else None,
                    "max_rel_dev_of_600_frame_bins": round(max(bin_devs), 3) if bins else None,
                    "last_bin_mean": round(bins[-1], 4) if bins else None}
    return {"mode": mode, "frames": frames, "windows": len(curves["present"]), "metrics": worst, "curves": curves,
            "cpu_ratio_last100_over_10_110": round(statistics.median(cpu[-100:]) / statistics.median(cpu[10:110]), 3),
            "cache_relative": sess.cache.relative, "positions": sess.cache.positions[:6]}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.2))
    for ax, k in zip(axes, METRICS):
        for r in results:
            xs = [WINDOW * (i + 0.5) for i in range(len(r["curves"][k]))]
            ax.plot(xs, r["curves"][k], lw=0.6, label=r["mode"])
        ax.axvline(1024, color="grey", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(k)
        ax.set_xlabel("latent frame")
    axes[0].legend()
    fig.suptitle(f"Toy world, {len(PROMPTS)} prompts, per 12-frame window (dotted: the 1024-position RoPE table)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20001)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default="auto,relative")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "unbounded_toy"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    report: dict = {"frames": args.frames}
    if not args.skip_cli:
        report["cli"] = cli_run(args.frames, args.threads)
        print(json.dumps(report["cli"]), flush=True)
    results = [quality_run(m, args.frames, args.threads) for m in args.modes.split(",")]
    report["quality"] = [{k: v for k, v in r.items() if k != "curves"} for r in results]
    print(json.dumps(report, indent=1), flush=True)
    Path(args.out + ".json").write_text(json.dumps({**report, "curves": {r["mode"]: r["curves"] for r in results}}))
    plot(results, Path(args.out + ".png"))


if __name__ == "__main__":
    main()
