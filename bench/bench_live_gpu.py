"""Benchmark (not a test): a live stream of the full-size Wan2.1 1.3B on one GPU, random weights (no downloads).

    python bench/bench_live_gpu.py                 # CUDA, bf16, 832x480, TAEHV decoder, 120 chunks, 10 switches
    python bench/bench_live_gpu.py --smoke         # tiny sizes on CPU: checks the script

`sf_core.sampling.live.LiveRun` as SF Live Stream runs it (rolling window 21, sink 3, relative positions), with prompt
switches (random 512x4096 "prompts") sent from another thread at random moments, alternating re-cache and a 2-chunk
blend. Prints one JSON: per-chunk time p50/p90 (decode included), generated frames per second, control-to-display
latency (request -> end of the first chunk under the new prompt, which is then decoded) in ms and in chunks, the
re-cache cost (chunks right after a re-cache switch vs others), peak GPU memory, and the per-chunk time of the
last 20 chunks / chunks 5-25 (flatness).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
import zlib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_sampler_gpu import make_decoder, pick_device, random_transformer  # noqa: E402
from sf_core.sampling.live import LiveRun, make_control  # noqa: E402
from sf_core.sampling.session import SamplingSettings, default_causal, new_session  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--chunks", type=int, default=120)
    ap.add_argument("--switches", type=int, default=10)
    ap.add_argument("--decoder", default="taehv", choices=("taehv", "wan", "none"))
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    a = ap.parse_args(argv)
    picked = pick_device(a.smoke, a.dtype)
    if picked is None:
        return 2
    device, dtype, cfg, hw = picked
    text_len = cfg.text_len
    if a.smoke:
        a.chunks, a.switches = min(a.chunks, 30), min(a.switches, 3)
    model = random_transformer(cfg, device, dtype)
    decoder = make_decoder(a.decoder, device, dtype, a.smoke)

    def encode(text: str) -> torch.Tensor:  # a random "prompt" per text, the shape umT5 gives
        g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
        return 0.5 * torch.randn(1, text_len, cfg.text_dim, generator=g)

    settings = SamplingSettings(causal=default_causal(3), positions="relative")
    sess = new_session(model, encode("prompt 0"), latent_hw=hw, seed=0, settings=settings, dtype=dtype,
                       device=device)
    run = LiveRun(model, sess, encode=encode, prompt="prompt 0", decoder=decoder, max_chunks=a.chunks)
    rng = random.Random(0)
    pending: dict[str, float] = {}
    lat_ms: list[float] = []
    chunk_s: list[float] = []
    after_recache: list[float] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sent = {"n": 0}

    def on_chunk(c):
        chunk_s.append(c.result.seconds)
        if c.prompt in pending:
            lat_ms.append(1000 * (time.perf_counter() - pending.pop(c.prompt)))
            if c.result.switched and c.blend >= 1:
                after_recache.append(c.result.seconds)
        i = c.result.index
        if i >= 10 and i % max(1, (a.chunks - 10) // max(a.switches, 1)) == 0 and sent["n"] < a.switches \
                and not pending:
            sent["n"] += 1
            text, blend = f"prompt {sent['n']}", 2 if sent["n"] % 2 == 0 else 0

            def send(t=text, b=blend, dly=rng.uniform(0, c.result.seconds)):
                time.sleep(dly)
                pending[t] = time.perf_counter()
                run.submit(make_control("prompt", t, b))
            threading.Thread(target=send, daemon=True).start()

    t0 = time.perf_counter()
    run.run(on_chunk=on_chunk)
    wall = time.perf_counter() - t0
    q = statistics.quantiles(chunk_s, n=10)
    frames_per_chunk = 12 if a.decoder != "none" else 3  # Wan VAE / TAEHV: 4 video frames per latent frame
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__, "smoke": a.smoke,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."), "decoder": a.decoder, "size": f"{hw[1] * 8}x{hw[0] * 8}",
        "chunks": len(chunk_s), "chunk_ms_p50": round(1000 * q[4], 1), "chunk_ms_p90": round(1000 * q[8], 1),
        "video_fps": round(frames_per_chunk * len(chunk_s) / wall, 2),
        "latency_ms_median": round(statistics.median(lat_ms), 1) if lat_ms else None,
        "latency_ms_max": round(max(lat_ms), 1) if lat_ms else None,
        "latency_chunks_median": round(statistics.median(lat_ms) / (1000 * statistics.median(chunk_s)), 2)
        if lat_ms else None,
        "recache_chunk_ms_median": round(1000 * statistics.median(after_recache), 1) if after_recache else None,
        "flat_last20_over_5_25": round(statistics.median(chunk_s[-20:]) / statistics.median(chunk_s[5:25]), 3),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == "cuda" else None,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
