"""Training losses as pure functions over tensors (latents [B, C, F, H, W], per-frame timesteps [B, F]).

Distribution matching (spec 5.3, 5.4, 5.8), in the official numerics: DMD timesteps are warped in float32,
x0 predictions of the score nets use *their* grid (shift 8, inside the `Denoiser`), noising and the
critic's x0 -> flow conversion use the generator's grid (shift 5), the DMD loss is computed in float64.
Supervised losses (spec 1.4, 5.7): flow matching with the bell-shaped training weight and ODE regression.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..sampling.denoiser import Denoiser
from ..sampling.schedule import FlowSchedule


def dmd_timestep(raw: torch.Tensor, frames: int, shift: float, min_step: int, max_step: int) -> torch.Tensor:
    """Raw integer timesteps r [B] in [0, 1000) -> t [B, F]: u = r/1000, t = 1000 s u / (1 + (s-1) u), clamped.

    Computed in float32 in the reference's operation order (the result feeds nearest-grid lookups).
    """
    t = raw.to(torch.float32)
    if shift > 1:
        u = t / 1000
        t = shift * u / (1 + (shift - 1) * u) * 1000
    t = t.clamp(min_step, max_step)
    return t[:, None].expand(-1, frames).contiguous()


@dataclass
class ScoreNets:
    """The two score networks of distribution matching, as x0 denoisers on the score grid.

    fake: the critic (no CFG); real: the frozen teacher with `guidance` and the negative embeddings (CFG in
    x0 space, x0_c + g (x0_c - x0_u)).
    """

    fake: Denoiser
    real: Denoiser


def dmd_gradient(x: torch.Tensor, x0_fake: torch.Tensor, x0_real: torch.Tensor) -> torch.Tensor:
    """(x0_fake - x0_real) / mean|x - x0_real| per sample (DMD eq. 7-8), NaN -> 0."""
    normalizer = (x - x0_real).abs().mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    return torch.nan_to_num((x0_fake - x0_real) / normalizer)


def dmd_generator_loss(x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, scores: ScoreNets,
                       schedule: FlowSchedule) -> tuple[torch.Tensor, dict]:
    """DMD loss of generated latents x (with grad) at timesteps t [B, F] with noise eps.

    loss = 0.5 mean((x - sg(x - g))^2) in float64, so d loss / dx = g / N. Returns (loss, logs) where logs
    holds the detached `dmd_grad` g, `noisy` x_t and `dmdtrain_gradient_norm` = mean|g|.
    """
    with torch.no_grad():
        x_t = schedule.add_noise(x.detach(), eps, t)
        x0_fake = scores.fake(x_t, t)
        x0_real = scores.real(x_t, t)
        g = dmd_gradient(x.detach(), x0_fake, x0_real)
    xd = x.double()
    loss = 0.5 * F.mse_loss(xd, (xd - g.double()).detach(), reduction="mean")
    return loss, {"dmd_grad": g, "noisy": x_t, "dmdtrain_gradient_norm": g.abs().mean().detach()}


def critic_flow_loss(x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, fake: Denoiser,
                     schedule: FlowSchedule) -> tuple[torch.Tensor, dict]:
    """Denoising loss of the critic on generated latents x (no grad): mean((v_fake - (eps - x))^2).

    v_fake = (x_t - x0_fake) / sigma(t) with sigma from the generator's grid, in float64, cast back.
    """
    x = x.detach()
    x_t = schedule.add_noise(x, eps, t)
    x0_fake = fake(x_t, t)
    sigma = schedule.sigma(t).to(device=x.device, dtype=torch.float64)[:, None, :, None, None]
    flow = ((x_t.double() - x0_fake.double()) / sigma).to(x0_fake.dtype)
    loss = torch.mean((flow - (eps - x)) ** 2)
    return loss, {"noisy": x_t, "x0_fake": x0_fake.detach()}


def sid_generator_loss(x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, scores: ScoreNets,
                       schedule: FlowSchedule, alpha: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Score identity distillation (spec 5.8): gradients flow through x_t into both score nets.

    L = mean[(x0_real - x0_fake) ((x0_real - x) - alpha (x0_real - x0_fake)) / mean|x - x0_real|].
    """
    x_t = schedule.add_noise(x, eps, t)
    x0_fake = scores.fake(x_t, t)
    x0_real = scores.real(x_t, t)
    diff = x0_real.double() - x0_fake.double()
    loss = diff * ((x0_real.double() - x.double()) - alpha * diff)
    with torch.no_grad():
        normalizer = (x - x0_real).abs().mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    loss = torch.nan_to_num(loss / normalizer).mean()
    return loss, {"noisy": x_t.detach(), "dmdtrain_gradient_norm": diff.abs().mean().detach()}


def flow_matching_loss(flow: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                       schedule: FlowSchedule | None) -> torch.Tensor:
    """mean over frames of w(t) * mean_{C,H,W}(flow - (eps - x0))^2; w = schedule.training_weight or 1."""
    per_frame = F.mse_loss(flow.float(), (eps - x0).float(), reduction="none").mean(dim=(1, 3, 4))  # [B, F]
    if schedule is not None:
        per_frame = per_frame * schedule.training_weight(t).to(per_frame)
    return per_frame.mean()


def regression_loss(x0_pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """MSE between predicted and clean latents over the frames whose input was noisy (t != 0)."""
    mask = (t != 0)  # [B, F]
    pred = x0_pred.transpose(1, 2)[mask]  # [N, C, H, W]
    tgt = target.transpose(1, 2)[mask]
    return F.mse_loss(pred.float(), tgt.float())
