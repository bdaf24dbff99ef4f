"""How the rows of a `KVCache` are moved, re-roped, grown and switched between storage modes (internals).

A mixin of `sf_core.cache.kv_cache.KVCache`, kept apart so the cache's bookkeeping reads top to bottom; nothing else
calls these methods. Rows are token rows of per-layer buffers `[B, rows, heads, head_dim]`: the keys (after
RoPE), the values and, for an 8-bit cache (`sf_core.cache.kv_quant`), their scales `[B, rows, heads, 1]`.
"""
from __future__ import annotations

import math

import torch

from . import kv_quant
from ..model.rope import shift_time


class KVRows:
    """Row movement of a KV cache (eviction shifts, RoPE re-basing, growth, in-place <-> functional)."""

    def _set_length(self, length: int) -> None:
        if self.functional:
            b = length * self.tokens_per_frame
            self.k = [x[:, :b] for x in self.k]
            self.v = [x[:, :b] for x in self.v]
        self.length = length

    def _row_lists(self):
        """(name, per-layer buffers) of every tensor laid out in token rows (codes, and scales if quantised)."""
        return (("k", self.k), ("v", self.v)) + ((("k_scale", self.k_scale), ("v_scale", self.v_scale))
                                                 if self.quantised else ())

    def _rerope_keys(self, i: int, r0: int, r1: int, delta, dst: int) -> None:
        """Quantised keys of rows r0:r1 of layer i, decoded, turned by `delta` frames and re-encoded at row dst."""
        fmt = kv_quant.resolve(self.kv_dtype, torch.float32)
        rows = kv_quant.dequantise(self.k[i][:, r0:r1], self.k_scale[i][:, r0:r1], torch.float32)
        q, s = kv_quant.quantise(shift_time(rows, delta, self.tokens_per_frame), fmt)
        self.k[i][:, dst:dst + r1 - r0], self.k_scale[i][:, dst:dst + r1 - r0] = q, s

    def _carry_grad(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        if not old.requires_grad or self.grad_mode == "detach":
            return new.detach()
        return new.detach() + (old - old.detach())

    def _shift(self, sink: int, n_ev: int, n_roll: int, inplace: bool) -> None:
        t = self.tokens_per_frame
        s0, src0, n = sink * t, (sink + n_ev) * t, n_roll * t
        for name, bufs in self._row_lists():
            is_key = name == "k"
            for i, buf in enumerate(bufs):
                if self.quantised and self.relative and name.startswith("k"):
                    if is_key:  # decode, re-rope, re-encode (codes and scales together)
                        self._rerope_keys(i, src0, src0 + n, -n_ev, s0)
                    continue
                moved = buf[:, src0:src0 + n]
                if is_key and self.relative:  # the rows move n_ev slots left: re-rope them n_ev frames back
                    moved = shift_time(moved, -n_ev, t)
                if inplace:
                    buf[:, s0:s0 + n] = moved.clone()
                else:
                    with torch.enable_grad():
                        bufs[i] = torch.cat([buf[:, :s0], moved], 1)

    def _rebase(self, inplace: bool) -> None:
        """Switch to relative positions: re-rope each valid frame's keys from its absolute frame to its slot."""
        t = self.tokens_per_frame
        delta = torch.tensor([slot - p for slot, p in enumerate(self.positions[:self.length])], dtype=torch.float64)
        if self.length and bool((delta != 0).any()):
            for i, buf in enumerate(self.k):
                if self.quantised:
                    self._rerope_keys(i, 0, self.length * t, delta, 0)
                    continue
                rows = shift_time(buf[:, :self.length * t], delta, t)
                if inplace:
                    buf[:, :self.length * t] = rows
                else:
                    self.k[i] = torch.cat([rows, buf[:, self.length * t:]], 1)
        self.relative = True

    def _grow(self, frames: int) -> None:
        t = self.tokens_per_frame
        new_cap = max(frames, math.ceil(self.capacity * 1.5))
        for _, bufs in self._row_lists():
            for i, buf in enumerate(bufs):
                nb = buf.new_zeros((buf.shape[0], new_cap * t, *buf.shape[2:]))
                nb[:, :buf.shape[1]] = buf
                bufs[i] = nb

    def _to_functional(self) -> None:
        b = self.length * self.tokens_per_frame
        self.k = [x[:, :b] for x in self.k]
        self.v = [x[:, :b] for x in self.v]
        self.functional = True

    def _to_buffers(self) -> None:
        cap = self.window_frames if self.rolling else max(self.length, 1)
        rows = cap * self.tokens_per_frame
        for bufs in (self.k, self.v):
            for i, x in enumerate(bufs):
                nb = x.new_zeros((x.shape[0], rows, *x.shape[2:]))
                nb[:, :x.shape[1]] = x.detach()
                bufs[i] = nb
        self.functional = False
