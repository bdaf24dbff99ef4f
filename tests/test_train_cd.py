"""Causal consistency distillation (method cd): the loss and its gradient against a hand-computed reference
(masked whole-sequence forwards, the grid from its formula, CFG / Euler / pseudo-Huber written out), the grid,
and cd through the trainer with LoRA and the reward term (T2V-Turbo's recipe)."""
import copy
import dataclasses

import pytest
import torch

from sf_core.model.attention import BlockCausalMask
from sf_core.model.forward import wan_forward
from sf_core.sampling.schedule import FlowSchedule
from sf_core.train.config import DistConfig, TrainConfig
from sf_core.train.ema import EMA
from sf_core.train.methods.base import Batch, StepEnv
from sf_core.train.methods.consistency import CausalConsistency, cd_grid
from sf_core.train.models import build_nets
from sf_core.train.rng import SampleDraws
from train_kit import write_embeddings, write_latents


@pytest.fixture(scope="module")
def info():
    from sf_core.train.distributed import init_distributed, shutdown

    i = init_distributed(DistConfig(mixed_precision=False))
    yield i
    shutdown()


def _cd_config(tmp_path, **over):
    d = TrainConfig.tiny(out_dir=str(tmp_path / "run"), embeddings=str(tmp_path / "emb")).to_dict()
    d.update(method="cd", data={**d["data"], "latents": str(tmp_path / "lat")})
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(d.get(k), dict) else v
    return TrainConfig.from_dict(d)


def test_cd_grid_is_on_the_generators_grid():
    s = FlowSchedule(5.0)
    t, sig = cd_grid(48, s)
    assert t.shape == sig.shape == (49,) and t[-1] == 0 and sig[-1] == 0 and t[0] == 1000 and sig[0] == 1
    assert torch.equal(s.sigma(t[:-1]), sig[:-1])  # exact grid points: no nearest-point rounding
    assert all(float(x) in t.tolist() for x in s.warp([1000, 750, 500, 250]))  # the 4 sampling steps are on it
    assert bool((sig[1:] < sig[:-1]).all())


def test_cd_loss_and_gradient_equal_a_hand_computed_reference(tmp_path, info):
    steps, skip, g, c = 8, 2, 2.5, 0.01
    cfg = _cd_config(tmp_path, consistency={"steps": steps, "skip": skip, "guidance": g, "loss": "huber",
                                            "huber_c": c})
    nets = build_nets(cfg)  # random generator and (different) random teacher
    gen = nets.generator
    ema = EMA.create(gen, 0.9)
    gt = torch.Generator().manual_seed(1)
    for v in ema.shadow.values():
        v.add_(0.02 * torch.randn(v.shape, generator=gt))  # target weights != the generator's
    bsz, f = 2, 6
    clean = torch.randn(bsz, 16, f, 4, 4, generator=gt)
    batch = Batch([3, 8], torch.randn(bsz, 4, 32, generator=gt), torch.randn(bsz, 2, 32, generator=gt),
                  ["a", "b"], latents=clean)
    env = StepEnv(cfg, 7, info, torch.float32, ema)
    before = {n: p.detach().clone() for n, p in gen.named_parameters()}
    loss, logs = CausalConsistency(cfg).generator_loss(nets, batch, env)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in gen.named_parameters()}
    assert all(torch.equal(before[n], p) for n, p in gen.named_parameters())  # weights restored after the target

    # ---- the reference, written out ----
    bounds = [(0, 3), (3, 6)]
    n = SampleDraws(cfg.seed, 7, "cd/point", batch.ids).randint(0, steps - skip + 1, (2,))
    eps = SampleDraws(cfg.seed, 7, "cd/noise", batch.ids).randn((16, f, 4, 4))

    def sigma(k):  # point k of the grid: raw sigma 1 - round(1000 k / N) / 1000, shifted by 5; the last is 0
        u = 1 - torch.round(1000 * k.double() / steps) / 1000
        return torch.where(k == steps, torch.zeros_like(u), 5 * u / (1 + 4 * u)).float()

    sig = sigma(n).repeat_interleave(3, dim=1)  # [B, F]
    sig2 = sigma(n + skip).repeat_interleave(3, dim=1)
    col = lambda s: s[:, None, :, None, None]  # noqa: E731
    x = (1 - col(sig)) * clean + col(sig) * eps
    target_net = copy.deepcopy(gen).requires_grad_(False)
    with torch.no_grad():
        for name, p in target_net.named_parameters():
            p.copy_(ema.shadow[name])
    gen.zero_grad()

    def tf_velocity(model, xx, sg, ctx):
        """Per chunk, one masked forward over [clean earlier chunks | this noisy chunk] (t = 0 for the clean)."""
        out = []
        for ci, (s, e) in enumerate(bounds):
            seq = torch.cat([clean[:, :, :s], xx[:, :, s:e]], dim=2)
            tt = torch.cat([torch.zeros(bsz, s), sg[:, s:e] * 1000], dim=1)
            out.append(wan_forward(model, seq, tt, ctx, mask=BlockCausalMask(tuple(bounds[:ci + 1]), 4))[:, :, s:e])
        return torch.cat(out, dim=2)

    with torch.no_grad():
        v_c = tf_velocity(nets.teacher, x, sig, batch.context)
        v_u = tf_velocity(nets.teacher, x, sig, batch.negative)
        x2 = x + col(sig2 - sig) * (v_u + g * (v_c - v_u))
        target = x2 - col(sig2) * tf_velocity(target_net, x2, sig2, batch.context)
    pred = x - col(sig) * tf_velocity(gen, x, sig, batch.context)
    ref = (torch.sqrt((pred - target) ** 2 + c * c) - c).mean()
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=2e-5, abs=1e-7)
    worst = max(float((grads[k] - p.grad).abs().max() / (p.grad.abs().max() + 1e-12))
                for k, p in gen.named_parameters())
    assert worst < 2e-4, worst
    assert logs["generator_loss"] == pytest.approx(loss.item())


