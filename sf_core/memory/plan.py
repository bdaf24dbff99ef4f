"""Peak memory of a generation run, predicted before it runs: weights + KV cache + activations + decoder.

    plan = plan_memory(RunShape(WanConfig.wan_1_3b(), latent_hw=(60, 104), causal=default_causal(),
                                frames=21, dtype=torch.bfloat16, kv_dtype="int8", decoder="wan"))
    print(plan.describe());  check_fits(plan, torch.device("cuda"))    # ConfigError naming the knob to turn

What is counted (bytes of tensors, as an allocator sees them):
- weights: every parameter in its storage dtype (fp8 storage keeps the block Linears in fp8, the rest in bf16);
- kv_cache: self-attention K and V of every layer at the cache's capacity (the rolling window, or a global cache
  grown to the video: 21 frames, then x1.5 steps) in its storage format (`sf_core.cache.kv_quant`);
- text_cache: the cross-attention K and V of the prompt (text_len rows per layer);
- session: the clean latents the session holds (one per cached frame), the chunk being sampled, and the output
  latents when they are all kept;
- transformer: the live tensors of one chunk's forward at its peak -- inside the last FFN of a block: 11 rows of
  width dim (the block's input and output, the modulated inputs of attention and FFN, q, k, v, the previous
  layer's k, v, the cross-attention query and output) and 2 of width ffn_dim (the first Linear and its GELU),
  plus the decoded K, V of a layer when the cache is stored in another format, plus one weight cast to the compute
  dtype when the weights are stored in a smaller one; RoPE tables (CPU: the cached tables);
- decoder: its weights, its stream state, and its activations per call (per latent pixel and latent frame,
  measured once per decoder on CPU by bench/bench_memory_plan.py; they scale with the pixel count).
The transformer and the decoder run one after the other, so the peak is the resident parts plus the larger of
the two activation peaks. `runtime` adds what is not a tensor: the CUDA context and allocator slack (an
assumption, not measured here: no GPU was available) or, on CPU, the process itself.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

import torch

from ..config import CausalConfig, ConfigError, WanConfig
from ..cache.kv_quant import resolve

GIB = 2 ** 30
INITIAL_GLOBAL_FRAMES = 21  # a global cache starts with this many frame slots and grows x1.5 (kv_cache._grow)
ROPE_TABLE_ENTRIES = 8  # rope._freqs_cpu / _cos_sin_cpu keep this many chunk tables on the CPU
# Decoder activations per call, in elements per latent pixel per latent frame of the call (x element size). CPU:
# measured by bench/bench_memory_plan.py (the CPU convolutions unfold their input: im2col buffers dominate). CUDA:
# an estimate from the layer shapes (a few full-resolution activations live at once), not measured (no GPU here).
DECODER_ACT = {"cpu": {"wan": 430_000, "taehv": 57_000, "toy": 0, "none": 0},
               "cuda": {"wan": 150_000, "taehv": 65_000, "toy": 0, "none": 0}}
DECODER_STATE = {"wan": 151_328, "taehv": 5_376, "toy": 0, "none": 0}  # stream state, elements per latent pixel
RUNTIME = {"cuda": int(0.75 * GIB), "cpu": int(0.4 * GIB)}  # CUDA context + allocator slack / the process


def _elem(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class RunShape:
    """What a run allocates: the model, the video (latent size, chunking, frames), batch and dtypes."""

    config: WanConfig
    latent_hw: tuple[int, int]
    causal: CausalConfig
    frames: int  # latent frames of the video (a global cache grows to hold them)
    batch: int = 1
    dtype: torch.dtype = torch.float32  # compute dtype
    weight_dtype: torch.dtype | None = None  # storage of the transformer weights (default: dtype)
    kv_dtype: str = "auto"
    decoder: str = "none"  # "none", "wan" (Wan2.1 VAE), "taehv", "toy"
    decoder_dtype: torch.dtype | None = None  # default: dtype
    decoder_frames_per_call: int = 1  # latent frames per Wan VAE call (TAEHV takes the whole chunk)
    decoder_weight_bytes: int | None = None  # exact bytes of a loaded decoder (else from its architecture)
    keep_latents: bool = False
    device: str = "cpu"  # "cpu" or "cuda"
    weight_bytes: int | None = None  # exact bytes of a loaded transformer (else from the config and weight_dtype)
    merge_commit: bool = False  # merged commits: one call carries two chunks and copies the window's K/V per layer


@dataclass
class MemoryPlan:
    shape: RunShape
    parts: dict[str, int] = field(default_factory=dict)
    peak: int = 0  # tensors at the peak
    stage: str = ""  # "transformer" or "decoder": which activation peak sets it

    @property
    def total(self) -> int:
        """The peak plus the runtime (what must be free on the device)."""
        return self.peak + self.parts.get("runtime", 0)

    def describe(self) -> str:
        s = self.shape
        h, w = s.latent_hw
        unit, div = ("GiB", GIB) if self.total >= GIB else ("MiB", 2 ** 20)
        lines = [f"memory plan: {s.config.num_layers} layers x dim {s.config.dim}, latent {h}x{w}, "
                 f"{s.frames} latent frames, window "
                 f"{s.causal.window_frames or 'global'} sink {s.causal.sink_frames}, batch {s.batch}, "
                 f"{_name(s.dtype)} compute, weights {_name(s.weight_dtype or s.dtype)}, KV {s.kv_dtype}, "
                 f"decoder {s.decoder}, on {s.device}"]
        for k, v in self.parts.items():
            lines.append(f"  {k:<24} {v / div:9.3f} {unit}")
        lines.append(f"  {'peak (tensors)':<24} {self.peak / div:9.3f} {unit}   (activation peak: {self.stage})")
        lines.append(f"  {'needed with runtime':<24} {self.total / div:9.3f} {unit}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"parts": dict(self.parts), "peak": self.peak, "total": self.total, "stage": self.stage}


def _name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
        dtype, str(dtype).removeprefix("torch."))


def weight_bytes(cfg: WanConfig, dtype: torch.dtype) -> int:
    """Bytes of the transformer's parameters stored in `dtype` (fp8: block Linears fp8, the rest bf16)."""
    from ..checkpoints.keymap import is_block_linear_weight
    from ..model.transformer import expected_shapes

    fp8 = dtype == getattr(torch, "float8_e4m3fn", None)
    return sum(math.prod(shape) * (1 if fp8 and is_block_linear_weight(k) else _elem(torch.bfloat16 if fp8 else dtype))
               for k, shape in expected_shapes(cfg).items())


