"""Tiny checkpoint files in each family's real on-disk format (layouts and key names as the official repos
write and read them), built from a tiny random Wan2.1 model. Used by tests/test_families.py.

- Self Forcing / Causal Forcing / Rolling Forcing / LongLive base: a training checkpoint `torch.save`d dict
  {"generator", "generator_ema", "critic", "step", ...} with `model.` prefixes (the generator is a
  WanDiffusionWrapper); the EMA copy of Self Forcing's EMA_FSDP keeps FSDP wrapper segments in its names
  (Rolling Forcing's and Causal Forcing's inference scripts strip `_fsdp_wrapped_module.`);
- CausVid: `autoregressive_checkpoint/model.pt` = {"generator": ...} only;
- LongLive LoRA: `lora.pt` = {"generator_lora", "critic_lora", "step"} holding peft factors
  `base_model.model.blocks.N.<linear>.lora_A.weight` [r, in] / `lora_B.weight` [out, r] on every Linear of the
  attention blocks; LongLive's merge script writes {"generator": merged, "checkpoint_format":
  "longlive_generator_merged_lora", "merged_lora": True, ...}.
"""
from __future__ import annotations

from pathlib import Path

import torch

LINEARS = [f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"] + ["ffn.0", "ffn.2"]


def prefixed(sd: dict, prefix: str = "model.") -> dict:
    return {prefix + k: v.clone() for k, v in sd.items()}


def fsdp_names(sd: dict) -> dict:
    """Names as an FSDP-wrapped WanDiffusionWrapper reports them (size-based wrapping of each block)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            i, rest = k.split(".", 2)[1:]
            k = f"blocks.{i}._fsdp_wrapped_module.{rest}"
        out["model._fsdp_wrapped_module." + k] = v.clone()
    return out


def training_checkpoint(path: Path, gen: torch.nn.Module, ema: torch.nn.Module | None = None,
                        critic: torch.nn.Module | None = None, ema_fsdp: bool = True, **extra) -> Path:
    obj = {"generator": prefixed(gen.state_dict())}
    if ema is not None:
        obj["generator_ema"] = fsdp_names(ema.state_dict()) if ema_fsdp else prefixed(ema.state_dict())
    if critic is not None:
        obj["critic"] = prefixed(critic.state_dict())
    obj.update({"step": 600, **extra})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def lora_factors(model: torch.nn.Module, rank: int = 4, seed: int = 0) -> dict:
    """peft LoRA factors for every Linear of every block (LongLive's targets), non-trivial B."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    out = {}
    for i in range(len(model.blocks)):
        for lin in LINEARS:
            w = sd[f"blocks.{i}.{lin}.weight"]
            out[f"base_model.model.blocks.{i}.{lin}.lora_A.weight"] = torch.randn(rank, w.shape[1], generator=g) * 0.1
            out[f"base_model.model.blocks.{i}.{lin}.lora_B.weight"] = torch.randn(w.shape[0], rank, generator=g) * 0.1
    return out


def longlive_lora(path: Path, factors: dict, container: bool = True) -> Path:
    obj = {"generator_lora": factors, "critic_lora": {k: v * 0 for k, v in factors.items()}, "step": 3000} \
        if container else factors
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def merged_by_hand(sd: dict, factors: dict, alpha: float | None = None) -> dict:
    """W + (alpha / r) B A, the independent expectation for a merged LoRA."""
    out = {k: v.clone() for k, v in sd.items()}
    for k, a in factors.items():
        if ".lora_A." not in k:
            continue
        name = k.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        b = factors[k.replace("lora_A", "lora_B")]
        r = a.shape[0]
        out[name] = out[name] + (alpha or r) / r * (b @ a)
    return out


def longlive_merged(path: Path, merged_sd: dict) -> Path:
    torch.save({"generator": prefixed(merged_sd), "checkpoint_format": "longlive_generator_merged_lora",
                "source_generator_ckpt": "longlive_base.pt", "source_lora_ckpt": "lora.pt", "dtype": "float32",
                "merged_lora": True}, path)
    return path