def test_cd_with_lora_and_reward_through_the_trainer(tmp_path, info):
    """T2V-Turbo's recipe on a causal model: consistency distillation + image reward, adapters only."""
    from sf_core.train.trainer import Trainer

    write_embeddings(tmp_path / "emb")
    write_latents(tmp_path / "lat")
    cfg = _cd_config(tmp_path, consistency={"steps": 8, "guidance": 1.0, "loss": "huber"},
                     lora={"rank": 4, "targets": ["blocks.*"]}, ema={"decay": 0.5, "start_step": 1},
                     reward={"image": "train_kit:brightness_reward", "decoder": "train_kit:tiny_decoder",
                             "beta_img": 0.5, "window_latents": 2})
    tr = Trainer(cfg, info)
    assert tr.method.reward is not None and tr.opt_c is None
    base = {n: p.detach().clone() for n, p in tr.nets.generator.named_parameters() if not p.requires_grad}
    logs = [tr.train_step() for _ in range(3)]  # the EMA target exists from the second step on
    assert all({"generator_loss", "reward_image", "generator_grad_norm"} <= set(m) for m in logs)
    assert all(torch.isfinite(torch.tensor(m["generator_loss"])) for m in logs)
    assert tr.ema is not None and all(k.endswith(("lora_up", "lora_down")) for k in tr.ema.shadow)
    assert all(torch.equal(base[n], p) for n, p in tr.nets.generator.named_parameters() if n in base)
    ups = [p for n, p in tr.nets.generator.named_parameters() if n.endswith("lora_up")]
    assert any(p.abs().sum() > 0 for p in ups)  # the adapters moved off their zero init


def test_cd_config_errors():
    from sf_core.config import ConfigError
    from sf_core.train.config import ConsistencyConfig

    for kw, msg in (({"steps": 1}, "steps must be in 2..1000"), ({"skip": 8, "steps": 8}, "skip must be in 1..7"),
                    ({"guidance_max": 1.0}, "must be >= guidance"), ({"loss": "l1"}, "use l2 or huber"),
                    ({"target": "teacher"}, "use ema or online")):
        with pytest.raises(ConfigError, match=msg):
            ConsistencyConfig(**kw)
    with pytest.raises(ConfigError, match="set data.latents"):
        from sf_core.train.trainer import open_dataset

        open_dataset(dataclasses.replace(TrainConfig.tiny(), method="cd"))
