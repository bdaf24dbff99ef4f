"""The Self Forcing training rollout: the inference sampler (`sf_core.sampling.sampler.rollout`) with training arguments.

Per chunk, the denoising steps before the chunk's exit step run without grad (x0, then re-noise with fresh
noise), the exit step keeps grad and its x0 is the chunk's output; the chunk is then committed to the KV
cache by a no-grad context pass on x0 re-noised to `context_noise` (sigma(0) = 0.00498 on the shift-5
grid, as the reference does in training). The cache's `grad_mode` decides how gradient crosses chunks
(spec 5.2). Exit steps ("stochastic gradient truncation") are drawn on rank 0 and broadcast.

Long rollouts (Self-Forcing++ / LongLive long tuning, `long_rollout.factor` K > 1): the same loop runs on a
rolling KV cache past the training window, in two calls of `sampler.rollout` on one cache -- the chunks before
the trained window under no_grad (in-place cache rows, no autograd history), then the window's chunks exactly
as a normal training rollout (exit steps keep grad). Only the window is returned, so the graph and the cache
are the same size for every K.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..config import CausalConfig
from ..sampling.denoiser import Denoiser
from ..cache.kv_cache import KVCache
from ..model.transformer import WanTransformer
from ..sampling.sampler import NoiseFn, rollout
from .config import LongRolloutConfig, RolloutConfig
from .distributed import DistInfo, broadcast_ints
from .rng import keyed_generator


class _CacheRef:
    """The KV cache behind a plain reference for the module call. FSDP2's pre-forward rebuilds dataclass arguments
    that hold grad-carrying tensors (`dataclasses.replace` in its post-backward hook registration), so a
    grad-enabled call on a cache whose rows carry grad would write a *copy*: the caller's cache would miss the
    chunk (teacher forcing lost its clean context, and the straight-through gradient of the third and later
    chunks of a rollout was dropped). Attribute access goes to the cache itself; its rows reach the blocks
    inside `cache.source`'s closure, as before."""

    __slots__ = ("_cache",)

    def __init__(self, cache: KVCache):
        self._cache = cache

    def __getattr__(self, name: str):
        return getattr(self._cache, name)


class ModuleDenoiser(Denoiser):
    """A Denoiser that calls the model *module* (so FSDP2's root hooks unshard the embeddings and the head).

    Activation checkpointing follows `model.gradient_checkpointing` (set by `parallelize()`) unless
    `checkpoint` is set here."""

    def flow(self, x, t, *, context=None, cache=None, start_frame=0, mask=None, need_output=True):
        if not isinstance(self.model, WanTransformer):
            return super().flow(x, t, context=context, cache=cache, start_frame=start_frame, mask=mask,
                                need_output=need_output)
        ctx = self.context if context is None else context
        ckpt = self.checkpoint or bool(getattr(self.model, "gradient_checkpointing", False))
        return self.model(x, t, ctx, cache=None if cache is None else _CacheRef(cache), start_frame=start_frame,
                          mask=mask, backend=self.backend, checkpoint=ckpt, dtype=self.dtype, need_output=need_output)


def sampling_timesteps(rcfg: RolloutConfig) -> torch.Tensor:
    """The generator's few-step list: warped onto its grid (1000, 937.5, 833.33, 625 at shift 5) or raw."""
    from ..sampling.schedule import FlowSchedule

    if rcfg.warp:
        return FlowSchedule(rcfg.shift).warp(rcfg.denoising_steps)
    return torch.tensor([float(s) for s in rcfg.denoising_steps], dtype=torch.float32)


def draw_exit_steps(seed: int, step: int, purpose: str, num_chunks: int, num_steps: int, *,
                    same_step_across_blocks: bool = True, last_step_only: bool = False,
                    info: DistInfo | None = None) -> list[int]:
    """Exit step per chunk. Drawn on rank 0 (uniform in [0, num_steps)) and broadcast, as the reference's
    `generate_and_sync_list`; with same_step_across_blocks every chunk uses the first draw."""
    if last_step_only:
        return [num_steps - 1] * num_chunks
    flags = torch.randint(0, num_steps, (num_chunks,), generator=keyed_generator(seed, step, purpose, "exit")).tolist()
    if info is not None and info.world > 1:
        flags = broadcast_ints(flags if info.is_main else [0] * num_chunks, info)
    if same_step_across_blocks:
        flags = [flags[0]] * num_chunks
    return flags


def training_cache(model: torch.nn.Module, batch: int, rcfg: RolloutConfig, *, grad_mode: str,
                   dtype: torch.dtype, device: torch.device | str) -> KVCache:
    """A global KV cache sized for the rollout's frames (the training rollout never rolls)."""
    cfg = model.config
    tpf = cfg.tokens_per_frame(rcfg.latent_height, rcfg.latent_width)
    return KVCache.allocate(cfg.num_layers, batch, cfg.num_heads, cfg.head_dim, tpf, frames=rcfg.num_frames,
                            dtype=dtype, device=device, grad_mode=grad_mode)


