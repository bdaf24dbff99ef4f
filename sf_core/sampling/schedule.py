"""The flow-matching noise schedule of Self Forcing (a 1000-point shifted grid).

sigma_raw_i = 1 - i/1000 (i = 0..999), sigma = s*sigma_raw / (1 + (s-1)*sigma_raw), t = 1000*sigma, all in
float32 exactly as the official scheduler builds it. Every t -> sigma conversion is a *nearest grid point*
lookup on the grid of whoever converts (shift 5 for the generator, 8 for Wan teacher / critic wrappers);
this matters off the grid (DMD timesteps, sigma(0) = 0.00498 at s=5), and is exact at the four sampling
timesteps.

x_t = (1 - sigma) * x0 + sigma * noise; the network predicts the velocity noise - x0.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

DEFAULT_STEPS = (1000, 750, 500, 250)


@functools.lru_cache(maxsize=16)
def _grid(shift: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.linspace(1.0, 0.0, n + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return s, s * n


@dataclass(frozen=True)
class FlowSchedule:
    shift: float = 5.0
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        if not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")

    @property
    def sigmas(self) -> torch.Tensor:
        return _grid(float(self.shift), self.num_train_timesteps)[0]

    @property
    def timesteps(self) -> torch.Tensor:
        return _grid(float(self.shift), self.num_train_timesteps)[1]

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma of the grid point nearest to each timestep (float32, same shape as t)."""
        ts = self.timesteps.to(t.device)
        idx = torch.argmin((ts.view(*([1] * t.ndim), -1) - t.unsqueeze(-1).to(ts.dtype)).abs(), dim=-1)
        return self.sigmas.to(t.device)[idx]

    def warp(self, steps) -> torch.Tensor:
        """Map raw steps in (0, 1000] (e.g. 1000, 750, 500, 250) onto the shifted grid: t = grid[1000 - k].

        With shift 5 the default steps become 1000, 937.5, 833.33, 625 (float32).
        """
        steps = [float(s) for s in steps]
        for s in steps:
            if not (0 < s <= self.num_train_timesteps) or s != int(s):
                raise ValueError(f"denoising step {s} must be an integer in 1..{self.num_train_timesteps}")
        full = torch.cat([self.timesteps, torch.zeros(1)])
        return full[[self.num_train_timesteps - int(s) for s in steps]]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(1 - sigma) x0 + sigma noise for latents [B, C, F, H, W] and per-frame t [B, F]."""
        s = self.sigma(t)[:, None, :, None, None]
        return ((1 - s) * x0 + s * noise).to(noise.dtype)

    def training_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-timestep loss weight of the diffusion baselines: a bell around t=500, mean 1 over the grid."""
        ts = self.timesteps
        y = torch.exp(-2 * ((ts - self.num_train_timesteps / 2) / self.num_train_timesteps) ** 2)
        w = (y - y.min()) * (self.num_train_timesteps / (y - y.min()).sum())
        idx = torch.argmin((ts.view(*([1] * t.ndim), -1) - t.unsqueeze(-1).cpu()).abs(), dim=-1)
        return w[idx].to(t.device)


def parse_steps(text: str | list | tuple) -> list[int]:
    """Parse a denoising step list like "1000, 750, 500, 250" (a clear error for anything else)."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [s for s in str(text).replace(";", ",").replace(" ", ",").split(",") if s.strip()]
    out: list[int] = []
    for s in items:
        try:
            v = float(s)
        except (TypeError, ValueError):
            raise ValueError(f"bad denoising step {s!r} in {text!r}: expected integers in 1..1000 "
                             f"separated by commas, e.g. '1000,750,500,250'") from None
        if not 0 < v <= 1000 or v != int(v):  # range first: int(nan) / int(inf) would raise
            raise ValueError(f"denoising step {s!r} must be an integer in 1..1000 (got {text!r})")
        out.append(int(v))
    if not out:
        raise ValueError(f"empty denoising step list {text!r}; e.g. '1000,750,500,250'")
    if any(b >= a for a, b in zip(out, out[1:])):
        raise ValueError(f"denoising steps must strictly decrease, got {out}")
    return out
