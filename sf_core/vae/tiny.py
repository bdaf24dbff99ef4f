"""Seeded random weights and tiny decoders for tests (real key names and layouts, small widths).

Trained VAE weights cannot be shipped with tests; these give every layer non-trivial weights (the real
Wan VAE zero-initialises attention projections, which would hide bugs) with activations of unit scale.
The draw order is fixed (parameters sorted by name, one CPU generator), so a seed gives the same weights
on every machine; the reference fixtures in tests/fixtures rely on that.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .taehv import TAEHV
from .wan_vae import WanVAE, WanVAEConfig


def random_state_dict(shapes: dict[str, torch.Size | tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """fp32 tensors for the given parameter shapes: norm gains ~ 1 + 0.2 N(0,1), weights ~ N(0, 1/fan_in),
    biases ~ 0.1 N(0,1). Drawn in sorted-name order from one generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        x = torch.randn(shape, generator=g, dtype=torch.float32)
        if name.endswith("gamma"):
            x = 1.0 + 0.2 * x
        elif len(shape) > 1:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            x = x / fan_in ** 0.5
        else:
            x = 0.1 * x
        out[name] = x
    return out


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter of `module` with `random_state_dict` values (in place); returns it."""
    sd = random_state_dict({k: v.shape for k, v in module.state_dict().items()}, seed)
    module.load_state_dict(sd)
    return module


def tiny_wan_vae(seed: int = 0, with_encoder: bool = True) -> WanVAE:
    """The Wan2.1 VAE at 1/12 width (WanVAEConfig.tiny(), 0.9 M parameters), random weights, eval mode."""
    return randomize(WanVAE(WanVAEConfig.tiny(), with_encoder=with_encoder), seed).eval()


def tiny_taehv(seed: int = 0) -> TAEHV:
    """TAEHV with widths (32, 16, 8, 8) instead of (256, 128, 64, 64) (0.16 M parameters), random weights."""
    return randomize(TAEHV(widths=(32, 16, 8, 8)), seed).eval()
