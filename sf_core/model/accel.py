"""Optional accelerators of the cached forward, off by default: `torch.compile` of the blocks, CUDA-graph replay.

    compile_blocks(model)            # torch.compile of forward.block_forward (inductor); inference calls use it
    enable_cuda_graphs(model)        # CUDA only: steady-state chunk calls are captured once and replayed
    disable(model)                   # back to eager

Both are attached to the model (`model._sf_block_fn`, `model._sf_graphs`), as torchtitan's `parallelize()`
applies compile per block, so every loop over the one chunk step (sessions, live runs, nodes) picks them up;
importing this module changes nothing. Grad-enabled calls (training) always run eagerly.

compile: one compiled function serves every block (parameters are graph inputs); guards specialise on the
first call's cache rows, then recompile once with them dynamic, and once per cache-only call (need_output=False),
so a video compiles about four graphs. RoPE runs as real products under inductor (no complex kernels).

CUDA graphs (`ChunkGraphs`): a call is replayed from a graph when it repeats a previous chunk's call exactly:
same shapes and dtypes, same cache rows written and read (a rolling window that is full: every chunk writes its
rows at the end of the window), the same cache buffers and text conditioning, the same kind of call (denoising
or cache-only). Such a *steady-state* call is captured after it has run eagerly in `warmup` different chunks;
inputs (latents, timesteps, RoPE rotations) are copied into static buffers, the cache's eviction shift and
bookkeeping stay outside the graph. A new prompt (another conditioning tensor) drops the graphs. Untested on a
GPU here (none was available): the plumbing is tested on CPU with an eager stand-in for the capture.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

from ..config import ConfigError

log = logging.getLogger(__name__)


def compile_blocks(model, *, mode: str | None = None, dynamic: bool | None = None):
    """Use `torch.compile(forward.block_forward)` for the model's inference calls; returns the model."""
    from .forward import block_forward

    model._sf_block_fn = torch.compile(block_forward, mode=mode, dynamic=dynamic)
    return model


class _CudaCapture:
    """torch.cuda.CUDAGraph behind a two-call interface (capture a function, replay it)."""

    def __init__(self, pool=None):
        self.graph, self.pool = torch.cuda.CUDAGraph(), pool

    def capture(self, fn: Callable[[], object]) -> object:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()  # warm-up on a side stream, as torch.cuda.graphs recommends
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(self.graph, pool=self.pool):
            out = fn()
        return out

    def replay(self) -> None:
        self.graph.replay()


class ChunkGraphs:
    """Capture-and-replay of steady-state chunk calls (see the module docstring). `capture` builds a capture
    object from a memory pool (default: CUDA graphs sharing one pool); tests pass an eager stand-in."""

    def __init__(self, warmup: int = 2, capture: Callable | None = None):
        if warmup < 1:
            raise ConfigError(f"warmup must be >= 1 chunk, got {warmup}")
        self.warmup = warmup
        self._make = capture or _CudaCapture
        self._graphs: dict[tuple, tuple] = {}  # key -> (capture, static x, t, freqs, out)
        self._seen: dict[tuple, set[int]] = {}  # key -> chunks (start frames) it ran in eagerly
        self._context = None
        self._pool = None
        self.captures = self.replays = 0

    def _key(self, x, t, freqs, cache, need_output: bool, backend: str) -> tuple | None:
        rows = cache.planned_rows()
        if rows is None:  # not an in-place call
            return None
        bufs = (*cache.k, *cache.v, *cache.k_scale, *cache.v_scale, *(c for c in (*cache.cross_k, *cache.cross_v)
                                                                       if c is not None))
        ptrs = hash(tuple(buf.data_ptr() for buf in bufs))  # the addresses a captured graph reads and writes
        return (ptrs, tuple(x.shape), x.dtype, tuple(t.shape), tuple(freqs.shape), freqs.dtype, rows, need_output,
                backend)

    def run(self, body: Callable, x: torch.Tensor, t: torch.Tensor, freqs: torch.Tensor, *, cache, context,
            start_frame: int, need_output: bool, backend: str):
        """body(x, t, freqs) eagerly, or through its captured graph when this call is a steady-state one."""
        if context is not self._context:  # another conditioning: the cross-attention cache changes
            self.reset()
            self._context = context
        key = self._key(x, t, freqs, cache, need_output, backend)
        if key is None:
            return body(x, t, freqs)
        hit = self._graphs.get(key)
        if hit is None:
            seen = self._seen.setdefault(key, set())
            if len(seen) < self.warmup or start_frame in seen:
                seen.add(start_frame)
                return body(x, t, freqs)
            hit = self._capture(key, body, x, t, freqs)
        cap, xs, ts, fs, out = hit
        xs.copy_(x)
        ts.copy_(t)
        fs.copy_(freqs)
        cap.replay()
        self.replays += 1
        return None if out is None else out.clone()

    def _capture(self, key, body, x, t, freqs):
        stale = [k for k in self._graphs if k[0] != key[0]]  # graphs of buffers that were since replaced
        for k in stale:
            del self._graphs[k]
        xs, ts, fs = x.clone(), t.clone(), freqs.clone()
        cap = self._make(self._pool)
        out = cap.capture(lambda: body(xs, ts, fs))  # the capture run also performs this call's writes
        if self._pool is None and hasattr(cap, "graph"):
            self._pool = cap.graph.pool()
        self._graphs[key] = hit = (cap, xs, ts, fs, out)
        self.captures += 1
        log.info("captured a chunk call graph (%d so far)", self.captures)
        return hit

    def reset(self) -> None:
        self._graphs.clear()
        self._seen.clear()
        self._pool = None


def enable_cuda_graphs(model, *, warmup: int = 2, capture: Callable | None = None) -> ChunkGraphs:
    """Replay steady-state chunk calls of `model` from CUDA graphs (CUDA only; off by default)."""
    dev = next(iter(model.parameters())).device
    if capture is None and (dev.type != "cuda" or not torch.cuda.is_available()):
        raise ConfigError(f"CUDA graphs need the model on a CUDA device; it is on {dev}. Leave them off on this "
                          f"device (they only remove kernel-launch overhead on GPUs)")
    model._sf_graphs = graphs = ChunkGraphs(warmup=warmup, capture=capture)
    return graphs


def disable(model):
    """Back to the eager forward (drops compiled functions and captured graphs)."""
    for name in ("_sf_block_fn", "_sf_graphs"):
        if hasattr(model, name):
            delattr(model, name)
    return model


__all__ = ["compile_blocks", "enable_cuda_graphs", "disable", "ChunkGraphs"]
