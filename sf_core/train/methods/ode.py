"""ODE-regression initialisation (spec 5.7, CausVid section 4.3): teacher ODE pairs, then causal regression.

Pairs: the bidirectional teacher integrates pure noise with Euler over `ode_steps` points of the shifted
grid (shift = dmd.score_shift, 8 as the reference), CFG in x0 space x0_u + g (x0_c - x0_u), and the
latents at `ode_keep` trajectory indices are stored (last = the clean result). Regression: per chunk, one
trajectory index k (noisy input at the generator's k-th sampling timestep), one block-causal forward,
MSE between the predicted x0 and the clean latents over the noisy frames.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from ...attention import BlockCausalMask
from ...denoiser import Denoiser
from ...schedule import FlowSchedule
from ..config import ConfigError, TrainConfig
from ..data import ShardDataset, write_shards
from ..distributed import DistInfo, barrier
from ..losses import regression_loss
from ..models import Nets
from ..rng import keyed_generator
from ..rollout import ModuleDenoiser, sampling_timesteps
from .base import Batch, Logs, Method, StepEnv, scalar

log = logging.getLogger(__name__)


def euler_sigmas(steps: int, shift: float) -> torch.Tensor:
    """sigma of an `steps`-point Euler schedule on the shifted grid (1 ... > 0), float32, then 0 appended."""
    s = torch.linspace(1.0, 0.0, steps + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return torch.cat([s, torch.zeros(1)])


@torch.no_grad()
def ode_trajectory(teacher: Denoiser, noise: torch.Tensor, steps: int, shift: float,
                   keep: tuple[int, ...]) -> torch.Tensor:
    """Euler-integrate the (CFG) teacher from noise [B, C, F, H, W]; returns [B, len(keep), C, F, H, W].

    Trajectory index i is the latent before step i (index `steps` = the final, clean latent).
    """
    sig = euler_sigmas(steps, shift).to(noise.device)
    x, traj = noise, [noise]
    b, _, f = noise.shape[:3]
    for i in range(steps):
        t = (sig[i] * 1000).expand(b, f)
        x0 = teacher(x, t)
        flow = ((x.double() - x0.double()) / sig[i].double()).to(x.dtype)
        x = x + flow * (sig[i + 1] - sig[i])
        traj.append(x)
    return torch.stack([traj[k] for k in keep], dim=1)


def generate_ode_pairs(cfg: TrainConfig, teacher: torch.nn.Module, prompts: ShardDataset, out_dir: str | Path,
                       info: DistInfo, dtype: torch.dtype = torch.float32,
                       progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ODE-pair shards for every prompt of `prompts` (ranks take every world-th prompt) into out_dir."""
    sup, r = cfg.supervised, cfg.rollout
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sched = FlowSchedule(cfg.dmd.score_shift)
    neg = prompts.negative.to(info.device)
    mine = list(range(info.rank, len(prompts), info.world))
    trajs, embeds, texts = [], [], []
    for n, i in enumerate(mine):
        s = prompts[i]
        ctx = s.embeds[None].to(info.device)
        den = ModuleDenoiser(teacher, sched, ctx, negative=neg[None], guidance=sup.ode_guidance - 1.0,
                             dtype=dtype)
        g = keyed_generator(cfg.seed, "ode", i)
        noise = torch.randn((1, teacher.config.in_dim, r.num_frames, r.latent_height, r.latent_width), generator=g)
        trajs.append(ode_trajectory(den, noise.to(info.device, dtype), sup.ode_steps, cfg.dmd.score_shift,
                                    sup.ode_keep)[0].float().cpu())
        embeds.append(s.embeds)
        texts.append(s.prompt)
        if progress is not None:
            progress(n + 1, len(mine))
    part = out / f"rank{info.rank:05d}"
    if mine:
        write_shards(part, embeds, texts, prompts.negative, latents=trajs, kind="ode",
                     negative_prompt=prompts.index.get("negative_prompt", ""), encoder=prompts.index.get("encoder", ""))
    barrier(info)
    if info.is_main:
        _merge_rank_dirs(out, info.world, prompts)
    barrier(info)
    return out


def _merge_rank_dirs(out: Path, world: int, prompts: ShardDataset) -> None:
    """One index over the per-rank shard directories (files stay where the ranks wrote them)."""
    import json

    shards, n = [], 0
    for rk in range(world):
        idx_path = out / f"rank{rk:05d}" / "index.json"
        if not idx_path.is_file():
            continue
        idx = json.loads(idx_path.read_text())
        shards += [{"file": f"rank{rk:05d}/{s['file']}", "count": s["count"]} for s in idx["shards"]]
        n += idx["num_samples"]
        (out / "negative.safetensors").write_bytes((out / f"rank{rk:05d}" / "negative.safetensors").read_bytes())
    index = {"format": "sf_train_shards", "version": 1, "kind": "ode", "num_samples": n,
             "text_dim": prompts.text_dim, "shards": shards, "negative_prompt": prompts.index.get("negative_prompt", ""),
             "encoder": prompts.index.get("encoder", "")}
    (out / "index.json").write_text(json.dumps(index, indent=1))


class ODERegression(Method):
    name = "ode"
    needs = "ode"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.schedule = FlowSchedule(cfg.rollout.shift)
        self.timesteps = sampling_timesteps(cfg.rollout)
        if len(cfg.supervised.ode_keep) - 1 != len(self.timesteps):
            raise ConfigError(f"supervised.ode_keep has {len(cfg.supervised.ode_keep) - 1} noisy trajectory points "
                              f"but rollout.denoising_steps has {len(self.timesteps)} steps; they must match")

    def generator_loss(self, nets: Nets, batch: Batch, env: StepEnv) -> tuple[torch.Tensor, Logs]:
        traj = batch.trajectory.to(device=env.device, dtype=env.dtype)  # [B, K, C, F, H, W]
        b, k, c, f, h, w = traj.shape
        bounds = self.cfg.rollout.causal().chunk_bounds(f)
        idx = env.draws("trajectory_index", batch).randint(0, k - 1, (len(bounds),))  # [B, chunks]
        reps = torch.tensor([e - s for s, e in bounds], device=idx.device)
        idx_f = idx.repeat_interleave(reps, dim=1)  # [B, F]
        x_in = torch.gather(traj, 1, idx_f[:, None, None, :, None, None].expand(b, 1, c, f, h, w))[:, 0]
        t = self.timesteps.to(env.device)[idx_f]
        mask = BlockCausalMask(tuple(bounds), nets.config.tokens_per_frame(h, w))
        den = ModuleDenoiser(nets.generator, self.schedule, batch.context, dtype=env.dtype)
        x0 = den(x_in, t, mask=mask)
        loss = regression_loss(x0, traj[:, -1], t)
        return loss, {"generator_loss": scalar(loss)}


__all__ = ["ODERegression", "generate_ode_pairs", "ode_trajectory", "euler_sigmas"]
