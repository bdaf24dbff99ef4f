"""Keyed randomness: every random draw of a training step comes from a generator seeded by
(run seed, step, purpose, global sample index).

Why: a sample's noise, timesteps and trajectory choices then do not depend on which rank processes it, on
the per-rank batch size or on restarts, so a 2-process run equals a 1-process run with the same global
batch, and a resumed run repeats exactly what the killed one would have done. Draws shared by all ranks
(the exit step of stochastic gradient truncation) are made on rank 0 and broadcast (`distributed.py`).
"""
from __future__ import annotations

import hashlib
import struct
from typing import Sequence

import torch

from ..sampling.sampler import NoiseFn


def key_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of ints / strings (stable across processes and Python versions)."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\x00")
    return struct.unpack("<q", h.digest())[0] & 0x7FFF_FFFF_FFFF_FFFF


def keyed_generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(key_seed(*parts))


class SampleDraws:
    """Per-sample generators for one purpose of one step: `seed, step, purpose, sample index`.

    Tensors are drawn on the CPU in float32 (identical on every machine) and moved to `device` / `dtype`.
    """

    def __init__(self, seed: int, step: int, purpose: str, sample_ids: Sequence[int],
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.gens = [keyed_generator(seed, step, purpose, int(i)) for i in sample_ids]
        self.device, self.dtype = device, dtype

    def randn(self, shape_per_sample: Sequence[int]) -> torch.Tensor:
        """[B, *shape_per_sample] standard normal."""
        z = torch.stack([torch.randn(tuple(shape_per_sample), generator=g) for g in self.gens])
        return z.to(device=self.device, dtype=self.dtype)

    def randint(self, low: int, high: int, shape_per_sample: Sequence[int] = ()) -> torch.Tensor:
        """[B, *shape_per_sample] int64 in [low, high)."""
        z = torch.stack([torch.randint(low, high, tuple(shape_per_sample), generator=g) for g in self.gens])
        return z.to(self.device)

    def noise_fn(self) -> NoiseFn:
        """A sampler `noise_fn(shape)` whose batch rows come from the per-sample generators."""
        def draw(shape: tuple[int, ...]) -> torch.Tensor:
            if shape[0] != len(self.gens):
                raise ValueError(f"noise batch {shape[0]} != {len(self.gens)} keyed samples")
            return self.randn(shape[1:])
        return draw


def rng_state() -> dict[str, torch.Tensor]:
    """Global torch RNG state of this process (saved in checkpoints for anything that still uses it)."""
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
