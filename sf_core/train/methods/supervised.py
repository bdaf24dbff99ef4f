"""Supervised baselines on clean latents (spec 1.4, `model/diffusion.py`): flow-matching losses
mean((v - (eps - x0))^2) weighted by `FlowSchedule.training_weight`, differing in the attention pattern.

- flow_matching: bidirectional pretraining of a teacher (one timestep per sample, full attention);
- diffusion_forcing: causal, one timestep per chunk, one whole-sequence forward with the block-causal mask;
- teacher_forcing: causal, one timestep per chunk, every chunk attends to the *clean* earlier chunks. We run
  it chunk by chunk through the KV cache (the noisy chunk, then the clean chunk written over its rows, with
  grad): the same attention pattern as the reference's [clean | noisy] sequence and mask, and the same RoPE
  positions for both halves, without a 2F-frame sequence.
"""
from __future__ import annotations

import torch

from ...model.attention import BlockCausalMask
from ...config import CausalConfig
from ...cache.kv_cache import KVCache
from ...sampling.schedule import FlowSchedule
from ..losses import flow_matching_loss
from ..models import Nets
from ..rollout import ModuleDenoiser
from .base import Batch, Logs, Method, StepEnv, scalar


def chunk_timesteps(idx: torch.Tensor, bounds: list[tuple[int, int]], schedule: FlowSchedule) -> torch.Tensor:
    """Grid indices [B, n_chunks] -> per-frame timesteps [B, F] (constant inside a chunk)."""
    ts = schedule.timesteps.to(idx.device)[idx]  # [B, n_chunks]
    reps = torch.tensor([e - s for s, e in bounds], device=idx.device)
    return ts.repeat_interleave(reps, dim=1)


def teacher_forcing_flow(den: ModuleDenoiser, x_t: torch.Tensor, t: torch.Tensor, clean: torch.Tensor,
                        t_ctx: torch.Tensor, bounds: list[tuple[int, int]]) -> torch.Tensor:
    """Flow of every noisy chunk [B, C, F, H, W] given the clean earlier chunks, through a KV cache: per chunk,
    the noisy chunk is run, then the clean chunk (at t_ctx) overwrites its cache rows with grad."""
    cfg = den.model.config
    b, _, f, h, w = x_t.shape
    cache = KVCache.allocate(cfg.num_layers, b, cfg.num_heads, cfg.head_dim, cfg.tokens_per_frame(h, w),
                             frames=f, dtype=den.dtype or x_t.dtype, device=x_t.device)
    flows = []
    for ci, (s, e) in enumerate(bounds):
        flows.append(den.flow(x_t[:, :, s:e], t[:, s:e], cache=cache, start_frame=s))
        if ci < len(bounds) - 1:
            den.flow(clean[:, :, s:e], t_ctx[:, s:e], cache=cache, start_frame=s, need_output=False)
    return torch.cat(flows, dim=2)


class _Supervised(Method):
    needs = "latents"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.schedule = FlowSchedule(cfg.supervised.shift)
        self.causal = CausalConfig(chunk_frames=cfg.rollout.chunk_frames,
                                   independent_first_frame=cfg.rollout.independent_first_frame)

    def _inputs(self, batch: Batch, env: StepEnv, per_chunk: bool):
        x0 = batch.latents.to(device=env.device, dtype=env.dtype)
        b, _, f = x0.shape[:3]
        bounds = self.causal.chunk_bounds(f) if per_chunk else [(0, f)]
        idx = env.draws("timestep", batch).randint(0, self.schedule.num_train_timesteps, (len(bounds),))
        t = chunk_timesteps(idx, bounds, self.schedule)
        eps = env.draws("noise", batch).randn(x0.shape[1:])
        return x0, eps, t, bounds

    def _loss(self, flow, x0, eps, t) -> torch.Tensor:
        w = self.schedule if self.cfg.supervised.loss_weighting else None
        return flow_matching_loss(flow, x0, eps, t, w)


