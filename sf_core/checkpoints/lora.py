"""LoRA files on top of a Wan2.1 transformer, merged into its weights (LongLive's release: base + LoRA).

LongLive (NVlabs/LongLive v1.0) ships `models/longlive_base.pt` (a Self Forcing style training checkpoint) and
`models/lora.pt`: peft LoRA factors (rank 256, alpha 256, on every Linear inside the causal attention blocks:
self_attn / cross_attn q, k, v, o and ffn.0, ffn.2), saved as `{"generator_lora": ..., "critic_lora": ...,
"step": ...}` or as the bare peft state dict (its inference script reads both). Key names are in
`keymap.LORA_PREFIXES` / `keymap.LORA_SUFFIXES`.

Merging: W' = W + (alpha / rank) * B @ A, computed in float64 and stored in W's dtype; peft's unmerged forward
(W x + s * B (A x)) equals it up to rounding. alpha is not in the file: LongLive's configs use alpha = rank
(scale 1), the default here. The merged state dict is an ordinary Wan2.1 one: it converts to a single file for
ComfyUI's stock loader (`python -m sf_core.checkpoints.convert base.pt out.safetensors --lora lora.pt`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from . import keymap
from .files import CheckpointError, read

LORA_CONTAINER_KEYS = ("generator_lora", "lora", "state_dict", "model")


@dataclass
class LoraFactors:
    """Per Wan2.1 weight name: (A [r, in], B [out, r]); `family` when the container says whose it is."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    rank: int
    family: str | None
    path: str


def read_lora(path: str | Path) -> LoraFactors:
    raw = read(path)
    where = raw.files[0]
    family = None
    if raw.container == "pickle":
        obj = raw.obj
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{where} holds {type(obj).__name__}, not a LoRA state dict")
        if "generator_lora" in obj:
            family = "longlive"  # LongLive's training checkpoint layout
        sub = next((obj[k] for k in LORA_CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), obj)
        tensors = {k: v for k, v in sub.items() if isinstance(v, torch.Tensor)}
    else:
        tensors = raw.tensors
    lora = lora_from_tensors(tensors, str(where))
    lora.family = family
    return lora


def lora_from_tensors(tensors: Mapping[str, torch.Tensor], where: str = "the LoRA") -> LoraFactors:
    """LoRA factors from a flat state dict with peft's key names (as `get_peft_model_state_dict` writes them)."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for k, v in tensors.items():
        hit = keymap.lora_target(k)
        if hit is None:
            unknown.append(k)
            continue
        parts.setdefault(hit[0], {})[hit[1]] = v
    if not parts:
        raise CheckpointError(f"{where} holds no LoRA factors (keys like 'base_model.model.blocks.0.self_attn.q."
                              f"lora_A.weight'); its keys are {keymap.sample(tensors, 4)}. Is it a LoRA file?")
    if unknown:
        raise CheckpointError(f"{where}: keys that are not LoRA factors: {keymap.sample(unknown)}")
    factors, ranks = {}, set()
    for name, ab in sorted(parts.items()):
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"{where}: LoRA of {name} has only lora_{''.join(ab)}; the file is incomplete")
        a, b = ab["A"], ab["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{where}: LoRA of {name} has A {tuple(a.shape)} and B {tuple(b.shape)}; expected "
                                  "A [rank, in] and B [out, rank]")
        ranks.add(int(a.shape[0]))
        factors[name] = (a, b)
    if len(ranks) != 1:
        raise CheckpointError(f"{where}: LoRA ranks differ between layers ({sorted(ranks)}); not supported")
    return LoraFactors(factors, ranks.pop(), None, str(where))


def merge_lora(sd: Mapping[str, torch.Tensor], lora: LoraFactors, alpha: float | None = None,
               strength: float = 1.0) -> dict[str, torch.Tensor]:
    """A new state dict with W += strength * (alpha / rank) * B @ A for every factor (alpha default: rank)."""
    scale = strength * (float(lora.rank if alpha is None else alpha) / lora.rank)
    out = dict(sd)
    missing = [n for n in lora.factors if n not in sd]
    if missing:
        raise CheckpointError(f"{lora.path}: the LoRA patches weights the model does not have: "
                              f"{keymap.sample(missing)}; is it a LoRA for this model?")
    for name, (a, b) in lora.factors.items():
        w = sd[name]
        if tuple(w.shape) != (b.shape[0], a.shape[1]):
            raise CheckpointError(f"{lora.path}: LoRA of {name} is {tuple(b.shape[:1]) + tuple(a.shape[1:])} but the "
                                  f"weight is {tuple(w.shape)}; the LoRA belongs to another model size")
        delta = b.double() @ a.double()
        out[name] = (w.double() + scale * delta).to(w.dtype)
    return out


__all__ = ["LoraFactors", "read_lora", "lora_from_tensors", "merge_lora"]
