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

Frame positions (RoPE), `rope_mode`:
- "absolute": a frame is roped at its index in the video, as the official code (limit: 1024 latent frames);
- "relative" (rolling only): a frame is roped at its slot in the cache, so the sink keeps positions 0..S-1 and
  the window the positions right after it, however long the video runs; when rows shift left on eviction their
  keys are re-roped by the shift (`rope.shift_time`, exact up to rounding, at most window/chunk times per frame);
- "auto" (rolling only): absolute while the video is inside the RoPE table, re-based to relative (one re-rope of
  the valid rows) at the first chunk that would pass it.
Until the first eviction slot == frame, so all three modes are bit-identical for the first window of frames.

Storage, `kv_dtype` (`sf_core.cache.kv_quant`): "auto" keeps rows in the compute dtype (the reference path); "fp32",
"bf16", "fp16" store another float dtype; "int8" / "fp8" store 8-bit codes with one fp16 scale per token and head
(`k_scale` / `v_scale`, [B, rows, heads, 1]), about half the bytes of bf16. A call attends over the decoded earlier
rows and its own rows at full precision. Quantised caches are inference-only (a grad-enabled call refuses them).

Lifecycle: `for_config` (sized from a CausalConfig), `to(device, dtype)` (an independent copy), `state()` /
`from_state()` (plain metadata + tensors, for session files), `reset()` / `truncate()`.

The cross-attention K/V of the text (per layer) are cached too, keyed by the identity of the context
tensor, so a new prompt rebuilds them automatically.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from . import kv_quant
from ..config import ROPE_MAX_POSITIONS, CausalConfig, ConfigError
from .kv_merge import KVMerge
from .kv_rows import KVRows
from .kv_state import KVState

GRAD_MODES = ("straight_through", "detach")
ROPE_MODES = ("absolute", "relative", "auto")


@dataclass
class _Plan:
    start_frame: int
    num_frames: int
    append: bool
    write_start: int  # first frame slot written
    new_length: int  # valid frame slots after the call
    inplace: bool
    rope_start: int  # RoPE position of the call's first frame
    merge: tuple[int, int] | None = None  # a merged call (sf_core.cache.kv_merge): (committed frames, n evicted)
    positions_before: list[int] | None = None  # a rewrite of the last frames: positions to restore on abort


