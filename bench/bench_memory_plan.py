"""Benchmark (not a test): the memory planner's prediction vs the measured peak of real runs on CPU.

    python bench/bench_memory_plan.py                 # the table below; add --decoders for Wan VAE / TAEHV runs
    python bench/bench_memory_plan.py --calibrate     # re-measure the decoders' per-pixel activation and state

Measured = the model's (and decoder's) weights + the peak of tensor bytes allocated during `new_session` +
`generate` (the PyTorch profiler's allocator events, sf_core.memory.measure). Predicted = sf_core.memory.plan's
peak (tensors, no runtime). The decoders are the real-size Wan2.1 VAE (decoder half) and TAEHV with random
weights; the transformers are random tiny / medium Wan configs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sf_core.config import CausalConfig, WanConfig  # noqa: E402
from sf_core.memory.measure import peak_tensor_bytes, tensor_bytes  # noqa: E402
from sf_core.memory.plan import RunShape, plan_memory  # noqa: E402
from sf_core.model.transformer import WanTransformer, randomize_weights  # noqa: E402
from sf_core.sampling.pipeline import generate  # noqa: E402
from sf_core.sampling.session import SamplingSettings, new_session  # noqa: E402

TINY = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=16)
MEDIUM = dict(dim=256, ffn_dim=1024, num_heads=4, num_layers=4, text_dim=64, text_len=32)
WIDE = dict(dim=512, ffn_dim=2048, num_heads=8, num_layers=2, text_dim=64, text_len=32)
CASES = [  # name, config, latent, frames, window, sink, kv, dtype, batch, decoder
    ("tiny fp32 global", TINY, (8, 8), 12, None, 0, "auto", torch.float32, 1, "none"),
    ("medium int8 rolling 9+3, batch 2", MEDIUM, (16, 16), 18, 9, 3, "int8", torch.float32, 2, "none"),
    ("medium bf16 rolling 12+3", MEDIUM, (16, 16), 24, 12, 3, "auto", torch.bfloat16, 1, "none"),
    ("wide fp8-KV global", WIDE, (16, 24), 9, None, 0, "fp8", torch.float32, 1, "none"),
    ("medium fp32 global 32x32", MEDIUM, (32, 32), 12, None, 0, "auto", torch.float32, 1, "none"),
]
DECODER_CASES = [
    ("medium + Wan VAE 16x16", MEDIUM, (16, 16), 9, None, 0, "auto", torch.float32, 1, "wan"),
    ("medium + Wan VAE 16x24", MEDIUM, (16, 24), 9, None, 0, "auto", torch.float32, 1, "wan"),
    ("medium + TAEHV 16x16", MEDIUM, (16, 16), 9, None, 0, "auto", torch.float32, 1, "taehv"),
]


def _decoder(kind: str):
    from sf_core.vae.taehv import TAEHV
    from sf_core.vae.wan_vae import WanVAE

    return None if kind == "none" else (WanVAE(with_encoder=False) if kind == "wan" else TAEHV()).eval()


def run_case(name, over, hw, frames, window, sink, kv, dtype, batch, kind) -> dict:
    cfg = WanConfig(**{**WanConfig.tiny().to_dict(), **over})
    model = randomize_weights(WanTransformer(cfg), 0).eval().requires_grad_(False).to(dtype)
    dec = _decoder(kind)
    ctx = torch.randn(batch, cfg.text_len, cfg.text_dim)
    causal = CausalConfig(chunk_frames=3, window_frames=window, sink_frames=sink)
    st = SamplingSettings(causal=causal, kv_dtype=kv)

    def go():
        with torch.no_grad():
            s = new_session(model, ctx, latent_hw=hw, batch=batch, seed=0, settings=st, dtype=dtype)
            generate(model, s, num_frames=frames, keep_latents=False, decoder=dec)
    _, peak = peak_tensor_bytes(go)
    dec_bytes = 0 if dec is None else tensor_bytes(dec)
    measured = tensor_bytes(model) + dec_bytes + peak
    plan = plan_memory(RunShape(cfg, hw, causal, frames, batch=batch, dtype=dtype, kv_dtype=kv, decoder=kind,
                                decoder_weight_bytes=dec_bytes if dec is not None else None))
    return {"case": name, "predicted": plan.peak, "measured": measured, "ratio": plan.peak / measured,
            "parts": plan.parts}


def calibrate() -> dict:
    """Decoder activation (per latent pixel and latent frame of a call) and state (per latent pixel), fp32."""
    out = {}
    for kind in ("wan", "taehv"):
        dec = _decoder(kind).requires_grad_(False)
        rows = []
        for h, w in ((8, 8), (12, 16), (16, 24)):
            z = torch.randn(1, 16, 3, h, w)
            with torch.no_grad():
                _, state = dec.decode_chunk(z)
                (frames, new), peak = peak_tensor_bytes(lambda: dec.decode_chunk(z, state))
            slots = new.caches if kind == "wan" else new.memory
            sb = sum(t.numel() * t.element_size() for t in slots if isinstance(t, torch.Tensor))
            per_call = 1 if kind == "wan" else 3
            act = (peak - sb - frames.numel() * 4) / (h * w * per_call * 4)
            rows.append({"latent_hw": [h, w], "peak": peak, "state_per_px": sb / (h * w * 4), "act_per_px": act})
        out[kind] = rows
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decoders", action="store_true", help="also the runs with a Wan VAE / TAEHV decoder (slower)")
    ap.add_argument("--calibrate", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.calibrate:
        print(json.dumps(calibrate(), indent=1))
        return 0
    rows = [run_case(*c) for c in CASES + (DECODER_CASES if args.decoders else [])]
    print("| run | predicted | measured | predicted / measured |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['predicted'] / 2 ** 20:.1f} MiB | {r['measured'] / 2 ** 20:.1f} MiB | "
              f"{r['ratio']:.3f} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
