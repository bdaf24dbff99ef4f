"""The self-attention KV cache of the causal Wan transformer: an explicit object, passed in and returned.

Per layer it holds keys (after RoPE, at absolute positions) and raw values, `[B, rows, heads, head_dim]`,
one latent frame = `tokens_per_frame` rows. Two kinds:
- global (`window_frames=None`): every frame stays; the buffer grows if a video outgrows it;
- rolling (`window_frames=W`, `sink_frames=S`): at most W frames; when a new chunk does not fit, the
  oldest frames after the S sink frames are evicted (rows shifted left). Memory is fixed by W.

A forward call on a chunk at `start_frame` either *appends* it (a new chunk) or *overwrites* the last
rows (the same chunk denoised again, then committed by the clean context pass). Attention reads every
valid row. This reproduces the official cache (`local_end_index` / `global_end_index` bookkeeping).

Storage modes, chosen per call:
- in-place (inference: no grad anywhere): rows are written into a preallocated buffer, attention reads views;
- functional (training rollout: grad enabled, or cached rows carry grad): nothing is mutated; each layer's
  rows are rebuilt with `torch.cat`, so autograd sees the history. When a no-grad write (the context pass)
  replaces rows that carry grad (the exit step's K/V), `grad_mode` decides what flows back:
  "straight_through" keeps the official behaviour -- the values of the new write, the gradient of the
  old rows (`new + old - old.detach()`); "detach" treats the committed cache as a constant.

The cross-attention K/V of the text (per layer) are cached too, keyed by the identity of the context
tensor, so a new prompt rebuilds them automatically.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .config import ConfigError

GRAD_MODES = ("straight_through", "detach")


@dataclass
class _Plan:
    start_frame: int
    num_frames: int
    append: bool
    write_start: int  # first frame slot written
    new_length: int  # valid frame slots after the call
    inplace: bool


@dataclass
class KVCache:
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    tokens_per_frame: int
    window_frames: int | None = None
    sink_frames: int = 0
    grad_mode: str = "straight_through"
    length: int = 0  # valid frame slots
    end_frame: int = 0  # absolute frame index after the last written frame
    positions: list[int] = field(default_factory=list)  # absolute frame of each valid slot
    cross_k: list[torch.Tensor | None] = field(default_factory=list)
    cross_v: list[torch.Tensor | None] = field(default_factory=list)
    cross_key: object | None = None
    functional: bool = False  # buffers hold exactly the valid rows (autograd-friendly, never mutated)
    _plan: _Plan | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def allocate(cls, num_layers: int, batch: int, num_heads: int, head_dim: int, tokens_per_frame: int, *,
                 frames: int | None = None, window_frames: int | None = None, sink_frames: int = 0,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 grad_mode: str = "straight_through", chunk_frames: int | None = None,
                 strict: bool = True) -> "KVCache":
        """Preallocate a cache. Rolling: `window_frames` rows of frames. Global: `frames` (grows if exceeded).

        `strict` rejects a window that cannot hold a chunk plus the sink (the reference silently overwrites
        part of the sink then; `strict=False` reproduces that for parity checks only).
        """
        if grad_mode not in GRAD_MODES:
            raise ConfigError(f"grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}")
        if window_frames is not None:
            if window_frames < 1:
                raise ConfigError(f"window_frames must be >= 1, got {window_frames}")
            if strict and chunk_frames is not None and window_frames < chunk_frames + sink_frames:
                raise ConfigError(
                    f"rolling window of {window_frames} frames cannot hold a chunk of {chunk_frames} frames plus "
                    f"{sink_frames} sink frames; use window_frames >= {chunk_frames + sink_frames}")
            capacity = window_frames
        else:
            if sink_frames:
                raise ConfigError("sink_frames needs a rolling window (window_frames)")
            capacity = frames if frames is not None else 21
        rows = capacity * tokens_per_frame
        shape = (batch, rows, num_heads, head_dim)
        k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        return cls(k=k, v=v, tokens_per_frame=tokens_per_frame, window_frames=window_frames,
                   sink_frames=sink_frames, grad_mode=grad_mode,
                   cross_k=[None] * num_layers, cross_v=[None] * num_layers)

    @property
    def num_layers(self) -> int:
        return len(self.k)

    @property
    def capacity(self) -> int:
        """Frame slots the buffers hold now (a global cache may grow)."""
        return self.k[0].shape[1] // self.tokens_per_frame

    @property
    def rolling(self) -> bool:
        return self.window_frames is not None

    def nbytes(self) -> int:
        tensors = [*self.k, *self.v, *(t for t in self.cross_k if t is not None),
                   *(t for t in self.cross_v if t is not None)]
        return sum(t.numel() * t.element_size() for t in tensors)

    # ------------------------------------------------------------------ one forward call
    def begin(self, start_frame: int, num_frames: int) -> None:
        """Plan the write of frames [start_frame, start_frame + num_frames) and evict if needed."""
        if self._plan is not None:
            raise RuntimeError("KVCache.begin called twice without end(); a forward call was interrupted? "
                               "Create a new cache or call cache.abort()")
        n = num_frames
        end = start_frame + n
        if end <= self.end_frame:
            if self.positions[self.length - n:self.length] != list(range(start_frame, end)):
                raise ConfigError(
                    f"frames {start_frame}..{end - 1} are not the last chunk written to the KV cache "
                    f"(it ends at frame {self.end_frame}); committed frames cannot be rewritten")
            append = False
        elif start_frame < self.end_frame:
            raise ConfigError(f"chunk at frames {start_frame}..{end - 1} overlaps frames already in the "
                              f"cache (which ends at frame {self.end_frame})")
        else:
            append = True
        inplace = not torch.is_grad_enabled() and not any(t.requires_grad for t in (*self.k, *self.v))
        if not inplace and not self.functional:
            self._to_functional()
        elif inplace and self.functional:
            self._to_buffers()

        length = self.length
        if not append:
            new_length = length
        elif self.rolling and length + n > self.window_frames:
            cap = self.window_frames
            n_ev = length + n - cap
            n_roll = length - n_ev - self.sink_frames
            if n_roll > 0:
                self._shift(self.sink_frames, n_ev, n_roll, inplace)
                self.positions = self.positions[:self.sink_frames] + self.positions[self.sink_frames + n_ev:length]
            # n_roll <= 0 only with strict=False: like the reference, nothing moves and the new chunk
            # overwrites the last rows (part of the sink).
            new_length = cap
        else:
            new_length = length + n
            if inplace and new_length > self.capacity:
                self._grow(new_length)
        write_start = new_length - n
        self.positions = self.positions[:write_start]
        self._plan = _Plan(start_frame, n, append, write_start, new_length, inplace)

    def source(self, layer: int):
        """`kv(k, v) -> (K, V)`: what this call's self-attention attends over (all valid rows, its own last).

        In-place mode the returned function writes k, v into the buffer and returns views. In functional mode
        it is pure -- it captures the earlier rows now -- so it can be re-run by activation checkpointing
        during backward; the rows are recorded by `store`.
        """
        p = self._plan
        t = self.tokens_per_frame
        a, b = p.write_start * t, p.new_length * t
        kb, vb = self.k[layer], self.v[layer]
        if p.inplace:
            def write(k, v):
                kb[:, a:b] = k
                vb[:, a:b] = v
                return kb[:, :b], vb[:, :b]
            return write
        past_k, past_v = kb[:, :a], vb[:, :a]
        return lambda k, v: (torch.cat([past_k, k], 1), torch.cat([past_v, v], 1))

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Functional mode: record this call's rows (no-op in place, where `update` already wrote them)."""
        p = self._plan
        if p.inplace:
            return
        t = self.tokens_per_frame
        a = p.write_start * t
        old_k, old_v = self.k[layer], self.v[layer]
        overwrite_no_grad = not torch.is_grad_enabled() and not p.append
        with torch.enable_grad():  # keep the history of grad-carrying rows even inside a no-grad call
            if overwrite_no_grad:
                # a no-grad write over rows that may carry grad (the context pass after the exit step)
                k = self._carry_grad(k, old_k[:, a:a + k.shape[1]])
                v = self._carry_grad(v, old_v[:, a:a + v.shape[1]])
            self.k[layer] = torch.cat([old_k[:, :a], k], 1)
            self.v[layer] = torch.cat([old_v[:, :a], v], 1)

    def end(self) -> None:
        p = self._plan
        self.positions = self.positions[:p.write_start] + list(range(p.start_frame, p.start_frame + p.num_frames))
        self.length = p.new_length
        self.end_frame = max(self.end_frame, p.start_frame + p.num_frames)
        self._plan = None

    def abort(self) -> None:
        """Forget a call that raised between begin() and end() (rows it wrote are not counted)."""
        self._plan = None

    def truncate(self, end_frame: int) -> None:
        """Forget the trailing frames at positions >= end_frame (a chunk that was never committed).

        Frames the chunk's first call evicted stay evicted; appending the chunk again then lands in the
        same rows, so an interrupted chunk re-generated later gives the same result.
        """
        keep = [p for p in self.positions[:self.length] if p < end_frame]
        if self.positions[:len(keep)] != keep:
            raise ValueError(f"frames >= {end_frame} are not the last ones in the cache ({self.positions})")
        self._set_length(len(keep))
        self.positions = keep
        self.end_frame = min(self.end_frame, end_frame)
        self._plan = None

    def reset(self) -> None:
        """Forget every frame (buffers and their capacity are kept; the cross-attention cache too)."""
        self._set_length(0)
        self.positions = []
        self.end_frame = 0
        self._plan = None

    def _set_length(self, length: int) -> None:
        if self.functional:
            b = length * self.tokens_per_frame
            self.k = [x[:, :b] for x in self.k]
            self.v = [x[:, :b] for x in self.v]
        self.length = length

    # ------------------------------------------------------------------ cross-attention cache
    def cross(self, layer: int, key: object) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.cross_key is not key or torch.is_grad_enabled():
            return None
        k, v = self.cross_k[layer], self.cross_v[layer]
        return None if k is None else (k, v)

    def set_cross(self, layer: int, key: object, k: torch.Tensor, v: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            return
        if self.cross_key is not key:
            self.cross_key = key
            self.cross_k = [None] * self.num_layers
            self.cross_v = [None] * self.num_layers
        self.cross_k[layer], self.cross_v[layer] = k, v

    def reset_cross(self) -> None:
        self.cross_key = None
        self.cross_k = [None] * self.num_layers
        self.cross_v = [None] * self.num_layers

    # ------------------------------------------------------------------ views and internals
    def valid(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, v) rows of the valid frames of one layer."""
        b = self.length * self.tokens_per_frame
        return self.k[layer][:, :b], self.v[layer][:, :b]

    def _carry_grad(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        if not old.requires_grad or self.grad_mode == "detach":
            return new.detach()
        return new.detach() + (old - old.detach())

    def _shift(self, sink: int, n_ev: int, n_roll: int, inplace: bool) -> None:
        t = self.tokens_per_frame
        s0, src0, n = sink * t, (sink + n_ev) * t, n_roll * t
        for bufs in (self.k, self.v):
            for i, buf in enumerate(bufs):
                if inplace:
                    buf[:, s0:s0 + n] = buf[:, src0:src0 + n].clone()
                else:
                    with torch.enable_grad():
                        bufs[i] = torch.cat([buf[:, :s0], buf[:, src0:src0 + n]], 1)

    def _grow(self, frames: int) -> None:
        t = self.tokens_per_frame
        new_cap = max(frames, math.ceil(self.capacity * 1.5))
        for bufs in (self.k, self.v):
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
