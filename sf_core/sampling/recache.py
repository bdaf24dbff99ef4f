"""Recomputing the KV cache under a new prompt (a prompt switch with policy "recache"), per family.

Three ways, chosen by `SamplingSettings` (`recache`, `sampler`):
- "chunks" (Self Forcing family default, `session.recommit`): every cached chunk gets one context pass at its
  own position, in order, so the rebuilt cache is exactly what generating those latents under the new prompt
  would have left (sink included);
- "window" (LongLive, `pipeline/interactive_causal_inference.py` with `global_sink`): while nothing has left the
  window yet, all cached frames are recomputed in ONE pass (they attend to each other both ways); once frames
  have been evicted, the frames after the sink are recomputed in one pass attending to the sink's OLD keys and
  values and to each other, and the sink keeps its old rows;
- the rolling sampler (Rolling Forcing): every cached chunk with the rolling sampler's own context pass.
No noise is drawn; the cross-attention cache is rebuilt from the new prompt.
"""
from __future__ import annotations

import torch

from . import rolling
from .denoiser import Denoiser
from ..cache.kv_cache import KVCache
from .session import Session, recommit


def window_recache(denoiser: Denoiser, cache: KVCache, frames: list[int], latents: torch.Tensor,
                   context_t: float = 0.0) -> None:
    """LongLive's re-cache of the cached `frames` (cache order) from their clean latents [B, C, K, h, w]."""
    if list(frames) != list(cache.positions):
        raise RuntimeError(f"re-cache got frames {frames}, the cache holds {cache.positions}")
    if not frames:
        return
    cache.reset_cross()
    with torch.no_grad():
        if frames == list(range(frames[-1] + 1)):  # nothing evicted: everything in one pass, sink rewritten too
            cache.reset()
            denoiser.commit(latents, cache, 0, context_t)
        else:  # the frames after the sink, rewritten in place (the cache allows rewriting its last frames)
            s = min(cache.sink_frames, len(frames))
            if s < len(frames):
                denoiser.commit(latents[:, :, s:], cache, frames[s], context_t)
    if cache.positions != list(frames):
        raise RuntimeError(f"re-cache wrote frames {cache.positions}, expected {frames}")


def recache(denoiser: Denoiser, session: Session) -> None:
    """Recompute `session.cache` from its held latents under `denoiser.context`, the family's way."""
    st = session.settings
    frames = sorted(session.held)
    if not frames:
        return
    lat = torch.stack([session.held[f] for f in frames], dim=2)
    if st.sampler == "rolling":
        rolling.recommit(denoiser, session.cache, frames, lat, st.causal.chunk_frames, st.context_t)
    elif st.recache == "window":
        window_recache(denoiser, session.cache, frames, lat, st.context_t)
    else:
        recommit(denoiser, session.cache, frames, lat, st.causal, st.context_t)
    session.uncommitted = None  # every held frame is committed clean now (merged commits)


__all__ = ["recache", "window_recache"]
