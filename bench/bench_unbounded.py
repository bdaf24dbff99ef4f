"""Benchmark (not a test): toy videos of 20,000 latent frames, past the 1024-frame RoPE table.

    .venv/bin/python bench/bench_unbounded.py                  # 192 videos: ~4.5 CPU-hours, resumable
    .venv/bin/python bench/bench_unbounded.py --report-only    # figures and plot from the batches done so far
    .venv/bin/python bench/bench_unbounded.py --frames 3000 --videos 16 --skip-cli   # quicker

1. The CLI: `python -m sf_core generate --model toy --latent-frames N` (default positions "auto") runs to the end;
   its peak RSS against a 300-frame run; the mp4 has every frame.
2. Quality over time: videos in batches (prompts cycling over the world's 144 in a mixed order, seed = batch
   index), every 12-frame window of every video scored by the toy world's ground-truth metrics (shape and colour
   accuracy, presence, motion error, flicker; motion fitted per window). The curve is the mean over all videos per window,
   compared with frames 36-47; per-chunk CPU time of the last 100 chunks against chunks 10-110. A batch saves its
   session and scores every --save-every windows under --state, so a stopped run continues where it was.
   Writes docs/unbounded_toy.json and docs/unbounded_toy.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

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


def window_scores(frames, prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-video nansum and count of each metric over one window: two [V, M] tensors."""
    from sf_core.toy.metrics import score_batch

    scores = score_batch(frames, prompts)
    v = torch.stack([scores[k].float() for k in METRICS], dim=-1)  # [V, T, M]
    ok = ~v.isnan()
    return torch.where(ok, v, 0.0).sum(1), ok.sum(1).float()


def run_batch(state: Path, index: int, prompts: list[str], frames: int, positions: str, save_every: int) -> Path:
    """Generate batch `index` (one video per prompt, seed = index) for `frames` latent frames, scoring every
    12-frame window; resumable: every `save_every` windows the session and the scores so far are saved under
    `state`, and a rerun continues from there (bit-identical to an uninterrupted run). Returns the scores file."""
    import dataclasses

    from safetensors import safe_open
    from safetensors.torch import save_file

    from sf_core.fileio import atomic_path
    from sf_core.sampling.pipeline import as_bundle, generate
    from sf_core.sampling.session import new_session
    from sf_core.sampling.session_io import load_session, save_session
    from sf_core.toy import load_toy_bundle
    from sf_core.toy.codec import ToyDecoder

    b = as_bundle(load_toy_bundle())
    chunk = b.settings.causal.chunk_frames
    if WINDOW % chunk:
        raise SystemExit(f"window {WINDOW} is not a multiple of the chunk size {chunk}")
    scores = state / f"batch{index:03d}.scores.safetensors"
    meta = {"prompts": prompts, "frames": frames, "positions": positions, "seed": index, "session": None}
    sums, counts, cpu = torch.zeros(len(prompts), 0, len(METRICS)), torch.zeros(len(prompts), 0, len(METRICS)), []
    if scores.exists():
        with safe_open(str(scores), "pt") as f:
            old = json.loads(f.metadata()["meta"])
            sums, counts, cpu = f.get_tensor("sums"), f.get_tensor("counts"), f.get_tensor("cpu").tolist()
        if {k: old[k] for k in ("prompts", "frames", "positions", "seed")} != {k: meta[k] for k in
                                                                                ("prompts", "frames", "positions", "seed")}:
            raise SystemExit(f"{scores} was made for other videos (prompts, seed, frames or positions differ: "
                             f"--videos / --batch changed?); rerun with the earlier --videos and --batch, or use another --state folder")
        meta["session"] = old["session"]
        if old.get("done"):
            return scores
    if meta["session"]:
        sess = load_session(state / meta["session"], b.transformer)
    else:
        settings = dataclasses.replace(b.settings, positions=positions)
        sess = new_session(b.transformer, b.text_encoder.encode(prompts), latent_hw=b.latent_hw,
                           batch=len(prompts), seed=index, settings=settings)
    dec = ToyDecoder()
    rows_s, rows_c = [sums], [counts]
    buf: list = []
    clock = {"t": time.process_time()}

    def on_chunk(r) -> None:
        now = time.process_time()
        cpu.append(now - clock["t"])
        buf.append(r.frames)
        if sum(f.shape[2] for f in buf) == WINDOW:
            s, c = window_scores(torch.cat(buf, dim=2), prompts)
            rows_s.append(s[:, None])
            rows_c.append(c[:, None])
            buf.clear()
        clock["t"] = time.process_time()  # scoring is not the model's time

    def save(done: bool) -> None:
        name = f"batch{index:03d}.f{sess.next_frame:06d}.session.safetensors"
        save_session(sess, state / name)
        old_session, meta["session"], meta["done"] = meta["session"], name, done
        with atomic_path(scores) as tmp:
            save_file({"sums": torch.cat(rows_s, 1).contiguous(), "counts": torch.cat(rows_c, 1).contiguous(),
                       "cpu": torch.tensor(cpu, dtype=torch.float64)}, str(tmp), metadata={"meta": json.dumps(meta)})
        if old_session and old_session != name:
            (state / old_session).unlink(missing_ok=True)

    step = save_every * WINDOW
    while sess.next_frame < frames:
        n = min(step - sess.next_frame % step, frames - sess.next_frame)
        generate(b.transformer, sess, num_frames=n, decoder=dec, on_chunk=on_chunk, keep_latents=False)
        save(done=sess.next_frame >= frames)
        print(f"batch {index}: frame {sess.next_frame}/{frames}", flush=True)
        clock["t"] = time.process_time()  # saving is not the model's time either
    return scores


