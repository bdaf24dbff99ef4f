"""Configuration of the training methods' own terms: distribution matching (DMD / SiD), long rollouts,
consistency distillation, supervised objectives and the reward term. Frozen, validated dataclasses; part of
`TrainConfig` (sf_core.train.config), which re-exports them."""
from __future__ import annotations

from dataclasses import dataclass

from ..cache.kv_cache import GRAD_MODES, ROPE_MODES
from ..config import ConfigError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class DMDConfig:
    """Distribution matching (DMD / SiD) settings. kv_grad: how gradients pass the KV cache (spec 5.2):
    "straight_through" = the official behaviour (values of the no-grad context pass, gradient of the exit
    step's K/V), "detach" = committed cache rows are constants (differs by ~5-13 % in gradient)."""

    guidance: float = 3.0
    score_shift: float = 8.0
    timestep_shift: float = 5.0
    min_step: int = 20
    max_step: int = 980
    same_step_across_blocks: bool = True
    last_step_only: bool = False
    kv_grad: str = "straight_through"
    update_ratio: int = 5
    sid_alpha: float = 1.0
    # partial-prompt guidance of the real score: + w (x0_c - x0_partial), the partial prompt leaving out the
    # words to amplify (the toy world's motion words); needs a dataset with per-sample partial prompts
    partial_guidance: float = 0.0

    def __post_init__(self) -> None:
        _check(0 <= self.min_step < self.max_step <= 1000,
               f"dmd.min_step={self.min_step} / max_step={self.max_step} must satisfy 0 <= min < max <= 1000")
        _check(self.kv_grad in GRAD_MODES, f"dmd.kv_grad={self.kv_grad!r}: use one of {GRAD_MODES}")
        _check(self.update_ratio >= 1, f"dmd.update_ratio must be >= 1, got {self.update_ratio}")
        _check(self.score_shift > 0 and self.timestep_shift > 0, "dmd shifts must be > 0")
        _check(0 <= self.partial_guidance < float("inf"),
               f"dmd.partial_guidance={self.partial_guidance} must be a finite number >= 0 (0 = off)")


@dataclass(frozen=True)
class LongRolloutConfig:
    """Training past the teacher's window (Self-Forcing++ / LongLive long tuning), dmd / sid only. factor K > 1:
    the generator rolls out up to K x rollout.num_frames frames with a rolling KV cache (`cache_frames`, default
    rollout.num_frames, and `sink_frames`); the DMD / critic losses see one window of rollout.num_frames frames
    ("uniform": starting at a random chunk, Self-Forcing++; "last": ending at frame K x num_frames, LongLive).
    Chunks before the window run without grad, so memory does not grow with K. positions: the cache's RoPE mode."""

    factor: int = 1
    window: str = "uniform"
    cache_frames: int | None = None
    sink_frames: int = 0
    positions: str = "relative"

    @property
    def enabled(self) -> bool:
        return self.factor > 1

    def __post_init__(self) -> None:
        _check(self.factor >= 1, f"long_rollout.factor must be >= 1 (1 = off), got {self.factor}")
        _check(self.window in ("uniform", "last"), f"long_rollout.window={self.window!r}: use uniform or last")
        _check(self.sink_frames >= 0, f"long_rollout.sink_frames must be >= 0, got {self.sink_frames}")
        _check(self.positions in ROPE_MODES, f"long_rollout.positions={self.positions!r}: use one of {ROPE_MODES}")


@dataclass(frozen=True)
class ConsistencyConfig:
    """Causal consistency distillation (method cd, T2V-Turbo's latent CD on a causal student): per chunk, with the
    clean earlier chunks as context, a point n of a `steps`-interval grid (t_n = grid[round(1000 n / steps)], the
    last sigma = 0) is drawn, the causal teacher makes one Euler step of `skip` intervals with CFG
    x0_u + g (x0_c - x0_u) (g = guidance, or uniform in [guidance, guidance_max]), and the student's x0 at n is
    pulled to the target's x0 at n + skip (target "ema": the EMA generator once it exists; "online": the generator
    without grad). loss: "l2" or "huber" (sqrt(d^2 + c^2) - c)."""

    steps: int = 48
    skip: int = 1
    guidance: float = 3.0
    guidance_max: float | None = None
    loss: str = "l2"
    huber_c: float = 0.001
    target: str = "ema"

    def __post_init__(self) -> None:
        _check(2 <= self.steps <= 1000, f"consistency.steps must be in 2..1000, got {self.steps}")
        _check(1 <= self.skip < self.steps, f"consistency.skip must be in 1..{self.steps - 1}, got {self.skip}")
        _check(self.guidance_max is None or self.guidance_max >= self.guidance,
               f"consistency.guidance_max={self.guidance_max} must be >= guidance={self.guidance}")
        _check(self.loss in ("l2", "huber"), f"consistency.loss={self.loss!r}: use l2 or huber")
        _check(self.huber_c > 0, f"consistency.huber_c must be > 0, got {self.huber_c}")
        _check(self.target in ("ema", "online"), f"consistency.target={self.target!r}: use ema or online")


