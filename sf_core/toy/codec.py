"""The toy latent space: a fixed invertible transform, exposed through the chunk decoder protocol.

Why not a trained autoencoder: the toy exists to measure the *generator* (exposure bias over long rollouts).
An exact, invertible codec means every error the metrics see was made by the transformer, never by a lossy
decoder; it costs no training time, ships no weights and cannot drift between runs.

The transform, per frame (time is not compressed: one latent frame = one video frame):
1. 2x2 space-to-depth: [3, H, W] -> [3 * 4, H/2, W/2];
2. an orthonormal 2-D DCT-II (here: the Haar transform) over each 2x2 block and colour (energy compaction,
   like a learned latent: coefficient 0 of each colour is the block mean, the other three carry edges);
3. per-channel normalisation to zero mean and unit variance (the analogue of Wan's latent mean/std), with
   constants measured once on the world (`measure_stats`); a test checks they still match the world.
All three steps are invertible, so `decode(encode(x)) == x` to float precision.

Why 2x2 blocks on 16x16 frames: a transformer token (a 2x2 patch of latent pixels) must emit every value of
its pixels -- its velocity includes the noise to remove -- through a linear head from `dim` features; with
4x4 pixels per token (48 values) a dim-128 model has room to spare, while 8x8-pixel tokens (192 values) leave
directions it cannot represent, and their noise is never removed (tried: visibly noisy samples).

Latents are [B, 12, F, H/2, W/2] (model space = normalised). A *chunk decoder* streams:
`frames, state = decode_chunk(z, state)`; frames [B, 3, T, H*, W*] in [-1, 1] with T = z's frame count
(no temporal compression, unlike Wan's 1 + 4k), optionally upscaled (nearest) by `upscale` for viewing.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BLOCK = 2
CHANNELS = 3 * BLOCK * BLOCK  # 12

# Per-channel mean / std of the DCT coefficients over the default world (`measure_stats()`: 512 videos of 12
# frames, seed 0), rounded; std floored at STD_FLOOR so a rarely active channel is never blown up.
# Channel c * 4 + k: colour c (R, G, B), coefficient k (0 = block mean, 1 = horizontal edge, 2 = vertical edge,
# 3 = diagonal).
STD_FLOOR = 0.05
LATENT_MEAN: tuple[float, ...] = (-1.4936, 0.0, 0.0, 0.0, -1.4524, 0.0, 0.0, 0.0, -1.4716, 0.0, 0.0, 0.0)
LATENT_STD: tuple[float, ...] = (0.7269, 0.3383, 0.3310, 0.1079, 0.7306, 0.3417, 0.3364, 0.1105,
                                 0.7504, 0.3406, 0.3363, 0.1093)


class CodecError(ValueError):
    pass


@functools.lru_cache(maxsize=4)
def dct_matrix(n: int = BLOCK) -> torch.Tensor:
    """Orthonormal DCT-II matrix [n, n] (float64): D[k, m] = c_k cos(pi (2m + 1) k / 2n)."""
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    m = torch.arange(n, dtype=torch.float64).view(1, -1)
    d = torch.cos(math.pi * (2 * m + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


@functools.lru_cache(maxsize=4)
def block_transform(n: int = BLOCK) -> torch.Tensor:
    """[n*n, n*n] orthonormal 2-D DCT acting on a row-major flattened n x n block (kron(D, D))."""
    d = dct_matrix(n)
    return torch.kron(d, d)


def space_to_depth(x: torch.Tensor, n: int = BLOCK) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, C, n*n, T, H/n, W/n] (block pixels row-major)."""
    b, c, t, h, w = x.shape
    if h % n or w % n:
        raise CodecError(f"frame size {h}x{w} is not divisible by the codec block {n}; use multiples of {n}")
    x = x.reshape(b, c, t, h // n, n, w // n, n)
    return x.permute(0, 1, 4, 6, 2, 3, 5).reshape(b, c, n * n, t, h // n, w // n)


def depth_to_space(x: torch.Tensor, n: int = BLOCK) -> torch.Tensor:
    """Inverse of `space_to_depth`: [B, C, n*n, T, h, w] -> [B, C, T, h*n, w*n]."""
    b, c, _, t, h, w = x.shape
    x = x.reshape(b, c, n, n, t, h, w).permute(0, 1, 4, 5, 2, 6, 3)
    return x.reshape(b, c, t, h * n, w * n)


def raw_encode(frames: torch.Tensor) -> torch.Tensor:
    """Frames [B, 3, T, H, W] in [-1, 1] -> un-normalised DCT coefficients [B, 12, T, H/2, W/2] (float32)."""
    if frames.ndim != 5 or frames.shape[1] != 3:
        raise CodecError(f"expected frames [B, 3, T, H, W], got shape {tuple(frames.shape)}")
    blocks = space_to_depth(frames.float())
    m = block_transform().to(device=frames.device, dtype=torch.float32)
    coef = torch.einsum("kn,bcnthw->bckthw", m, blocks)
    b, c, k, t, h, w = coef.shape
    return coef.reshape(b, c * k, t, h, w)


def raw_decode(coef: torch.Tensor) -> torch.Tensor:
    """Inverse of `raw_encode` (the transform is orthonormal: its inverse is its transpose)."""
    b, ck, t, h, w = coef.shape
    if ck != CHANNELS:
        raise CodecError(f"toy latents have {CHANNELS} channels, got {ck} (shape {tuple(coef.shape)}); is this a "
                         f"latent of another model (Wan's have 16)?")
    m = block_transform().to(device=coef.device, dtype=torch.float32)
    blocks = torch.einsum("kn,bckthw->bcnthw", m, coef.float().reshape(b, 3, BLOCK * BLOCK, t, h, w))
    return depth_to_space(blocks)


def _stats(device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(LATENT_MEAN, device=device, dtype=dtype).view(1, -1, 1, 1, 1)
    std = torch.tensor(LATENT_STD, device=device, dtype=dtype).view(1, -1, 1, 1, 1)
    return mean, std


def encode(frames: torch.Tensor) -> torch.Tensor:
    """Frames [B, 3, T, H, W] in [-1, 1] -> model-space latents [B, 12, T, H/2, W/2]."""
    coef = raw_encode(frames)
    mean, std = _stats(coef.device)
    return (coef - mean) / std


def decode(z: torch.Tensor, upscale: int = 1) -> torch.Tensor:
    """Model-space latents [B, 12, F, h, w] -> frames [B, 3, F, 2h*upscale, 2w*upscale] in [-1, 1] (float32)."""
    if z.ndim != 5:
        raise CodecError(f"expected latents [B, {CHANNELS}, F, h, w], got shape {tuple(z.shape)}")
    mean, std = _stats(z.device)
    if z.shape[1] != CHANNELS:
        raise CodecError(f"toy latents have {CHANNELS} channels, got {z.shape[1]} (shape {tuple(z.shape)}); is "
                         f"this a latent of another model (Wan's have 16)?")
    frames = raw_decode(z.float() * std + mean).clamp(-1.0, 1.0)
    if upscale > 1:
        b, c, t, h, w = frames.shape
        frames = F.interpolate(frames.reshape(b, c * t, h, w), scale_factor=upscale, mode="nearest")
        frames = frames.reshape(b, c, t, h * upscale, w * upscale)
    return frames


@dataclass(frozen=True)
class ToyDecodeState:
    """Stream position of a toy decode: latent frames decoded so far (the codec has no temporal memory)."""

    frames_done: int = 0


@dataclass(frozen=True)
class ToyDecoder:
    """Chunk decoder of the toy latent space. `upscale` enlarges frames (nearest) for viewing only."""

    upscale: int = 1

    def __post_init__(self) -> None:
        if int(self.upscale) < 1:
            raise CodecError(f"upscale must be an integer >= 1, got {self.upscale}")

    latent_channels = CHANNELS
    temporal_compression = 1
    spatial_compression = BLOCK

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return decode(z, self.upscale)

    def decode_chunk(self, z: torch.Tensor, state: ToyDecodeState | None = None
                     ) -> tuple[torch.Tensor, ToyDecodeState]:
        """Decode a chunk [B, 12, n, h, w]; returns (frames [B, 3, n, H, W] in [-1, 1], new state)."""
        state = state or ToyDecodeState()
        return decode(z, self.upscale), ToyDecodeState(state.frames_done + z.shape[2])

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        if self.upscale != 1:
            raise CodecError("encode expects frames at the world's resolution; use a decoder with upscale=1")
        return encode(frames)


def measure_stats(spec=None, videos: int = 512, frames: int = 12, seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean [12], std [12]) of raw DCT coefficients over world videos; std floored at STD_FLOOR."""
    from .world import WorldSpec, sample_batch

    x, _ = sample_batch(videos, frames, seed, spec or WorldSpec())
    coef = raw_encode(x).double()
    mean = coef.mean(dim=(0, 2, 3, 4))
    std = coef.std(dim=(0, 2, 3, 4)).clamp(min=STD_FLOOR)
    return mean.float(), std.float()
