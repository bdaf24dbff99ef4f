"""Causal consistency distillation (method cd): T2V-Turbo's latent consistency distillation on a causal student.

T2V-Turbo (arXiv 2405.18750) distils a video model into a few-step consistency model: noise a clean latent to
t_{n+k}, let the frozen teacher take one ODE-solver step with CFG to t_n, and pull the student's prediction at
t_{n+k} towards the target network's prediction at t_n (an EMA of the student); optionally minus reward terms.
Causal Forcing++ (arXiv 2605.15141) does this for a causal student with a causal, teacher-forced teacher, as an
initialisation for DMD that needs no ODE pairs. Here, on clean latents [B, C, F, H, W]:

- the consistency function is the x0 prediction f(x, t) = x - sigma(t) v(x, t): it meets the boundary
  condition f(x, 0) = x exactly (sigma = 0), so no c_skip / c_out scalings are needed;
- the discretisation is the generator's own 1000-point grid at `steps` + 1 points (`cd_grid`), so sigmas are
  exact and, for `steps` a multiple of 4, the four sampling timesteps are points of it;
- chunk-wise: every chunk draws its own point n (keyed per sample) and sees the *clean* earlier chunks as
  context (teacher forcing through the KV cache, `teacher_forcing_flow`), for student, teacher and target;
- teacher: a causal AR-diffusion model (e.g. a teacher-forcing student); one Euler step
  x_{n+k} = x_n + (sigma_{n+k} - sigma_n) v with CFG v_u + g (v_c - v_u) (g = 1: conditional only);
- target: the generator's EMA weights (`ema_weights`), evaluated before the student's forward.

The T2V-Turbo reward term (`reward.*`) is added on the student's x0 prediction (it carries grad), and
`lora.rank` > 0 trains adapters only: together T2V-Turbo's recipe on a causal Wan.
"""
from __future__ import annotations

import torch

from ...config import CausalConfig
from ...sampling.schedule import FlowSchedule
from ..ema import ema_weights
from ..models import Nets
from ..rollout import ModuleDenoiser
from .base import Batch, Logs, Method, StepEnv, scalar
from .supervised import teacher_forcing_flow


def cd_grid(steps: int, schedule: FlowSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, sigma), each [steps + 1] float32: grid points round(1000 n / steps) of `schedule`, then (0, 0)."""
    idx = [round(schedule.num_train_timesteps * n / steps) for n in range(steps)]
    t = torch.cat([schedule.timesteps[idx], torch.zeros(1)])
    sigma = torch.cat([schedule.sigmas[idx], torch.zeros(1)])
    return t, sigma


def consistency_distance(pred: torch.Tensor, target: torch.Tensor, kind: str = "l2", c: float = 1e-3) -> torch.Tensor:
    """mean (pred - target)^2 ("l2") or mean sqrt((pred - target)^2 + c^2) - c ("huber", pseudo-Huber), float32."""
    d = pred.float() - target.float()
    if kind == "l2":
        return (d ** 2).mean()
    return (torch.sqrt(d ** 2 + c * c) - c).mean()


def x0_from_flow(x: torch.Tensor, flow: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x - sigma v for per-frame sigma [B, F] (exactly x where sigma = 0)."""
    return x - sigma[:, None, :, None, None].to(x.dtype) * flow.to(x.dtype)