@dataclass(frozen=True)
class SupervisedConfig:
    """Teacher forcing, diffusion forcing, flow matching and ODE regression (spec 1.4, 5.7)."""

    shift: float = 5.0  # noise-schedule grid of the supervised losses
    loss_weighting: bool = True  # FlowSchedule.training_weight (bell around t=500), as model/diffusion.py
    noise_augmentation_max_timestep: int = 0  # teacher forcing: noise the clean context up to this grid index
    ode_steps: int = 48  # teacher Euler steps of the ODE pairs (shift = dmd.score_shift)
    ode_guidance: float = 6.0  # CFG of the ODE pairs: x0_u + g (x0_c - x0_u)
    ode_keep: tuple[int, ...] = (0, 12, 24, 36, 48)  # stored trajectory indices (last = clean)
    ode_partial_guidance: float = 0.0  # + w (x0_c - x0_partial) in the ODE pairs, as dmd.partial_guidance
    # flow_matching: the fraction of samples trained block-causally (diffusion forcing) instead of with full
    # attention, so a bidirectional teacher also learns which way the prompt's motion goes (docs/toy_world.md)
    causal_mix: float = 0.0
    # flow_matching: the fraction of samples whose first frame is given clean (image-to-video), so the prompt's
    # motion words decide where the object goes (docs/toy_world.md)
    image_mix: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ode_keep", tuple(int(i) for i in self.ode_keep))
        _check(self.ode_steps >= 1, f"supervised.ode_steps must be >= 1, got {self.ode_steps}")
        _check(0 <= self.ode_partial_guidance < float("inf"), f"supervised.ode_partial_guidance="
               f"{self.ode_partial_guidance} must be a finite number >= 0 (0 = off)")
        _check(len(self.ode_keep) >= 2 and list(self.ode_keep) == sorted(set(self.ode_keep))
               and self.ode_keep[0] >= 0 and self.ode_keep[-1] == self.ode_steps,
               f"supervised.ode_keep={self.ode_keep} must increase from >= 0 and end at ode_steps={self.ode_steps}")
        _check(0 <= self.noise_augmentation_max_timestep < 1000,
               "supervised.noise_augmentation_max_timestep must be in 0..999")
        _check(0.0 <= self.causal_mix <= 1.0, f"supervised.causal_mix must be in [0, 1], got {self.causal_mix}")
        _check(0.0 <= self.image_mix <= 1.0, f"supervised.image_mix must be in [0, 1], got {self.image_mix}")


@dataclass(frozen=True)
class RewardConfig:
    """T2V-Turbo mixed reward on the decoded rollout (generator updates only):
    L = L_method - beta_img * mean R_img(sampled frames) - beta_vid * R_vid(clip).
    image / video: "clip:FOLDER" / "xclip:FOLDER" (built in, transformers) or "package.module:factory" specs;
    decoder: "taehv:PATH", "wan:PATH" or a factory spec (local weights only)."""

    image: str | None = None
    video: str | None = None
    decoder: str | None = None
    beta_img: float = 0.0
    beta_vid: float = 0.0
    image_frames: int = 2
    video_frames: int = 4
    window_latents: int = 2  # latent frames decoded with grad (inside one block that carried gradient)

    @property
    def enabled(self) -> bool:
        return bool((self.image and self.beta_img) or (self.video and self.beta_vid))

    def __post_init__(self) -> None:
        _check(self.image_frames >= 1 and self.video_frames >= 1 and self.window_latents >= 1,
               "reward frame counts must be >= 1")
        if self.enabled:
            _check(self.decoder is not None, "reward.decoder is required when a reward term is enabled "
                                             "(a 'module:factory' spec returning a chunk decoder)")
