"""Benchmark (not a test): time and peak memory of one causal chunk forward and of the cache-only context pass.

    python bench/bench_forward.py                       # tiny config on CPU; + full 1.3B on CUDA if present
    python bench/bench_forward.py --config 1.3b --device cpu --dtype fp32 --repeat 1 --warmup 0
    python bench/bench_forward.py --config 1.3b --device cuda --dtype bf16 --backend sage

One measurement = `wan_forward` on a chunk of `--chunk` latent frames at `--latent HxW` whose KV cache already
holds `--cache-frames - --chunk` earlier frames (so the chunk attends over `--cache-frames` frames: the last
chunk of a 21-frame Self Forcing video at 832x480 is 3 frames of 60x104 latents against 21 frames), with
random weights (`randomize_weights`) and the text cross-attention cache warm. Parts:
  chunk         a denoising call (the output is needed);
  context       the clean context pass that only writes the cache (`need_output=False`);
  first_chunk   a denoising call on an empty cache (the cheapest chunk);
  text          filling the cross-attention cache for a new prompt (text embedding + K/V of every layer),
                a one-off per prompt that the other parts do not include.
The earlier frames are filled by real context passes, or (`--prefill random`, the default for big models on
CPU) written directly as random K/V -- timing does not depend on their values.

Peak memory: CUDA `max_memory_allocated` (model + cache + activations); CPU the process's peak RSS (VmHWM,
reset before each part where the kernel allows it). Prints one line per part and a JSON line per run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sf_core.model.attention import sage_available  # noqa: E402
from sf_core.config import WanConfig  # noqa: E402
from sf_core.model.forward import _cross_kv, embed_text, wan_forward  # noqa: E402
from sf_core.cache.kv_cache import KVCache  # noqa: E402
from sf_core.model.transformer import WanTransformer, randomize_weights  # noqa: E402

CONFIGS = {"tiny": WanConfig.tiny, "1.3b": WanConfig.wan_1_3b, "14b": WanConfig.wan_14b}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ------------------------------------------------------------------------------------------ memory
def _rss_reset() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------ setup
def build_model(cfg: WanConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> WanTransformer:
    """Random non-trivial weights, built directly in the target dtype (no fp32 copy of a big model)."""
    with torch.device("meta"):
        model = WanTransformer(cfg)
    model = model.to_empty(device=device).to(dtype)
    return randomize_weights(model, seed).eval().requires_grad_(False)


def prefill_random(cache: KVCache, frames: int) -> None:
    """Mark the first `frames` slots of the cache as filled with random K/V (timing only)."""
    rows = frames * cache.tokens_per_frame
    for buf in (*cache.k, *cache.v):
        buf[:, :rows].normal_()
    # KVCache bookkeeping fields (what a real context pass over frames 0..frames-1 would leave)
    cache.length, cache.end_frame, cache.positions = frames, frames, list(range(frames))


def fill_text_cache(model, caches: list[KVCache], ctx: torch.Tensor, dtype: torch.dtype) -> None:
    """The per-prompt cross-attention K/V of every layer, shared by `caches` (what the first forward of a
    prompt computes)."""
    emb = embed_text(model, ctx, dtype)
    for i, block in enumerate(model.blocks):
        k, v = _cross_kv(block.cross_attn, emb, model.num_heads)
        for c in caches:
            c.set_cross(i, ctx, k, v)


def prefill_compute(model, cache, x_chunk, t, ctx, frames: int, chunk: int, backend: str) -> None:
    for s in range(0, frames, chunk):
        n = min(chunk, frames - s)
        wan_forward(model, x_chunk[:, :, :n], t[:, :n], ctx, cache=cache, start_frame=s, backend=backend,
                    need_output=False)


# ------------------------------------------------------------------------------------------ run
def bench(cfg_name: str, device: str, dtype_name: str, backend: str, latent: tuple[int, int], chunk: int,
          cache_frames: int, repeat: int, warmup: int, prefill: str, parts: list[str], seed: int = 0) -> dict:
    cfg = CONFIGS[cfg_name]()
    dev = torch.device(device)
    dtype = DTYPES[dtype_name]
    h, w = latent
    tpf = cfg.tokens_per_frame(h, w)
    t0 = time.perf_counter()
    model = build_model(cfg, dev, dtype, seed)
    build_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, cfg.in_dim, chunk, h, w, generator=g).to(dev, dtype)
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(dev, dtype)
    t = torch.full((1, chunk), 750.0, device=dev)
    past = cache_frames - chunk
    if past < 0:
        raise SystemExit(f"--cache-frames {cache_frames} must be >= --chunk {chunk}")
    cache = KVCache.allocate(cfg.num_layers, 1, cfg.num_heads, cfg.head_dim, tpf, frames=cache_frames,
                             dtype=dtype, device=dev)
    empty = KVCache.allocate(cfg.num_layers, 1, cfg.num_heads, cfg.head_dim, tpf, frames=chunk, dtype=dtype,
                             device=dev)
    with torch.no_grad():
        fill_text_cache(model, [cache, empty], ctx, dtype)
        if prefill == "random":
            prefill_random(cache, past)
        else:
            prefill_compute(model, cache, x, t, ctx, past, chunk, backend)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    calls = {
        "chunk": lambda: wan_forward(model, x, t, ctx, cache=cache, start_frame=past, backend=backend),
        "context": lambda: wan_forward(model, x, t * 0, ctx, cache=cache, start_frame=past, backend=backend,
                                       need_output=False),
        "first_chunk": lambda: wan_forward(model, x, t, ctx, cache=empty, start_frame=0, backend=backend),
        "text": lambda: fill_text_cache(model, [empty], ctx, dtype),
    }
    results = {}
    with torch.no_grad():
        for part in parts:
            fn = calls[part]
            for _ in range(warmup):
                fn()
            _sync(dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
            else:
                reset = _rss_reset()
            times = []
            for _ in range(repeat):
                s = time.perf_counter()
                fn()
                _sync(dev)
                times.append(time.perf_counter() - s)
            if dev.type == "cuda":
                mem = {"peak_alloc_mb": torch.cuda.max_memory_allocated(dev) / 2 ** 20,
                       "activations_mb": (torch.cuda.max_memory_allocated(dev) - base) / 2 ** 20}
            else:
                mem = {"peak_rss_mb": _rss_peak_mb(), "rss_peak_was_reset": reset}
            results[part] = {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times), **mem}
    return {"config": cfg_name, "device": str(dev), "device_name": _device_name(dev), "dtype": dtype_name,
            "backend": backend, "sage_available": sage_available(), "latent": [h, w], "chunk_frames": chunk,
            "cache_frames": cache_frames, "tokens_per_frame": tpf, "query_tokens": chunk * tpf,
            "key_tokens": cache_frames * tpf, "prefill": prefill, "params": sum(p.numel() for p in model.parameters()),
            "param_mb": param_bytes / 2 ** 20, "kv_cache_mb": cache.nbytes() / 2 ** 20, "build_s": build_s,
            "threads": torch.get_num_threads(), "load_avg": _loadavg(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"), "parts": results}


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _print(r: dict) -> None:
    head = (f"{r['config']} {r['device']} ({r['device_name']}) {r['dtype']} {r['backend']} latent "
            f"{r['latent'][0]}x{r['latent'][1]} chunk {r['chunk_frames']} vs {r['cache_frames']} frames "
            f"({r['query_tokens']} q / {r['key_tokens']} k tokens), params {r['param_mb']:.0f} MiB, "
            f"KV cache {r['kv_cache_mb']:.0f} MiB, threads {r['threads']}, load {r['load_avg']}")
    print(head)
    for part, p in r["parts"].items():
        mem = (f"peak alloc {p['peak_alloc_mb']:.0f} MiB (+{p['activations_mb']:.0f} over weights+cache)"
               if "peak_alloc_mb" in p else f"peak RSS {p['peak_rss_mb']:.0f} MiB")
        print(f"  {part:12s} median {p['median_s'] * 1e3:10.1f} ms  min {p['min_s'] * 1e3:10.1f} ms  "
              f"({p['runs']} runs)  {mem}")
    print(json.dumps(r))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=list(CONFIGS), default=None,
                    help="model size (default: tiny on CPU, and 1.3b as well when CUDA is available)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cpu for tiny, cuda for 1.3b)")
    ap.add_argument("--dtype", choices=list(DTYPES), default=None, help="compute dtype (default fp32 CPU, bf16 CUDA)")
    ap.add_argument("--backend", default=None, help="sdpa | sage | auto (default: sdpa, and sage too if importable)")
    ap.add_argument("--latent", default=None, help="HxW latent size (default 60x104 = 832x480 video; tiny: 8x8)")
    ap.add_argument("--chunk", type=int, default=3, help="latent frames per chunk")
    ap.add_argument("--cache-frames", type=int, default=21, help="frames the chunk attends over (cache + chunk)")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per part (default 10; 1.3b CPU: 1)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2; 1.3b CPU: 0)")
    ap.add_argument("--prefill", choices=["compute", "random"], default=None,
                    help="how the earlier frames enter the cache (default: compute, random for big models on CPU)")
    ap.add_argument("--parts", default="chunk,context,first_chunk,text",
                    help="comma list of chunk, context, first_chunk, text")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = []
    if args.config is None:
        runs.append(("tiny", args.device or "cpu"))
        if torch.cuda.is_available():
            runs.append(("1.3b", "cuda"))
    else:
        runs.append((args.config, args.device or ("cpu" if args.config == "tiny" or not torch.cuda.is_available()
                                                  else "cuda")))
    for cfg_name, device in runs:
        cuda = device.startswith("cuda")
        big = cfg_name != "tiny"
        dtype = args.dtype or ("bf16" if cuda else "fp32")
        latent = tuple(int(v) for v in (args.latent or ("60x104" if big else "8x8")).lower().split("x"))
        backends = [args.backend] if args.backend else (["sdpa", "sage"] if cuda and sage_available() else ["sdpa"])
        slow = big and not cuda
        for backend in backends:
            r = bench(cfg_name, device, dtype, backend, latent, args.chunk, args.cache_frames,
                      repeat=args.repeat or (1 if slow else 10), warmup=args.warmup if args.warmup is not None
                      else (0 if slow else 2), prefill=args.prefill or ("random" if slow else "compute"),
                      parts=[p for p in args.parts.split(",") if p])
            _print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
