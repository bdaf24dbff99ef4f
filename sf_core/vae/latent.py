"""Wan2.1 latent normalisation: raw VAE space <-> the model space the transformer works in.

The Wan2.1 VAE encodes a video to raw latents `mu`; Wan, Self Forcing and ComfyUI's `Wan21` latent format
all feed the transformer `z = (mu - mean) / std` per channel, with the 16 values below (the same in
`wan/modules/vae.py`, `comfy/latent_formats.py` and diffusers' `AutoencoderKLWan` config).

Inside sf_core every latent is model space unless a name says `raw`. ComfyUI's LATENT dicts hold *raw*
latents, so nodes call `normalize` on the way in and `denormalize` on the way out.
"""
from __future__ import annotations

import torch

WAN21_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
LATENT_CHANNELS = len(WAN21_MEAN)


def _stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std shaped to broadcast over `[B, 16, T, H, W]` (or `[B, 16, H, W]`)."""
    if z.ndim < 2 or z.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"Wan2.1 latents have {LATENT_CHANNELS} channels on dim 1, got shape {tuple(z.shape)}; "
                         "pass [B, 16, T, H, W] (sf_core keeps latents channels-first)")
    shape = (1, LATENT_CHANNELS) + (1,) * (z.ndim - 2)
    # Compute in at least fp32 so a bf16 latent is not normalised with bf16-rounded statistics.
    dtype = torch.promote_types(z.dtype, torch.float32)
    mean = torch.tensor(WAN21_MEAN, dtype=dtype, device=z.device).view(shape)
    std = torch.tensor(WAN21_STD, dtype=dtype, device=z.device).view(shape)
    return mean, std


def normalize(z_raw: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents -> model space: `(z_raw - mean) / std`. Shape kept, dtype kept."""
    mean, std = _stats(z_raw)
    return ((z_raw.to(mean.dtype) - mean) / std).to(z_raw.dtype)


def denormalize(z: torch.Tensor) -> torch.Tensor:
    """Model-space latents -> raw VAE latents: `z * std + mean`. Shape kept, dtype kept."""
    mean, std = _stats(z)
    return (z.to(mean.dtype) * std + mean).to(z.dtype)
