"""Benchmark (not a test): what an int8 / fp8 / half-float KV cache costs in accuracy and saves in memory.

    python bench/bench_kv_quant.py                 # everything below, prints markdown + one JSON line
    python bench/bench_kv_quant.py --skip-toy      # no toy-world rollouts

Parts:
  bytes     cache bytes per storage format for the Wan2.1 1.3B model at 832x480 (60x104 latents, 1,560 tokens
            per frame) with a 21-frame window, batch 1 (allocated on the meta device: nothing is allocated);
  latents   per-chunk latent error of a session run with each format vs the same run with the exact cache
            ('auto', fp32 compute; and a bf16-compute run vs its bf16 cache), relative RMS per chunk, on random
            tiny Wan configs, 24 latent frames through a rolling window of 9 (5 evictions), absolute and
            relative positions;
  toy       the toy world's metrics (sf_core.toy.metrics) of the shipped Self Forcing student over 4x rollouts
            (48 frames, rolling window 12) of the evaluation prompts, per format; and the latent difference
            to the exact run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sf_core.config import CausalConfig, WanConfig  # noqa: E402
from sf_core.cache.kv_cache import KVCache  # noqa: E402
from sf_core.model.transformer import WanTransformer, randomize_weights  # noqa: E402
from sf_core.sampling.pipeline import generate  # noqa: E402
from sf_core.sampling.session import SamplingSettings, new_session  # noqa: E402

FORMATS = ("bf16", "fp16", "int8", "fp8")
CONFIGS = {  # name: (WanConfig overrides, latent hw)
    "tiny d64 h2x32": (dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=16), (8, 8)),
    "small d256 h4x64 L4": (dict(dim=256, ffn_dim=512, num_heads=4, num_layers=4, text_dim=64, text_len=16), (8, 8)),
    "wide-head d256 h2x128 L3": (dict(dim=256, ffn_dim=512, num_heads=2, num_layers=3, text_dim=64, text_len=16),
                                 (6, 10)),
}


def cache_bytes() -> dict:
    cfg = WanConfig.wan_1_3b()
    out = {}
    for kv in ("auto",) + FORMATS:
        c = KVCache.allocate(cfg.num_layers, 1, cfg.num_heads, cfg.head_dim, 30 * 52, window_frames=21,
                             dtype=torch.bfloat16, device="meta", kv_dtype=kv)
        out["bf16 (auto)" if kv == "auto" else kv] = c.nbytes()
    return out


def _latents(model, ctx, hw, kv, positions, dtype, frames=24, seed=3):
    st = SamplingSettings(causal=CausalConfig(chunk_frames=3, window_frames=9, sink_frames=3), kv_dtype=kv,
                          positions=positions)
    s = new_session(model, ctx, latent_hw=hw, seed=seed, settings=st, dtype=dtype)
    return generate(model, s, num_frames=frames).float()


def latent_errors() -> list[dict]:
    rows = []
    for name, (over, hw) in CONFIGS.items():
        cfg = WanConfig(**{**WanConfig.tiny().to_dict(), **over})
        model = randomize_weights(WanTransformer(cfg), 0).eval()
        ctx = 3 * torch.randn(1, 7, cfg.text_dim, generator=torch.Generator().manual_seed(1))
        exact = {}
        for compute in (torch.float32, torch.bfloat16):
            m = model.to(compute)
            for positions in ("absolute", "relative"):
                ref = _latents(m, ctx, hw, "auto", positions, compute)
                rms = ref.pow(2).mean().sqrt()
                exact.setdefault(positions, ref)
                for kv in FORMATS + (("fp32 run",) if compute == torch.bfloat16 else ()):
                    if compute == torch.bfloat16 and kv in ("bf16", "fp16"):
                        continue
                    # "fp32 run": the bf16 run's own distance to the fp32 run (its noise floor)
                    got = exact[positions] if kv == "fp32 run" else _latents(m, ctx, hw, kv, positions, compute)
                    per = [((got[:, :, a:a + 3] - ref[:, :, a:a + 3]).pow(2).mean().sqrt() / rms).item()
                           for a in range(3, 24, 3)]
                    rows.append({"config": name, "compute": str(compute).removeprefix("torch."),
                                 "positions": positions, "kv": kv, "max": max(per), "mean": statistics.mean(per),
                                 "last": per[-1]})
        model.float()
    return rows


def toy(videos: int | None) -> dict:
    from sf_core.toy import codec
    from sf_core.toy.bundle import load_toy_transformer
    from sf_core.toy.evaluate import LONG, eval_prompts
    from sf_core.toy.metrics import score_batch, summarize
    from sf_core.toy.spec import LATENT_HW, SHIFT, STEPS, TRAIN_FRAMES, WORLD, toy_causal
    from sf_core.toy.text import ToyTextEncoder

    model = load_toy_transformer()
    enc = ToyTextEncoder(text_dim=model.config.text_dim, text_len=model.config.text_len)
    prompts = eval_prompts(videos)
    frames = LONG * TRAIN_FRAMES
    out, ref = {}, None
    for kv in ("auto",) + FORMATS:
        st = SamplingSettings(steps=STEPS, shift=SHIFT, causal=toy_causal(), kv_dtype=kv)
        t0 = time.process_time()
        lats = []
        for a in range(0, len(prompts), 48):  # as sf_core.toy.evaluate.student_rollout, with the kv_dtype
            ctx = enc.encode(prompts[a:a + 48])
            s = new_session(model, ctx, latent_hw=LATENT_HW, batch=ctx.shape[0], seed=a, settings=st)
            lats.append(generate(model, s, num_frames=frames))
        lat = torch.cat(lats)
        cpu = time.process_time() - t0
        scores = score_batch(codec.decode(lat), prompts, WORLD)
        row = {"x1": summarize(scores, 0, TRAIN_FRAMES), "x4_tail": summarize(scores, frames - TRAIN_FRAMES),
               "x4": summarize(scores), "cpu_s": cpu}
        if ref is None:
            ref = lat
        else:
            row["latent_rel_rms"] = ((lat - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()
            row["latent_rel_rms_tail"] = ((lat - ref)[:, :, -TRAIN_FRAMES:].pow(2).mean().sqrt()
                                          / ref[:, :, -TRAIN_FRAMES:].pow(2).mean().sqrt()).item()
        out[kv] = row
    return {"videos": len(prompts), "frames": frames, "results": out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-toy", action="store_true")
    ap.add_argument("--videos", type=int, help="toy prompts (default: all 144)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {"bytes": cache_bytes(), "latents": latent_errors()}
    b = res["bytes"]
    print("| storage | bytes (1.3B, 832x480, window 21) | vs bf16 |\n|---|---|---|")
    for k, v in b.items():
        print(f"| {k} | {v / 2 ** 30:.3f} GiB | {v / b['bf16 (auto)']:.3f} |")
    print("\n| config | compute | positions | kv | per-chunk rel. RMS error: max | mean |\n|---|---|---|---|---|---|")
    for r in res["latents"]:
        print(f"| {r['config']} | {r['compute']} | {r['positions']} | {r['kv']} | {r['max']:.2e} | {r['mean']:.2e} |")
    if not args.skip_toy:
        res["toy"] = toy(args.videos)
        keys = ("shape_acc", "colour_acc", "prompt_motion", "pos_err", "motion_err", "flicker", "present")
        print(f"\ntoy world, {res['toy']['videos']} videos x {res['toy']['frames']} frames\n")
        for window in ("x1", "x4_tail"):
            print(f"| kv ({window}) | " + " | ".join(keys) + " | latent rel. RMS vs auto |")
            print("|---" * (len(keys) + 2) + "|")
            for kv, r in res["toy"]["results"].items():
                print(f"| {kv} | " + " | ".join(f"{r[window][k]:.3f}" for k in keys)
                      + f" | {r.get('latent_rel_rms', 0):.2e} |")
            print()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
