"""Few-step causal sampling (Self Forcing): small pure functions over (denoiser, x, timesteps).

One chunk (LCM-style, as the official pipeline): start from noise; for each timestep t_i predict x0 and,
unless it is the last step, re-noise x0 to t_{i+1} with fresh noise. The finished chunk is then committed
to the KV cache by one context pass at `context_t` (0 = clean).

`step_chunk` is the one chunk step (sample, check, commit). `rollout` loops over it for a stretch of video
(training's rollout with `exit_steps`: the step whose x0 keeps grad; parity replays); `sf_core.sampling.pipeline`
loops over it for sessions (batch inference, streaming, continuation) and `sf_core.sampling.live` for live runs.

Noise draw order (reproducible for a seed): for each chunk, in order, (1) the chunk's initial noise
[B, C, n, H, W] (unless `noise` is given for the whole video), (2) one draw per re-noising step
(len(timesteps) - 1, or exit_step with training's truncation), (3) with `context_renoise` one draw for the
context pass. Draws come from `noise_fn(shape)`; `generator_noise` draws float32 on the generator's device
and casts, so a CPU generator gives the same noise for every compute device and dtype (sessions use one).
Running the chunks in one call or one call per chunk (sessions) makes the same draws in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..config import CausalConfig, ConfigError, plan_chunks
from .denoiser import Denoiser
from ..cache.kv_cache import KVCache
from .schedule import FlowSchedule

NoiseFn = Callable[[tuple[int, ...]], torch.Tensor]


def generator_noise(generator: torch.Generator, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> NoiseFn:
    """Gaussian draws from a torch.Generator (drawn on the generator's device, moved to `device`)."""
    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        z = torch.randn(shape, generator=generator, dtype=torch.float32, device=generator.device)
        return z.to(device=device or generator.device, dtype=dtype)
    return draw


def replay_noise(draws: Sequence[torch.Tensor]) -> NoiseFn:
    """Noise from a recorded list (parity against recorded runs); fails if the count or shapes differ."""
    it = iter(draws)

    def draw(shape):
        try:
            z = next(it)
        except StopIteration:
            raise RuntimeError("ran out of recorded noise draws") from None
        if tuple(z.shape) != tuple(shape):
            raise RuntimeError(f"recorded draw has shape {tuple(z.shape)}, expected {tuple(shape)}")
        return z
    return draw


@dataclass
class StepInfo:
    chunk: int
    step: int
    start_frame: int
    t: float
    x0: torch.Tensor


def sample_chunk(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                 timesteps: torch.Tensor, schedule: FlowSchedule, noise_fn: NoiseFn, *,
                 exit_step: int | None = None, grad: bool = False,
                 callback: Callable[[int, float, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Denoise one chunk x [B, C, n, H, W] (pure noise at timesteps[0]) and return its x0.

    exit_step: stop after this step (training's stochastic truncation); only that step runs with grad when
    `grad` is True, the earlier ones under no_grad.
    """
    n_steps = len(timesteps)
    last = n_steps - 1 if exit_step is None else exit_step
    if not 0 <= last < n_steps:
        raise ConfigError(f"exit_step {exit_step} outside 0..{n_steps - 1}")
    b, _, f = x.shape[:3]
    x0 = x
    for i in range(last + 1):
        t = timesteps[i].to(x.device).expand(b, f)
        ctx = torch.enable_grad() if (grad and i == last) else torch.no_grad()
        with ctx:
            x0 = denoise(x, t)
        if callback is not None:
            callback(i, float(timesteps[i]), x0)
        if i < last:
            t_next = timesteps[i + 1].to(x.device).expand(b, f)
            with torch.no_grad():
                x = schedule.add_noise(x0, noise_fn(tuple(x0.shape)), t_next)
    return x0


def step_chunk(denoiser: Denoiser, cache: KVCache, x: torch.Tensor, start_frame: int, timesteps: torch.Tensor,
               noise_fn: NoiseFn, *, exit_step: int | None = None, grad: bool = False, commit: bool = True,
               context_t: float = 0.0, context_renoise: bool = False,
               merge: tuple[torch.Tensor, int] | None = None,
               callback: Callable[[int, float, torch.Tensor], None] | None = None) -> torch.Tensor:
    """THE chunk step: denoise chunk x [B, C, n, H, W] (noise at timesteps[0]) against `cache`, check it is
    finite, and commit it (one context pass at `context_t`, re-noised first with `context_renoise`), which
    advances the cache past the chunk. Returns its x0. Every loop (batch inference, sessions, the live stream,
    the training rollout) is a loop over this call that differs only in arguments.

    Merged commits (inference): `commit=False` leaves the chunk's commit to the next chunk, whose step gets
    `merge=(x0, start_frame)` of it: its first denoising call then commits that chunk in the same forward
    (`Denoiser.merged`), 4 forward calls per chunk instead of 5 with the default 4 steps.
    """
    todo = [merge]

    def denoise(xx, tt):
        if todo[0] is not None:
            (prev, prev_start), todo[0] = todo[0], None
            return denoiser.merged(prev, prev_start, xx, tt, cache=cache, start_frame=start_frame, t_prev=context_t)
        return denoiser(xx, tt, cache=cache, start_frame=start_frame)

    if merge is not None and (grad or context_renoise):
        raise ConfigError("merged commits are for inference: not with grad or a re-noised context pass")
    x0 = sample_chunk(denoise, x, timesteps, denoiser.schedule, noise_fn, exit_step=exit_step, grad=grad,
                      callback=callback)
    _check_finite(x0, start_frame)
    if commit:
        with torch.no_grad():
            xc = x0.detach()
            if context_renoise:
                b_, _, f_ = xc.shape[:3]
                tc = torch.full((b_, f_), float(context_t), device=xc.device)
                xc = denoiser.schedule.add_noise(xc, noise_fn(tuple(xc.shape)), tc)
            denoiser.commit(xc, cache, start_frame, context_t)
    return x0


def rollout(denoiser: Denoiser, cache: KVCache, *, batch: int, num_frames: int, latent_hw: tuple[int, int],
            timesteps: torch.Tensor, causal: CausalConfig, noise_fn: NoiseFn,
            noise: torch.Tensor | None = None, start_frame: int = 0, channels: int = 16,
            context_t: float = 0.0, context_renoise: bool = False, exit_steps: Sequence[int] | None = None,
            dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
            on_step: Callable[[StepInfo], None] | None = None) -> torch.Tensor:
    """Generate `num_frames` latent frames from `start_frame` on: a loop of `step_chunk`; returns [B, C, F, H, W].

    noise: the initial noise of all frames (else drawn per chunk). exit_steps: per chunk, the step whose x0 is
    the chunk output and keeps grad when grad is enabled (the training rollout); context_renoise: re-noise x0
    to context_t before the context pass (the training rollout does; its sigma(0) is 0.00498, so training
    context frames carry slight noise, inference ones none).
    """
    h, w = latent_hw
    grad = exit_steps is not None and torch.is_grad_enabled()
    outs = []
    for ci, (s, e) in enumerate(plan_chunks(causal, start_frame, num_frames=num_frames)):
        if noise is not None:
            x = noise[:, :, s - start_frame:e - start_frame].to(device=device, dtype=dtype)
        else:
            x = noise_fn((batch, channels, e - s, h, w))
        cb = None if on_step is None else (lambda i, t, x0, _ci=ci, _s=s: on_step(StepInfo(_ci, i, _s, t, x0)))
        outs.append(step_chunk(denoiser, cache, x, s, timesteps, noise_fn,
                               exit_step=None if exit_steps is None else int(exit_steps[ci]), grad=grad,
                               context_t=context_t, context_renoise=context_renoise, callback=cb))
    return torch.cat(outs, dim=2)


class NonFiniteError(FloatingPointError):
    pass


def _check_finite(x0: torch.Tensor, start: int) -> None:
    if not torch.isfinite(x0).all():
        bad = (~torch.isfinite(x0)).sum().item()
        raise NonFiniteError(
            f"the chunk at latent frames {start}..{start + x0.shape[2] - 1}) produced {bad} NaN/inf values; "
            f"stopped. Usual causes: fp16 overflow (use bf16 or fp32), corrupt weights, or NaN in the text "
            f"embeddings")


__all__ = ["rollout", "step_chunk", "sample_chunk", "generator_noise", "replay_noise", "StepInfo",
           "NonFiniteError"]
