"""A small LoRA wrapper for LoRA-only training (no peft dependency: ~80 lines do what we need).

`apply_lora(model, rank, ...)` replaces every nn.Linear whose module name matches one of the fnmatch
`targets` by `LoRALinear(base, rank, alpha)`: y = base(x) + scale * up(down(dropout(x))), scale = alpha / rank,
`down` ~ kaiming-uniform, `up` = 0 (the wrapped model starts equal to the base). The base weights are frozen.
`merged_state_dict(model)` folds the adapters back (W + scale * up @ down) under the original Wan key
names, which is what export writes; `lora_state_dict` holds only the adapters.
"""
from __future__ import annotations

import fnmatch
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .rng import keyed_generator


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None, dropout: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank = rank
        self.scale = float(alpha if alpha is not None else rank) / rank
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.lora_down = nn.Parameter(torch.empty(rank, base.in_features, dtype=torch.float32,
                                                  device=base.weight.device))
        self.lora_up = nn.Parameter(torch.zeros(base.out_features, rank, dtype=torch.float32,
                                                device=base.weight.device))
        # a seeded generator: every rank must start from identical adapters before FSDP shards them
        nn.init.kaiming_uniform_(self.lora_down, a=math.sqrt(5), generator=generator)
        base.requires_grad_(False)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        h = F.linear(self.dropout(x), self.lora_down.to(x.dtype))
        return y + F.linear(h, self.lora_up.to(x.dtype)) * self.scale

    def delta(self) -> torch.Tensor:
        """scale * up @ down in float32, shaped like the base weight."""
        return (self.lora_up.float() @ self.lora_down.float()) * self.scale


def apply_lora(model: nn.Module, rank: int, targets=("blocks.*",), alpha: float | None = None,
               dropout: float = 0.0, seed: int = 0) -> list[str]:
    """Wrap matching nn.Linear modules in place; returns the wrapped module names (error if none match)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _inside_lora(model, n)
             and any(fnmatch.fnmatchcase(n, pat) for pat in targets)]
    if not names:
        raise ValueError(f"lora.targets {list(targets)} match no Linear layer; examples of names: "
                         f"{[n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:6]}")
    for p in model.parameters():
        p.requires_grad_(False)
    for n in names:
        parent, _, child = n.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        g = keyed_generator(seed, "lora", n)
        setattr(holder, child, LoRALinear(getattr(holder, child), rank, alpha, dropout, generator=g))
    return names


def _inside_lora(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    return any(isinstance(model.get_submodule(".".join(parts[:i])), LoRALinear) for i in range(1, len(parts)))


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def merge_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold adapter entries of a (full, unsharded) state dict into the base weights, Wan key names out.

    `x.base.weight` + `x.lora_up` @ `x.lora_down` * scale -> `x.weight`; the scale is stored per layer as
    `x.lora_scale` by `lora_scales`, else 1.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith((".lora_up", ".lora_down", ".lora_scale")):
            continue
        if ".base." in k:
            prefix, _, leaf = k.rpartition(".base.")
            if leaf == "weight" and f"{prefix}.lora_up" in state:
                up, down = state[f"{prefix}.lora_up"].float(), state[f"{prefix}.lora_down"].float()
                scale = float(state.get(f"{prefix}.lora_scale", torch.tensor(1.0)))
                v = (v.float() + (up @ down) * scale).to(v.dtype)
            out[f"{prefix}.{leaf}"] = v
        else:
            out[k] = v
    return out


def lora_scales(model: nn.Module) -> dict[str, torch.Tensor]:
    """`name.lora_scale` entries to add to a state dict before `merge_state_dict`."""
    return {f"{n}.lora_scale": torch.tensor(m.scale) for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights (e.g. to ship a LoRA instead of merged weights)."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_up", ".lora_down"))}
