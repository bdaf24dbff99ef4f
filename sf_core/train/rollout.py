"""The Self Forcing training rollout: the inference sampler (`sf_core.sampler.rollout`) with training arguments.

Per chunk, the denoising steps before the chunk's exit step run without grad (x0, then re-noise with fresh
noise), the exit step keeps grad and its x0 is the chunk's output; the chunk is then committed to the KV
cache by a no-grad context pass on x0 re-noised to `context_noise` (sigma(0) = 0.00498 on the shift-5
grid, as the reference does in training). The cache's `grad_mode` decides how gradient crosses chunks
(spec 5.2). Exit steps ("stochastic gradient truncation") are drawn on rank 0 and broadcast.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..denoiser import Denoiser
from ..kv_cache import KVCache
from ..model import WanTransformer
from ..sampler import NoiseFn, rollout
from .config import RolloutConfig
from .distributed import DistInfo, broadcast_ints
from .rng import keyed_generator


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
        return self.model(x, t, ctx, cache=cache, start_frame=start_frame, mask=mask, backend=self.backend,
                          checkpoint=ckpt, dtype=self.dtype, need_output=need_output)


def sampling_timesteps(rcfg: RolloutConfig) -> torch.Tensor:
    """The generator's few-step list: warped onto its grid (1000, 937.5, 833.33, 625 at shift 5) or raw."""
    from ..schedule import FlowSchedule

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