def self_forcing_rollout(generator: Denoiser, rcfg: RolloutConfig, *, batch: int, noise: torch.Tensor,
                         noise_fn: NoiseFn, exit_steps: Sequence[int], grad_mode: str = "straight_through",
                         on_step=None) -> torch.Tensor:
    """Generate [B, C, F, H, W] latents from `noise` (same shape) with the training semantics above.

    Gradient is kept only if grad is enabled by the caller (generator updates); the critic's rollout runs
    under no_grad with the same code.
    """
    dtype = generator.dtype or noise.dtype
    cache = training_cache(generator.model, batch, rcfg, grad_mode=grad_mode, dtype=dtype, device=noise.device)
    return rollout(generator, cache, batch=batch, num_frames=rcfg.num_frames,
                   latent_hw=(rcfg.latent_height, rcfg.latent_width), timesteps=sampling_timesteps(rcfg),
                   causal=rcfg.causal(), noise_fn=noise_fn, noise=noise, channels=noise.shape[1],
                   context_t=rcfg.context_noise, context_renoise=True, exit_steps=list(exit_steps),
                   dtype=dtype, device=noise.device, on_step=on_step)


def window_start(seed: int, step: int, purpose: str, rcfg: RolloutConfig, lcfg: LongRolloutConfig) -> int:
    """First latent frame of the trained window of a long rollout of lcfg.factor x rcfg.num_frames frames: a chunk
    start drawn uniformly (keyed, the same on every rank) with window "uniform", the last window with "last"."""
    total, n = rcfg.num_frames * lcfg.factor, rcfg.num_frames
    if lcfg.window == "last" or lcfg.factor == 1:
        return total - n
    starts = [s for s, _ in rcfg.causal().chunk_bounds(total) if s + n <= total]
    pick = torch.randint(0, len(starts), (1,), generator=keyed_generator(seed, step, purpose, "long_window"))
    return starts[int(pick)]


def long_cache(model: torch.nn.Module, batch: int, rcfg: RolloutConfig, lcfg: LongRolloutConfig, *, grad_mode: str,
               dtype: torch.dtype, device: torch.device | str) -> KVCache:
    """The rolling KV cache of a long training rollout (`cache_frames`, default the training window, + sink)."""
    cfg = model.config
    causal = CausalConfig(chunk_frames=rcfg.chunk_frames, window_frames=lcfg.cache_frames or rcfg.num_frames,
                          sink_frames=lcfg.sink_frames)
    return KVCache.for_config(causal, num_layers=cfg.num_layers, num_heads=cfg.num_heads, head_dim=cfg.head_dim,
                              tokens_per_frame=cfg.tokens_per_frame(rcfg.latent_height, rcfg.latent_width),
                              batch=batch, dtype=dtype, device=device, rope_mode=lcfg.positions, grad_mode=grad_mode)


def long_self_forcing_rollout(generator: Denoiser, rcfg: RolloutConfig, lcfg: LongRolloutConfig, *, batch: int,
                              noise: torch.Tensor, noise_fn: NoiseFn, exit_steps: Sequence[int], start: int,
                              grad_mode: str = "straight_through", on_step=None) -> torch.Tensor:
    """Roll out latent frames [0, start + num_frames) and return the window [start, start + num_frames).

    noise: [B, C, start + num_frames, H, W]; exit_steps: per chunk of the whole rollout (at least its chunks).
    Returns [B, C, num_frames, H, W]; under grad only the window's exit steps carry it (see the module doc).
    """
    n, chunk = rcfg.num_frames, rcfg.chunk_frames
    if start % chunk or noise.shape[2] != start + n:
        raise ValueError(f"window start {start} must be a chunk boundary and noise must cover {start + n} frames "
                         f"(got {noise.shape[2]})")
    dtype = generator.dtype or noise.dtype
    cache = long_cache(generator.model, batch, rcfg, lcfg, grad_mode=grad_mode, dtype=dtype, device=noise.device)
    common = dict(batch=batch, latent_hw=(rcfg.latent_height, rcfg.latent_width),
                  timesteps=sampling_timesteps(rcfg), causal=rcfg.causal(), noise_fn=noise_fn,
                  channels=noise.shape[1], context_t=rcfg.context_noise, context_renoise=True, dtype=dtype,
                  device=noise.device, on_step=on_step)
    exits, before = list(exit_steps), start // chunk
    if start:
        with torch.no_grad():  # the way to the window: no autograd history, in-place cache rows
            rollout(generator, cache, num_frames=start, noise=noise[:, :, :start], exit_steps=exits[:before],
                    **common)
    return rollout(generator, cache, num_frames=n, start_frame=start, noise=noise[:, :, start:],
                   exit_steps=exits[before:before + n // chunk], **common)
