"""High-level generation used by the CLI, the ComfyUI nodes and the live stream: loops over one chunk step.

    session = new_session(model, context, latent_hw=(60, 104), seed=0)        # or load_session(...)
    latents = generate(model, session, num_frames=21, decoder=vae, on_chunk=show)
    set_prompt(session, other_context)                                          # switch at the next chunk
    more = generate(model, session, num_chunks=4)                               # continues the same video

`SessionStepper.step()` makes one chunk: look up its conditioning in the prompt schedule (a switch with policy
"recache" first recomputes the window's KV cache under the new prompt), sample and commit it with
`sampler.step_chunk` (noise from the session's generator), record it in the session, decode it through the
optional chunk decoder (`decode_chunk(z, state) -> (frames, state)`, state kept in the session). `generate` is a
loop over it for a planned stretch of chunks (`config.plan_chunks`, the one chunk planner); `sf_core.sampling.live` loops
over it until the user stops.

Interruption: `on_step` / `on_chunk` may raise (e.g. the host's interrupt). A chunk interrupted before it was
recorded is rolled back (noise generator state restored, its uncommitted cache rows dropped), so the session
stays consistent: continuing it later gives the same latents as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..config import ROPE_MAX_POSITIONS, ConfigError, plan_chunks
from .denoiser import Denoiser
from .prompts import PromptSchedule
from ..model.rope import RopePositionError
from .overlap import OverlappedDecoder
from .recache import recache
from .rolling import rolling_step
from .sampler import NonFiniteError, StepInfo, generator_noise, step_chunk
from .session import SamplingSettings, Session, SessionError, commit_deferred

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


def set_prompt(session: Session, context: torch.Tensor, text: str | None = None, at_chunk: int | None = None) -> None:
    """Use `context` from chunk `at_chunk` on (default: the next chunk); later scheduled prompts are dropped."""
    at = session.chunk_index if at_chunk is None else int(at_chunk)
    session.prompts = session.prompts.with_prompt(at, context, text)


class SessionStepper:
    """Advances a session one chunk at a time: the loop body of `generate` and of the live stream.

    Each `step()`: look up the chunk's conditioning in the prompt schedule (a switch with policy "recache" first
    recomputes the window's KV cache under the new prompt), draw its noise from the session's generator, run the
    one chunk step (`sampler.step_chunk`: sample + commit), record it in the session, decode it through the
    optional chunk decoder, and return a ChunkResult. An exception inside a step rolls the chunk back.
    """

    def __init__(self, model, session: Session, *, decoder: Any | None = None, backend: str = "sdpa"):
        session.check_model(model)
        self.model, self.session, self.decoder = model, session, decoder
        st = session.settings
        self.den = Denoiser(model, st.schedule, context=None, dtype=session.dtype, backend=backend)
        self.timesteps = st.timesteps()
        self.first_timesteps = st.timesteps(first=True)
        self.noise_fn = generator_noise(session.generator, session.dtype, session.device)
        self._prepared: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        if decoder is not None and session.decoded_frames != session.next_frame:
            if session.decoder_state is not None or session.next_frame > 0:
                log.warning("the decoder stream stopped at latent frame %d but the video continues at %d: starting "
                            "a new decode stream (expect a seam)", session.decoded_frames, session.next_frame)
            session.decoder_state = None
            session.decoded_frames = session.next_frame

    def next_bounds(self) -> tuple[int, int]:
        s = self.session.next_frame
        return s, s + self.session.settings.causal.chunk_size(s)

    def check_room(self, end_frame: int) -> None:
        """RopePositionError if the video cannot reach latent frame `end_frame` (absolute positions only)."""
        session = self.session
        if end_frame > ROPE_MAX_POSITIONS and not session.cache.unbounded:
            raise RopePositionError(
                f"generating up to latent frame {end_frame - 1} goes past the RoPE limit of {ROPE_MAX_POSITIONS} "
                f"latent frames per video with absolute positions; this session can still generate "
                f"{session.frames_left} latent frames: ask for at most that, use positions 'auto' or 'relative' "
                f"with a rolling window (no limit), or start a new session")

    def _merge_or_flush(self, s: int, e: int, switched: bool) -> tuple[torch.Tensor, int] | None:
        """Merged commits: (latents, start) of the previous chunk if this chunk's first call can commit it (same
        conditioning, a cache that allows it); otherwise commit it now by itself (`commit_deferred`)."""
        session, st = self.session, self.session.settings
        if session.uncommitted is None:
            return None
        a, b = session.uncommitted
        if st.merge_commit and not switched and \
                self.den.can_merge(session.cache, a, b - a, s, e - s):
            return torch.stack([session.held[f] for f in range(a, b)], dim=2), a
        commit_deferred(self.den, session, same_context=not switched)
        return None

    def step(self, *, noise: torch.Tensor | None = None, on_step: Callable[[StepInfo], None] | None = None,
             decode: bool = True) -> ChunkResult:
        """Generate, commit and record the next chunk. noise: its initial noise [B, C, n, h, w] (else drawn).
        decode=False: leave the decoder (frames None, its state untouched) to the caller (`overlap`)."""
        session, st = self.session, self.session.settings
        s, e = self.next_bounds()
        self.check_room(e)
        b, c, (h, w) = session.batch, session.channels, session.latent_hw
        t0 = time.perf_counter()
        ci = session.chunk_index
        src = session.prompts.context_at(ci)
        if self._prepared[0] is not src:  # keep one tensor object per conditioning: the cross-attention cache key
            self._prepared = (src, src.to(session.device).expand(b, -1, -1))
        self.den.context = self._prepared[1]
        switched = session.context is not None and not _same(src, session.context)
        rng = session.generator.get_state()
        merged = [False]  # this chunk's first call committed the previous chunk (merged commits)
        merge, deferred = None, False
        try:
            with torch.no_grad():
                if (switched and session.prompts.policy == "recache") or session.cache_stale:
                    session.cache_stale = True
                    recache(self.den, session)  # the family's way (sf_core.sampling.recache)
                    session.cache_stale = False
                merge = self._merge_or_flush(s, e, switched)

                def cb(i, t, x0_, _ci=ci, _s=s):
                    merged[0] = True
                    if on_step is not None:
                        on_step(StepInfo(_ci, i, _s, t, x0_))
                pending = session.pending
                if st.sampler == "rolling":  # Rolling Forcing: windows until this chunk is finished
                    if noise is not None:
                        raise ConfigError("the rolling sampler draws each chunk's noise when the chunk enters its "
                                          "window; initial noise cannot be given")
                    x0, pending = rolling_step(self.den, session.cache, pending, s, self.timesteps, self.noise_fn,
                                               chunk_frames=e - s, chunk_shape=(b, c, h, w),
                                               context_t=st.context_t, callback=cb)
                else:
                    x = noise if noise is not None else self.noise_fn((b, c, e - s, h, w))
                    x = x.to(device=session.device, dtype=session.dtype)
                    # Causal Forcing++: the video's first sampled chunk (also after given frames), or a new shot
                    first = st.first_steps is not None and (session.sampled_chunks == 0 or session.cache.length == 0)
                    x0 = step_chunk(self.den, session.cache, x, s, self.first_timesteps if first else self.timesteps,
                                    self.noise_fn, context_t=st.context_t, context_renoise=st.context_renoise,
                                    commit=not st.merge_commit, merge=merge, callback=cb)
                    deferred = st.merge_commit
                    if deferred and session.cache.end_frame != e:
                        # a one-step chunk whose only call was the merged one: none of its rows are in the cache
                        # to defer against, so it is committed now (the next chunk's first call is a plain one)
                        self.den.commit(x0, session.cache, s, st.context_t)
                        deferred = False
                frames, dstate = (None, None)
                if self.decoder is not None and decode:
                    frames, dstate = self.decoder.decode_chunk(x0, session.decoder_state)
        except NonFiniteError as exc:
            if merge is not None and merged[0]:
                session.uncommitted = None
            _rollback(session, s, rng)
            raise NonFiniteError(
                f"chunk {ci} of the video (latent frames {s}..{e - 1}) produced NaN/inf values; stopped, the session "
                f"keeps the {ci} chunks before it. Usual causes: fp16 overflow (use bf16 or fp32), corrupt weights, "
                f"or NaN in the text embeddings") from exc
        except BaseException:
            if merge is not None and merged[0]:
                session.uncommitted = None  # the previous chunk was committed before the failure
            _rollback(session, s, rng)
            raise
        # the chunk is done: record it (from here on an exception leaves a consistent, advanced session)
        session.record_chunk(s, x0)
        session.next_frame, session.chunk_index, session.context, session.pending = e, ci + 1, src, pending
        session.sampled_chunks += 1
        session.uncommitted = (s, e) if deferred else None
        if self.decoder is not None and decode:
            session.decoder_state, session.decoded_frames = dstate, e
        if session.device.type == "cuda":
            torch.cuda.synchronize(session.device)
        return ChunkResult(ci, s, x0, frames, time.perf_counter() - t0, switched, session)


def generate(model, session: Session, *, num_frames: int | None = None, num_chunks: int | None = None,
             noise: torch.Tensor | None = None, decoder: Any | None = None,
             on_step: Callable[[StepInfo], None] | None = None,
             on_chunk: Callable[[ChunkResult], None] | None = None, backend: str = "sdpa",
             keep_latents: bool = True, overlap_decode: bool = False) -> torch.Tensor | None:
    """Generate the next `num_frames` latent frames (or `num_chunks` chunks) of the session's video.

    model: the Wan module tree the session was made with. noise: optional initial noise of these frames
    [B, C, F, h, w] (else drawn from the session's generator). Returns the clean latents [B, C, F, h, w]
    (model space) of the new frames, or None with keep_latents=False (long videos: take chunks in on_chunk).
    overlap_decode: decode chunk k while chunk k+1 is sampled (`sf_core.sampling.overlap`); each chunk reaches
    on_chunk one chunk later, with the same frames.
    """
    st = session.settings
    bounds = plan_chunks(st.causal, session.next_frame, num_frames, num_chunks)
    first, end = bounds[0][0], bounds[-1][1]
    b, c, (h, w) = session.batch, session.channels, session.latent_hw
    if noise is not None:
        want = (b, c, end - first, h, w)
        if tuple(noise.shape) != want:
            raise ConfigError(f"noise has shape {tuple(noise.shape)}, expected [B, C, F, h, w] = {list(want)} "
                              f"(batch {b}, {c} latent channels, {end - first} frames, latent size {h}x{w})")
    session.prompts.check(session.model_id["text_dim"], b)
    stepper = SessionStepper(model, session, decoder=decoder, backend=backend)
    stepper.check_room(end)
    outs = []
    overlap = OverlappedDecoder(decoder, session) if (overlap_decode and decoder is not None) else None
    pending: list[ChunkResult] = []  # the chunk being decoded (overlap)

    def deliver() -> None:
        res = pending.pop()
        frames, session.decoder_state = overlap.result()
        session.decoded_frames = res.start_frame + res.latents.shape[2]
        if on_chunk is not None:
            on_chunk(dataclasses.replace(res, frames=frames))

    try:
        for s, e in bounds:
            res = stepper.step(noise=None if noise is None else noise[:, :, s - first:e - first], on_step=on_step,
                               decode=overlap is None)
            if keep_latents:
                outs.append(res.latents)
            if overlap is None:
                if on_chunk is not None:
                    on_chunk(res)
                continue
            if pending:
                deliver()
            overlap.submit(res.latents)
            pending.append(res)
        if pending:
            deliver()
    finally:
        if overlap is not None:
            try:
                if pending:  # stopped by an error: the chunk in flight is finished and delivered, as sequentially
                    deliver()
            finally:
                overlap.close()
    return torch.cat(outs, dim=2) if keep_latents else None


def _rollback(session: Session, start_frame: int, rng_state: torch.Tensor) -> None:
    session.generator.set_state(rng_state)
    session.cache.truncate(start_frame)


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


__all__ = ["generate", "set_prompt", "plan_chunks", "SessionStepper", "ChunkResult", "Bundle", "as_bundle", "PromptSchedule"]
