"""High-level generation used by the CLI and the ComfyUI nodes: a thin loop over `sampler.rollout`.

    session = new_session(model, context, latent_hw=(60, 104), seed=0)        # or load_session(...)
    latents = generate(model, session, num_frames=21, decoder=vae, on_chunk=show)
    set_prompt(session, other_context)                                          # switch at the next chunk
    more = generate(model, session, num_chunks=4)                               # continues the same video

Each chunk: look up its conditioning in the prompt schedule (a switch with policy "recache" first
recomputes the window's KV cache under the new prompt), sample it with `rollout` (noise from the session's
generator, committed to the cache), record it in the session, decode it through the optional chunk decoder
(`decode_chunk(z, state) -> (frames, state)`, state kept in the session), then call `on_chunk`.

Interruption: `on_step` / `on_chunk` may raise (e.g. the host's interrupt). A chunk interrupted before it was
recorded is rolled back (noise generator state restored, its uncommitted cache rows dropped), so the session
stays consistent: continuing it later gives the same latents as an uninterrupted run.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .config import ROPE_MAX_POSITIONS, CausalConfig, ConfigError
from .denoiser import Denoiser
from .prompts import PromptSchedule
from .rope import RopePositionError
from .sampler import NonFiniteError, StepInfo, generator_noise, rollout
from .session import SamplingSettings, Session, SessionError, recommit

log = logging.getLogger(__name__)


@dataclass
class ChunkResult:
    """What `on_chunk` receives after each chunk."""

    index: int  # chunk index in the video
    start_frame: int  # absolute latent frame of the chunk's first frame
    latents: torch.Tensor  # clean latents [B, C, n, h, w] (model space)
    frames: torch.Tensor | None  # decoded frames [B, 3, T, H, W] in [-1, 1], if a decoder was given
    seconds: float  # wall time of the chunk (re-cache + sampling + decode)
    switched: bool  # the conditioning changed at this chunk
    session: Session


@dataclass
class Bundle:
    """Everything `python -m sf_core generate` needs for one model family.

    text_encoder: `encode(list[str]) -> [B, L, text_dim]`; decoder: a chunk decoder (or None: latents only).
    temporal_scale / spatial_scale: video frames per latent frame after the first / pixels per latent pixel.
    """

    transformer: torch.nn.Module
    text_encoder: Any | None
    decoder: Any | None
    settings: SamplingSettings
    negative_prompt: str = ""
    fps: float = 16.0
    latent_hw: tuple[int, int] = (60, 104)
    temporal_scale: int = 4
    spatial_scale: int = 8
    name: str = "wan2.1"


def plan_chunks(causal: CausalConfig, start_frame: int, num_frames: int | None = None,
                num_chunks: int | None = None) -> list[tuple[int, int]]:
    """[(start, end)] latent-frame ranges of the next chunks from `start_frame` (exactly one of the counts)."""
    if (num_frames is None) == (num_chunks is None):
        raise ConfigError("give exactly one of num_frames (latent frames) or num_chunks")
    if num_chunks is not None:
        if num_chunks < 1:
            raise ConfigError(f"num_chunks must be >= 1, got {num_chunks}")
        bounds, s = [], start_frame
        for _ in range(int(num_chunks)):
            n = 1 if (causal.independent_first_frame and s == 0) else causal.chunk_frames
            bounds.append((s, s + n))
            s += n
        return bounds
    if num_frames < 1:
        raise ConfigError(f"num_frames must be >= 1 latent frame, got {num_frames}")
    if start_frame == 0:
        return causal.chunk_bounds(int(num_frames))
    n = causal.chunk_frames
    if num_frames % n:
        lo, hi = max(n, num_frames // n * n), (num_frames // n + 1) * n
        raise ConfigError(f"a continuation of {num_frames} latent frames cannot be split into chunks of {n}; "
                          f"nearest valid lengths: {lo} or {hi} latent frames ({4 * lo} or {4 * hi} video frames)")
    return [(s, s + n) for s in range(start_frame, start_frame + num_frames, n)]


def set_prompt(session: Session, context: torch.Tensor, text: str | None = None, at_chunk: int | None = None) -> None:
    """Use `context` from chunk `at_chunk` on (default: the next chunk); later scheduled prompts are dropped."""
    at = session.chunk_index if at_chunk is None else int(at_chunk)
    session.prompts = session.prompts.with_prompt(at, context, text)


def generate(model, session: Session, *, num_frames: int | None = None, num_chunks: int | None = None,
             noise: torch.Tensor | None = None, decoder: Any | None = None,
             on_step: Callable[[StepInfo], None] | None = None,
             on_chunk: Callable[[ChunkResult], None] | None = None, backend: str = "sdpa",
             keep_latents: bool = True) -> torch.Tensor | None:
    """Generate the next `num_frames` latent frames (or `num_chunks` chunks) of the session's video.

    model: the Wan module tree the session was made with. noise: optional initial noise of these frames
    [B, C, F, h, w] (else drawn from the session's generator). Returns the clean latents [B, C, F, h, w]
    (model space) of the new frames, or None with keep_latents=False (long videos: take chunks in on_chunk).
    """
    session.check_model(model)
    st = session.settings
    bounds = plan_chunks(st.causal, session.next_frame, num_frames, num_chunks)
    first, end = bounds[0][0], bounds[-1][1]
    if end > ROPE_MAX_POSITIONS:
        raise RopePositionError(
            f"generating latent frames {first}..{end - 1} goes past the RoPE limit of {ROPE_MAX_POSITIONS} latent "
            f"frames per video ({4 * ROPE_MAX_POSITIONS - 3} video frames); this session can still generate "
            f"{session.frames_left} latent frames: ask for at most that, or start a new session")
    b, c, (h, w) = session.batch, session.channels, session.latent_hw
    if noise is not None:
        want = (b, c, end - first, h, w)
        if tuple(noise.shape) != want:
            raise ConfigError(f"noise has shape {tuple(noise.shape)}, expected [B, C, F, h, w] = {list(want)} "
                              f"(batch {b}, {c} latent channels, {end - first} frames, latent size {h}x{w})")
    session.prompts.check(session.model_id["text_dim"], b)
    if decoder is not None and session.decoded_frames != first:
        if session.decoder_state is not None or first > 0:
            log.warning("the decoder stream stopped at latent frame %d but the video continues at %d: starting a "
                        "new decode stream (expect a seam)", session.decoded_frames, first)
        session.decoder_state = None
        session.decoded_frames = first
    device = session.device
    den = Denoiser(model, st.schedule, context=None, dtype=session.dtype, backend=backend)
    noise_fn = generator_noise(session.generator, session.dtype, device)
    timesteps = st.timesteps()
    prepared: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    outs = []
    for s, e in bounds:
        t0 = time.perf_counter()
        ci = session.chunk_index
        src = session.prompts.context_at(ci)
        if prepared[0] is not src:  # keep one tensor object per conditioning: the cross-attention cache key
            prepared = (src, src.to(device).expand(b, -1, -1))
        den.context = prepared[1]
        switched = session.context is not None and not _same(src, session.context)
        rng = session.generator.get_state()
        try:
            with torch.no_grad():
                if (switched and session.prompts.policy == "recache") or session.cache_stale:
                    session.cache_stale = True
                    frames_held = sorted(session.held)
                    if frames_held:
                        lat = torch.stack([session.held[f] for f in frames_held], dim=2)
                        recommit(den, session.cache, frames_held, lat, st.causal, st.context_t)
                    session.cache_stale = False
                step_cb = None if on_step is None else (lambda info, _ci=ci: on_step(_renumber(info, _ci)))
                chunk_noise = None if noise is None else noise[:, :, s - first:e - first]
                x0 = rollout(den, session.cache, batch=b, num_frames=e - s, latent_hw=(h, w), timesteps=timesteps,
                             causal=st.causal, noise_fn=noise_fn, noise=chunk_noise, start_frame=s, channels=c,
                             context_t=st.context_t, context_renoise=st.context_renoise, dtype=session.dtype,
                             device=device, on_step=step_cb)
                frames, dstate = (None, None)
                if decoder is not None:
                    frames, dstate = decoder.decode_chunk(x0, session.decoder_state)
        except NonFiniteError as exc:
            _rollback(session, s, rng)
            raise NonFiniteError(
                f"chunk {ci} of the video (latent frames {s}..{e - 1}) produced NaN/inf values; stopped, the session "
                f"keeps the {ci} chunks before it. Usual causes: fp16 overflow (use bf16 or fp32), corrupt weights, "
                f"or NaN in the text embeddings") from exc
        except BaseException:
            _rollback(session, s, rng)
            raise
        # the chunk is done: record it (from here on an exception leaves a consistent, advanced session)
        session.record_chunk(s, x0)
        session.next_frame, session.chunk_index, session.context = e, ci + 1, src
        if decoder is not None:
            session.decoder_state, session.decoded_frames = dstate, e
        if keep_latents:
            outs.append(x0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if on_chunk is not None:
            on_chunk(ChunkResult(ci, s, x0, frames, time.perf_counter() - t0, switched, session))
    return torch.cat(outs, dim=2) if keep_latents else None


def _rollback(session: Session, start_frame: int, rng_state: torch.Tensor) -> None:
    session.generator.set_state(rng_state)
    session.cache.truncate(start_frame)


def _renumber(info: StepInfo, chunk: int) -> StepInfo:
    return StepInfo(chunk, info.step, info.start_frame, info.t, info.x0)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(torch.equal(a, b.to(a.device)))


def as_bundle(obj: Any) -> Bundle:
    """A Bundle from any object with the same attribute names (e.g. the toy model's bundle)."""
    if isinstance(obj, Bundle):
        return obj
    missing = [k for k in ("transformer", "text_encoder", "decoder") if not hasattr(obj, k)]
    if missing:
        raise SessionError(f"{type(obj).__name__} is not a model bundle: it lacks {missing}")
    kw = {k: getattr(obj, k) for k in Bundle.__dataclass_fields__ if hasattr(obj, k)}
    kw.setdefault("settings", SamplingSettings())
    return Bundle(**kw)


__all__ = ["generate", "set_prompt", "plan_chunks", "ChunkResult", "Bundle", "as_bundle", "PromptSchedule"]
