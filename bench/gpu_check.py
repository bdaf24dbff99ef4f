"""One prepared GPU check (<= 8 minutes on one GPU, random full-size 1.3B weights, no downloads): prints one JSON.

    python bench/gpu_check.py                 # on a CUDA machine
    python bench/gpu_check.py --smoke         # tiny sizes on CPU: checks the script itself (about a minute)

Parts of the JSON:
  parity       fp32 on the GPU (TF32 off) vs the CPU fixtures of the official code (tests/fixtures/sf_ref_*):
               the training forward (part A) and every recorded KV-cache rollout (parts B/D), max |diff|;
  bf16_drift   the 1.3B model at 832x480, 21 latent frames: the bf16 run's latents vs the fp32 run's (same
               noise), relative RMS per chunk;
  runs         per (decoder, compile, kv): FPS end to end (sampling + decode), time to first frame, chunk
               p50 / p90, peak GPU memory and the memory planner's prediction, for 81 frames (7 chunks) and a
               60 s video (rolling window 21 + sink 3; run with TAEHV only, to fit the time budget); a run that
               would pass --budget-s is skipped and named;
  cuda_graphs  one 81-frame run with sf_core.model.accel CUDA graphs (off by default everywhere else), or its error.
Compile = sf_core.model.accel.compile_blocks (its first video, which compiles, is excluded from the timings and
reported as compile_s); kv = the KV-cache storage ("auto" = bf16, "int8").
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench_sampler_gpu import make_decoder, measure, random_transformer  # noqa: E402

from sf_core.model import accel  # noqa: E402
from sf_core.config import CausalConfig, WanConfig  # noqa: E402
from sf_core.memory.plan import RunShape, plan_memory  # noqa: E402
from sf_core.sampling.pipeline import generate  # noqa: E402
from sf_core.sampling.session import SamplingSettings, default_causal, new_session  # noqa: E402


def parity(device) -> dict:
    """Max |diff| of GPU fp32 outputs vs the recorded official outputs (CPU fixtures)."""
    from sf_core.model.attention import BlockCausalMask
    from sf_core.sampling.denoiser import Denoiser
    from sf_core.parity.fixture import Fixture
    from sf_core.model.forward import wan_forward
    from sf_core.cache.kv_cache import KVCache
    from sf_core.sampling.sampler import replay_noise, rollout
    from sf_core.sampling.schedule import FlowSchedule

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    out = {}
    for path in sorted((ROOT / "tests" / "fixtures").glob("sf_ref_*.safetensors")):
        fx = Fixture.load(path)
        m, ctx = fx.model().to(device), fx.context().to(device)
        res = {}
        if "train/in_noisy" in fx.tensors:
            x, t = fx.latent("train/in_noisy").to(device), fx.tensors["train/timestep"].float().to(device)
            mask = BlockCausalMask(tuple(CausalConfig(fx.meta["num_frame_per_block"]).chunk_bounds(x.shape[2])),
                                   fx.tokens_per_frame)
            with torch.no_grad():
                flow = wan_forward(m, x, t, ctx, mask=mask)
            res["train_flow"] = float((flow.cpu().double() - fx.latent("train/flow_pred").double()).abs().max())
        for run in fx.runs():
            p, nf, cfg = run["prefix"], run["nf"], fx.config
            cache = KVCache.allocate(cfg.num_layers, 1, cfg.num_heads, cfg.head_dim, fx.tokens_per_frame,
                                     frames=run["rows"] // fx.tokens_per_frame, window_frames=run["window"],
                                     sink_frames=run["sink"], strict=False, device=device)
            draws = [fx.draw(f"{p}/noise{d['draw']:02d}/eps", nf).to(device) for d in run["draws"]]
            den = Denoiser(m, FlowSchedule(fx.meta["timestep_shift"]), ctx)
            noise = fx.latent(f"{p}/noise").to(device)
            with torch.no_grad():
                lat = rollout(den, cache, batch=noise.shape[0], num_frames=run["num_frames"],
                              latent_hw=noise.shape[-2:], timesteps=fx.timesteps, causal=CausalConfig(nf),
                              noise_fn=replay_noise(draws), noise=noise, device=device)
            res[f"rollout_{p}"] = float((lat.cpu().double() - fx.latent(f"{p}/output_latents").double()).abs().max())
        out[path.stem] = res
    worst = max(v for r in out.values() for v in r.values())
    return {"fixtures": out, "max_abs": worst, "ok_1e-4": worst <= 1e-4}


def bf16_drift(cfg, latent_hw, device, frames: int) -> dict:
    lat = {}
    ctx = 0.5 * torch.randn(1, cfg.text_len, cfg.text_dim, generator=torch.Generator().manual_seed(1))
    for dt in (torch.float32, torch.bfloat16):
        model = random_transformer(cfg, device, dt)
        s = new_session(model, ctx.to(device, dt), latent_hw=latent_hw, seed=0, dtype=dt, device=device)
        with torch.no_grad():
            lat[dt] = generate(model, s, num_frames=frames).float().cpu()
        del model, s
        if device.type == "cuda":
            torch.cuda.empty_cache()
    a, b = lat[torch.float32], lat[torch.bfloat16]
    rms = a.pow(2).mean().sqrt()
    per = [float((b[:, :, i:i + 3] - a[:, :, i:i + 3]).pow(2).mean().sqrt() / rms) for i in range(0, frames, 3)]
    return {"frames": frames, "rel_rms_per_chunk": per, "rel_rms_max": max(per)}


def one_run(model, decoder, ctx, *, latent_hw, chunks, kv, device, dtype, plan_shape) -> dict:
    out = measure(model, decoder, ctx, latent_hw=latent_hw, chunks=chunks, device=device, dtype=dtype,
                  settings=SamplingSettings(causal=default_causal(), kv_dtype=kv))
    out["planned_peak_gib"] = plan_memory(plan_shape).peak / 2 ** 30
    if "peak_gpu_mem_gib" in out:
        out["peak_gib"] = out.pop("peak_gpu_mem_gib")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model and sizes on CPU (checks the script)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="skip runs that would start after this many s")
    ap.add_argument("--long-seconds", type=float, default=60.0)
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    if a.smoke:
        device, dtype = torch.device("cpu"), torch.float32
        cfg, latent_hw, short, drift_frames = (WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=64,
                                                         text_len=16), (4, 6), 2, 6)
        long_chunks = 4
    else:
        if not torch.cuda.is_available():
            print(json.dumps({"error": "no CUDA device: run with --smoke to check the script on CPU"}))
            return 2
        device, dtype = torch.device("cuda"), torch.bfloat16
        cfg, latent_hw, short, drift_frames = WanConfig.wan_1_3b(), (60, 104), 7, 21
        long_chunks = math.ceil((a.long_seconds * 16 - 1) / 4 / 3)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.processor()}",
              "torch": torch.__version__, "smoke": a.smoke, "size": f"{latent_hw[1] * 8}x{latent_hw[0] * 8}"}
    report["parity"] = parity(device)
    report["bf16_drift"] = bf16_drift(cfg, latent_hw, device, drift_frames)
    model = random_transformer(cfg, device, dtype)
    ctx = 0.5 * torch.randn(1, cfg.text_len, cfg.text_dim, device=device, dtype=dtype)
    runs, skipped = {}, []
    for compile_on in (False, True):
        if compile_on:
            accel.compile_blocks(model)
        for dec_kind in ("wan", "taehv"):
            decoder = make_decoder(dec_kind, device, dtype, a.smoke)
            for kv in ("auto", "int8"):
                for length, chunks in (("81_frames", short), ("60_s", long_chunks)):
                    name = f"{dec_kind}/compile_{'on' if compile_on else 'off'}/kv_{kv}/{length}"
                    if length == "60_s" and dec_kind == "wan":
                        continue
                    if time.perf_counter() - t_start > a.budget_s:
                        skipped.append(name)
                        continue
                    shape = RunShape(cfg, latent_hw, default_causal(), 3 * chunks, dtype=dtype, kv_dtype=kv,
                                     decoder=dec_kind, device=device.type,
                                     decoder_weight_bytes=sum(p.numel() * p.element_size()
                                                              for p in decoder.parameters()))
                    t0 = time.perf_counter()
                    one_run(model, decoder, ctx, latent_hw=latent_hw, chunks=2, kv=kv, device=device, dtype=dtype,
                            plan_shape=shape)  # warm-up (and compilation)
                    warm = time.perf_counter() - t0
                    runs[name] = one_run(model, decoder, ctx, latent_hw=latent_hw, chunks=chunks, kv=kv,
                                         device=device, dtype=dtype, plan_shape=shape)
                    runs[name]["warmup_s"] = warm
    accel.disable(model)
    report["runs"], report["skipped_for_time"] = runs, skipped
    try:
        dec = make_decoder("taehv", device, dtype, a.smoke)
        graphs = accel.enable_cuda_graphs(model) if device.type == "cuda" else None
        shape = RunShape(cfg, latent_hw, default_causal(), 3 * short, dtype=dtype, decoder="taehv", device=device.type)
        res = one_run(model, dec, ctx, latent_hw=latent_hw, chunks=short, kv="auto", device=device, dtype=dtype,
                      plan_shape=shape) if graphs is not None else "not on CUDA"
        report["cuda_graphs"] = res if isinstance(res, str) else {**res, "captures": graphs.captures,
                                                                   "replays": graphs.replays}
    except Exception as exc:  # noqa: BLE001 - reported, the rest of the check stands
        report["cuda_graphs"] = f"error: {type(exc).__name__}: {exc}"
    finally:
        accel.disable(model)
    report["elapsed_s"] = time.perf_counter() - t_start
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
