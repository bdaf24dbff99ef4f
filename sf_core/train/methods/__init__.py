"""Training methods ("losses") plugged into the one trainer loop; `make_method(cfg)` picks by `cfg.method`.

dmd / sid: Self Forcing distribution matching on self-rollouts (prompts only). ode: ODE-regression
initialisation on teacher ODE pairs. teacher_forcing / diffusion_forcing: supervised causal baselines on
clean latents. flow_matching: bidirectional teacher pretraining on clean latents. cd: causal consistency
distillation from a causal teacher on clean latents (an initialisation instead of ode, or T2V-Turbo's recipe).
"""
from __future__ import annotations

from ..config import TrainConfig
from .base import Batch, Method, StepEnv
from .consistency import CausalConsistency
from .distribution import DistributionMatching, ScoreIdentity
from .ode import ODERegression
from .supervised import DiffusionForcing, FlowMatching, TeacherForcing

METHOD_CLASSES = {"dmd": DistributionMatching, "sid": ScoreIdentity, "ode": ODERegression,
                  "teacher_forcing": TeacherForcing, "diffusion_forcing": DiffusionForcing,
                  "flow_matching": FlowMatching, "cd": CausalConsistency}


def make_method(cfg: TrainConfig, reward=None) -> Method:
    cls = METHOD_CLASSES[cfg.method]
    takes_reward = getattr(cls, "takes_reward", cls.has_critic)
    return cls(cfg, reward=reward) if takes_reward else cls(cfg)


__all__ = ["Batch", "Method", "StepEnv", "make_method", "METHOD_CLASSES"]
