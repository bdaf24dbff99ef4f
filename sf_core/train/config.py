"""Frozen, validated configuration of a training run (one file, JSON or TOML, plus `--set key=value`).

Defaults are the official Self Forcing DMD recipe (configs/self_forcing_dmd.yaml on default_config.yaml):
4-step warped list [1000, 750, 500, 250] at shift 5, score nets on the shift-8 grid, CFG 3.0, DMD timesteps
clamped to [20, 980], generator/critic update ratio 5, AdamW lr 2e-6 / 4e-7 with betas (0, 0.999) and
weight decay 0.01, grad clipping 10, EMA 0.99 from step 200, bf16 mixed precision. `TrainConfig.tiny()` is
a seconds-per-step CPU preset with random tiny models.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..config import CausalConfig, ConfigError, WanConfig  # noqa: F401  (ConfigError: re-exported)
from ..sampling.schedule import parse_steps
from .method_configs import (ConsistencyConfig, DMDConfig, LongRolloutConfig, RewardConfig,  # noqa: F401
                             SupervisedConfig, _check)

METHODS = ("dmd", "sid", "ode", "teacher_forcing", "diffusion_forcing", "flow_matching", "cd")
# methods with a trainable critic (fake score) next to the generator
CRITIC_METHODS = ("dmd", "sid")
# methods that need a frozen teacher (real score; for cd the causal AR-diffusion teacher)
TEACHER_METHODS = ("dmd", "sid", "cd")
# methods that read clean latents (or ODE trajectories) instead of self-generated samples
LATENT_METHODS = ("ode", "teacher_forcing", "diffusion_forcing", "flow_matching", "cd")
# methods that roll the generator out on its own samples (long rollouts and the reward term apply)
ROLLOUT_METHODS = ("dmd", "sid")
# methods whose generator loss the T2V-Turbo reward term can be added to
REWARD_METHODS = ("dmd", "sid", "cd")


@dataclass(frozen=True)
class ModelsConfig:
    """Where the networks come from. A path is a Self Forcing .pt, one of our safetensors or a Wan file.

    generator: the causal student (Self Forcing: the ODE-initialised model). teacher: the frozen real score.
    critic: initial weights of the fake score (default: the teacher's file, as in the official setup when
    both are the 1.3B base). A missing path builds a randomly initialised model of `wan` (tests, benchmarks).
    """

    generator: str | None = None
    generator_which: str = "auto"  # auto | generator | generator_ema (for Self Forcing .pt files)
    teacher: str | None = None
    critic: str | None = None
    wan: str | dict = "1.3b"  # size of randomly initialised nets: tiny | 1.3b | 14b | WanConfig fields
    init_seed: int = 0

    def wan_config(self) -> WanConfig:
        if isinstance(self.wan, Mapping):
            return WanConfig.from_dict(self.wan)
        presets = {"tiny": WanConfig.tiny, "1.3b": WanConfig.wan_1_3b, "14b": WanConfig.wan_14b}
        _check(self.wan in presets, f"models.wan={self.wan!r}: use one of {sorted(presets)} or a dict of WanConfig "
                                    f"fields")
        return presets[self.wan]()


@dataclass(frozen=True)
class RolloutConfig:
    """The generator's few-step causal sampling, as at inference (latent sizes in latent frames / pixels/8)."""

    num_frames: int = 21
    latent_height: int = 60
    latent_width: int = 104
    chunk_frames: int = 3
    independent_first_frame: bool = False
    denoising_steps: tuple[int, ...] = (1000, 750, 500, 250)
    warp: bool = True  # map the steps onto the shifted grid (1000, 937.5, 833.3, 625 at shift 5)
    shift: float = 5.0
    context_noise: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "denoising_steps", tuple(parse_steps(list(self.denoising_steps))))
        _check(self.num_frames >= 1, f"rollout.num_frames must be >= 1, got {self.num_frames}")
        _check(self.latent_height >= 2 and self.latent_width >= 2,
               f"rollout latent size {self.latent_height}x{self.latent_width} is too small (>= 2x2)")
        self.causal().chunk_bounds(self.num_frames)  # raises with the nearest valid lengths

    def causal(self) -> CausalConfig:
        return CausalConfig(chunk_frames=self.chunk_frames, independent_first_frame=self.independent_first_frame)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-6
    lr_critic: float = 4e-7
    betas: tuple[float, float] = (0.0, 0.999)
    betas_critic: tuple[float, float] = (0.0, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    max_grad_norm: float = 10.0
    max_grad_norm_critic: float = 10.0

    def __post_init__(self) -> None:
        for name in ("betas", "betas_critic"):
            b = tuple(float(x) for x in getattr(self, name))
            _check(len(b) == 2 and all(0 <= x < 1 for x in b), f"optim.{name}={b} must be two values in [0, 1)")
            object.__setattr__(self, name, b)
        _check(self.lr > 0 and self.lr_critic > 0, "optim learning rates must be > 0")
        _check(self.max_grad_norm > 0 and self.max_grad_norm_critic > 0, "optim grad-norm limits must be > 0")


@dataclass(frozen=True)
class EMAConfig:
    """EMA of the generator's trainable weights (fp32 shadow), created at `start_step`, updated after every
    generator step. decay 0 disables it (export then writes the raw generator)."""

    decay: float = 0.99
    start_step: int = 200

    def __post_init__(self) -> None:
        _check(0 <= self.decay < 1, f"ema.decay must be in [0, 1), got {self.decay}")
        _check(self.start_step >= 0, f"ema.start_step must be >= 0, got {self.start_step}")


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA-only training (rank 0 = off): low-rank adapters on the Linear layers whose names match
    `targets` (fnmatch patterns over module names); merged into the weights on export."""

    rank: int = 0
    alpha: float | None = None  # scale = alpha / rank; None = rank (scale 1)
    targets: tuple[str, ...] = ("blocks.*",)
    dropout: float = 0.0
    critic: bool = False  # also train the critic through LoRA

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        _check(self.rank >= 0, f"lora.rank must be >= 0, got {self.rank}")
        _check(0 <= self.dropout < 1, f"lora.dropout must be in [0, 1), got {self.dropout}")
        _check(bool(self.targets), "lora.targets is empty")


@dataclass(frozen=True)
class DataConfig:
    """embeddings: a directory written by `encode-prompts`. latents: a directory of latent shards (supervised
    methods) or ODE-pair shards (method ode). batch_size is per rank: global batch = batch_size * world."""

    embeddings: str | None = None
    latents: str | None = None
    batch_size: int = 1
    shuffle: bool = True

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, f"data.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class DistConfig:
    """backend: auto (nccl on CUDA, gloo on CPU). fsdp: shard with FSDP2 when world > 1 (fully_shard per
    transformer block, then the root). sharding: full (FULL_SHARD) or hybrid (shard inside groups of
    `shard_size` ranks, default one node, replicate across them). mixed_precision: bf16 params and
    activations, fp32 master weights and gradient reduction."""

    backend: str = "auto"
    fsdp: bool = True
    sharding: str = "full"
    shard_size: int | None = None
    mixed_precision: bool = True
    activation_checkpointing: bool = True
    reshard_after_forward: bool = True

    def __post_init__(self) -> None:
        _check(self.backend in ("auto", "nccl", "gloo"), f"dist.backend={self.backend!r}: use auto, nccl or gloo")
        _check(self.sharding in ("full", "hybrid"), f"dist.sharding={self.sharding!r}: use full or hybrid")


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 50
    keep_last: int = 3
    resume: str = "auto"  # auto (latest in out_dir/checkpoints if any) | none | a checkpoint directory

    def __post_init__(self) -> None:
        _check(self.every >= 1 and self.keep_last >= 1, "checkpoint.every and keep_last must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    method: str = "dmd"
    out_dir: str = "runs/self_forcing"
    max_steps: int = 600
    seed: int = 0
    log_every: int = 1
    export_at_end: bool = True
    export_dtype: str = "bfloat16"  # storage dtype of the exported generator: bfloat16 | float16 | float32
    models: ModelsConfig = field(default_factory=ModelsConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    dmd: DMDConfig = field(default_factory=DMDConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    long_rollout: LongRolloutConfig = field(default_factory=LongRolloutConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        _check(self.method in METHODS, f"method={self.method!r}: use one of {METHODS}")
        _check(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        _check(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        _check(self.export_dtype in ("bfloat16", "float16", "float32"),
               f"export_dtype={self.export_dtype!r}: use bfloat16, float16 or float32")
        if self.reward.enabled:
            _check(self.method in REWARD_METHODS, f"the reward term applies to methods {REWARD_METHODS}, not "
                                                  f"{self.method!r}")
        lr = self.long_rollout
        if lr.enabled:
            _check(self.method in ROLLOUT_METHODS, f"long_rollout.factor={lr.factor} applies to the self-rollout "
                                                   f"methods {ROLLOUT_METHODS}, not {self.method!r}; set it to 1")
            _check(not self.rollout.independent_first_frame, "long_rollout needs chunks of equal size: windows "
                   "start at any chunk; set rollout.independent_first_frame=false or long_rollout.factor=1")
            cache = lr.cache_frames or self.rollout.num_frames
            _check(cache >= self.rollout.chunk_frames + lr.sink_frames,
                   f"long_rollout.cache_frames={cache} cannot hold a chunk of {self.rollout.chunk_frames} frames "
                   f"plus {lr.sink_frames} sink frames; use cache_frames >= "
                   f"{self.rollout.chunk_frames + lr.sink_frames}")

    @property
    def has_critic(self) -> bool:
        return self.method in CRITIC_METHODS

    @property
    def has_teacher(self) -> bool:
        return self.method in TEACHER_METHODS

    # -- presets ------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, out_dir: str = "runs/tiny", embeddings: str | None = None, **overrides: Any) -> "TrainConfig":
        """Random tiny nets (dim 64, 2 layers), 6 latent frames of 4x4, 2 chunks: ~0.1 s/step on 2 CPU cores."""
        base = cls(
            method="dmd", out_dir=out_dir, max_steps=4, seed=1, export_dtype="float32",
            models=ModelsConfig(wan="tiny", init_seed=0),
            rollout=RolloutConfig(num_frames=6, latent_height=4, latent_width=4),
            dmd=DMDConfig(update_ratio=2),
            optim=OptimConfig(lr=1e-4, lr_critic=1e-4),
            ema=EMAConfig(decay=0.9, start_step=1),
            data=DataConfig(embeddings=embeddings or "embeddings", batch_size=1),
            dist=DistConfig(mixed_precision=False),
            checkpoint=CheckpointConfig(every=2, keep_last=2),
        )
        return apply_overrides(base, overrides) if overrides else base

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from plain data (JSON / TOML), each value checked against its field's type first."""
        return build(cls, d, "")

    @classmethod
    def load(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "TrainConfig":
        """Read a .json or .toml config, then apply dotted overrides {"optim.lr": 1e-5}."""
        cfg = cls.from_dict(read_file(path))
        return apply_overrides(cfg, overrides) if overrides else cfg


# at the end: config_io needs nothing from here at import time; apply_overrides / parse_set_args are re-exported
from .config_io import apply_overrides, build, parse_set_args, plain, read_file  # noqa: E402,F401
