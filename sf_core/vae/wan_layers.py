"""Layers of the Wan2.1 causal 3-D VAE, with its causal feature cache made explicit.

Module and parameter names follow `wan/modules/vae.py` (and ComfyUI's `comfy/ldm/wan/vae.py`), so the
original `Wan2.1_VAE.pth` and ComfyUI's `wan_2.1_vae.safetensors` load without renaming: a residual block
is `residual.{0: norm, 2: conv, 3: norm, 6: conv}` + `shortcut`, a resampler is `resample.1` + `time_conv`,
norms store `gamma`.

The VAE runs a video a few frames at a time; every 3x3x3 causal convolution needs the last two frames it
saw before the current input. The reference keeps those in a list mutated through the call. Here the
caches travel in a `CacheCursor`: it reads the previous call's slots in order and collects the new ones,
so a call never changes the state it was given (two streams can share the module; a chunk can be
decoded twice from one state). Slot order = the order the layers run, one slot per cached convolution.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .protocol import FIRST_FRAME_DONE

CACHE_T = 2  # frames of history a 3-tap causal convolution needs


class CacheCursor:
    """Walks the slots of a previous state (`old`, None = stream start) and gathers the next state."""

    def __init__(self, old: Sequence[Any] | None):
        self.old = old
        self.new: list[Any] = []

    def peek(self) -> Any:
        """The previous call's value for the slot about to be written (None at stream start)."""
        if self.old is None:
            return None
        i = len(self.new)
        if i >= len(self.old):
            raise ValueError(f"decoder state has {len(self.old)} cache slots but the model needs more; the state "
                             "was made by a different VAE configuration")
        return self.old[i]

    def push(self, value: Any) -> None:
        self.new.append(value)


class CausalConv3d(nn.Conv3d):
    """Conv3d padded only on the past side of time (2·pad frames), optionally with cached past frames
    instead of zeros. Spatial padding is symmetric as in a normal convolution."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        pt, ph, pw = self.padding
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)
        self.padding = (0, 0, 0)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, T, H, W]; past [B, C, <=2, H, W] (frames before x) or None (zeros)."""
        pad_t = self.time_pad
        if past is not None and pad_t > 0:
            x = torch.cat([past.to(x.dtype), x], dim=2)
            pad_t -= past.shape[2]
        return super().forward(F.pad(x, self.space_pad + (pad_t, 0)))


def cached_conv(conv: CausalConv3d, x: torch.Tensor, cur: CacheCursor) -> torch.Tensor:
    """Run a 3-tap causal conv on x with the cached past, and cache x's last two frames for the next call
    (topped up with the previous last frame when x is a single frame)."""
    past = cur.peek()
    keep = x[:, :, -CACHE_T:]
    if keep.shape[2] < CACHE_T and past is not None:
        keep = torch.cat([past[:, :, -1:].to(keep.dtype), keep], dim=2)
    cur.push(keep.clone())  # clone: a view would keep the whole activation alive
    return conv(x, past)


class RMSNorm(nn.Module):
    """Channel-first RMS norm: L2-normalise over channels, times sqrt(C) and a per-channel gain `gamma`."""

    def __init__(self, dim: int, images: bool = True):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma.to(x.dtype)


def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D module to each frame of [B, C, T, H, W]."""
    b, c, t, h, w = x.shape
    y = fn(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
    return y.reshape(b, t, *y.shape[1:]).permute(0, 2, 1, 3, 4)


class Upsample2x(nn.Module):
    """Nearest-neighbour 2x spatial upsampling (exact in any dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Resample(nn.Module):
    """Spatial 2x up/down-sampling per frame, optionally with a causal temporal 2x step.

    upsample3d: a (3,1,1) causal conv doubles the channels, which become two frames per input frame; the
    very first frame of a stream is not doubled (so latent frame 0 -> 1 frame), and the frame after it
    sees zeros, not frame 0, as its past (the reference's behaviour, kept for exact equality).
    downsample3d: a stride-2 (3,1,1) conv over [last cached frame, x]; the first chunk passes through.
    """

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"Resample mode {mode!r} not in {self.MODES}")
        self.mode = mode
        if mode.startswith("up"):
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    def forward(self, x: torch.Tensor, cur: CacheCursor) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._time_up(x, cur)
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d":
            x = self._time_down(x, cur)
        return x

    def _time_up(self, x: torch.Tensor, cur: CacheCursor) -> torch.Tensor:
        past = cur.peek()
        if past is None:  # first frame of the stream: no temporal upsampling
            cur.push(FIRST_FRAME_DONE)
            return x
        keep = x[:, :, -CACHE_T:]
        if keep.shape[2] < CACHE_T:
            prev = torch.zeros_like(keep) if past is FIRST_FRAME_DONE else past[:, :, -1:].to(keep.dtype)
            keep = torch.cat([prev, keep], dim=2)
        y = self.time_conv(x, None if past is FIRST_FRAME_DONE else past)
        cur.push(keep.clone())
        b, c, t, h, w = x.shape
        # channels [0:c] -> the earlier frame, [c:2c] -> the later one, interleaved along time
        y = y.reshape(b, 2, c, t, h, w)
        return torch.stack((y[:, 0], y[:, 1]), dim=3).reshape(b, c, 2 * t, h, w)

    def _time_down(self, x: torch.Tensor, cur: CacheCursor) -> torch.Tensor:
        past = cur.peek()
        if past is None:  # first chunk (one frame): passes through, is remembered
            cur.push(x.clone())
            return x
        cur.push(x[:, :, -1:].clone())
        return self.time_conv(torch.cat([past[:, :, -1:].to(x.dtype), x], dim=2))


class ResidualBlock(nn.Module):
    """norm -> SiLU -> causal conv -> norm -> SiLU -> (dropout slot) -> causal conv, plus a 1x1x1 shortcut."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # Index layout is the checkpoint's: residual.0/.2/.3/.6 hold parameters.
        self.residual = nn.Sequential(
            RMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, images=False), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cur: CacheCursor) -> torch.Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = cached_conv(layer, x, cur) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no attention across time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cur: CacheCursor | None = None) -> torch.Tensor:
        return x + _per_frame(self._attend, x)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(n, 1, 3 * c, h * w).transpose(2, 3).contiguous()
        q, k, v = qkv.chunk(3, dim=-1)  # [n, 1, hw, c] each
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        return self.proj(y.transpose(1, 2).reshape(n, c, h, w))


def head(in_dim: int, out_dim: int) -> nn.Sequential:
    """Output head: norm -> SiLU -> 3x3x3 causal conv (keys head.0.gamma, head.2.weight/bias)."""
    return nn.Sequential(RMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1))


def run_cached(layers: nn.Module, x: torch.Tensor, cur: CacheCursor) -> torch.Tensor:
    """Run a Sequential of blocks / plain layers, passing the cursor to blocks and cached convs."""
    for layer in layers:
        if isinstance(layer, CausalConv3d):
            x = cached_conv(layer, x, cur)
        elif isinstance(layer, (ResidualBlock, Resample, AttentionBlock)):
            x = layer(x, cur)
        else:
            x = layer(x)
    return x
