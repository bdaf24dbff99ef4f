"""Merged calls on a `KVCache`: one forward that commits a finished chunk and makes the next chunk's first call.

Sequentially, a chunk is committed by a context pass (its clean rows overwrite the rows its last denoising call
wrote), then the next chunk's first call appends its rows (evicting the oldest non-sink frames of a full rolling
window) and attends over everything left. A merged call computes both in one forward (`sf_core.model.forward.
wan_forward_merged`): token-wise layers run once over both chunks; self-attention is split by query range
(`attention.SplitKV`):
- the finished chunk's queries attend over every valid row, its own clean rows written in place, exactly as in
  its context pass;
- the next chunk's queries attend over the rows its own first call would see: the sink, the window minus the
  frames its append would evict, the finished chunk's clean rows and its own rows (not written: the sampler's
  next call writes them anyway, as every denoising call overwrites the last one's rows).
Positions: the call ropes both chunks contiguously from the finished chunk's position. With absolute positions
that is exact. With relative positions the next chunk sits n_ev slots later than after a real eviction; the
window's rows would shift by the same n_ev, so every distance to them is the same, and the sink (which does not
shift) is attended through a copy of its keys re-roped n_ev frames later (`rope.shift_time`). A chunk whose
call would pass the RoPE table (an "auto" cache re-basing for it) is not merged: the finished chunk is then
committed by itself first, at the positions the sequential order gives it.
"""
from __future__ import annotations

import dataclasses

import torch

from ..config import ROPE_MAX_POSITIONS
from ..model.attention import SplitKV
from ..model.rope import shift_time


class KVMerge:
    """Mixin of `KVCache`: the merged-call plan and its KV source."""

    def mergeable(self, start_frame: int, num_frames: int, next_frames: int) -> bool:
        """Can one call commit frames [start_frame, +num_frames) -- the last chunk written, still holding its
        denoising rows -- and run the first call of the next `next_frames` frames? (Else: two calls.)"""
        if torch.is_grad_enabled() or self.functional or self._plan is not None:
            return False
        end = start_frame + num_frames
        if end != self.end_frame or self.length < num_frames or \
                self.positions[self.length - num_frames:self.length] != list(range(start_frame, end)):
            return False
        n_ev = self._evicted_by(next_frames)
        if n_ev and self.length - n_ev - self.sink_frames <= 0:  # the window cannot hold the next chunk as planned
            return False
        if self.relative:  # the call ropes the next chunk at slots up to length + next_frames - 1
            return self.length + next_frames <= ROPE_MAX_POSITIONS
        # absolute positions: the next chunk must fit the table; an "auto" cache that has to re-base for it does so
        # at its own first call (sequentially: the finished chunk is committed at its absolute positions first)
        return end + next_frames <= ROPE_MAX_POSITIONS

    def begin_merged(self, start_frame: int, num_frames: int, next_frames: int) -> None:
        """Plan a merged call (see the module docstring); `end()` finishes it like any call."""
        if not self.mergeable(start_frame, num_frames, next_frames):
            raise RuntimeError(f"frames {start_frame}..{start_frame + num_frames - 1} cannot be committed by a merged "
                               f"call here (check KVCache.mergeable first)")
        self.begin(start_frame, num_frames)
        self._plan = dataclasses.replace(self._plan, merge=(num_frames, self._evicted_by(next_frames)))

    def _evicted_by(self, next_frames: int) -> int:
        """Frames the next chunk's append will evict from the window as it is now (0: none)."""
        return max(0, self.length + next_frames - self.window_frames) if self.rolling else 0

    @property
    def merged_rows(self) -> int:
        """Token rows of the committed chunk in the planned merged call (they lead the call's rows)."""
        return self._plan.merge[0] * self.tokens_per_frame

    def merged_source(self, layer: int):
        """KV source of a merged call: writes the finished chunk's rows, returns a SplitKV (see the module)."""
        n, n_ev = self._plan.merge
        t = self.tokens_per_frame
        write = self.source(layer)
        sink, cut = self.sink_frames * t, (self.sink_frames + n_ev) * t

        def kv(k: torch.Tensor, v: torch.Tensor) -> SplitKV:
            nk = n * t
            kk, vv = write(k[:, :nk], v[:, :nk])  # every valid row, the finished chunk's clean rows last
            k_new, v_new = k[:, nk:].to(kk.dtype), v[:, nk:].to(vv.dtype)
            if n_ev:
                sink_k = shift_time(kk[:, :sink], n_ev, t) if (self.relative and sink) else kk[:, :sink]
                kb = torch.cat([sink_k, kk[:, cut:], k_new], 1)
                vb = torch.cat([vv[:, :sink], vv[:, cut:], v_new], 1)
            else:
                kb, vb = torch.cat([kk, k_new], 1), torch.cat([vv, v_new], 1)
            return SplitKV(((0, nk, kk, vv), (nk, k.shape[1], kb, vb)))
        return kv


__all__ = ["KVMerge"]