def _finite_std(x: torch.Tensor) -> tuple[float, int]:
    """Sample std over the finite entries of x [N] and how many there are."""
    x = x[x.isfinite()]
    return (float(x.std()) if len(x) > 1 else float("nan")), len(x)


def aggregate(files: list[Path], planned_batches: int | None = None) -> dict:
    """Curves (mean over every video per 12-frame window) and the figures against frames 36-47.

    Noise: a window's difference from frames 36-47 is the mean over videos of each video's difference (the same
    videos in every window), with standard error se = spread of those differences / sqrt(videos); under noise
    alone about W * P(|N(0, se)| > 10 %) of W windows would pass the 10 % bound
    ("windows_over_10pct_expected_from_noise"). Drift: each video's mean over
    frames 48-1019 against its mean over its last 81 windows (reported once both spans are apart)."""
    from safetensors import safe_open

    sums, counts, cpu_ratios, metas = [], [], [], []
    for p in files:
        with safe_open(str(p), "pt") as f:
            sums.append(f.get_tensor("sums"))
            counts.append(f.get_tensor("counts"))
            cpu = f.get_tensor("cpu").tolist()
            metas.append(json.loads(f.metadata()["meta"]))
        if len(cpu) >= 220:
            cpu_ratios.append(statistics.median(cpu[-100:]) / statistics.median(cpu[10:110]))
    w = min(s.shape[1] for s in sums)
    if w < 5:
        raise SystemExit(f"only {w} windows scored so far; the report needs frames 36-47 and one window after")
    s = torch.cat([x[:, :w] for x in sums])  # [V, W, M]
    c = torch.cat([x[:, :w] for x in counts])
    curve = s.sum(0) / c.sum(0)  # [W, M]: nanmean over every frame of every video in the window
    per_video = s / c  # [V, W, M]
    v = s.shape[0]
    out: dict = {"videos": v, "windows": w, "frames_scored": w * WINDOW, "batches": len(files),
                 "done": all(m.get("done") for m in metas) and len(files) >= (planned_batches or len(files)),
                 "cpu_ratio_last100_over_10_110": [round(r, 3) for r in cpu_ratios], "metrics": {}}
    span = 1024 // WINDOW - 4  # 81 windows
    early = slice(4, 4 + span)  # frames 48-1019: inside the RoPE table, before any re-basing
    late = slice(w - span, w)  # the last 972 frames
    apart = w >= 4 + 2 * span
    for j, k in enumerate(METRICS):
        ref = float(curve[3, j])
        later = curve[4:, j]
        rel = ((later - ref).abs() / max(abs(ref), 1e-6))
        # paired: every window holds the same videos as frames 36-47, so a window's difference from them is the
        # mean of per-video differences (a video's own level cancels); its standard error, median over windows
        spread = [_finite_std(per_video[:, i, j] - per_video[:, 3, j]) for i in range(4, w)]
        se = statistics.median(sd / n ** 0.5 for sd, n in spread if n > 1) if any(n > 1 for _, n in spread) \
            else float("nan")
        noise = se / max(abs(ref), 1e-6)  # of a window's relative difference from frames 36-47
        expected = len(later) * math.erfc(0.10 / (noise * 2 ** 0.5)) if noise > 0 else 0.0
        bins = [float(later[i:i + BIN].mean()) for i in range(0, len(later) - BIN + 1, BIN)]
        # drift: each video's mean over its last ~1000 frames minus its mean over frames 48-1019
        d = per_video[:, late, j].nanmean(1) - per_video[:, early, j].nanmean(1)
        d_sd, d_n = _finite_std(d)
        out["metrics"][k] = {
            "frames_36_47": round(ref, 4), "max_rel_dev": round(float(rel.max()), 4),
            "windows_over_10pct": int((rel > 0.10).sum()), "median_rel_dev": round(float(rel.median()), 4),
            "noise_rel_of_difference": round(noise, 4),
            "windows_over_10pct_expected_from_noise": round(expected, 1),
            "max_rel_dev_of_600_frame_bins": round(max(abs(x - ref) for x in bins) / max(abs(ref), 1e-6), 4)
            if bins else None,
            "last_bin_mean": round(bins[-1], 4) if bins else None,
            "drift_last_1000_minus_first_1000": round(float(d[d.isfinite()].mean()), 5) if apart else None,
            "drift_2se": round(2 * d_sd / d_n ** 0.5, 5) if apart and d_n > 1 else None}
    out["curve"] = curve.T.tolist()
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.2))
    for ax, k, ys in zip(axes, METRICS, report["curve"]):
        xs = [WINDOW * (i + 0.5) for i in range(len(ys))]
        ref = ys[3]
        ax.axhspan(ref * 0.9, ref * 1.1, color="tab:green", alpha=0.12, lw=0, label="±10 % of frames 36-47")
        ax.plot(xs, ys, lw=0.6)
        ax.axvline(1024, color="grey", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(k)
        ax.set_xlabel("latent frame")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Toy world, {report['videos']} videos, mean per 12-frame window "
                 f"(dotted: the 1024-position RoPE table)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20001)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--videos", type=int, default=192, help="videos in all (prompts cycle over the world's 144)")
    ap.add_argument("--batch", type=int, default=48, help="videos generated together (one resumable batch)")
    ap.add_argument("--positions", default="auto", choices=["auto", "relative"])
    ap.add_argument("--state", default=str(ROOT / "runs" / "unbounded"), help="resumable state of the batches")
    ap.add_argument("--save-every", type=int, default=50, help="windows between saves of a batch's state")
    ap.add_argument("--only", type=int, nargs="+", metavar="I",
                    help="generate only these batches (e.g. two processes, one per core: --only 0 1 / --only 2 3); "
                         "the report still reads every batch saved so far")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="report the batches done so far; generate nothing")
    ap.add_argument("--out", default=str(ROOT / "docs" / "unbounded_toy"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(args.threads)
    from sf_core.fileio import atomic_path
    from sf_core.toy.world import all_prompts

    state = Path(args.state) / f"{args.positions}_{args.frames}"
    state.mkdir(parents=True, exist_ok=True)
    report: dict = {"frames": args.frames, "positions": args.positions}
    cli = state / "cli.json"
    if not args.skip_cli and not args.report_only and not cli.exists():
        result = cli_run(args.frames, args.threads)
        with atomic_path(cli) as tmp:
            tmp.write_text(json.dumps(result))
    if cli.exists():
        report["cli"] = json.loads(cli.read_text())
    prompts = all_prompts()
    n_batches = -(-args.videos // args.batch)
    if args.only is not None and not all(0 <= i < n_batches for i in args.only):
        raise SystemExit(f"--only {args.only}: batches are 0..{n_batches - 1} for --videos {args.videos} "
                         f"--batch {args.batch}")
    files = []
    for i in range(n_batches):
        # video j gets prompt 7j mod 144: every batch mixes shapes, colours and motions, and any 144 videos in a
        # row cover every prompt once
        ps = [prompts[7 * j % len(prompts)] for j in range(i * args.batch, min((i + 1) * args.batch, args.videos))]
        f = state / f"batch{i:03d}.scores.safetensors"
        if not args.report_only and (args.only is None or i in args.only):
            f = run_batch(state, i, ps, args.frames, args.positions, args.save_every)
        if f.exists():
            files.append(f)
    if not files:
        raise SystemExit(f"no batch started yet in {state}")
    report["quality"] = aggregate(files, n_batches)
    print(json.dumps({**report, "quality": {k: v for k, v in report["quality"].items() if k != "curve"}}, indent=1),
          flush=True)
    # the figures in docs/ are replaced only by a finished run; a partial report goes beside them
    out = args.out if report["quality"]["done"] else args.out + "_partial"
    with atomic_path(out + ".json") as tmp:
        tmp.write_text(json.dumps(report))
    with atomic_path(out + ".png") as tmp:
        plot(report["quality"], tmp)
    print(f"wrote {out}.json and {out}.png", flush=True)


if __name__ == "__main__":
    main()
