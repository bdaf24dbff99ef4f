"""Benchmark (not a test): sf_core vs the official Self Forcing code on CPU, interleaved A/B in separate processes.

    python bench/bench_vs_reference.py --ref-dir /tmp/sfref --deps-dir /tmp/refdeps --rounds 5 --threads 2
    python bench/bench_vs_reference.py ... --config wide --threads 1 --modes rollout

The official code is not part of this project: export it (`git archive` of guandeh17/Self-Forcing, 33593df) into
`--ref-dir` and install what its model needs beside it (`pip install --target DEPS --no-deps diffusers==0.31.0
einops requests importlib_metadata zipp urllib3 idna certifi charset_normalizer`). It runs unmodified except for
what cannot run on a CPU, replaced at run time by this script (as for the parity fixtures, docs/fixtures.md):
flash-attn -> PyTorch SDPA in the tensors' dtype with the same key masking; the pipeline's hard-coded 30-layer /
1560-token / 12x128 cache shapes -> the benchmark model's; the text encoder, the VAE and the CUDA-only
low-memory helpers (`demo_utils.memory`, unused without low_memory) -> stubs (the timed region is
the pipeline's `inference`: every transformer call, its noise and the output copy; the stub decode is free).
Both sides use the same random weights, fp32, 4 steps (1000, 750, 500, 250 warped at shift 5), chunks of 3.

Modes: `rollout` = a whole video with a global cache (21 latent frames, 7 chunks, 35 transformer calls);
`rolling` = 36 frames (12 chunks) through a rolling window of 21 frames with a sink of 3 (steady state).
Each process runs one side and one mode `--repeat` times after a warm-up and prints a JSON line; the driver
alternates the order of the sides every round and reports the median and spread of wall and CPU time per side
and the ratio ours/ref of the medians, and the per-round ratios.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {  # WanConfig fields, latent size; `frames` of the rollout mode
    "small": dict(cfg=dict(dim=256, ffn_dim=1024, num_heads=2, num_layers=4, text_dim=64, text_len=32),
                  hw=(16, 16), frames=21),
    "wide": dict(cfg=dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=2, text_dim=64, text_len=32),
                 hw=(16, 16), frames=9),
}
STEPS = [1000, 750, 500, 250]


def _build(config: str):
    sys.path.insert(0, str(ROOT))
    from sf_core.config import WanConfig
    from sf_core.model.transformer import WanTransformer, randomize_weights

    spec = CONFIGS[config]
    cfg = WanConfig(**{**WanConfig.tiny().to_dict(), **spec["cfg"]})
    model = randomize_weights(WanTransformer(cfg), 0).eval().requires_grad_(False)
    ctx = torch.randn(1, 12, cfg.text_dim, generator=torch.Generator().manual_seed(1))
    return cfg, model, ctx, spec


def _frames_window(mode: str, spec: dict) -> tuple[int, int | None, int]:
    return (spec["frames"], None, 0) if mode == "rollout" else (36, 21, 3)


# ---------------------------------------------------------------------------------------------- ours
def run_ours(config: str, mode: str, merge: bool = False):
    from sf_core.config import CausalConfig
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import SamplingSettings, new_session

    cfg, model, ctx, spec = _build(config)
    frames, window, sink = _frames_window(mode, spec)
    st = SamplingSettings(steps=tuple(STEPS), causal=CausalConfig(chunk_frames=3, window_frames=window,
                                                                   sink_frames=sink), positions="absolute",
                          merge_commit=merge)

    def once():
        with torch.no_grad():
            s = new_session(model, ctx, latent_hw=spec["hw"], seed=0, settings=st)
            return generate(model, s, num_frames=frames)
    return once


# ---------------------------------------------------------------------------------------------- reference
def _sdpa(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None, causal=False,
          window_size=(-1, -1), deterministic=False, dtype=None, version=None, fa_version=None):
    """flash-attn's varlen call as SDPA in q's dtype: keys past k_lens masked, output [B, Lq, H, D] contiguous."""
    if q_scale is not None:
        q = q * q_scale
    mask = None
    if k_lens is not None:
        mask = (torch.arange(k.shape[1], device=k.device)[None, :] < k_lens[:, None])[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                           attn_mask=mask, is_causal=causal, scale=softmax_scale)
    return out.transpose(1, 2).contiguous()


def _stub(name: str, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def run_ref(config: str, mode: str, ref_dir: str, deps_dir: str | None):
    sys.path[:0] = [ref_dir] + ([deps_dir] if deps_dir else [])
    for pkg in ("wan", "wan.modules", "pipeline", "utils", "demo_utils"):  # skip __init__s importing everything
        _stub(pkg, __path__=[os.path.join(ref_dir, *pkg.split("."))])
    import wan.modules.attention as attn
    attn.flash_attention = attn.attention = _sdpa
    for name, sym in (("wan.modules.tokenizers", "HuggingfaceTokenizer"), ("wan.modules.vae", "_video_vae"),
                      ("wan.modules.t5", "umt5_xxl")):
        _stub(name, **{sym: None})
    _stub("demo_utils.memory", gpu=None, get_cuda_free_memory_gb=None, DynamicSwapInstaller=None,  # CUDA-only
          move_model_to_device_with_memory_preservation=None)
    from pipeline.causal_inference import CausalInferencePipeline
    from utils.scheduler import FlowMatchScheduler
    from utils.wan_wrapper import WanDiffusionWrapper
    from wan.modules.causal_model import CausalWanModel

    cfg, ours, ctx, spec = _build(config)
    frames, window, sink = _frames_window(mode, spec)
    h, w = spec["hw"]
    tpf = (h // 2) * (w // 2)
    ref = CausalWanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=cfg.text_len, in_dim=16, dim=cfg.dim,
                         ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=cfg.text_dim, out_dim=16,
                         num_heads=cfg.num_heads, num_layers=cfg.num_layers, qk_norm=True, cross_attn_norm=True,
                         eps=cfg.eps, local_attn_size=window or -1, sink_size=sink)
    ref.load_state_dict(ours.state_dict(), strict=True)
    ref.eval().requires_grad_(False)
    for blk in ref.blocks:  # the hard-coded 1560-token frames of the attention window
        blk.self_attn.max_attention_size = (window or 21) * tpf
    gen = WanDiffusionWrapper.__new__(WanDiffusionWrapper)
    torch.nn.Module.__init__(gen)
    gen.model, gen.uniform_timestep, gen.seq_len = ref, False, frames * tpf
    gen.scheduler = FlowMatchScheduler(shift=5.0, sigma_min=0.0, extra_one_step=True)
    gen.scheduler.set_timesteps(1000, training=True)
    gen.post_init()

    class Text:
        def __call__(self, text_prompts):
            return {"prompt_embeds": ctx.expand(len(text_prompts), -1, -1)}

    class Vae:
        def decode_to_pixel(self, x, use_cache=False):
            return x / 64  # inside the pipeline's clamp to [0, 1] after x * 0.5 + 0.5: latents = (out - 0.5) * 128

    args = types.SimpleNamespace(denoising_step_list=STEPS, warp_denoising_step=True, num_frame_per_block=3,
                                 independent_first_frame=False, context_noise=0)
    with contextlib.redirect_stdout(io.StringIO()):
        pipe = CausalInferencePipeline(args, device="cpu", generator=gen, text_encoder=Text(), vae=Vae())
    pipe.num_transformer_blocks, pipe.frame_seq_length = cfg.num_layers, tpf
    heads, hd = cfg.num_heads, cfg.head_dim

    def init_kv(batch_size, dtype, device):  # the pipeline's cache layout, sized for this model
        size = (window or 21) * tpf
        pipe.kv_cache1 = [{"k": torch.zeros([batch_size, size, heads, hd], dtype=dtype, device=device),
                           "v": torch.zeros([batch_size, size, heads, hd], dtype=dtype, device=device),
                           "global_end_index": torch.tensor([0], dtype=torch.long, device=device),
                           "local_end_index": torch.tensor([0], dtype=torch.long, device=device)}
                          for _ in range(cfg.num_layers)]

    def init_cross(batch_size, dtype, device):
        pipe.crossattn_cache = [{"k": torch.zeros([batch_size, cfg.text_len, heads, hd], dtype=dtype, device=device),
                                 "v": torch.zeros([batch_size, cfg.text_len, heads, hd], dtype=dtype, device=device),
                                 "is_init": False} for _ in range(cfg.num_layers)]
    pipe._initialize_kv_cache, pipe._initialize_crossattn_cache = init_kv, init_cross

    def once():
        pipe.kv_cache1 = None  # a fresh cache per video, as ours
        noise = torch.randn(1, frames, 16, h, w, generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            return pipe.inference(noise, ["a prompt"])
    return once


# ---------------------------------------------------------------------------------------------- driver
def child(args) -> int:
    torch.set_num_threads(args.threads)
    once = run_ours(args.config, args.mode, args.merge) if args.side == "ours" else \
        run_ref(args.config, args.mode, args.ref_dir, args.deps_dir)
    once()  # warm-up (allocator, caches, lazy imports)
    wall, cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        once()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(json.dumps({"side": args.side, "mode": args.mode, "config": args.config, "threads": args.threads,
                      "wall_s": wall, "cpu_s": cpu}))
    return 0


def _spread(xs):
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def drive(args) -> int:
    results = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for mode in args.modes.split(","):
        rows = {"ours": {"wall": [], "cpu": []}, "ref": {"wall": [], "cpu": []}, "ratio_wall": [], "ratio_cpu": []}
        for r in range(args.rounds):
            order = ("ref", "ours") if r % 2 == 0 else ("ours", "ref")
            got = {}
            for side in order:
                cmd = [sys.executable, __file__, "--child", "--side", side, "--mode", mode, "--config", args.config,
                       "--threads", str(args.threads), "--repeat", str(args.repeat), "--ref-dir", args.ref_dir]
                if args.deps_dir:
                    cmd += ["--deps-dir", args.deps_dir]
                if args.merge:
                    cmd += ["--merge"]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
                got[side] = json.loads(out.strip().splitlines()[-1])
                rows[side]["wall"] += got[side]["wall_s"]
                rows[side]["cpu"] += got[side]["cpu_s"]
            for k in ("wall", "cpu"):
                rows[f"ratio_{k}"].append(statistics.median(got["ours"][f"{k}_s"])
                                          / statistics.median(got["ref"][f"{k}_s"]))
            print(f"{mode} round {r}: ours/ref wall {rows['ratio_wall'][-1]:.3f} cpu {rows['ratio_cpu'][-1]:.3f}",
                  file=sys.stderr, flush=True)
        results[mode] = rows
        print(f"{args.config} {mode} {args.threads} thread(s): ours wall {_spread(rows['ours']['wall'])} s, cpu "
              f"{_spread(rows['ours']['cpu'])} s | ref wall {_spread(rows['ref']['wall'])} s, cpu "
              f"{_spread(rows['ref']['cpu'])} s | ours/ref medians wall "
              f"{statistics.median(rows['ours']['wall']) / statistics.median(rows['ref']['wall']):.3f}, cpu "
              f"{statistics.median(rows['ours']['cpu']) / statistics.median(rows['ref']['cpu']):.3f}; per-round "
              f"wall {_spread(rows['ratio_wall'])}")
    print(json.dumps({"config": args.config, "threads": args.threads, "rounds": args.rounds, "repeat": args.repeat,
                      "merge_commit": args.merge,
                      "load": os.getloadavg(), "results": results}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref-dir", required=True, help="an export of guandeh17/Self-Forcing")
    ap.add_argument("--deps-dir", help="a pip --target folder with diffusers 0.31.0 and einops")
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--modes", default="rollout,rolling")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per process (after one warm-up)")
    ap.add_argument("--merge", action="store_true", help="ours with merged commits (SamplingSettings.merge_commit): "
                    "each chunk's context pass inside the next chunk's first call; the last chunk's commit is not "
                    "needed for the video and is left to a continuation")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--side", choices=("ours", "ref"), help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    return child(args) if args.child else drive(args)


if __name__ == "__main__":
    raise SystemExit(main())
