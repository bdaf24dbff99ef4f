"""What a training method is: losses over a batch, plugged into the one trainer loop.

A method turns a `Batch` into a generator loss (and, for distribution matching, a critic loss). All its
randomness comes from `StepEnv.draws(purpose, batch)`: generators keyed by (seed, step, purpose, sample id),
so results do not depend on how the global batch is split over ranks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..distributed import DistInfo
from ..models import Nets
from ..rng import SampleDraws


@dataclass
class Batch:
    """One rank's rows of a global batch. context / negative: [B, L, text_dim] text embeddings (zero rows
    past each prompt); latents: clean [B, C, F, H, W] (supervised methods); trajectory: ODE pairs
    [B, K, C, F, H, W] (method ode); ids: global sample ids keying the randomness; partial: [B, L', text_dim]
    embeddings of the prompts without the words partial guidance amplifies (`dmd.partial_guidance`), when the
    dataset provides them."""

    ids: list[int]
    context: torch.Tensor
    negative: torch.Tensor
    prompts: list[str]
    latents: torch.Tensor | None = None
    trajectory: torch.Tensor | None = None
    partial: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return len(self.ids)


@dataclass
class StepEnv:
    cfg: TrainConfig
    step: int
    info: DistInfo
    dtype: torch.dtype  # compute dtype of activations (bf16 under mixed precision)
    ema: object | None = None  # the generator's EMA (sf_core.train.ema.EMA) once it exists: cd's target weights

    @property
    def device(self) -> torch.device:
        return self.info.device

    def draws(self, purpose: str, batch: Batch) -> SampleDraws:
        return SampleDraws(self.cfg.seed, self.step, purpose, batch.ids, device=self.device, dtype=self.dtype)


Logs = dict[str, float]


class Method:
    """Base class. `generator_loss` is required; methods with a critic set `has_critic` and implement
    `critic_loss`. Losses are scalars whose gradient is the rank's share of the global-batch mean."""

    name = "base"
    has_critic = False
    needs = "prompts"  # prompts | latents | ode: what the batches must carry

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def generator_loss(self, nets: Nets, batch: Batch, env: StepEnv) -> tuple[torch.Tensor, Logs]:
        raise NotImplementedError

    def critic_loss(self, nets: Nets, batch: Batch, env: StepEnv) -> tuple[torch.Tensor, Logs]:
        raise NotImplementedError(f"method {self.name} has no critic")


def scalar(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)