class CausalConsistency(Method):
    name = "cd"
    needs = "latents"
    takes_reward = True

    def __init__(self, cfg, reward=None):
        super().__init__(cfg)
        self.schedule = FlowSchedule(cfg.rollout.shift)
        self.t_grid, self.s_grid = cd_grid(cfg.consistency.steps, self.schedule)
        self.causal = CausalConfig(chunk_frames=cfg.rollout.chunk_frames,
                                   independent_first_frame=cfg.rollout.independent_first_frame)
        self.reward = reward

    # -- pieces ------------------------------------------------------------------------------------------
    def points(self, batch: Batch, env: StepEnv, bounds) -> torch.Tensor:
        """Per-frame grid index n [B, F] of the noisier point (one draw per chunk and sample)."""
        c = self.cfg.consistency
        n = env.draws("cd/point", batch).randint(0, c.steps - c.skip + 1, (len(bounds),))
        reps = torch.tensor([e - s for s, e in bounds], device=n.device)
        return n.repeat_interleave(reps, dim=1)

    def guidance(self, batch: Batch, env: StepEnv) -> torch.Tensor:
        """CFG scale per sample [B] (uniform in [guidance, guidance_max] when that is set)."""
        c = self.cfg.consistency
        if c.guidance_max is None or c.guidance_max == c.guidance:
            return torch.full((batch.size,), float(c.guidance))
        u = env.draws("cd/guidance", batch).randint(0, 1 << 24).double() / (1 << 24)
        return (c.guidance + (c.guidance_max - c.guidance) * u).float()

    def teacher_flow(self, nets: Nets, x: torch.Tensor, t: torch.Tensor, clean: torch.Tensor, batch: Batch,
                     g: torch.Tensor, bounds, dtype) -> torch.Tensor:
        """The causal teacher's teacher-forced velocity with CFG v_u + g (v_c - v_u) (no grad)."""
        ctx_t = torch.zeros_like(t)
        cond = ModuleDenoiser(nets.teacher, self.schedule, batch.context, dtype=dtype)
        v = teacher_forcing_flow(cond, x, t, clean, ctx_t, bounds)
        if bool((g != 1).any()):
            unc = ModuleDenoiser(nets.teacher, self.schedule, batch.negative, dtype=dtype)
            v_u = teacher_forcing_flow(unc, x, t, clean, ctx_t, bounds)
            gg = g.to(v)[:, None, None, None, None]
            v = v_u + gg * (v - v_u)
        return v

    def student_x0(self, model, x: torch.Tensor, t: torch.Tensor, sigma: torch.Tensor, clean: torch.Tensor,
                   batch: Batch, bounds, dtype) -> torch.Tensor:
        den = ModuleDenoiser(model, self.schedule, batch.context, dtype=dtype)
        flow = teacher_forcing_flow(den, x, t, clean, torch.zeros_like(t), bounds)
        return x0_from_flow(x, flow, sigma)

    # -- the trainer's entry point -----------------------------------------------------------------------
    def generator_loss(self, nets: Nets, batch: Batch, env: StepEnv) -> tuple[torch.Tensor, Logs]:
        c = self.cfg.consistency
        x0 = batch.latents.to(device=env.device, dtype=env.dtype)
        bounds = self.causal.chunk_bounds(x0.shape[2])
        n = self.points(batch, env, bounds)
        t_grid, s_grid = self.t_grid.to(env.device), self.s_grid.to(env.device)
        t, sig = t_grid[n], s_grid[n]
        t_next, sig_next = t_grid[n + c.skip], s_grid[n + c.skip]
        eps = env.draws("cd/noise", batch).randn(x0.shape[1:])
        x_t = (1 - sig)[:, None, :, None, None].to(x0) * x0 + sig[:, None, :, None, None].to(x0) * eps
        g = self.guidance(batch, env).to(env.device)
        with torch.no_grad():
            v = self.teacher_flow(nets, x_t, t, x0, batch, g, bounds, env.dtype)
            x_next = x_t + (sig_next - sig)[:, None, :, None, None].to(x_t) * v.to(x_t)
        # the target first: swapping the EMA weights in must happen before the student's forward saves them
        with ema_weights(nets.generator, env.ema if c.target == "ema" else None):
            with torch.no_grad():
                target = self.student_x0(nets.generator, x_next, t_next, sig_next, x0, batch, bounds, env.dtype)
        pred = self.student_x0(nets.generator, x_t, t, sig, x0, batch, bounds, env.dtype)
        loss = consistency_distance(pred, target.detach(), c.loss, c.huber_c)
        logs = {"generator_loss": scalar(loss), "cd_t_mean": float(t.float().mean())}
        if self.reward is not None:
            r_loss, r_logs = self.reward(pred, batch, env)
            loss = loss + r_loss
            logs.update(r_logs)
        return loss, logs


__all__ = ["CausalConsistency", "cd_grid", "consistency_distance", "x0_from_flow"]
