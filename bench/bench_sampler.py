"""Benchmark (not a test): long videos on CPU with a rolling KV cache cost the same per chunk and the same memory.

    .venv/bin/python bench/bench_sampler.py            # prints a JSON report and a markdown table

Measures, on a small random Wan-structured model (not tiny enough to be all overhead):
1. per-chunk wall time at chunk 100 / at chunk 5 of one long run (single chunks, and medians of the 5 chunks
   around each, which are less noisy) -- target ~1 with the rolling window;
2. memory of a 10x longer video / a short one, each in a fresh subprocess: process peak RSS, peak RSS growth
   after the first chunk, and the bytes of the session state (KV cache + held latents) -- target ~1;
3. the same with a global cache (no window) as a contrast: there both grow with the video.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_once(chunks: int, window: str, threads: int, size: int, layers: int, dim: int) -> dict:
    """One generation in this process; returns per-chunk times and memory figures."""
    import torch

    from sf_core.config import CausalConfig, WanConfig
    from sf_core.model.transformer import WanTransformer, randomize_weights
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import SamplingSettings, default_causal, new_session

    torch.set_num_threads(threads)
    cfg = WanConfig(dim=dim, ffn_dim=4 * dim, num_heads=dim // 64, num_layers=layers, text_dim=64, text_len=32)
    model = randomize_weights(WanTransformer(cfg), 0).eval()
    causal = default_causal() if window == "rolling" else CausalConfig(chunk_frames=3)
    ctx = torch.randn(1, 16, cfg.text_dim, generator=torch.Generator().manual_seed(0))
    sess = new_session(model, ctx, latent_hw=(size, size), seed=0, settings=SamplingSettings(causal=causal))
    times, cpu, state = [], [], []
    last = [time.process_time()]

    def on_chunk(r):
        times.append(r.seconds)
        now = time.process_time()  # CPU time of this process: robust to other jobs sharing the machine
        cpu.append(now - last[0])
        last[0] = now
        state.append(r.session.cache.nbytes() + sum(t.numel() * t.element_size() for t in r.session.held.values()))
        if r.index == 0:
            base["rss"] = _rss_mb()

    base: dict = {}
    t0 = time.perf_counter()
    generate(model, sess, num_chunks=chunks, on_chunk=on_chunk, keep_latents=False)
    return {"chunks": chunks, "window": window, "wall_s": time.perf_counter() - t0, "chunk_s": times,
            "chunk_cpu_s": cpu,
            "state_bytes_peak": max(state), "rss_peak_mb": _rss_mb(), "rss_after_chunk0_mb": base["rss"],
            "tokens_per_frame": (size // 2) ** 2}


def _subprocess(chunks: int, window: str, a) -> dict:
    cmd = [sys.executable, __file__, "--child", str(chunks), "--window-kind", window, "--threads", str(a.threads),
           "--size", str(a.size), "--layers", str(a.layers), "--dim", str(a.dim)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _around(times: list[float], i: int, k: int = 2) -> float:
    return statistics.median(times[i - k:i + k + 1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", type=int, default=12, help="chunks of the short video (the long one is 10x)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=16, help="latent height = width (tokens per frame = (size/2)^2)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--window-kind", default="rolling", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(run_once(a.child, a.window_kind, a.threads, a.size, a.layers, a.dim)))
        return 0
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()} {platform.processor()} "
              f"({__import__('os').cpu_count()} cpus), python {platform.python_version()}",
              "model": f"dim {a.dim}, {a.layers} layers, latent {a.size}x{a.size}, chunks of 3, 4 steps"}
    for kind in ("rolling", "global"):
        short, long_ = _subprocess(a.short, kind, a), _subprocess(10 * a.short, kind, a)
        t, c = long_["chunk_s"], long_["chunk_cpu_s"]
        report[kind] = {
            "chunk100_over_chunk5": t[100] / t[5], "chunk100_over_chunk5_median5": _around(t, 100) / _around(t, 5),
            "cpu_chunk100_over_chunk5_median5": _around(c, 100) / _around(c, 5),
            "cpu_chunk100_over_chunk10_median5": _around(c, 100) / _around(c, 10),
            "chunk5_ms": 1000 * _around(t, 5), "chunk100_ms": 1000 * _around(t, 100),
            "cpu_chunk5_ms": 1000 * _around(c, 5), "cpu_chunk10_ms": 1000 * _around(c, 10),
            "cpu_chunk100_ms": 1000 * _around(c, 100),
            "rss_peak_ratio": long_["rss_peak_mb"] / short["rss_peak_mb"],
            "rss_growth_after_chunk0_mb": {"short": short["rss_peak_mb"] - short["rss_after_chunk0_mb"],
                                           "long": long_["rss_peak_mb"] - long_["rss_after_chunk0_mb"]},
            "state_bytes_ratio": long_["state_bytes_peak"] / short["state_bytes_peak"],
            "state_mb": {"short": short["state_bytes_peak"] / 2**20, "long": long_["state_bytes_peak"] / 2**20},
            "rss_peak_mb": {"short": short["rss_peak_mb"], "long": long_["rss_peak_mb"]},
            "chunks": {"short": a.short, "long": 10 * a.short},
        }
    print(json.dumps(report, indent=2))
    r, g = report["rolling"], report["global"]
    head = ("| cache | wall: chunk 100 / chunk 5 (single; median of 5) | CPU time: chunk 100 / chunk 5; / chunk 10 "
            "| peak RSS 10x / 1x | state bytes 10x / 1x |\n|---|---|---|---|---|")
    rows = [head]
    for name, x in (("rolling 21 + sink 3", r), ("global (contrast)", g)):
        rows.append(f"| {name} | {x['chunk100_over_chunk5']:.2f}; {x['chunk100_over_chunk5_median5']:.2f} "
                    f"| {x['cpu_chunk100_over_chunk5_median5']:.2f}; {x['cpu_chunk100_over_chunk10_median5']:.2f} "
                    f"| {x['rss_peak_ratio']:.3f} | {x['state_bytes_ratio']:.2f} |")
    print("\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
