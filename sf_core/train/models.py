"""The networks of a run: generator (causal student), critic (fake score), teacher (frozen real score).

Weights come from any format `sf_core.checkpoints.weights` reads (Self Forcing .pt, Wan2.1 / ComfyUI files, our
safetensors); a missing path builds a seeded random model of `models.wan` (tests and benchmarks). LoRA is
applied here, before `parallelize()` shards the modules. Every rank builds identical initial weights.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoints.files import CheckpointError
from ..checkpoints.weights import load_model
from ..config import ConfigError, WanConfig
from ..model.transformer import WanTransformer, randomize_weights
from .config import TrainConfig
from .lora import apply_lora

log = logging.getLogger(__name__)


@dataclass
class Nets:
    generator: nn.Module
    critic: nn.Module | None = None
    teacher: nn.Module | None = None

    @property
    def config(self) -> WanConfig:
        return self.generator.config


def check_paths(cfg: TrainConfig) -> None:
    """Fail early, before any process group or file is touched, if a configured weight file is missing."""
    m = cfg.models
    roles = [("generator", m.generator)]
    if cfg.has_teacher:
        roles.append(("teacher", m.teacher))
    if cfg.has_critic:
        roles.append(("critic", m.critic or m.teacher))
    if cfg.method == "ode":
        roles.append(("teacher", m.teacher))
    for role, path in roles:
        if path is not None and not Path(path).exists():
            raise ConfigError(f"models.{role}: {path} does not exist; give the path of a Wan2.1 / Self Forcing "
                              f"weight file (or leave it unset for a random model of models.wan)")


def load_net(path: str | None, role: str, cfg: TrainConfig, *, which: str = "auto", seed: int = 0,
             dtype: torch.dtype = torch.float32) -> WanTransformer:
    """Weights from `path`, or a random model of `models.wan` when path is None."""
    if path is None:
        log.info("models.%s: no path, building a random %s model (seed %d)", role, cfg.models.wan, seed)
        return randomize_weights(WanTransformer(cfg.models.wan_config()), seed).to(dtype)
    try:
        return load_model(path, which=which, dtype=dtype, device="cpu")
    except CheckpointError as exc:
        raise ConfigError(f"models.{role}: {exc}") from None


def build_nets(cfg: TrainConfig, *, frozen_dtype: torch.dtype = torch.float32) -> Nets:
    """Build the method's networks on the CPU, trainable ones in fp32 (master weights).

    frozen_dtype: storage of the frozen teacher (bf16 halves its memory under mixed precision).
    """
    check_paths(cfg)
    m = cfg.models
    gen = load_net(m.generator, "generator", cfg, which=m.generator_which, seed=m.init_seed)
    if cfg.lora.rank:
        names = apply_lora(gen, cfg.lora.rank, cfg.lora.targets, cfg.lora.alpha, cfg.lora.dropout, seed=cfg.seed)
        log.info("LoRA rank %d on %d generator layers", cfg.lora.rank, len(names))
    else:
        gen.requires_grad_(True)
    nets = Nets(gen)
    if cfg.has_teacher or cfg.method == "ode":
        nets.teacher = load_net(m.teacher, "teacher", cfg, seed=m.init_seed + 1, dtype=frozen_dtype)
        nets.teacher.requires_grad_(False)
        _check_compatible(gen, nets.teacher, "teacher")
    if cfg.has_critic:
        # the official fake score starts from the same base weights as the real score when both are 1.3B
        nets.critic = load_net(m.critic or m.teacher, "critic", cfg, seed=m.init_seed + 1)
        if cfg.lora.rank and cfg.lora.critic:
            apply_lora(nets.critic, cfg.lora.rank, cfg.lora.targets, cfg.lora.alpha, cfg.lora.dropout,
                       seed=cfg.seed + 1)
        else:
            nets.critic.requires_grad_(True)
        _check_compatible(gen, nets.critic, "critic")
    for net in (nets.generator, nets.critic, nets.teacher):
        if net is not None:
            net.eval()  # Wan has no dropout or batch statistics; eval() as the reference does
    return nets


def _check_compatible(gen: nn.Module, other: nn.Module, role: str) -> None:
    a, b = gen.config, other.config
    for name in ("in_dim", "out_dim", "patch_size", "text_dim"):
        if getattr(a, name) != getattr(b, name):
            raise ConfigError(f"models.{role} has {name}={getattr(b, name)} but the generator has "
                              f"{getattr(a, name)}: they must share the latent space and the text encoder")


def trainable(model: nn.Module | None) -> list[nn.Parameter]:
    return [] if model is None else [p for p in model.parameters() if p.requires_grad]


def make_optimizer(params: list[nn.Parameter], lr: float, betas: tuple[float, float], weight_decay: float,
                   eps: float) -> torch.optim.AdamW:
    if not params:
        raise ConfigError("no trainable parameters (check lora.targets)")
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps)