class FlowMatching(_Supervised):
    """Bidirectional flow matching (teacher pretraining): full attention, one timestep per sample."""

    name = "flow_matching"

    def generator_loss(self, nets: Nets, batch: Batch, env: StepEnv) -> tuple[torch.Tensor, Logs]:
        if self.cfg.supervised.causal_mix or self.cfg.supervised.image_mix:
            return self._mixed_loss(nets, batch, env)
        x0, eps, t, _ = self._inputs(batch, env, per_chunk=False)
        den = ModuleDenoiser(nets.generator, self.schedule, batch.context, dtype=env.dtype)
        flow = den.flow(self.schedule.add_noise(x0, eps, t), t)
        loss = self._loss(flow, x0, eps, t)
        return loss, {"generator_loss": scalar(loss)}

    def _mixed_loss(self, nets: Nets, batch: Batch, env: StepEnv) -> tuple[torch.Tensor, Logs]:
        """Flow matching with two kinds of other samples, each chosen by a per-sample draw:

        - `supervised.causal_mix`: a diffusion-forcing step (block-causal mask, one noise level per chunk);
        - `supervised.image_mix` (of the rest): the first frame is given clean (timestep 0, as a committed
          context frame) and the loss covers the other frames -- image-to-video. One clean frame shows where the
          object is but not where it goes, so the prompt's motion words decide every later frame: the strongest
          lesson a video model gets about them (with all frames equally noisy they matter only in a narrow band
          of noise levels, and a model can nearly ignore them, docs/toy_world.md).
        The loss is the batch mean over the groups."""
        sup = self.cfg.supervised
        x0, eps, t, bounds = self._inputs(batch, env, per_chunk=True)
        u = env.draws("causal-mix", batch).randint(0, 1 << 24).float() / (1 << 24)
        causal = (u < sup.causal_mix).to(x0.device)
        u = env.draws("image-mix", batch).randint(0, 1 << 24).float() / (1 << 24)
        image = (u < sup.image_mix).to(x0.device) & ~causal
        t = torch.where(causal[:, None], t, t[:, :1].expand_as(t)).clone()  # full attention: one level per sample
        t[image, 0] = 0.0
        total, logs = x0.new_zeros((), dtype=torch.float32), {}
        for name, rows in (("full", ~causal & ~image), ("causal", causal), ("image", image)):
            idx = rows.nonzero().flatten()
            if not len(idx):
                continue
            mask = None
            if name == "causal":
                mask = BlockCausalMask(tuple(bounds), nets.config.tokens_per_frame(x0.shape[3], x0.shape[4]))
            xt = self.schedule.add_noise(x0[idx], eps[idx], t[idx])
            first = 1 if name == "image" else 0
            if first:
                xt[:, :, 0] = x0[idx, :, 0]  # exactly clean, like a committed frame
            den = ModuleDenoiser(nets.generator, self.schedule, batch.context[idx], dtype=env.dtype)
            flow = den.flow(xt, t[idx], mask=mask)
            part = self._loss(flow[:, :, first:], x0[idx, :, first:], eps[idx, :, first:], t[idx, first:])
            total = total + part * (len(idx) / x0.shape[0])
            logs[f"loss_{name}"] = scalar(part)
        return total, {"generator_loss": scalar(total), **logs}


class DiffusionForcing(_Supervised):
    """Causal model, independent noise level per chunk, block-causal mask over the whole clip."""

    name = "diffusion_forcing"

    def generator_loss(self, nets: Nets, batch: Batch, env: StepEnv) -> tuple[torch.Tensor, Logs]:
        x0, eps, t, bounds = self._inputs(batch, env, per_chunk=True)
        tpf = nets.config.tokens_per_frame(x0.shape[3], x0.shape[4])
        mask = BlockCausalMask(tuple(bounds), tpf)
        den = ModuleDenoiser(nets.generator, self.schedule, batch.context, dtype=env.dtype)
        flow = den.flow(self.schedule.add_noise(x0, eps, t), t, mask=mask)
        loss = self._loss(flow, x0, eps, t)
        return loss, {"generator_loss": scalar(loss)}


class TeacherForcing(_Supervised):
    """Causal model, per-chunk noise, clean (optionally lightly noised) earlier chunks as context."""

    name = "teacher_forcing"

    def _context_timesteps(self, batch: Batch, env: StepEnv, bounds) -> torch.Tensor:
        """Timesteps of the clean context: 0, or a grid timestep <= noise_augmentation_max_timestep per chunk."""
        b, f = batch.size, bounds[-1][1]
        t_max = self.cfg.supervised.noise_augmentation_max_timestep
        if not t_max:
            return torch.zeros(b, f, device=env.device)
        low = (self.schedule.timesteps <= t_max).nonzero().flatten()
        pick = env.draws("context_timestep", batch).randint(0, len(low), (len(bounds),))
        idx = low.to(pick.device)[pick]
        return chunk_timesteps(idx, bounds, self.schedule)

    def generator_loss(self, nets: Nets, batch: Batch, env: StepEnv) -> tuple[torch.Tensor, Logs]:
        x0, eps, t, bounds = self._inputs(batch, env, per_chunk=True)
        t_ctx = self._context_timesteps(batch, env, bounds)
        clean = x0 if not self.cfg.supervised.noise_augmentation_max_timestep else \
            self.schedule.add_noise(x0, env.draws("context_noise", batch).randn(x0.shape[1:]), t_ctx)
        flow = teacher_forcing_flow(ModuleDenoiser(nets.generator, self.schedule, batch.context, dtype=env.dtype),
                                    self.schedule.add_noise(x0, eps, t), t, clean, t_ctx, bounds)
        loss = self._loss(flow, x0, eps, t)
        return loss, {"generator_loss": scalar(loss)}
