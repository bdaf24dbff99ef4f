"""Few-step causal sampling (Self Forcing): small pure functions over (denoiser, x, timesteps).

One chunk (LCM-style, as the official pipeline): start from noise; for each timestep t_i predict x0 and,
unless it is the last step, re-noise x0 to t_{i+1} with fresh noise. The finished chunk is then committed
to the KV cache by one context pass at `context_t` (0 = clean).

`rollout` runs the chunks of a video left to right. The same function serves batch inference, streaming
(per-chunk callback), sessions (start from any frame with an existing cache) and the Self Forcing
training rollout (`exit_steps`: the step whose x0 keeps grad; earlier steps run without grad).

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

from .config import CausalConfig, ConfigError
from .denoiser import Denoiser
from .kv_cache import KVCache
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


def rollout(denoiser: Denoiser, cache: KVCache, *, batch: int, num_frames: int, latent_hw: tuple[int, int],
            timesteps: torch.Tensor, causal: CausalConfig, noise_fn: NoiseFn,
            noise: torch.Tensor | None = None, start_frame: int = 0, channels: int = 16,
            context_t: float = 0.0, context_renoise: bool = False, commit_last: bool = True,
            exit_steps: Sequence[int] | None = None, grad_from_frame: int = 0,
            dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
            on_step: Callable[[StepInfo], None] | None = None,
            on_chunk: Callable[[int, int, torch.Tensor], None] | None = None,
            context_schedule: Callable[[int], torch.Tensor] | None = None) -> torch.Tensor:
    """Generate `num_frames` latent frames from `start_frame` on, chunk by chunk; returns [B, C, F, H, W].

    noise: the initial noise of all frames (else drawn per chunk). exit_steps: per chunk, the step whose
    x0 is the chunk output (training); grad is kept only for chunks starting at >= grad_from_frame.
    context_renoise: re-noise x0 to context_t before the context pass (the training rollout does; its
    sigma(0) is 0.00498, so training context frames carry slight noise, inference ones none).
    commit_last: run the context pass after the final chunk too (needed to continue the video later).
    on_chunk(chunk_index, start_frame, x0) after each chunk; context_schedule(chunk_index) -> context.
    """
    h, w = latent_hw
    bounds = _chunk_bounds(causal, start_frame, num_frames)
    grad_wanted = exit_steps is not None and torch.is_grad_enabled()
    outs = []
    for ci, (s, e) in enumerate(bounds):
        n = e - s
        if noise is not None:
            x = noise[:, :, s - start_frame:e - start_frame].to(device=device, dtype=dtype)
        else:
            x = noise_fn((batch, channels, n, h, w))
        if context_schedule is not None:
            ctx = context_schedule(ci)
            if ctx is not denoiser.context:
                denoiser.context = ctx
        exit_step = None if exit_steps is None else int(exit_steps[ci])
        keep_grad = grad_wanted and s >= grad_from_frame

        def denoise(xx, tt, _s=s):
            return denoiser(xx, tt, cache=cache, start_frame=_s)

        cb = None
        if on_step is not None:
            cb = (lambda i, t, x0, _ci=ci, _s=s: on_step(StepInfo(_ci, i, _s, t, x0)))
        x0 = sample_chunk(denoise, x, timesteps, denoiser.schedule, noise_fn, exit_step=exit_step,
                          grad=keep_grad, callback=cb)
        _check_finite(x0, ci, s)
        outs.append(x0)
        if commit_last or ci < len(bounds) - 1:
            with torch.no_grad():
                xc = x0.detach()
                if context_renoise:
                    b_, _, f_ = xc.shape[:3]
                    tc = torch.full((b_, f_), float(context_t), device=xc.device)
                    xc = denoiser.schedule.add_noise(xc, noise_fn(tuple(xc.shape)), tc)
                denoiser.commit(xc, cache, s, context_t)
        if on_chunk is not None:
            on_chunk(ci, s, x0)
    return torch.cat(outs, dim=2)


def _chunk_bounds(causal: CausalConfig, start_frame: int, num_frames: int) -> list[tuple[int, int]]:
    if start_frame == 0:
        return causal.chunk_bounds(num_frames)
    first = 1 if causal.independent_first_frame else 0
    if (start_frame - first) % causal.chunk_frames or num_frames % causal.chunk_frames:
        raise ConfigError(f"continuing at frame {start_frame} for {num_frames} frames does not fall on chunk "
                          f"boundaries of {causal.chunk_frames} frames")
    return [(s, s + causal.chunk_frames) for s in range(start_frame, start_frame + num_frames,
                                                          causal.chunk_frames)]


class NonFiniteError(FloatingPointError):
    pass


def _check_finite(x0: torch.Tensor, chunk: int, start: int) -> None:
    if not torch.isfinite(x0).all():
        bad = (~torch.isfinite(x0)).sum().item()
        raise NonFiniteError(
            f"chunk {chunk} (latent frames {start}..{start + x0.shape[2] - 1}) produced {bad} NaN/inf values; "
            f"stopped. Usual causes: fp16 overflow (use bf16 or fp32), corrupt weights, or NaN in the text "
            f"embeddings")


def num_chunks(causal: CausalConfig, num_frames: int) -> int:
    return len(causal.chunk_bounds(num_frames))


__all__ = ["rollout", "sample_chunk", "generator_noise", "replay_noise", "StepInfo", "num_chunks",
           "NonFiniteError"]