@dataclass
class KVCache(KVRows, KVMerge, KVState):
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
    rope_mode: str = "absolute"
    relative: bool = False  # frames are roped at their slot (relative mode, or auto after the switch)
    kv_dtype: str = "auto"  # storage format (sf_core.cache.kv_quant.KV_DTYPES)
    k_scale: list[torch.Tensor] = field(default_factory=list)  # int8 / fp8 storage: [B, rows, heads, 1] fp16
    v_scale: list[torch.Tensor] = field(default_factory=list)
    _plan: _Plan | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def allocate(cls, num_layers: int, batch: int, num_heads: int, head_dim: int, tokens_per_frame: int, *,
                 frames: int | None = None, window_frames: int | None = None, sink_frames: int = 0,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 grad_mode: str = "straight_through", chunk_frames: int | None = None,
                 strict: bool = True, rope_mode: str = "absolute", kv_dtype: str = "auto") -> "KVCache":
        """Preallocate a cache. Rolling: `window_frames` rows of frames. Global: `frames` (grows if exceeded).

        `dtype` is the compute dtype; `kv_dtype` the storage format ("auto" = `dtype`; see sf_core.cache.kv_quant).
        `strict` rejects a window that cannot hold a chunk plus the sink (the reference silently overwrites
        part of the sink then; `strict=False` reproduces that for parity checks only).
        """
        fmt = kv_quant.resolve(kv_dtype, dtype)
        if grad_mode not in GRAD_MODES:
            raise ConfigError(f"grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}")
        if rope_mode not in ROPE_MODES:
            raise ConfigError(f"rope_mode must be one of {ROPE_MODES}, got {rope_mode!r}")
        if rope_mode != "absolute" and window_frames is None:
            raise ConfigError(f"rope_mode {rope_mode!r} re-bases positions inside a rolling window: it needs "
                              f"window_frames (a global cache keeps every frame at its absolute position)")
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
        k = [torch.zeros(shape, dtype=fmt.storage, device=device) for _ in range(num_layers)]
        v = [torch.zeros(shape, dtype=fmt.storage, device=device) for _ in range(num_layers)]
        scales = [[torch.zeros((*shape[:3], 1), dtype=kv_quant.SCALE_DTYPE, device=device)
                   for _ in range(num_layers)] for _ in range(2 if fmt.quantised else 0)] or [[], []]
        return cls(k=k, v=v, tokens_per_frame=tokens_per_frame, window_frames=window_frames,
                   sink_frames=sink_frames, grad_mode=grad_mode,
                   cross_k=[None] * num_layers, cross_v=[None] * num_layers,
                   rope_mode=rope_mode, relative=rope_mode == "relative", kv_dtype=kv_dtype,
                   k_scale=scales[0], v_scale=scales[1])

    @classmethod
    def for_config(cls, causal: CausalConfig, *, num_layers: int, num_heads: int, head_dim: int,
                   tokens_per_frame: int, batch: int = 1, frames: int = 21, dtype: torch.dtype = torch.float32,
                   device: torch.device | str = "cpu", rope_mode: str = "absolute",
                   grad_mode: str = "straight_through", kv_dtype: str = "auto") -> "KVCache":
        """A cache sized from the chunking config: the rolling window, or a global cache of `frames` slots."""
        return cls.allocate(num_layers, batch, num_heads, head_dim, tokens_per_frame,
                            frames=None if causal.rolling else frames, window_frames=causal.window_frames,
                            sink_frames=causal.sink_frames, dtype=dtype, device=device, grad_mode=grad_mode,
                            chunk_frames=causal.chunk_frames, rope_mode=rope_mode, kv_dtype=kv_dtype)

    # ------------------------------------------------------------------ lifecycle
    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "KVCache":
        """An independent copy on `device` (and compute `dtype`: the storage follows it with kv_dtype 'auto');
        the text cache is dropped (rebuilt on first use)."""
        if self._plan is not None:
            raise RuntimeError("cannot copy a KV cache while a forward call is writing it")
        store = dtype if self.kv_dtype == "auto" else None

        def mv(t, to=None):
            return t.detach().to(device=device, dtype=to or t.dtype, copy=True)
        return dataclasses.replace(self, k=[mv(t, store) for t in self.k], v=[mv(t, store) for t in self.v],
                                   k_scale=[mv(t) for t in self.k_scale], v_scale=[mv(t) for t in self.v_scale],
                                   cross_k=[None] * self.num_layers, cross_v=[None] * self.num_layers,
                                   positions=list(self.positions), cross_key=None, _plan=None)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype rows are stored in (int8 / float8 codes for a quantised cache)."""
        return self.k[0].dtype

    @property
    def quantised(self) -> bool:
        return bool(self.k_scale)

    @property
    def device(self) -> torch.device:
        return self.k[0].device

    @property
    def unbounded(self) -> bool:
        """Whether frame positions can go past the RoPE table (relative / auto mode on a rolling window)."""
        return self.rolling and self.rope_mode != "absolute"

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
        tensors = [*self.k, *self.v, *self.k_scale, *self.v_scale, *(t for t in self.cross_k if t is not None),
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
        if not inplace and self.quantised:
            raise ConfigError(f"a KV cache stored as {self.kv_dtype!r} is for inference only: this forward call has "
                              f"grad enabled (the training rollout); use kv_dtype 'auto' for training")
        if not inplace and not self.functional:
            self._to_functional()
        elif inplace and self.functional:
            self._to_buffers()
        if self.rope_mode == "auto" and not self.relative and end > ROPE_MAX_POSITIONS:
            self._rebase(inplace)

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
        before = None if append else list(self.positions)
        self.positions = self.positions[:write_start]
        rope_start = write_start if self.relative else start_frame
        self._plan = _Plan(start_frame, n, append, write_start, new_length, inplace, rope_start,
                           positions_before=before)

    def use_relative(self) -> None:
        """Switch an "auto" cache to relative positions now (one re-rope of the valid rows). For a sampler whose
        queries run ahead of the committed frames (Rolling Forcing's window) before they pass the RoPE table."""
        if self.rope_mode == "auto" and not self.relative:
            self._rebase(not self.functional)

    @property
    def rope_start(self) -> int:
        """RoPE position of the first frame of the call planned by `begin` (its absolute frame, or its slot)."""
        if self._plan is None:
            raise RuntimeError("rope_start is only known between begin() and end()")
        return self._plan.rope_start

    def planned_rows(self) -> tuple[int, int] | None:
        """(first row written, rows attended) of the in-place call planned by `begin`; None if none is planned
        in place. Two calls with the same rows write and read the same buffer slices (sf_core.model.accel)."""
        p = self._plan
        if p is None or not p.inplace:
            return None
        return p.write_start * self.tokens_per_frame, p.new_length * self.tokens_per_frame

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
            if self.kv_dtype == "auto":
                return write
            # another storage format: encode on write, decode the earlier rows on read (sf_core.cache.kv_quant)
            fmt = kv_quant.resolve(self.kv_dtype, kb.dtype)
            ks, vs = (self.k_scale[layer], self.v_scale[layer]) if self.quantised else (None, None)
            stored = kv_quant.stored_source(fmt, kb, vb, ks, vs, a, b)
            return lambda k, v: stored(k, v) if fmt.quantised or kb.dtype != k.dtype else write(k, v)
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
        """Forget a call that raised between begin() and end(). A rewrite of the last frames keeps them in the
        cache (with whatever rows it wrote: the next rewrite of them overwrites every layer); an append is
        forgotten by `truncate` (frames it evicted stay evicted)."""
        p, self._plan = self._plan, None
        if p is not None and p.positions_before is not None:
            self.positions = p.positions_before

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
        """(k, v) rows of the valid frames of one layer (a quantised cache decodes them to float32)."""
        b = self.length * self.tokens_per_frame
        if self.quantised:
            return (kv_quant.dequantise(self.k[layer][:, :b], self.k_scale[layer][:, :b], torch.float32),
                    kv_quant.dequantise(self.v[layer][:, :b], self.v_scale[layer][:, :b], torch.float32))
        return self.k[layer][:, :b], self.v[layer][:, :b]
