"""Benchmark (not a test): streaming decode time per chunk and memory over a long stream, for the Wan2.1 VAE
(real size, random weights) and TAEHV (real size, random weights).

    python bench/bench_vae.py                                   # CPU, 64x64 pixels, 3-latent-frame chunks
    python bench/bench_vae.py --device cuda --dtype bf16 --size 480x832 --chunks 20
    python bench/bench_vae.py --decoders wan --frames-per-call 3

For each decoder: `--chunks` chunks of `--chunk` latent frames are decoded as one stream (the first chunk
gives 4n-3 frames, later ones 4n). Reported per decoder: the first chunk's time, the median time of the
later chunks, frames per second over the later chunks, the stream state's size after every chunk (constant
= memory does not grow with the video), and peak memory (CUDA: max_memory_allocated over the stream; CPU:
the process's peak RSS, reset before each decoder where the kernel allows). With `--memory-check` a short and
a 10x longer stream run in fresh processes and their peak memory is compared (target ratio ~1).
Prints one line per decoder and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sf_core.vae import TAEHV, WanVAE  # noqa: E402
from sf_core.vae.tiny import randomize  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _rss_reset() -> None:
    try:  # Linux: writing 5 to clear_refs resets VmHWM
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(name: str, device: torch.device, dtype: torch.dtype, frames_per_call: int):
    if name == "wan":
        model = randomize(WanVAE(with_encoder=False, frames_per_call=frames_per_call), seed=0)
    else:
        model = randomize(TAEHV(), seed=0)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def run_stream(model, args, device: torch.device) -> dict:
    h, w = (int(v) // 8 for v in args.size.lower().split("x"))
    g = torch.Generator().manual_seed(0)
    times, sizes, frames = [], [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _rss_reset()
    state = None
    with torch.inference_mode():
        for _ in range(args.chunks):
            z = torch.randn(1, 16, args.chunk, h, w, generator=g).to(device)
            _sync(device)
            t0 = time.perf_counter()
            out, state = model.decode_chunk(z, state)
            _sync(device)
            times.append(time.perf_counter() - t0)
            sizes.append(state.nbytes)
            frames.append(out.shape[2])
            del out
    later = times[1:] or times
    return {"first_chunk_s": round(times[0], 4), "chunk_s_median": round(statistics.median(later), 4),
            "fps": round(sum(frames[1:] or frames) / sum(later), 2), "frames_per_chunk": frames[:3],
            "state_mb": sorted({round(s / 2 ** 20, 3) for s in sizes}), "peak_mb": round(_peak_mb(device), 1),
            "chunks": args.chunks}


def main() -> None:
    ap = argparse.ArgumentParser(description="streaming VAE decode benchmark")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--size", default="64x64", help="pixels HxW (multiples of 8)")
    ap.add_argument("--chunk", type=int, default=3, help="latent frames per chunk")
    ap.add_argument("--chunks", type=int, default=6)
    ap.add_argument("--decoders", default="wan,taehv")
    ap.add_argument("--frames-per-call", type=int, default=1, help="WanVAE: latent frames per decoder call")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--memory-check", action="store_true", help="compare peak memory of a 10x longer stream")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    results = {}
    for name in args.decoders.split(","):
        model = build(name, device, dtype, args.frames_per_call)
        r = run_stream(model, args, device)
        if args.memory_check:
            r["peak_mb_short_long"] = [_child_peak(args, name, n) for n in (args.chunks, 10 * args.chunks)]
            r["peak_ratio"] = round(r["peak_mb_short_long"][1] / r["peak_mb_short_long"][0], 3)
        results[name] = r
        print(f"{name:6s} first chunk {r['first_chunk_s']:.3f} s, later chunks {r['chunk_s_median']:.3f} s "
              f"({r['fps']} frames/s), state {r['state_mb']} MB, peak {r['peak_mb']} MB"
              + (f", peak short/long {r['peak_mb_short_long']} MB" if args.memory_check else ""))
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "threads": torch.get_num_threads(), "dtype": str(dtype), "size": args.size, "chunk": args.chunk,
           "frames_per_call": args.frames_per_call, "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d")}
    print(json.dumps({"env": env, "results": results}))


def _child_peak(args, name: str, chunks: int) -> float:
    """Peak memory of a fresh process decoding `chunks` chunks (the model's weights included)."""
    cmd = [sys.executable, __file__, "--device", args.device, "--size", args.size, "--chunk", str(args.chunk),
           "--chunks", str(chunks), "--decoders", name, "--frames-per-call", str(args.frames_per_call),
           "--threads", str(args.threads)] + (["--dtype", args.dtype] if args.dtype else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)["results"][name]["peak_mb"]


if __name__ == "__main__":
    main()
