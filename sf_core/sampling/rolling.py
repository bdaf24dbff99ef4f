"""Rolling Forcing's joint rolling-window denoising: the second sampler beside `sampler.step_chunk`.

With n denoising steps, a window holds up to n chunks at rising noise levels: the oldest at the last step
(t_{n-1}), the newest, fresh noise, at the first (t_0). One call of the model denoises the whole window jointly
(per-frame timesteps), each chunk by one step. Then the oldest chunk is finished: its x0 is the output, and it
is committed to the KV cache by one context pass (t = 0). Every other chunk is re-noised from its x0 to its next
timestep and stays in flight; the next window adds a new chunk of noise. So after a warm-up of n windows, every
window finishes one chunk (the same cost per chunk as Self Forcing's n steps), and every chunk has seen the
chunks around it while it was noisy.

Attention, as in the official code (TencentARC/RollingForcing, `causal_model.py`):
- a denoising call attends to [sink | working cache | the window itself]: the sink (the first `sink_frames`
  committed frames) re-roped to sit right before the working cache, the working cache = the last committed
  frames after the sink, at most `span - window - sink` of them, and the window's own keys; nothing is written;
- the context pass (commit) of the finished chunk appends it to the cache (rolling eviction after the sink) and
  attends to the last `span` frames of the cache, itself included (the sink only while it is among them);
- span = window_frames - chunk_frames (official: a 24-frame cache, attention over at most 21 frames).
The cache is the same `KVCache` object (rolling, sink = the first chunk); the two call patterns are views over it
(`_WindowView`, `_CommitView`) with the interface `wan_forward` uses, so the Denoiser and the forward are shared.

Between calls the in-flight chunks are `pending` [B, C, k, h, w] (k = (n-1) chunks of frames after the last
finished one, already re-noised to their next timestep; oldest first, at steps n-1, n-2, ...). A session keeps
them, so a continued video equals an uninterrupted one. Noise draws, per window: the new chunk's initial noise,
then one re-noising draw [B, C, chunk, h, w] per chunk that is not finished, oldest first.

`rolling_rollout` generates a fixed-length video as the official script does: warm-up, steady windows, and at
the end shrinking windows with no new chunk until the last chunk is finished (the flush). Sessions
(`rolling_step`) never flush: they stop with chunks in flight, so a video can always be continued.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..config import ROPE_MAX_POSITIONS, ConfigError
from .denoiser import Denoiser
from ..cache.kv_cache import KVCache
from ..model.rope import shift_time
from .sampler import NoiseFn, _check_finite

Callback = Callable[[int, float, torch.Tensor], None]


def span_frames(cache: KVCache, chunk_frames: int) -> int:
    """Frames a context pass attends to: the cache window less one chunk (official: 24 - 3 = 21)."""
    if not cache.rolling or cache.window_frames <= chunk_frames:
        raise ConfigError(f"the rolling sampler needs a rolling KV cache larger than one chunk of {chunk_frames} "
                          f"frames (Rolling Forcing: window 24, sink 3), got window {cache.window_frames}")
    return cache.window_frames - chunk_frames


class _WindowView:
    """A read-only view of the cache for a window's denoising call: [sink re-roped | working | window]."""

    def __init__(self, cache: KVCache, span: int):
        self.cache, self.span = cache, span
        self._rope = 0
        self._work = 0
        self._n = 0

    def begin(self, start_frame: int, num_frames: int) -> None:
        c = self.cache
        if start_frame != c.end_frame and c.length:
            raise ConfigError(f"a rolling window must start right after the committed frames (frame {c.end_frame}), "
                              f"got frame {start_frame}")
        if not c.relative and start_frame + num_frames > ROPE_MAX_POSITIONS:
            c.use_relative()  # "auto": re-base before the window passes the table ("absolute" then raises below)
        self._n = num_frames
        self._rope = c.length if c.relative else start_frame
        sink = min(c.sink_frames, c.length)
        self._work = max(0, min(c.length - sink, self.span - num_frames - c.sink_frames))

    @property
    def rope_start(self) -> int:
        return self._rope

    def source(self, layer: int):
        c, t = self.cache, self.cache.tokens_per_frame
        if c.length == 0:  # nothing committed yet: the window attends to itself only
            return lambda k, v: (k, v)
        kk, vv = c.valid(layer)
        sink = min(c.sink_frames, c.length)
        ks, vs = kk[:, :sink * t], vv[:, :sink * t]
        kw, vw = kk[:, (c.length - self._work) * t:], vv[:, (c.length - self._work) * t:]
        delta = self._rope - self._work - sink  # the sink sits right before the working frames
        if sink and delta:  # stored at positions 0..sink-1 (absolute frames, or slots when relative)
            ks = shift_time(ks, delta, t)

        def kv(k, v):
            return torch.cat([ks.to(k.dtype), kw.to(k.dtype), k], 1), torch.cat([vs.to(v.dtype), vw.to(v.dtype), v], 1)
        return kv

    def store(self, layer: int, k, v) -> None:
        pass

    def end(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def cross(self, layer, key):
        return self.cache.cross(layer, key)

    def set_cross(self, layer, key, k, v) -> None:
        self.cache.set_cross(layer, key, k, v)


class _CommitView(_WindowView):
    """The context pass of a finished chunk: an ordinary append to the cache, attending to the last `span` frames."""

    def begin(self, start_frame: int, num_frames: int) -> None:
        self.cache.begin(start_frame, num_frames)

    @property
    def rope_start(self) -> int:
        return self.cache.rope_start

    def source(self, layer: int):
        inner, rows = self.cache.source(layer), self.span * self.cache.tokens_per_frame

        def kv(k, v):
            kk, vv = inner(k, v)
            return kk[:, -rows:], vv[:, -rows:]
        return kv

    def store(self, layer: int, k, v) -> None:
        self.cache.store(layer, k, v)

    def end(self) -> None:
        self.cache.end()

    def abort(self) -> None:
        self.cache.abort()


def commit(denoiser: Denoiser, cache: KVCache, x0: torch.Tensor, start_frame: int, chunk_frames: int,
           context_t: float = 0.0) -> None:
    """The rolling sampler's context pass: append clean x0 [B, C, n, h, w] at `start_frame`."""
    with torch.no_grad():
        denoiser.commit(x0, _CommitView(cache, span_frames(cache, chunk_frames)), start_frame, context_t)


def window_call(denoiser: Denoiser, cache: KVCache, x: torch.Tensor, start_frame: int, t: torch.Tensor,
                chunk_frames: int) -> torch.Tensor:
    """x0 of one joint denoising call: window x [B, C, F, h, w] from `start_frame`, per-frame timesteps t [B, F]."""
    return denoiser(x, t, cache=_WindowView(cache, span_frames(cache, chunk_frames)), start_frame=start_frame)


def run_window(denoiser: Denoiser, cache: KVCache, pending: torch.Tensor | None, oldest_step: int | None,
               start_frame: int, timesteps: torch.Tensor, noise_fn: NoiseFn, *, chunk_frames: int,
               chunk_shape: tuple[int, int, int, int], new_chunk: bool = True, context_t: float = 0.0,
               callback: Callback | None = None, index: int = 0
               ) -> tuple[torch.Tensor | None, torch.Tensor | None, int | None]:
    """One window: the `pending` chunks (oldest first, from `start_frame`; the oldest at step `oldest_step`, each
    next one a step behind) plus, with `new_chunk`, a chunk of fresh noise at step 0; every chunk one step.

    chunk_shape: (B, C, h, w) of a chunk. Returns (x0 of the oldest chunk if it reached the last step -- it is
    then committed --, else None; the new pending; the step of its oldest chunk). new_chunk=False is the flush at
    the end of a fixed-length video.
    """
    n, nf = len(timesteps), int(chunk_frames)
    k = 0 if pending is None else pending.shape[2] // nf
    if pending is not None and (pending.shape[2] % nf or oldest_step is None):
        raise ConfigError(f"pending frames {pending.shape[2]} are not whole chunks of {nf} with a known step")
    parts = [] if pending is None else [pending]
    if new_chunk:
        if k and oldest_step - k + 1 != 1:
            raise ConfigError(f"a new chunk must follow a chunk at step 1; the newest pending chunk is at step "
                              f"{oldest_step - k + 1} (were the steps changed?)")
        b, c, h, w = chunk_shape
        parts.append(noise_fn((b, c, nf, h, w)))
    if not parts:
        raise ConfigError("an empty rolling window: nothing pending and no new chunk")
    if k and not 0 <= oldest_step - k + 1 <= oldest_step < n:
        raise ConfigError(f"{k} chunks in flight from step {oldest_step}: outside the {n} steps (were the steps "
                          f"changed?)")
    x = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
    m = x.shape[2] // nf
    top = oldest_step if k else 0
    steps = [top - i for i in range(m)]
    b = x.shape[0]
    t = torch.cat([timesteps[s].reshape(1).expand(nf) for s in steps]).to(x.device)[None].expand(b, m * nf)
    x0 = window_call(denoiser, cache, x, start_frame, t, nf)
    if callback is not None:
        callback(index, float(timesteps[steps[-1]]), x0)
    done, keep = None, []
    for i, s in enumerate(steps):
        blk = x0[:, :, i * nf:(i + 1) * nf]
        if s == n - 1:
            done = blk
            continue
        tn = timesteps[s + 1].to(x.device).expand(b, nf)
        keep.append(denoiser.schedule.add_noise(blk, noise_fn(tuple(blk.shape)), tn))
    if done is not None:
        _check_finite(done, start_frame)
        commit(denoiser, cache, done, start_frame, nf, context_t)
    nxt = (n - 1 if done is not None else steps[0] + 1) if keep else None
    return done, (torch.cat(keep, dim=2) if keep else None), nxt


def rolling_step(denoiser: Denoiser, cache: KVCache, pending: torch.Tensor | None, start_frame: int,
                 timesteps: torch.Tensor, noise_fn: NoiseFn, *, chunk_frames: int,
                 chunk_shape: tuple[int, int, int, int], context_t: float = 0.0,
                 callback: Callback | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Finish the chunk at `start_frame` (the oldest pending one): windows until it is done -- n of them the first
    time (the warm-up), one afterwards. Between steps the pending chunks are n-1 chunks at steps n-1 .. 1.
    Returns (its x0 [B, C, chunk, h, w], committed; the new pending)."""
    oldest = None if pending is None else len(timesteps) - 1
    for i in range(len(timesteps)):
        done, pending, oldest = run_window(denoiser, cache, pending, oldest, start_frame, timesteps, noise_fn,
                                           chunk_frames=chunk_frames, chunk_shape=chunk_shape, context_t=context_t,
                                           callback=callback, index=i)
        if done is not None:
            return done, pending
    raise RuntimeError("the rolling window finished no chunk in n windows")  # unreachable with consistent state


def rolling_rollout(denoiser: Denoiser, cache: KVCache, *, batch: int, num_frames: int, latent_hw: tuple[int, int],
                    timesteps: torch.Tensor, chunk_frames: int, noise_fn: NoiseFn, context_t: float = 0.0,
                    channels: int = 16, start_frame: int = 0, callback: Callback | None = None) -> torch.Tensor:
    """A whole video of `num_frames` latent frames as the official script makes it: warm-up, steady windows, then
    windows without a new chunk until the last chunk is finished (the flush). Returns [B, C, F, h, w]."""
    nf = int(chunk_frames)
    if num_frames % nf or num_frames < nf:
        raise ConfigError(f"{num_frames} latent frames are not whole chunks of {nf}")
    blocks = num_frames // nf
    pending, oldest, outs, started, s = None, None, [], 0, start_frame
    for w in range(blocks + len(timesteps) - 1):
        new = started < blocks
        done, pending, oldest = run_window(denoiser, cache, pending, oldest, s, timesteps, noise_fn, chunk_frames=nf,
                                           chunk_shape=(batch, channels, *latent_hw), new_chunk=new,
                                           context_t=context_t, callback=callback, index=w)
        started += int(new)
        if done is not None:
            outs.append(done)
            s += nf
    return torch.cat(outs, dim=2)


def recommit(denoiser: Denoiser, cache: KVCache, frames: list[int], latents: torch.Tensor, chunk_frames: int,
             context_t: float = 0.0) -> None:
    """Rebuild the cache from clean latents [B, C, K, h, w] of `frames` (whole chunks, in order) under the
    denoiser's context with the rolling sampler's own context pass (a prompt switch's re-cache)."""
    nf = int(chunk_frames)
    cache.reset()
    cache.reset_cross()
    for a in range(0, len(frames), nf):
        commit(denoiser, cache, latents[:, :, a:a + nf], frames[a], nf, context_t)
    if cache.positions != list(frames):
        raise RuntimeError(f"re-cache wrote frames {cache.positions}, expected {frames}")


__all__ = ["rolling_step", "rolling_rollout", "run_window", "window_call", "commit", "recommit", "span_frames"]
