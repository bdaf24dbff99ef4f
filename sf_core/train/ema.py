"""Exponential moving average of the generator's trainable weights (the official `EMA_FSDP` behaviour).

The shadow is float32 and has the placement of the parameters (a DTensor shard under FSDP2, so every rank
keeps only its shard and checkpoints reshard it like any parameter). It is created from the current weights
once `step >= start_step` and updated after every generator optimiser step:
shadow <- decay * shadow + (1 - decay) * param.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn


@dataclass
class EMA:
    decay: float
    shadow: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    @torch.no_grad()
    def create(cls, model: nn.Module, decay: float) -> "EMA":
        return cls(decay, {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad})

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for n, s in self.shadow.items():
            s.mul_(self.decay).add_(params[n].detach().float(), alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f"EMA state lacks {missing[:4]}{'...' if len(missing) > 4 else ''}")
        for n, s in self.shadow.items():
            s.copy_(state[n])


def maybe_start(ema: EMA | None, model: nn.Module, step: int, decay: float, start_step: int) -> EMA | None:
    """The EMA object after `step` updates: created at the first step >= start_step (decay 0 = never)."""
    if ema is None and decay > 0 and step >= start_step:
        return EMA.create(model, decay)
    return ema


def _reshard(model: nn.Module) -> None:
    """Drop FSDP2's unsharded parameters (the root keeps them after forward), so the next forward all-gathers
    the shards as they are now."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


@contextmanager
def ema_weights(model: nn.Module, ema: EMA | None):
    """Inside the block `model` computes with the EMA shadow's weights (no grad), afterwards with its own again.

    The weights are swapped in place (shards under FSDP2, which is resharded on both sides of the swap). Use it
    *before* any grad-carrying forward of the same step: the swap bumps the parameters' versions. With no EMA
    the block runs on the model's own weights.
    """
    if ema is None:
        yield model
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        saved = {n: params[n].detach().clone() for n in ema.shadow}
        _reshard(model)
        for n, s in ema.shadow.items():
            params[n].copy_(s.to(params[n].dtype))
    try:
        with torch.no_grad():
            yield model
    finally:
        with torch.no_grad():
            _reshard(model)
            for n, s in saved.items():
                params[n].copy_(s)
