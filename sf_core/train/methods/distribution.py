"""Self Forcing distribution matching: DMD (the paper's method) and SiD, on self-rollouts of the generator.

Generator update (spec 5.2-5.3): roll the causal generator out from noise exactly as at inference
(`rollout.self_forcing_rollout`, gradient only through each chunk's exit step), draw one DMD timestep per
sample (t = 1000 s u / (1 + (s-1) u), clamped to [20, 980]), noise the result on the generator's grid, and
pull it towards the teacher (real score, CFG) and away from the critic (fake score). Critic update (5.4):
a fresh no-grad rollout, and the critic's flow-matching loss on it. Each update uses its own batch.

With `long_rollout.factor` K > 1 both rollouts run up to K x the training window on a rolling cache and both
losses see one window of rollout.num_frames frames of it (`rollout.long_self_forcing_rollout`): the teacher and
the critic score it as a clip of their own length, re-noised at the DMD timestep as any generated sample.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ...sampling.schedule import FlowSchedule
from ..losses import ScoreNets, critic_flow_loss, dmd_generator_loss, dmd_timestep, sid_generator_loss
from ..models import Nets
from ..rollout import (ModuleDenoiser, draw_exit_steps, long_self_forcing_rollout, sampling_timesteps,
                       self_forcing_rollout, window_start)
from .base import Batch, Logs, Method, StepEnv, scalar


class DistributionMatching(Method):
    name = "dmd"
    has_critic = True

    def __init__(self, cfg, reward=None):
        super().__init__(cfg)
        self.gen_schedule = FlowSchedule(cfg.rollout.shift)
        self.score_schedule = FlowSchedule(cfg.dmd.score_shift)
        self.timesteps = sampling_timesteps(cfg.rollout)
        self.reward = reward  # optional RewardTerm (T2V-Turbo mixed reward), generator updates only
        self.last_window = 0  # first frame of the window of the last rollout (long rollouts)

    # -- pieces (also used by the parity check with recorded draws) ---------------------------------
    def generator_denoiser(self, nets: Nets, context: torch.Tensor, dtype: torch.dtype | None) -> ModuleDenoiser:
        return ModuleDenoiser(nets.generator, self.gen_schedule, context, dtype=dtype)

    def score_nets(self, nets: Nets, context: torch.Tensor, negative: torch.Tensor,
                   dtype: torch.dtype | None, partial: torch.Tensor | None = None) -> ScoreNets:
        fake = ModuleDenoiser(nets.critic, self.score_schedule, context, dtype=dtype)
        real = ModuleDenoiser(nets.teacher, self.score_schedule, context, negative=negative,
                              guidance=self.cfg.dmd.guidance, dtype=dtype, partial=partial,
                              partial_guidance=self.cfg.dmd.partial_guidance)
        return ScoreNets(fake, real)

    def rollout(self, nets: Nets, context: torch.Tensor, *, noise: torch.Tensor, noise_fn, exit_steps: Sequence[int],
                dtype: torch.dtype | None = None, on_step=None) -> torch.Tensor:
        """Self Forcing rollout of the generator from `noise` [B, C, F, H, W]."""
        return self_forcing_rollout(self.generator_denoiser(nets, context, dtype), self.cfg.rollout,
                                    batch=noise.shape[0], noise=noise, noise_fn=noise_fn, exit_steps=exit_steps,
                                    grad_mode=self.cfg.dmd.kv_grad, on_step=on_step)

    def long_rollout(self, nets: Nets, context: torch.Tensor, *, noise: torch.Tensor, noise_fn,
                     exit_steps: Sequence[int], start: int, dtype: torch.dtype | None = None,
                     on_step=None) -> torch.Tensor:
        """The window [start, start + num_frames) of a long rollout from `noise` [B, C, start + num_frames, H, W]."""
        return long_self_forcing_rollout(self.generator_denoiser(nets, context, dtype), self.cfg.rollout,
                                         self.cfg.long_rollout, batch=noise.shape[0], noise=noise, noise_fn=noise_fn,
                                         exit_steps=exit_steps, start=start, grad_mode=self.cfg.dmd.kv_grad,
                                         on_step=on_step)

    def timestep(self, raw: torch.Tensor, frames: int) -> torch.Tensor:
        d = self.cfg.dmd
        return dmd_timestep(raw, frames, d.timestep_shift, d.min_step, d.max_step)

    def objective(self, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, scores: ScoreNets
                  ) -> tuple[torch.Tensor, dict]:
        """The generator's distribution-matching loss on generated latents x (with grad)."""
        return dmd_generator_loss(x, eps, t, scores, self.gen_schedule)

    def critic_objective(self, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, nets: Nets,
                         context: torch.Tensor, dtype: torch.dtype | None) -> tuple[torch.Tensor, dict]:
        fake = ModuleDenoiser(nets.critic, self.score_schedule, context, dtype=dtype)
        return critic_flow_loss(x, eps, t, fake, self.gen_schedule)

    # -- the trainer's entry points ------------------------------------------------------------------
    def _generate(self, nets: Nets, batch: Batch, env: StepEnv, phase: str) -> tuple[torch.Tensor, list[int]]:
        r, cfg, lr = self.cfg.rollout, nets.config, self.cfg.long_rollout
        draws = env.draws(f"{phase}/rollout", batch)
        start = window_start(self.cfg.seed, env.step, phase, r, lr) if lr.enabled else 0
        self.last_window = start
        noise = draws.randn((cfg.in_dim, start + r.num_frames, r.latent_height, r.latent_width))
        exits = draw_exit_steps(self.cfg.seed, env.step, phase,
                                len(r.causal().chunk_bounds(r.num_frames * lr.factor)), len(self.timesteps),
                                same_step_across_blocks=self.cfg.dmd.same_step_across_blocks,
                                last_step_only=self.cfg.dmd.last_step_only, info=env.info)
        if lr.enabled:
            x = self.long_rollout(nets, batch.context, noise=noise, noise_fn=draws.noise_fn(), exit_steps=exits,
                                  start=start, dtype=env.dtype)
        else:
            x = self.rollout(nets, batch.context, noise=noise, noise_fn=draws.noise_fn(), exit_steps=exits,
                             dtype=env.dtype)
        return x, exits

    def _t_eps(self, x: torch.Tensor, batch: Batch, env: StepEnv, phase: str) -> tuple[torch.Tensor, torch.Tensor]:
        raw = env.draws(f"{phase}/timestep", batch).randint(0, 1000)
        eps = env.draws(f"{phase}/noise", batch).randn(x.shape[1:])
        return self.timestep(raw, x.shape[2]).to(x.device), eps

    def generator_loss(self, nets: Nets, batch: Batch, env: StepEnv) -> tuple[torch.Tensor, Logs]:
        x, exits = self._generate(nets, batch, env, "generator")
        t, eps = self._t_eps(x, batch, env, "generator")
        loss, info = self.objective(x, eps, t, self.score_nets(nets, batch.context, batch.negative, env.dtype,
                                                                   batch.partial))
        logs = {"generator_loss": scalar(loss), "dmdtrain_gradient_norm": scalar(info["dmdtrain_gradient_norm"]),
                "exit_step": float(exits[0])}
        if self.cfg.long_rollout.enabled:
            logs["window_start"] = float(self.last_window)
        if self.reward is not None:
            r_loss, r_logs = self.reward(x, batch, env, exits)
            loss = loss + r_loss
            logs.update(r_logs)
        return loss, logs

    def critic_loss(self, nets: Nets, batch: Batch, env: StepEnv) -> tuple[torch.Tensor, Logs]:
        with torch.no_grad():
            x, _ = self._generate(nets, batch, env, "critic")
        t, eps = self._t_eps(x, batch, env, "critic")
        loss, _ = self.critic_objective(x, eps, t, nets, batch.context, env.dtype)
        return loss, {"critic_loss": scalar(loss)}


class ScoreIdentity(DistributionMatching):
    """SiD (spec 5.8): the same rollout and critic; the generator loss differentiates through both score
    nets (configs/self_forcing_sid.yaml uses a 1.3B teacher, lr_critic 2e-6, weight decay 0)."""

    name = "sid"

    def objective(self, x, eps, t, scores):
        return sid_generator_loss(x, eps, t, scores, self.gen_schedule, self.cfg.dmd.sid_alpha)
