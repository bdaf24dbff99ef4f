"""Benchmark (not a test): a 60-second Rolling Forcing video on CPU costs the same per chunk and the same memory.

    .venv/bin/python bench/bench_rolling.py            # prints a JSON report and a markdown table

A small random Wan-structured model (dim 256, 4 layers, 16x16 latent: not so tiny that it is all overhead) runs
the `rolling_forcing` preset (joint window of 5 chunks at rising noise, 24-frame cache with a 3-frame sink,
`sf_core.sampling.rolling`) through sessions (`pipeline.generate` -> `SessionStepper.step`, the path of the CLI, the nodes
and the live stream), latents only (no decoder). 81 chunks of 3 latent frames = 243 latent frames = 969 video
frames = 60.6 s at 16 fps. Each run is a fresh subprocess with one torch thread. Measured:
1. per-chunk CPU time (process time; other jobs on the machine still slow it through shared caches, so the
   minimum is reported beside the median): the last 20 chunks / chunks 10-29, target ~1. Chunk 0 runs the 5
   warm-up windows; until chunk 8 the 24-frame cache is still filling, so those chunks attend to fewer frames;
2. memory of the 60-second video / an 8-chunk one: process peak RSS, its growth after chunk 0, and the bytes of
   the session state (KV cache + held latents + the chunks in flight), target ~1;
3. with `--plateau N`: peak RSS every 20 chunks of an N-chunk run (where the allocator's growth stops).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FPS, CHUNK = 16, 3


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _state_bytes(s) -> int:
    held = sum(t.numel() * t.element_size() for t in s.held.values())
    pend = 0 if s.pending is None else s.pending.numel() * s.pending.element_size()
    return s.cache.nbytes() + held + pend


def run_once(chunks: int, size: int, layers: int, dim: int) -> dict:
    """One Rolling Forcing generation in this process; per-chunk times and memory figures."""
    import torch

    from sf_core.config import WanConfig
    from sf_core.checkpoints.families import settings_for
    from sf_core.model.transformer import WanTransformer, randomize_weights
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import new_session

    torch.set_num_threads(1)
    cfg = WanConfig(dim=dim, ffn_dim=4 * dim, num_heads=dim // 64, num_layers=layers, text_dim=64, text_len=32)
    model = randomize_weights(WanTransformer(cfg), 0).eval()
    ctx = torch.randn(1, 16, cfg.text_dim, generator=torch.Generator().manual_seed(0))
    st = settings_for("rolling_forcing")
    sess = new_session(model, ctx, latent_hw=(size, size), seed=0, settings=st)
    cpu, wall, state, rss = [], [], [], []
    last = [time.process_time()]

    def on_chunk(r):
        now = time.process_time()
        cpu.append(now - last[0])
        last[0] = now
        wall.append(r.seconds)
        state.append(_state_bytes(r.session))
        rss.append(_rss_mb())

    t0 = time.perf_counter()
    generate(model, sess, num_chunks=chunks, on_chunk=on_chunk, keep_latents=False)
    return {"chunks": chunks, "wall_s": time.perf_counter() - t0, "chunk_cpu_s": cpu, "chunk_wall_s": wall,
            "state_bytes": state, "rss_mb": rss, "rss_peak_mb": _rss_mb(), "window": st.causal.window_frames,
            "sink": st.causal.sink_frames, "steps": list(st.steps), "sampler": st.sampler}


def _child(chunks: int, a) -> dict:
    cmd = [sys.executable, __file__, "--child", str(chunks), "--size", str(a.size), "--layers", str(a.layers),
           "--dim", str(a.dim)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="video length at 16 fps (default 60)")
    ap.add_argument("--short", type=int, default=8, help="chunks of the short run (memory baseline)")
    ap.add_argument("--size", type=int, default=16, help="latent height = width (tokens per frame = (size/2)^2)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--plateau", type=int, default=0, help="also run N chunks and report RSS every 20 (0: skip)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(run_once(a.child, a.size, a.layers, a.dim)))
        return 0
    latent = -(-math.ceil((a.seconds * FPS - 1) / 4 + 1) // CHUNK) * CHUNK  # video frames = 4 (latent - 1) + 1
    chunks = latent // CHUNK
    short, long_ = _child(a.short, a), _child(chunks, a)
    c, w = long_["chunk_cpu_s"], long_["chunk_wall_s"]
    early, late = statistics.median(c[10:30]), statistics.median(c[-20:])
    early_min, late_min = min(c[10:30]), min(c[-20:])
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} ({os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}), "
                   f"python {platform.python_version()}",
        "model": f"dim {a.dim}, {a.layers} layers, latent {a.size}x{a.size}, rolling_forcing preset "
                 f"(steps {long_['steps']}, window {long_['window']}, sink {long_['sink']})",
        "video": {"chunks": chunks, "latent_frames": latent, "video_frames": 4 * (latent - 1) + 1,
                  "seconds_at_16fps": (4 * (latent - 1) + 1) / FPS},
        "cpu_chunk0_s": c[0], "cpu_early_median_s": early, "cpu_late_median_s": late, "cpu_late_over_early": late / early,
        "cpu_min_early_s": early_min, "cpu_min_late_s": late_min, "cpu_min_late_over_early": late_min / early_min,
        "cpu_median_chunks_1_7_s": statistics.median(c[1:8]),
        "cpu_max_over_median_after_chunk0": max(c[1:]) / statistics.median(c[1:]),
        "wall_late_over_early": statistics.median(w[-20:]) / statistics.median(w[10:30]),
        "rss_peak_mb": {"short": short["rss_peak_mb"], "long": long_["rss_peak_mb"]},
        "rss_peak_ratio": long_["rss_peak_mb"] / short["rss_peak_mb"],
        "rss_growth_after_chunk0_mb": {"short": short["rss_peak_mb"] - short["rss_mb"][0],
                                       "long": long_["rss_peak_mb"] - long_["rss_mb"][0]},
        "rss_every_10_chunks_mb": long_["rss_mb"][::10],
        "state_mb": {"short": max(short["state_bytes"]) / 2**20, "long": max(long_["state_bytes"]) / 2**20},
        "state_ratio": max(long_["state_bytes"]) / max(short["state_bytes"]),
        "wall_s": {"short": short["wall_s"], "long": long_["wall_s"]},
    }
    if a.plateau:
        p = _child(a.plateau, a)
        report["plateau"] = {"chunks": a.plateau, "rss_every_20_chunks_mb": [round(x, 1) for x in p["rss_mb"][::20]],
                             "cpu_median_per_50_chunks_s": [round(statistics.median(p["chunk_cpu_s"][i:i + 50]), 3)
                                                            for i in range(1, a.plateau, 50)]}
    print(json.dumps(report, indent=2))
    print(f"\n| figure | value |\n|---|---|\n"
          f"| per-chunk CPU time, last 20 chunks / chunks 10-29: median; minimum | {late:.3f} s / {early:.3f} s = "
          f"**{late / early:.2f}**; {late_min:.3f} s / {early_min:.3f} s = **{late_min / early_min:.2f}** |\n"
          f"| chunk 0 (5 warm-up windows) | {c[0]:.3f} s |\n"
          f"| slowest chunk after chunk 0 / median | {report['cpu_max_over_median_after_chunk0']:.2f} |\n"
          f"| peak RSS, {chunks} chunks / {a.short} chunks | {long_['rss_peak_mb']:.1f} MB / "
          f"{short['rss_peak_mb']:.1f} MB = **{report['rss_peak_ratio']:.3f}** |\n"
          f"| session state (KV cache + held + in flight), {chunks} / {a.short} chunks | "
          f"{report['state_mb']['long']:.2f} MB / {report['state_mb']['short']:.2f} MB = "
          f"**{report['state_ratio']:.2f}** |\n"
          f"| wall time of the {report['video']['seconds_at_16fps']:.1f} s video | {long_['wall_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
