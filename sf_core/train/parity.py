"""Parity of the trainer's losses with the official Self Forcing code (fixture parts E and F).

`training_parts(fx)` replays the fixture's recorded rollout noise, re-noising / context / DMD draws, exit
flags and raw timesteps through the trainer's own code (`DistributionMatching.rollout`, `.timestep`,
`.objective`, `.critic_objective`), backpropagates, and reports max abs differences (activations, the DMD
gradient), relative loss differences and parameter-gradient differences (max abs and relative L2), under
the keys `sf_core.parity.official.failures` knows. It is called by `python -m sf_core.parity FIXTURE`.
"""
from __future__ import annotations

import torch

from ..parity.fixture import Fixture
from ..sampling.sampler import replay_noise
from ..sampling.schedule import FlowSchedule
from .config import DataConfig, DMDConfig, RolloutConfig, TrainConfig
from .methods.distribution import DistributionMatching
from .models import Nets


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.double()).abs().max()) if a.numel() else 0.0


def raw_steps(warped: list[float], shift: float) -> list[int]:
    """Invert `FlowSchedule.warp`: the raw steps k whose grid timestep grid[1000 - k] is each warped value."""
    ts = FlowSchedule(shift).timesteps
    return [1000 - int(torch.argmin((ts - float(v)).abs())) for v in warped]


def fixture_config(fx: Fixture) -> TrainConfig:
    """The training settings the fixture's parts E/F were recorded with, as our config."""
    m = fx.meta
    shift = float(m["timestep_shift"])
    noise = fx.tensors["gstep/rollout_noise"]
    lo, hi = m["train_step_min_max_step"]
    rollout = RolloutConfig(num_frames=int(m["train_num_frames"]), latent_height=int(noise.shape[-2]),
                            latent_width=int(noise.shape[-1]), chunk_frames=int(m["train_num_frame_per_block"]),
                            denoising_steps=tuple(raw_steps(m["denoising_step_list"], shift)), warp=True,
                            shift=shift, context_noise=float(m["context_noise"]))
    dmd = DMDConfig(guidance=float(m["train_step_real_guidance_scale"]), score_shift=float(m["score_timestep_shift"]),
                    timestep_shift=shift, min_step=int(lo), max_step=int(hi), same_step_across_blocks=True,
                    kv_grad="straight_through")
    return TrainConfig(method="dmd", rollout=rollout, dmd=dmd, data=DataConfig(embeddings="<fixture>"))


def fixture_nets(fx: Fixture) -> Nets:
    gen, fake, real = fx.model("weights"), fx.model("fake_weights"), fx.model("real_weights")
    gen.requires_grad_(True)
    fake.requires_grad_(True)
    real.requires_grad_(False)
    gen.gradient_checkpointing = bool(fx.meta.get("train_gradient_checkpointing", True))
    return Nets(gen, critic=fake, teacher=real)


