"""Start a video from an image, or continue anyone's video: given latent frames committed into the KV cache.

    settings = frames_settings(bundle.settings)                 # the first frame is a chunk of its own
    session = new_session(model, ctx, latent_hw=(h, w), settings=settings)
    first = commit_frames(model, session, vae.encode(image), decoder=vae)        # image-to-video: emits its frame
    video = generate(model, session, num_frames=..., decoder=vae)                # the rest, conditioned on it

    commit_frames(model, session, vae.encode(last_frames), decoder=vae, emit=False)   # extend a video
    more = generate(model, session, num_chunks=..., decoder=vae)                       # continues it, no seam

Which variant (studied in ComfyUI's ARVideoI2V, LongLive and Causal Forcing; read, not copied): the image's latent
is committed *clean*, as a chunk of its own at frame 0, by the same context pass that commits a generated chunk
(`Denoiser.commit`, timestep `context_t`), and generation continues at frame 1 in chunks of the usual size. Self
Forcing's chunk-wise checkpoints only ever saw clean, committed frames in their cache during training (the
self-rollout commits each finished chunk), never a partly-noised frame next to noisy ones inside a chunk, so a
committed context frame is what they know; putting the image inside the first chunk (clamped at t = 0 while its
two neighbours are denoised) gives those frames a mixed-timestep input they were not trained on. The layout is the
one of `independent_first_frame` (chunks [0], [1..3], [4..6], ...), which also matches the Wan VAE (latent 0 =
video frame 0 alone, then 4 video frames per latent), and the first frame is the attention sink.

Extending a video commits its last latent frames the same way, chunk group by chunk group (each group sees the
ones before it, block-causally as a generated video would); with `emit=False` the decoder runs over them without
returning frames, so its causal state continues the given video and the first new frames join it without a seam.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..config import CausalConfig, ConfigError, plan_chunks
from .denoiser import Denoiser
from .session import SamplingSettings, Session, commit_deferred


def frames_causal(causal: CausalConfig) -> CausalConfig:
    """The chunking for a video that starts from given frames: an independent first frame, then the same chunks;
    the sink is that first frame; the window keeps (at most) its size, minus the remainder after the sink."""
    if causal.independent_first_frame:
        return causal
    n = causal.chunk_frames
    if not causal.rolling:
        return dataclasses.replace(causal, independent_first_frame=True)
    window = 1 + n * max(1, (causal.window_frames - 1) // n)
    return CausalConfig(chunk_frames=n, independent_first_frame=True, window_frames=window, sink_frames=1)


def frames_settings(settings: SamplingSettings) -> SamplingSettings:
    """`settings` with the chunking of `frames_causal` (a user-set independent-first-frame config is kept)."""
    return dataclasses.replace(settings, causal=frames_causal(settings.causal))


def usable_frames(causal: CausalConfig, available: int) -> int:
    """How many of `available` trailing latent frames to commit for an extension: the most that fit the chunking
    (1 + k * chunk) and the window minus one chunk (the rest would be evicted at once)."""
    if available < 1:
        raise ConfigError("no latent frames to continue from")
    n = causal.chunk_frames
    cap = available if not causal.rolling else min(available, causal.window_frames - n)
    return 1 + n * max(0, (cap - 1) // n)


def commit_frames(model, session: Session, latents: torch.Tensor, *, decoder: Any | None = None, emit: bool = True,
                  backend: str = "sdpa") -> torch.Tensor | None:
    """Commit clean latents [B, C, K, h, w] (model space) as the session's next K frames, chunk group by group.

    The session must be at a chunk boundary and K must split into its chunks (`usable_frames`). Each group goes
    through the context pass under the prompt in effect for it; the session advances as if it had generated them
    (held latents, chunk index, decoder state), so a prompt switch later re-caches them too. Returns the decoded
    frames [B, 3, T, H, W] with `emit` and a decoder, else None.
    """
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
        raise ConfigError(f"latents must be [B, C, K, h, w], got {tuple(getattr(latents, 'shape', ()))}")
    b, c, k, h, w = latents.shape
    want = (session.batch, session.channels, session.latent_hw)
    if (b, c, (h, w)) != (want[0], want[1], tuple(want[2])):
        raise ConfigError(f"latents {list(latents.shape)} do not fit the session: batch {want[0]}, {want[1]} channels, "
                          f"latent size {want[2][0]}x{want[2][1]}")
    if not torch.isfinite(latents).all():
        raise ConfigError("the given latents contain NaN/inf values (a broken image or VAE?)")
    session.check_model(model)
    st = session.settings
    bounds = plan_chunks(st.causal, session.next_frame, num_frames=k)
    den = Denoiser(model, st.schedule, context=None, dtype=session.dtype, backend=backend)
    commit_deferred(den, session)  # a generated chunk waiting for its commit (merged commits) goes first
    lat = latents.to(device=session.device, dtype=session.dtype)
    if decoder is not None and session.decoded_frames != session.next_frame:
        session.decoder_state, session.decoded_frames = None, session.next_frame
    outs = []
    prepared: tuple[Any, Any] = (None, None)
    with torch.no_grad():
        for s, e in bounds:
            src = session.prompts.context_at(session.chunk_index)
            if prepared[0] is not src:
                prepared = (src, src.to(session.device).expand(b, -1, -1))
            den.context = prepared[1]
            z = lat[:, :, s - bounds[0][0]:e - bounds[0][0]]
            den.commit(z, session.cache, s, st.context_t)
            session.record_chunk(s, z)
            session.next_frame, session.chunk_index, session.context = e, session.chunk_index + 1, src
            if decoder is not None:
                frames, session.decoder_state = decoder.decode_chunk(z, session.decoder_state)
                session.decoded_frames = e
                if emit:
                    outs.append(frames)
    return torch.cat(outs, dim=2) if outs else None


__all__ = ["commit_frames", "frames_causal", "frames_settings", "usable_frames"]
