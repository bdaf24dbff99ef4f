"""ODE-regression initialisation (spec 5.7, CausVid section 4.3): teacher ODE pairs, then causal regression.

Pairs: the bidirectional teacher integrates pure noise with Euler over `ode_steps` points of the shifted
grid (shift = dmd.score_shift, 8 as the reference), CFG in x0 space x0_u + g (x0_c - x0_u) (plus
`supervised.ode_partial_guidance` w (x0_c - x0_partial) against each sample's partial prompt), and the
latents at `ode_keep` trajectory indices are stored (last = the clean result). Regression: per chunk, one
trajectory index k (noisy input at the generator's k-th sampling timestep), one block-causal forward,
MSE between the predicted x0 and the clean latents over the noisy frames.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from ...model.attention import BlockCausalMask
from ...sampling.denoiser import Denoiser
from ...sampling.schedule import FlowSchedule
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
                       progress: Callable[[int, int], None] | None = None, save_every: int = 32) -> Path:
    """Write ODE-pair shards for every prompt of `prompts` (ranks split the prompts) into out_dir.

    Saved as they go: every `save_every` pairs a rank writes a complete part (`rankR/partK/`, its index.json
    last), so an interrupted run skips the prompts of finished parts when started again. Each pair's noise is
    keyed by (seed, prompt index), so a resumed run writes exactly the pairs an uninterrupted one would. At the
    end rank 0 writes `index.json` over all parts. progress(done, total) counts over all prompts of this rank,
    the ones found done included.
    """
    import shutil

    sup, r = cfg.supervised, cfg.rollout
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mine_dir = out / f"rank{info.rank:05d}"
    for stale in mine_dir.glob("part*"):  # a part without its index was interrupted mid-write
        if not (stale / "index.json").is_file():
            shutil.rmtree(stale, ignore_errors=True)
    done = _done_prompts(out)
    barrier(info)  # every rank has read the same finished set before anyone writes a new part
    todo = [i for i in range(len(prompts)) if i not in done]
    mine = todo[info.rank::info.world]
    total = len(mine) + sum(1 for i in done if i % info.world == info.rank)
    if done:
        log.info("ODE pairs: %d of %d already saved in %s; %d to go on this rank", len(done), len(prompts), out,
                 len(mine))
    sched = FlowSchedule(cfg.dmd.score_shift)
    neg = prompts.negative.to(info.device)
    part_no = 1 + max((int(p.name[4:]) for p in mine_dir.glob("part*") if p.name[4:].isdigit()), default=-1)
    ids, trajs, embeds, texts = [], [], [], []
    for n, i in enumerate(mine):
        s = prompts[i]
        ctx = s.embeds[None].to(info.device)
        part = None if s.partial is None else s.partial[None].to(info.device)
        if sup.ode_partial_guidance and part is None:
            raise ConfigError(f"supervised.ode_partial_guidance={sup.ode_partial_guidance} needs a partial prompt "
                              f"per sample, and prompt {i} of {prompts.root} has none; set it to 0")
        den = ModuleDenoiser(teacher, sched, ctx, negative=neg[None], guidance=sup.ode_guidance - 1.0,
                             dtype=dtype, partial=part, partial_guidance=sup.ode_partial_guidance)
        g = keyed_generator(cfg.seed, "ode", i)
        noise = torch.randn((1, teacher.config.in_dim, r.num_frames, r.latent_height, r.latent_width), generator=g)
        trajs.append(ode_trajectory(den, noise.to(info.device, dtype), sup.ode_steps, cfg.dmd.score_shift,
                                    sup.ode_keep)[0].float().cpu())
        ids.append(i)
        embeds.append(s.embeds)
        texts.append(s.prompt)
        if len(ids) == save_every or n == len(mine) - 1:
            write_shards(mine_dir / f"part{part_no:05d}", embeds, texts, prompts.negative, latents=trajs, kind="ode",
                         negative_prompt=prompts.index.get("negative_prompt", ""),
                         encoder=prompts.index.get("encoder", ""), extra={"prompt_ids": ids})
            part_no += 1
            ids, trajs, embeds, texts = [], [], [], []
        if progress is not None:
            progress(total - len(mine) + n + 1, total)
    barrier(info)
    if info.is_main:
        _merge_parts(out, prompts)
    barrier(info)
    return out


def _parts(out: Path) -> list[tuple[Path, dict]]:
    """Finished parts (rank, then part order) with their index."""
    import json

    found = []
    for idx in sorted(out.glob("rank*/part*/index.json")):
        try:
            found.append((idx.parent, json.loads(idx.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    return found


def _done_prompts(out: Path) -> set[int]:
    return {int(i) for _, index in _parts(out) for i in index.get("prompt_ids", [])}


def _merge_parts(out: Path, prompts: ShardDataset) -> None:
    """One index over every finished part (files stay where the ranks wrote them), written last, atomically."""
    import json

    from ...fileio import atomic_write_bytes, atomic_write_text

    parts = _parts(out)
    shards, n = [], 0
    for folder, index in parts:
        rel = folder.relative_to(out).as_posix()
        shards += [{"file": f"{rel}/{s['file']}", "count": s["count"]} for s in index["shards"]]
        n += index["num_samples"]
    if n != len(prompts):
        raise ConfigError(f"{out} holds ODE pairs for {n} prompts, expected {len(prompts)}: run ode-pairs again "
                          f"with the same prompts (finished parts are kept), or use a new output folder")
    if parts:
        atomic_write_bytes(out / "negative.safetensors", (parts[0][0] / "negative.safetensors").read_bytes())
    index = {"format": "sf_train_shards", "version": 1, "kind": "ode", "num_samples": n,
             "text_dim": prompts.text_dim, "shards": shards, "negative_prompt": prompts.index.get("negative_prompt", ""),
             "encoder": prompts.index.get("encoder", "")}
    atomic_write_text(out / "index.json", json.dumps(index, indent=1))


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
