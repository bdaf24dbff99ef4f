"""3-D rotary position embedding of Wan2.1 with absolute frame positions.

A head of `head_dim` channels is `head_dim/2` complex pairs (channels 2j, 2j+1 form pair j), split into
[time | height | width] = [c-2(c//3) | c//3 | c//3] pairs. Pair j of an axis of n pairs rotates by
`position * theta^(-2j/(2n))`. Frame positions are absolute: a chunk that starts at latent frame 40 uses
positions 40.., also after a rolling cache has evicted older frames, so query-key offsets stay true
frame distances. Positions are limited to `ROPE_MAX_POSITIONS` (1024) per axis, as in Wan.
"""
from __future__ import annotations

import functools

import torch

from ..config import ROPE_MAX_POSITIONS, ConfigError

THETA = 10000.0


class RopePositionError(ConfigError):
    """A frame position past the RoPE table."""


@functools.lru_cache(maxsize=32)
def _axis_angles(pairs: int) -> torch.Tensor:
    """Angles [ROPE_MAX_POSITIONS, pairs] in float64 (CPU), position * theta^(-2j/(2*pairs))."""
    inv = 1.0 / torch.pow(THETA, torch.arange(0, 2 * pairs, 2, dtype=torch.float64) / (2 * pairs))
    return torch.outer(torch.arange(ROPE_MAX_POSITIONS, dtype=torch.float64), inv)


