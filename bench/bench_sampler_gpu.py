"""Benchmark (not a test): the full Wan2.1 1.3B causal model at 832x480 with random weights, on a CUDA GPU.

    python bench/bench_sampler_gpu.py                     # SDPA, and sageattention when it is importable
    python bench/bench_sampler_gpu.py --decoder taehv     # preview decoder instead of the Wan VAE
    python bench/bench_sampler_gpu.py --smoke             # tiny sizes on CPU: checks the script itself

Per attention backend: time to first frame (generate() call -> first decoded chunk), frames out per second
including decode, per-chunk time (sampling + context pass + decode), peak GPU memory, for a short video
(7 chunks = 81 frames, the training length) and a long one (--long-seconds, rolling window 21 + sink 3),
whose peak memory should equal the short one's. Random weights give the real cost, not real videos.
Reference figures (Self Forcing paper, one H100): 17 FPS, 0.69 s to first frame.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sf_core.model.attention import sage_available  # noqa: E402
from sf_core.config import WanConfig  # noqa: E402
from sf_core.model.transformer import WanTransformer  # noqa: E402
from sf_core.sampling.pipeline import generate  # noqa: E402
from sf_core.sampling.session import new_session  # noqa: E402


@torch.no_grad()
def random_transformer(cfg: WanConfig, device, dtype, seed: int = 0) -> WanTransformer:
    """Random weights drawn on the device (fast for 1.3B). Same scheme as `randomize_weights`, with the
    projections that add to the residual stream scaled by 1/sqrt(2 * layers) so 30 bf16 layers stay finite."""
    with torch.device("meta"):
        model = WanTransformer(cfg)
    model = model.to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    damp = 1 / math.sqrt(2 * cfg.num_layers)
    for name, p in model.named_parameters():
        r = torch.randn(p.shape, generator=g, device=device, dtype=torch.float32)
        if name.endswith("modulation"):
            val = 0.2 * r
        elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
            val = 1 + 0.1 * r
        elif p.ndim == 1:
            val = 0.05 * r
        else:
            val = r / math.sqrt(p[0].numel())
            if name.endswith(("self_attn.o.weight", "cross_attn.o.weight", "ffn.2.weight")):
                val = val * damp
        p.copy_(val)
    return model.to(dtype).eval().requires_grad_(False)


def pick_device(smoke: bool, dtype: str):
    """(device, dtype, WanConfig, latent size): the 1.3B model at 832x480 on CUDA, or tiny sizes on CPU with
    --smoke; None (after saying why) when there is no GPU."""
    if smoke:
        return (torch.device("cpu"), torch.float32,
                WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=64, text_len=16), (4, 6))
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (use --smoke to check the script on CPU)", file=sys.stderr)
        return None
    return (torch.device("cuda"), {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype],
            WanConfig.wan_1_3b(), (60, 104))


def make_decoder(kind: str, device, dtype, smoke: bool):
    if kind == "none":
        return None
    from sf_core.vae import TAEHV, WanVAE, WanVAEConfig  # noqa: PLC0415
    from sf_core.vae.tiny import randomize  # noqa: PLC0415

    if kind == "taehv":
        dec = TAEHV(widths=(32, 16, 8, 8)) if smoke else TAEHV()
    else:
        dec = WanVAE(WanVAEConfig.tiny() if smoke else WanVAEConfig(), with_encoder=False)
    return randomize(dec, 0).to(device=device, dtype=dtype).eval().requires_grad_(False)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model, decoder, ctx, *, latent_hw, chunks: int, backend: str = "sdpa", device, dtype,
            settings=None) -> dict:
    """One video of `chunks` chunks through `generate` (default or given SamplingSettings): FPS, time to the
    first frame, chunk-time percentiles and, on CUDA, the peak allocated memory (shared by gpu_check.py)."""
    sess = new_session(model, ctx, latent_hw=latent_hw, seed=0, dtype=dtype, device=device, settings=settings)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rec = {"chunk_s": [], "frames": 0, "first": None}
    _sync(device)
    t0 = time.perf_counter()

    def on_chunk(r):
        rec["chunk_s"].append(r.seconds)
        rec["frames"] += 0 if r.frames is None else r.frames.shape[2]
        if rec["first"] is None:
            rec["first"] = time.perf_counter() - t0

    with torch.no_grad():
        generate(model, sess, num_chunks=chunks, decoder=decoder, on_chunk=on_chunk, backend=backend,
                 keep_latents=False)
    _sync(device)
    total = time.perf_counter() - t0
    cs = sorted(rec["chunk_s"])
    out = {"chunks": chunks, "latent_frames": sess.next_frame, "video_frames": rec["frames"], "total_s": total,
           "fps": rec["frames"] / total, "time_to_first_frame_s": rec["first"],
           "chunk_ms_mean": 1000 * statistics.mean(cs), "chunk_ms_p50": 1000 * cs[len(cs) // 2],
           "chunk_ms_p90": 1000 * cs[min(len(cs) - 1, int(0.9 * len(cs)))]}
    if device.type == "cuda":
        out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model and sizes on CPU (script check only)")
    ap.add_argument("--chunks", type=int, default=7, help="chunks of the short video (7 = 81 frames)")
    ap.add_argument("--long-seconds", type=float, default=60.0, help="length of the long video (16 fps)")
    ap.add_argument("--decoder", default="wan", choices=("wan", "taehv", "none"))
    ap.add_argument("--backends", default="sdpa,sage", help="attention backends to try (sage only if importable)")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    a = ap.parse_args(argv)
    picked = pick_device(a.smoke, a.dtype)
    if picked is None:
        return 2
    device, dtype, cfg, latent_hw = picked
    model = random_transformer(cfg, device, dtype)
    decoder = make_decoder(a.decoder, device, dtype, a.smoke)
    ctx = 0.5 * torch.randn(1, 512 if not a.smoke else 16, cfg.text_dim, device=device, dtype=dtype)
    long_chunks = max(a.chunks, math.ceil((a.long_seconds * 16 - 1) / 4 / 3))
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": torch.cuda.get_device_name(device)
              if device.type == "cuda" else f"CPU {platform.processor()}", "torch": torch.__version__,
              "dtype": str(dtype).removeprefix("torch."), "decoder": a.decoder,
              "size": f"{latent_hw[1] * 8}x{latent_hw[0] * 8}", "results": {}}
    for backend in a.backends.split(","):
        if backend == "sage" and not sage_available():
            report["results"]["sage"] = "sageattention not importable"
            continue
        measure(model, decoder, ctx, latent_hw=latent_hw, chunks=2, backend=backend, device=device, dtype=dtype)
        short = measure(model, decoder, ctx, latent_hw=latent_hw, chunks=a.chunks, backend=backend, device=device,
                        dtype=dtype)
        long_ = measure(model, decoder, ctx, latent_hw=latent_hw, chunks=long_chunks, backend=backend,
                        device=device, dtype=dtype)
        report["results"][backend] = {"short": short, "long": long_}
    print(json.dumps(report, indent=2))
    for backend, r in report["results"].items():
        if isinstance(r, str):
            continue
        s, lg = r["short"], r["long"]
        mem = (f"{s['peak_gpu_mem_gib']:.1f} / {lg['peak_gpu_mem_gib']:.1f} GiB" if "peak_gpu_mem_gib" in s
               else "n/a")
        print(f"| {report['device']} | {backend} | {a.decoder} | {s['fps']:.1f} | {s['time_to_first_frame_s']:.2f} s "
              f"| {s['chunk_ms_p50']:.0f} ms | {lg['fps']:.1f} ({lg['video_frames']} frames) | {mem} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
