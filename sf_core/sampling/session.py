"""A generation session: everything needed to continue a video later, as one explicit state object.

A `Session` holds the KV cache (with the absolute `positions` of its frames), the next frame to generate,
the noise generator's state, the sampling settings (timesteps, shift, chunking, window/sink, context noise),
the prompt schedule and how far it got, the clean latents of the frames in the cache (to re-cache them
under a new prompt), an optional chunk-decoder state, and the identity of the model it was made with.
`sf_core.sampling.pipeline.generate` advances it; `sf_core.sampling.session_io` saves it to one safetensors file and back.

Noise comes from a CPU `torch.Generator` seeded with the session seed, whatever the compute device, so a
seed gives the same noise on every machine (the draw order is documented in `sf_core.sampling.sampler`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import ROPE_MAX_POSITIONS, CausalConfig, ConfigError
from .denoiser import Denoiser
from ..model.forward import model_dims
from ..cache.kv_cache import ROPE_MODES, KVCache
from ..cache.kv_quant import check_kv_dtype
from .prompts import PromptSchedule
from .schedule import DEFAULT_STEPS, FlowSchedule, parse_steps

log = logging.getLogger(__name__)

TRAINING_FRAMES = 21  # latent frames Self Forcing is trained on (81 video frames)
SAMPLERS = ("chunk", "rolling")
RECACHE_MODES = ("chunks", "window")


class SessionError(ValueError):
    """A session cannot be used as asked (another model, a corrupt file, a bad continuation)."""


def default_causal(chunk_frames: int = 3, independent_first_frame: bool = False) -> CausalConfig:
    """The default rolling cache: sink = the first chunk, window = the training length (21 frames).

    - window <= 21: every query then attends to at most as many frames as in training (the last chunk of a
      21-frame training video sees 21 frames), so a long video stays inside the training distribution;
    - sink = the first chunk: in training every frame sees the first chunk; keeping it anchors identity and
      colours instead of letting them drift once the start of the video leaves the window;
    - window - sink is a whole number of chunks, so the frames a re-cache recomputes are whole chunks.
    For videos of <= 21 frames nothing is ever evicted: identical to the official global-cache inference.
    """
    sink = 1 if independent_first_frame else chunk_frames
    window = sink + chunk_frames * ((TRAINING_FRAMES - sink) // chunk_frames)
    return CausalConfig(chunk_frames=chunk_frames, independent_first_frame=independent_first_frame,
                        window_frames=window, sink_frames=sink)


@dataclass(frozen=True)
class SamplingSettings:
    """How chunks are sampled. steps: denoising steps on the 0..1000 scale (warped onto the shifted grid
    when `warp`: 1000,750,500,250 -> 1000, 937.5, 833.33, 625 at shift 5); context_t: timestep of the
    context pass that commits a chunk (0 = clean, as the official inference); context_renoise: re-noise the
    chunk to context_t first (as the training rollout). positions: RoPE frame positions of a rolling cache
    (`sf_core.cache.kv_cache`): "auto" (absolute, as the official code, until the 1024-frame table would be passed,
    then relative to the cache), "absolute" (stops at 1024 latent frames) or "relative" (from the start).
    kv_dtype: storage of the KV cache (`sf_core.cache.kv_quant`): "auto" (the compute dtype), "fp32", "bf16", "fp16",
    "int8" or "fp8" (8-bit codes with per-token, per-head scales: about half the memory of bf16)."""

    steps: tuple[int, ...] = DEFAULT_STEPS
    shift: float = 5.0
    warp: bool = True
    context_t: float = 0.0
    context_renoise: bool = False
    causal: CausalConfig = field(default_factory=default_causal)
    positions: str = "auto"
    kv_dtype: str = "auto"
    # Checkpoint families (`sf_core.checkpoints.families`): sampler "chunk" (one chunk at a time) or "rolling" (Rolling
    # Forcing's joint window, `sf_core.sampling.rolling`); first_steps: the steps of a chunk started on an empty cache
    # (Causal Forcing++ 1/2-step models use 4 there); recache: how a prompt switch recomputes the cache,
    # "chunks" (each cached chunk, causally) or "window" (LongLive: the window in one pass, sink kept).
    sampler: str = "chunk"
    # merged commits (`sf_core.cache.kv_merge`): a chunk's context pass runs inside the next chunk's first call
    # (4 forward calls per chunk instead of 5 at 4 steps); same latents within float rounding; chunk sampler only
    merge_commit: bool = False
    first_steps: tuple[int, ...] | None = None
    recache: str = "chunks"
    family: str = ""

    def __post_init__(self) -> None:
        check_kv_dtype(self.kv_dtype)
        object.__setattr__(self, "steps", tuple(parse_steps(list(self.steps))))
        if self.first_steps is not None:
            object.__setattr__(self, "first_steps", tuple(parse_steps(list(self.first_steps))))
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.recache not in RECACHE_MODES:
            raise ConfigError(f"recache must be one of {RECACHE_MODES}, got {self.recache!r}")
        if self.sampler == "rolling" and not (self.causal.rolling and
                                              self.causal.window_frames > self.causal.chunk_frames):
            raise ConfigError("the rolling sampler (Rolling Forcing) needs a rolling KV cache larger than one chunk "
                              f"(its preset: window 24, sink 3 latent frames), got window {self.causal.window_frames}")
        if self.merge_commit and (self.sampler != "chunk" or self.context_renoise):
            raise ConfigError("merge_commit works with the chunk sampler and a clean context pass (context_renoise "
                              f"off); got sampler {self.sampler!r}, context_renoise {self.context_renoise}: turn "
                              "merge_commit off for this model")
        if self.positions not in ROPE_MODES:
            raise ConfigError(f"positions must be one of {ROPE_MODES}, got {self.positions!r}")
        if self.positions == "relative" and not self.causal.rolling:
            raise ConfigError("positions='relative' needs a rolling window (window_frames); a global cache keeps "
                              "absolute positions: set a window or use positions='auto'")
        if not self.shift > 0:
            raise ConfigError(f"shift must be > 0 (Self Forcing uses 5), got {self.shift}")
        if not 0 <= self.context_t <= 1000:
            raise ConfigError(f"context_t must be in 0..1000 (0 = clean context), got {self.context_t}")

    @property
    def schedule(self) -> FlowSchedule:
        return FlowSchedule(float(self.shift))

    @property
    def rope_mode(self) -> str:
        """The cache's RoPE mode: `positions` on a rolling window, absolute for a global cache."""
        return self.positions if self.causal.rolling else "absolute"

    def timesteps(self, first: bool = False) -> torch.Tensor:
        """The per-step timesteps (float32); first=True: those of a chunk started on an empty cache."""
        steps = self.first_steps if (first and self.first_steps) else self.steps
        if self.warp:
            return self.schedule.warp(steps)
        return torch.tensor(steps, dtype=torch.float32)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["steps"] = list(self.steps)
        d["first_steps"] = None if self.first_steps is None else list(self.first_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamplingSettings":
        d = dict(d)
        d["causal"] = CausalConfig.from_dict(d.get("causal", {}))
        d["steps"] = tuple(d.get("steps", DEFAULT_STEPS))
        if d.get("first_steps") is not None:
            d["first_steps"] = tuple(d["first_steps"])
        return cls(**d)


def model_identity(model) -> dict[str, Any]:
    """Shape of a Wan module tree (ours or ComfyUI's) and a fingerprint of a few of its weights."""
    dim, heads, freq_dim, patch, out_dim = model_dims(model)
    ident = {"dim": dim, "num_heads": heads, "num_layers": len(model.blocks),
             "ffn_dim": int(model.blocks[0].ffn[0].out_features), "in_dim": int(model.patch_embedding.in_channels),
             "out_dim": out_dim, "text_dim": int(model.text_embedding[0].in_features), "freq_dim": freq_dim,
             "patch_size": list(patch)}
    ident["fingerprint"] = _fingerprint(model)
    return ident


def check_model_shape(model_id: dict[str, Any], model) -> dict[str, Any]:
    """SessionError if `model` is not the shape a session's `model_id` records; returns the model's identity."""
    ident = model_identity(model)
    diff = {k: (model_id.get(k), ident[k]) for k in ident if k != "fingerprint" and model_id.get(k) != ident[k]}
    if diff:
        detail = ", ".join(f"{k}: session {a} vs model {b}" for k, (a, b) in sorted(diff.items()))
        raise SessionError(f"this session was made with another model ({detail}); continue it with the model "
                           f"it was started with, or start a new session")
    return ident


def _fingerprint(model) -> str | None:
    """sha256 of the first values of three weights: detects other weights of the same shape (cheap)."""
    try:
        h = hashlib.sha256()
        for w in (model.patch_embedding.weight, model.blocks[0].self_attn.q.weight, model.head.head.weight):
            h.update(w.detach().flatten()[:256].float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]
    except Exception:  # noqa: BLE001 - offloaded / meta weights: no fingerprint, shape check only
        return None


@dataclass
class Session:
    """State of one (batch of) video(s) being generated; see the module docstring."""

    settings: SamplingSettings
    cache: KVCache
    prompts: PromptSchedule
    generator: torch.Generator
    batch: int
    latent_hw: tuple[int, int]
    channels: int
    model_id: dict[str, Any]
    seed: int
    dtype: torch.dtype = torch.float32
    next_frame: int = 0  # absolute index of the next latent frame to generate
    chunk_index: int = 0  # chunks generated so far (position in the prompt schedule)
    held: dict[int, torch.Tensor] = field(default_factory=dict)  # clean latents [B, C, h, w] of cached frames
    context: torch.Tensor | None = None  # conditioning the last chunk (and the cache) was computed under
    decoder_state: Any = None
    decoded_frames: int = 0  # latent frames passed through the chunk decoder whose state is held
    cache_stale: bool = False  # a re-cache was interrupted: the cache must be rebuilt from `held` first
    # rolling sampler: noisy latents [B, C, k, h, w] of the k frames after next_frame already in flight (started,
    # not finished); None for the chunk sampler and before the first window
    pending: torch.Tensor | None = None
    # chunks sampled so far (not given by commit_frames): Causal Forcing++ gives the first one `first_steps`, also
    # after an image or a given video, as its official pipeline does (block 0 after the initial latents)
    sampled_chunks: int = 0
    # merged commits: frames [a, b) of the last chunk, not yet committed (their rows in the cache are those of the
    # chunk's last denoising call); the next chunk's first call commits them, or `commit_deferred` does
    uncommitted: tuple[int, int] | None = None

    @property
    def device(self) -> torch.device:
        return self.cache.device

    @property
    def frames_left(self) -> int | None:
        """Latent frames that can still be generated before the RoPE limit (None: no limit, relative positions)."""
        if self.cache.unbounded:
            return None
        return ROPE_MAX_POSITIONS - self.next_frame

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Session":
        """An independent copy on `device` (cache, held latents, decoder state, RNG state; the conditioning and
        the noise generator stay on the CPU). The session itself is not changed."""
        gen = torch.Generator("cpu")
        gen.set_state(self.generator.get_state().clone())
        dtype = dtype or self.dtype
        return dataclasses.replace(
            self, cache=self.cache.to(device, dtype), generator=gen,
            held={f: t.detach().to(device=device, dtype=dtype, copy=True) for f, t in self.held.items()},
            context=None if self.context is None else self.context.detach().to("cpu", copy=True),
            decoder_state=state_to(self.decoder_state, device), dtype=dtype,
            pending=None if self.pending is None else self.pending.detach().to(device=device, dtype=dtype, copy=True))

    def reset_shot(self) -> None:
        """Start a new shot: forget the cached frames (the video's frame count and the noise stream go on)."""
        self.cache.reset()
        self.cache.reset_cross()
        self.held.clear()
        self.context = None
        self.cache_stale = False
        self.pending = None
        self.uncommitted = None

    def check_model(self, model) -> None:
        """SessionError if `model` is not the shape this session was made with (warning if weights differ)."""
        ident = check_model_shape(self.model_id, model)
        fp = self.model_id.get("fingerprint")
        if fp and ident["fingerprint"] and fp != ident["fingerprint"]:
            log.warning("the model's weights differ from those this session was made with (same shapes): "
                        "continuing anyway; results will not match an uninterrupted run")

    def held_latents(self) -> torch.Tensor:
        """Clean latents [B, C, K, h, w] of the frames in the cache, in cache order."""
        missing = [f for f in self.cache.positions if f not in self.held]
        if missing:
            raise SessionError(f"latents of cached frames {missing} are missing from the session")
        return torch.stack([self.held[f] for f in self.cache.positions], dim=2)

    def record_chunk(self, start_frame: int, x0: torch.Tensor) -> None:
        """Keep the clean latents of a committed chunk; forget those of frames the cache evicted."""
        for j in range(x0.shape[2]):
            self.held[start_frame + j] = x0[:, :, j]
        cached = set(self.cache.positions)
        for f in [f for f in self.held if f not in cached]:
            del self.held[f]


def new_session(model, prompts: PromptSchedule | torch.Tensor, *, latent_hw: tuple[int, int], batch: int = 1,
                seed: int = 0, settings: SamplingSettings | None = None, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> Session:
    """A fresh session for `model` (ours or ComfyUI's Wan module tree) at latent size `latent_hw`.

    prompts: a schedule, or one conditioning tensor [B, L, text_dim] for the whole video.
    """
    settings = settings or SamplingSettings()
    if not isinstance(prompts, PromptSchedule):
        prompts = PromptSchedule.single(prompts)
    ident = model_identity(model)
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    prompts.check(ident["text_dim"], batch)
    h, w = (int(s) for s in latent_hw)
    _, ph, pw = ident["patch_size"]
    if h < ph or w < pw or h % ph or w % pw:
        raise ConfigError(f"latent size {h}x{w} must be a positive multiple of the patch {ph}x{pw} "
                          f"(pixel size = 8x latent size for the Wan VAE, e.g. 480x832 -> 60x104)")
    tpf = (h // ph) * (w // pw)
    cache = KVCache.for_config(settings.causal, num_layers=ident["num_layers"], num_heads=ident["num_heads"],
                               head_dim=ident["dim"] // ident["num_heads"], tokens_per_frame=tpf, batch=batch,
                               frames=TRAINING_FRAMES, dtype=dtype, device=device, rope_mode=settings.rope_mode,
                               kv_dtype=settings.kv_dtype)
    gen = torch.Generator("cpu").manual_seed(int(seed))
    return Session(settings=settings, cache=cache, prompts=prompts, generator=gen, batch=batch, latent_hw=(h, w),
                   channels=ident["in_dim"], model_id=ident, seed=int(seed), dtype=dtype)


def state_to(obj, device):
    """Copy a decoder state (nested lists / tuples / dicts / dataclasses of tensors) to a device."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(device, copy=True)
    if isinstance(obj, list):
        return [state_to(x, device) for x in obj]
    if isinstance(obj, tuple):
        return tuple(state_to(x, device) for x in obj)
    if isinstance(obj, dict):
        return {k: state_to(v, device) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: state_to(getattr(obj, f.name), device)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def chunk_of(frame: int, causal: CausalConfig) -> int:
    """Index of the chunk latent frame `frame` belongs to."""
    if causal.independent_first_frame:
        return 0 if frame == 0 else (frame - 1) // causal.chunk_frames + 1
    return frame // causal.chunk_frames


def commit_groups(frames: list[int], causal: CausalConfig) -> list[tuple[int, int]]:
    """Split cached frames into runs [a, b) (indices into `frames`) of consecutive frames of one chunk.

    Re-committing each run at its own absolute position reproduces the original chunking: frames of one
    chunk see each other, later chunks see earlier ones.
    """
    groups: list[tuple[int, int]] = []
    a = 0
    for i in range(1, len(frames) + 1):
        if i == len(frames) or frames[i] != frames[i - 1] + 1 or \
                chunk_of(frames[i], causal) != chunk_of(frames[i - 1], causal):
            groups.append((a, i))
            a = i
    return groups


def commit_deferred(denoiser: Denoiser, session: Session, *, same_context: bool = False) -> None:
    """The context pass of the last chunk if its commit was deferred (merged commits), under the conditioning
    that chunk was made with (same_context: `denoiser.context` is it already): the cache then holds every frame
    clean, as after a sequential step."""
    if session.uncommitted is None:
        return
    a, b = session.uncommitted
    den = denoiser if same_context else dataclasses.replace(
        denoiser, context=session.context.to(session.device).expand(session.batch, -1, -1))
    with torch.no_grad():
        den.commit(torch.stack([session.held[f] for f in range(a, b)], dim=2), session.cache, a,
                   session.settings.context_t)
    session.uncommitted = None


def recommit(denoiser: Denoiser, cache: KVCache, frames: list[int], latents: torch.Tensor, causal: CausalConfig,
             context_t: float = 0.0) -> None:
    """Rebuild `cache` from clean latents [B, C, K, h, w] of `frames` under `denoiser.context` (re-cache).

    Each run of `commit_groups` goes through one context pass at its original absolute position (RoPE
    positions and the sink are unchanged); no noise is drawn.
    """
    cache.reset()
    cache.reset_cross()
    with torch.no_grad():
        for a, b in commit_groups(frames, causal):
            denoiser.commit(latents[:, :, a:b], cache, frames[a], context_t)
    if cache.positions != list(frames):
        raise RuntimeError(f"re-cache wrote frames {cache.positions}, expected {frames}")


__all__ = ["Session", "SessionError", "SamplingSettings", "SAMPLERS", "RECACHE_MODES", "default_causal", "new_session", "model_identity",
           "commit_groups", "commit_deferred", "recommit", "chunk_of", "state_to", "TRAINING_FRAMES"]