def cache_frames(causal: CausalConfig, frames: int) -> int:
    """Frame slots of the KV cache at the end of a video of `frames` latent frames."""
    if causal.rolling:
        return causal.window_frames
    cap = INITIAL_GLOBAL_FRAMES
    while cap < frames:
        cap = max(frames, math.ceil(cap * 1.5))
    return cap


def decoder_weight_bytes(kind: str, dtype: torch.dtype) -> int:
    if kind in ("none", "toy"):
        return 0
    with torch.device("meta"):
        if kind == "wan":
            from ..vae.wan_vae import WanVAE
            m = WanVAE(with_encoder=False)
        elif kind == "taehv":
            from ..vae.taehv import TAEHV
            m = TAEHV()
        else:
            raise ConfigError(f"decoder must be one of {sorted(DECODER_STATE)}, got {kind!r}")
    return sum(p.numel() for p in m.parameters()) * _elem(dtype)


def plan_memory(s: RunShape) -> MemoryPlan:
    """Predict the parts and the peak of a run (see the module docstring for what each part holds)."""
    cfg, b = s.config, s.batch
    h, w = s.latent_hw
    _, ph, pw = cfg.patch_size
    tpf = (h // ph) * (w // pw)
    e, d, f, heads, hd = _elem(s.dtype), cfg.dim, cfg.ffn_dim, cfg.num_heads, cfg.head_dim
    fmt = resolve(s.kv_dtype, s.dtype)
    cap = cache_frames(s.causal, s.frames)
    rows = cap * tpf
    parts = {"weights": s.weight_bytes if s.weight_bytes is not None else weight_bytes(cfg, s.weight_dtype or s.dtype),
             "kv_cache": 2 * cfg.num_layers * b * rows * fmt.bytes_per_row(heads, hd),
             "text_cache": 2 * cfg.num_layers * b * cfg.text_len * d * e}
    chunk = max(s.causal.chunk_size(0), s.causal.chunk_frames)
    frame_latent = b * cfg.in_dim * h * w * e
    parts["session"] = frame_latent * (min(cap, s.frames) + 4 * chunk + (s.frames if s.keep_latents else 0))
    calls = 2 if s.merge_commit else 1  # a merged call: the finished chunk and the next one
    n = b * chunk * tpf * calls  # tokens of one call
    act = (11 * d + 2 * f) * n * e
    if s.merge_commit:  # the next chunk's keys and values: the window without the evicted frames, plus its own
        act += 2 * b * (rows + chunk * tpf) * d * e
    if fmt.quantised or fmt.storage != s.dtype:  # the decoded earlier rows of one layer, K and V
        act += 2 * b * rows * d * e
    wd = s.weight_dtype or s.dtype
    if wd != s.dtype:  # CastLinear casts one weight at a time to the compute dtype
        act += f * d * e
    real = 8 if s.dtype in (torch.float32, torch.float64) else 4
    rope = calls * chunk * tpf * hd * real  # this call's complex table [L, 1, head_dim/2]
    if s.device == "cpu":  # the cached tables (complex, and the float64 cos/sin they come from)
        rope += ROPE_TABLE_ENTRIES * (2 * calls - 1) * chunk * tpf * hd * (real + 8)  # merged: 1- and 2-chunk tables
    parts["transformer_activations"] = act + rope
    de = _elem(s.decoder_dtype or s.dtype)
    per_call = s.decoder_frames_per_call if s.decoder == "wan" else chunk
    parts["decoder_weights"] = (s.decoder_weight_bytes if s.decoder_weight_bytes is not None
                                else decoder_weight_bytes(s.decoder, s.decoder_dtype or s.dtype))
    if s.decoder not in DECODER_STATE:
        raise ConfigError(f"decoder must be one of {sorted(DECODER_STATE)}, got {s.decoder!r}")
    parts["decoder_state"] = int(DECODER_STATE[s.decoder] * b * h * w * de)
    out_frames = 4 * chunk * b * 3 * (8 * h) * (8 * w) * 4 if s.decoder != "none" else 0  # fp32 frames of a chunk
    dev = "cuda" if s.device == "cuda" else "cpu"
    parts["decoder_activations"] = int(DECODER_ACT[dev][s.decoder] * b * h * w * per_call * de) + out_frames
    resident = sum(v for k, v in parts.items() if k not in ("transformer_activations", "decoder_activations"))
    stage = "transformer" if parts["transformer_activations"] >= parts["decoder_activations"] else "decoder"
    peak = resident + max(parts["transformer_activations"], parts["decoder_activations"])
    parts["runtime"] = RUNTIME["cuda" if s.device == "cuda" else "cpu"]
    return MemoryPlan(s, parts, peak, stage)


def available_bytes(device: torch.device | str) -> int:
    """Free memory of the device: CUDA `mem_get_info`; CPU the kernel's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _knobs(s: RunShape) -> list[tuple[str, RunShape]]:
    """Changes that lower the peak, in the order a user would try them, as (advice, changed shape)."""
    out = []
    if s.kv_dtype not in ("int8", "fp8"):
        out.append(("store the KV cache in 8 bits: --kv-dtype int8 (node: kv_cache_dtype)", replace(s, kv_dtype="int8")))
    if s.decoder == "wan":
        out.append(("decode with TAEHV instead of the Wan VAE (--vae taew2_1.pth)", replace(s, decoder="taehv")))
    win = s.causal.window_frames
    small = replace(s.causal, window_frames=s.causal.sink_frames + 3 * s.causal.chunk_frames)
    if win is None or win > small.window_frames:
        out.append((f"a shorter rolling window: --window {small.window_frames}", replace(s, causal=small)))
    if s.batch > 1:
        out.append(("batch 1", replace(s, batch=1)))
    h, w = s.latent_hw
    if h > 2 and w > 2:
        h2, w2 = max(2, h // 4 * 2), max(2, w // 4 * 2)
        out.append((f"a smaller video: --width {8 * w2} --height {8 * h2}", replace(s, latent_hw=(h2, w2))))
    return out


def check_fits(plan: MemoryPlan, device: torch.device | str, available: int | None = None, already: int = 0) -> None:
    """ConfigError if the run cannot fit the device's free memory, naming what would make it fit.

    already: bytes of the plan that are allocated now (weights loaded before the check): free memory lacks them."""
    free = (available_bytes(device) if available is None else int(available)) + int(already)
    if plan.total <= free:
        return
    top = sorted(((k, v) for k, v in plan.parts.items() if k != "runtime"), key=lambda kv: -kv[1])[:3]
    fixes, s = [], plan.shape
    for advice, changed in _knobs(s):
        p = plan_memory(changed)
        fixes.append(f"{advice} -> {p.total / GIB:.2f} GiB{' (fits)' if p.total <= free else ''}")
    where = "free on the GPU" if torch.device(device).type == "cuda" else "of RAM available"
    raise ConfigError(
        f"this run needs about {plan.total / GIB:.2f} GiB ({', '.join(f'{k} {v / GIB:.2f}' for k, v in top)} GiB; "
        f"--plan prints every part) but only {free / GIB:.2f} GiB is {where}"
        f"{' (counting the loaded weights)' if already else ''}. Options: " + "; ".join(fixes)
        + " (or --no-memory-check to try anyway)")


__all__ = ["RunShape", "MemoryPlan", "plan_memory", "check_fits", "available_bytes", "weight_bytes",
           "cache_frames", "decoder_weight_bytes", "GIB"]


def main(argv: list[str] | None = None) -> int:
    """`python -m sf_core.memory.plan --preset 1.3b --width 832 --height 480 --kv-dtype int8 --decoder wan`"""
    import argparse

    from ..sampling.session import default_causal

    ap = argparse.ArgumentParser(prog="python -m sf_core.memory.plan", description="Predict the peak memory of a "
                                 "run without loading anything (random-weight presets of the Wan2.1 sizes).")
    ap.add_argument("--preset", default="1.3b", choices=("1.3b", "14b", "tiny"))
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--frames", type=int, default=21, help="latent frames of the video")
    ap.add_argument("--window", default="21", help="rolling window in latent frames, or 'global'")
    ap.add_argument("--sink", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="bf16", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--weights", default=None, choices=("fp32", "bf16", "fp16", "fp8"), help="weight storage")
    ap.add_argument("--kv-dtype", default="auto")
    ap.add_argument("--decoder", default="wan", choices=sorted(DECODER_STATE))
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    a = ap.parse_args(argv)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}
    cfg = {"1.3b": WanConfig.wan_1_3b, "14b": WanConfig.wan_14b, "tiny": WanConfig.tiny}[a.preset]()
    causal = default_causal() if a.window == "21" and a.sink == 3 else (
        CausalConfig(3) if a.window == "global" else CausalConfig(3, window_frames=int(a.window), sink_frames=a.sink))
    plan = plan_memory(RunShape(cfg, (a.height // 8, a.width // 8), causal, a.frames, batch=a.batch,
                                dtype=dt[a.dtype], weight_dtype=dt[a.weights] if a.weights else None,
                                kv_dtype=a.kv_dtype, decoder=a.decoder, device=a.device))
    print(plan.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