def _draws(fx: Fixture, part: str, batch: int) -> list[torch.Tensor]:
    out = []
    for d in fx.meta[part]["noise"]:
        z = fx.tensors[f"{part}/noise{d['i']:02d}/eps"]
        out.append(fx.draw(f"{part}/noise{d['i']:02d}/eps", z.shape[0] // batch))
    return out


def _denoising_calls(fx: Fixture, part: str) -> list[int]:
    """Indices of the recorded generator calls that are denoising steps (each chunk's last call is its
    context pass)."""
    calls = fx.meta[part]["gen"]
    keep = []
    for n, c in enumerate(calls):
        nxt = calls[n + 1] if n + 1 < len(calls) else None
        if nxt is not None and nxt["start_frame"] == c["start_frame"]:
            keep.append(n)
    return keep


def _rollout(fx: Fixture, part: str, method: DistributionMatching, nets: Nets):
    noise = fx.latent(f"{part}/rollout_noise")
    b = noise.shape[0]
    replay = replay_noise(_draws(fx, part, b))
    r = method.cfg.rollout
    n_chunks = len(r.causal().chunk_bounds(r.num_frames))
    exits = [int(fx.meta[part]["exit_flags"][0])] * n_chunks  # same_step_across_blocks
    seen: list[torch.Tensor] = []
    x = method.rollout(nets, fx.context(), noise=noise, noise_fn=replay, exit_steps=exits,
                       on_step=lambda info: seen.append(info.x0.detach()))
    worst = {"generated": _maxabs(x, fx.latent(f"{part}/generated")), "rollout_x0": 0.0}
    calls = _denoising_calls(fx, part)
    if len(calls) != len(seen):
        worst["call_count_mismatch"] = float(abs(len(calls) - len(seen)))
    for n, x0 in zip(calls, seen):
        worst["rollout_x0"] = max(worst["rollout_x0"], _maxabs(x0, fx.latent(f"{part}/gen{n:02d}/x0_pred")))
    t = method.timestep(fx.tensors[f"{part}/timestep_raw"][:, 0].long(), x.shape[2])
    eps = replay(tuple(x.shape))
    return x, t, eps, worst


def _grads(model: torch.nn.Module, fx: Fixture, prefix: str) -> dict[str, float]:
    num = den = 0.0
    worst = 0.0
    missing = 0
    for name, p in model.named_parameters():
        key = f"{prefix}/{name}"
        if key not in fx.tensors or p.grad is None:
            missing += 1
            continue
        ref = fx.tensors[key].double()
        d = p.grad.double() - ref
        worst = max(worst, float(d.abs().max()))
        num += float((d ** 2).sum())
        den += float((ref ** 2).sum())
    return {"grad_abs": worst, "grad_rel_l2": (num / den) ** 0.5 if den else float("inf"),
            "grad_mismatches": float(missing)}


def part_e(fx: Fixture) -> dict[str, float]:
    cfg, nets = fixture_config(fx), fixture_nets(fx)
    method = DistributionMatching(cfg)
    x, t, eps, out = _rollout(fx, "gstep", method, nets)
    out["dmd_timestep"] = _maxabs(t, fx.tensors["gstep/dmd_timestep"])
    loss, info = method.objective(x, eps, t, method.score_nets(nets, fx.context(), fx.context(negative=True), None))
    loss.backward()
    ref = float(fx.tensors["gstep/loss"])
    out.update({"dmd_noisy": _maxabs(info["noisy"], fx.latent("gstep/dmd_noisy")),
                "dmd_grad": _maxabs(info["dmd_grad"], fx.latent("gstep/dmd_grad")),
                "loss_rel": abs(float(loss.detach()) - ref) / abs(ref)})
    out.update(_grads(nets.generator, fx, "gstep/grad"))
    return out


def part_f(fx: Fixture) -> dict[str, float]:
    cfg, nets = fixture_config(fx), fixture_nets(fx)
    method = DistributionMatching(cfg)
    with torch.no_grad():
        x, t, eps, out = _rollout(fx, "cstep", method, nets)
    out["critic_timestep"] = _maxabs(t, fx.tensors["cstep/critic_timestep"])
    loss, info = method.critic_objective(x, eps, t, nets, fx.context(), None)
    loss.backward()
    ref = float(fx.tensors["cstep/loss"])
    out.update({"critic_x0": _maxabs(info["x0_fake"], fx.latent("cstep/fake00/x0_pred")),
                "loss_rel": abs(float(loss.detach()) - ref) / abs(ref)})
    out.update(_grads(nets.critic, fx, "cstep/grad"))
    return out


def training_parts(fx: Fixture) -> dict[str, dict[str, float]]:
    """Parts E (DMD generator step) and F (critic step), when the fixture has them."""
    parts = set(fx.meta.get("parts", []))
    out: dict[str, dict[str, float]] = {}
    if "E_generator_step" in parts:
        out["E_generator_step"] = part_e(fx)
    if "F_critic_step" in parts:
        out["F_critic_step"] = part_f(fx)
    return out
