"""The paper's few-step baselines: DMD whose generator samples come from a *forced* pass, not a self-rollout.

Self Forcing's ablation (paper, "few (4)-step models") compares Self Forcing with "TF + DMD" and "DF + DMD":
the same distribution-matching loss and critic, but the generator's output is produced the way teacher /
diffusion forcing train, from ground-truth context (CausVid's recipe; the reference's `model/causvid.py`):

- each chunk of a ground-truth video is noised to one of the sampling timesteps (drawn per chunk);
- DF: one block-causal pass over the whole noisy clip (earlier chunks are seen *noisy*);
- TF: chunk by chunk through the KV cache, each noisy chunk attending to the *clean* ground-truth chunks
  before it (the noisy chunk's K/V are then replaced by the clean chunk's, as `TeacherForcing` does);
- the predicted x0 of every chunk is the "generated" video that DMD compares with the teacher.

`ForcedDMD` subclasses the trainer's `DistributionMatching` and replaces only how samples are produced, so
the loss, critic update, schedule, optimisers and EMA are the trainer's own.
"""
from __future__ import annotations

import torch

from ..model.attention import BlockCausalMask
from ..cache.kv_cache import KVCache
from ..train.methods.base import Batch, StepEnv
from ..train.methods.distribution import DistributionMatching
from ..train.models import Nets

FORCINGS = ("teacher_forcing", "diffusion_forcing")


class ForcedDMD(DistributionMatching):
    """DMD on teacher-forced or diffusion-forced generator outputs (needs batches with clean latents)."""

    def __init__(self, cfg, forcing: str, reward=None):
        if forcing not in FORCINGS:
            raise ValueError(f"forcing must be one of {FORCINGS}, got {forcing!r}")
        super().__init__(cfg, reward=reward)
        self.forcing = forcing
        self.name = f"dmd_{forcing}"

    def _generate(self, nets: Nets, batch: Batch, env: StepEnv, phase: str) -> tuple[torch.Tensor, list[int]]:
        if batch.latents is None:
            raise ValueError(f"{self.name} needs ground-truth latents in its batches (a dataset with latents)")
        x0 = batch.latents.to(device=env.device, dtype=env.dtype)
        b, _, f, h, w = x0.shape
        bounds = self.cfg.rollout.causal().chunk_bounds(f)
        idx = env.draws(f"{phase}/forced_step", batch).randint(0, len(self.timesteps), (len(bounds),))
        reps = torch.tensor([e - s for s, e in bounds], device=idx.device)
        t = self.timesteps.to(env.device)[idx].repeat_interleave(reps, dim=1)  # [B, F]
        eps = env.draws(f"{phase}/forced_noise", batch).randn(x0.shape[1:])
        x_t = self.gen_schedule.add_noise(x0, eps, t)
        den = self.generator_denoiser(nets, batch.context, env.dtype)
        tpf = nets.config.tokens_per_frame(h, w)
        if self.forcing == "diffusion_forcing":
            out = den(x_t, t, mask=BlockCausalMask(tuple(bounds), tpf))
        else:
            cfg = nets.config
            cache = KVCache.allocate(cfg.num_layers, b, cfg.num_heads, cfg.head_dim, tpf, frames=f,
                                     dtype=x0.dtype, device=x0.device, grad_mode=self.cfg.dmd.kv_grad)
            parts = []
            for ci, (s, e) in enumerate(bounds):
                parts.append(den(x_t[:, :, s:e], t[:, s:e], cache=cache, start_frame=s))
                if ci < len(bounds) - 1:
                    # the clean ground-truth chunk replaces the noisy one's K/V (with grad, as the reference's
                    # [clean | noisy] teacher-forcing sequence computes the clean half with the same weights)
                    den.commit(x0[:, :, s:e], cache, s, 0.0)
            out = torch.cat(parts, dim=2)
        return out, idx[0].tolist()