def rope_table(head_dim: int) -> torch.Tensor:
    """The complex128 table [1024, head_dim/2] of Wan's `freqs` (time | height | width columns)."""
    c = head_dim // 2
    split = (c - 2 * (c // 3), c // 3, c // 3)
    ang = torch.cat([_axis_angles(n) for n in split], dim=1)
    return torch.polar(torch.ones_like(ang), ang)


@functools.lru_cache(maxsize=8)  # a chunk's calls share one entry; an entry of the 1.3B chunk is 4.8 MB
def _cos_sin_cpu(head_dim: int, start_frame: int, frames: int, height: int, width: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    c = head_dim // 2
    nt, nh, nw = (c - 2 * (c // 3), c // 3, c // 3)
    t = _axis_angles(nt)[start_frame:start_frame + frames]
    h = _axis_angles(nh)[:height]
    w = _axis_angles(nw)[:width]
    ang = torch.cat([
        t.view(frames, 1, 1, nt).expand(frames, height, width, nt),
        h.view(1, height, 1, nh).expand(frames, height, width, nh),
        w.view(1, 1, width, nw).expand(frames, height, width, nw),
    ], dim=-1).reshape(frames * height * width, 1, c)
    return torch.cos(ang), torch.sin(ang)


def rope_cos_sin(head_dim: int, start_frame: int, frames: int, height: int, width: int,
                 device: torch.device, dtype: torch.dtype = torch.float64
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [L, 1, head_dim/2] for the tokens of `frames` frames starting at absolute `start_frame`.

    `height`, `width` are the token grid (latent size / patch). Computed in float64, then cast to `dtype`.
    """
    _check_range(start_frame, frames, height, width)
    cos, sin = _cos_sin_cpu(head_dim, start_frame, frames, height, width)
    return cos.to(device=device, dtype=dtype), sin.to(device=device, dtype=dtype)


def _check_range(start_frame: int, frames: int, height: int, width: int) -> None:
    end = start_frame + frames
    if start_frame < 0 or end > ROPE_MAX_POSITIONS:
        raise RopePositionError(
            f"latent frames {start_frame}..{end - 1} are past the RoPE limit of {ROPE_MAX_POSITIONS} positions "
            f"({ROPE_MAX_POSITIONS} latent frames = {4 * ROPE_MAX_POSITIONS - 3} video frames per video); "
            f"generate a shorter video or start a new one")
    if max(height, width) > ROPE_MAX_POSITIONS:
        raise RopePositionError(f"token grid {height}x{width} exceeds {ROPE_MAX_POSITIONS} positions per axis")


def time_pairs(head_dim: int) -> int:
    """Complex pairs of a head that rotate with the frame position (the first ones: time | height | width)."""
    c = head_dim // 2
    return c - 2 * (c // 3)


def shift_time(k: torch.Tensor, delta: torch.Tensor | int, tokens_per_frame: int) -> torch.Tensor:
    """Keys [B, L, H, D] roped at frame positions p, re-roped to p + delta (per frame: delta [L // tpf] or an int).

    Only the time pairs turn: a RoPE rotation composes, so this equals roping the raw keys at p + delta up to
    rounding (computed in float64). Used to re-base a rolling cache's frame positions (relative positions).
    """
    b, l, h, d = k.shape
    nt = time_pairs(d)
    inv = _axis_angles(nt)[1]  # [nt] = theta^(-2j / (2 nt)): the angle per frame of each time pair
    frames = l // tokens_per_frame
    dl = torch.as_tensor(delta, dtype=torch.float64).reshape(-1)
    if dl.numel() == 1:
        dl = dl.expand(frames)
    ang = (dl[:, None] * inv[None, :]).repeat_interleave(tokens_per_frame, dim=0)  # [L, nt]
    cos, sin = torch.cos(ang).to(k.device)[:, None, :], torch.sin(ang).to(k.device)[:, None, :]
    kt = k[..., :2 * nt].double().reshape(b, l, h, nt, 2)
    ke, ko = kt[..., 0], kt[..., 1]
    rot = torch.stack((ke * cos - ko * sin, ke * sin + ko * cos), dim=-1).reshape(b, l, h, 2 * nt)
    return torch.cat([rot.to(k.dtype), k[..., 2 * nt:]], dim=-1)


def rope_freqs(head_dim: int, start_frame: int, frames: int, height: int, width: int,
               device: torch.device, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The rotations [L, 1, head_dim/2] as complex numbers cos + i sin (complex128 for float64, complex64 for
    float32), for `apply_rope`; same positions and checks as `rope_cos_sin`."""
    _check_range(start_frame, frames, height, width)
    return _freqs_cpu(head_dim, start_frame, frames, height, width, dtype).to(device)


@functools.lru_cache(maxsize=8)
def _freqs_cpu(head_dim: int, start_frame: int, frames: int, height: int, width: int, dtype: torch.dtype
               ) -> torch.Tensor:
    cos, sin = _cos_sin_cpu(head_dim, start_frame, frames, height, width)
    return torch.complex(cos.to(dtype), sin.to(dtype))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate interleaved channel pairs of x [B, L, H, D] by (cos, sin) [L, 1, D/2], or by `rope_freqs` (complex, or
    its `view_as_real` pairs [L, 1, D/2, 2], which torch.compile takes: inductor has no complex kernels).

    One complex multiply in the precision of the rotations (float64 for reference numerics, as Wan's
    `rope_apply`): (x_e + i x_o)(cos + i sin) = (x_e cos - x_o sin) + i (x_e sin + x_o cos), each product and sum
    rounded once in that precision -- bit-identical to the four real products, about 2x faster on CPU. Returned
    in x's dtype.
    """
    freqs = cos if sin is None else torch.complex(cos, sin)
    b, l, h, d = x.shape
    if torch.compiler.is_compiling():  # inductor has no complex kernels: the same products, which it fuses
        pairs = freqs if not freqs.is_complex() else torch.view_as_real(freqs)  # [L, 1, D/2, 2] (cos, sin)
        xr = x.to(pairs.dtype).reshape(b, l, h, d // 2, 2)
        c, s = pairs[..., 0], pairs[..., 1]
        out = torch.stack((xr[..., 0] * c - xr[..., 1] * s, xr[..., 0] * s + xr[..., 1] * c), dim=-1)
        return out.reshape(b, l, h, d).to(x.dtype)
    if not freqs.is_complex():
        freqs = torch.view_as_complex(freqs)
    real = torch.float64 if freqs.dtype == torch.complex128 else torch.float32
    xc = torch.view_as_complex(x.to(real).reshape(b, l, h, d // 2, 2))
    return torch.view_as_real(xc * freqs).reshape(b, l, h, d).to(x.dtype)
