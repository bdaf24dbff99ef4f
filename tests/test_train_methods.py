"""Every training method on tiny models: the Self Forcing rollout's gradient structure, teacher forcing ==
the masked whole-sequence forward, the ODE integrator against its closed form, and a few real steps of each
method through the trainer (in-process, world of one)."""
import dataclasses
from pathlib import Path

import pytest
import torch

from sf_core.model.attention import BlockCausalMask
from sf_core.config import WanConfig
from sf_core.sampling.denoiser import Denoiser
from sf_core.model.forward import wan_forward
from sf_core.model.transformer import WanTransformer, randomize_weights
from sf_core.sampling.schedule import FlowSchedule
from sf_core.train.config import DistConfig, TrainConfig
from sf_core.train.data import ShardDataset
from sf_core.train.methods.distribution import DistributionMatching
from sf_core.train.methods.ode import euler_sigmas, generate_ode_pairs, ode_trajectory
from sf_core.train.methods.supervised import teacher_forcing_flow
from sf_core.train.models import build_nets
from sf_core.train.rng import SampleDraws
from sf_core.train.rollout import ModuleDenoiser
from sf_core.train.trainer import Trainer
from train_kit import write_embeddings, write_latents


@pytest.fixture(scope="module")
def info():
    from sf_core.train.distributed import init_distributed, shutdown

    i = init_distributed(DistConfig(mixed_precision=False))
    yield i
    shutdown()


def test_only_the_exit_step_of_each_chunk_carries_gradient(tmp_path):
    cfg = TrainConfig.tiny(out_dir=str(tmp_path))
    cfg = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, num_frames=9))
    nets = build_nets(cfg)
    calls = []

    def hook(module, args, kwargs):
        calls.append((kwargs.get("start_frame", 0), float(args[1].flatten()[0]), torch.is_grad_enabled(),
                      kwargs.get("need_output", True)))

    nets.generator.register_forward_pre_hook(hook, with_kwargs=True)
    method = DistributionMatching(cfg)
    exits = [2, 0, 3]
    d = SampleDraws(0, 0, "t", [0])
    ctx = torch.randn(1, 4, 32)
    x = method.rollout(nets, ctx, noise=d.randn((16, 9, 4, 4)), noise_fn=d.noise_fn(), exit_steps=exits)
    ts = method.timesteps.tolist()
    for chunk, exit_step in enumerate(exits):
        mine = [c for c in calls if c[0] == 3 * chunk]
        # exit_step + 1 denoising calls, only the last with grad, then the no-grad context pass (t ~ 0)
        assert [c[1] for c in mine[:-1]] == pytest.approx(ts[:exit_step + 1])
        assert [c[2] for c in mine[:-1]] == [False] * exit_step + [True]
        assert mine[-1][2] is False and mine[-1][3] is False and mine[-1][1] == 0.0
    x.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in nets.generator.parameters())


def test_teacher_forcing_equals_the_masked_sequence_forward():
    cfg = WanConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=8, text_len=6)
    model = randomize_weights(WanTransformer(cfg), 3)
    g = torch.Generator().manual_seed(0)
    clean, noisy = torch.randn(2, 1, 16, 6, 4, 4, generator=g)
    t = torch.tensor([[900.0] * 2 + [400.0] * 2 + [100.0] * 2])
    t_ctx = torch.zeros(1, 6)
    ctx = torch.randn(1, 3, 8, generator=g)
    bounds = [(0, 2), (2, 4), (4, 6)]
    den = ModuleDenoiser(model, FlowSchedule(5.0), ctx)
    with torch.no_grad():
        tf = teacher_forcing_flow(den, noisy, t, clean, t_ctx, bounds)
        for b, (s, e) in enumerate(bounds):
            seq = torch.cat([clean[:, :, :s], noisy[:, :, s:e]], dim=2)
            tt = torch.cat([t_ctx[:, :s], t[:, s:e]], dim=1)
            ref = wan_forward(model, seq, tt, ctx, mask=BlockCausalMask(tuple(bounds[:b + 1]), 4))[:, :, s:e]
            assert torch.allclose(tf[:, :, s:e], ref, atol=2e-5)


def test_ode_trajectory_matches_the_closed_form():
    """A denoiser that always predicts c: Euler on the flow ODE keeps x = (1 - sigma) c + sigma eps exactly."""
    c = torch.randn(1, 16, 3, 4, 4)
    eps = torch.randn(1, 16, 3, 4, 4)

    class Constant(Denoiser):
        def __call__(self, x, t, **kw):
            return c.expand_as(x)

    traj = ode_trajectory(Constant(None, FlowSchedule(8.0), None), eps, steps=8, shift=8.0, keep=(0, 2, 4, 8))
    sig = euler_sigmas(8, 8.0)
    for j, k in enumerate((0, 2, 4, 8)):
        assert torch.allclose(traj[:, j], (1 - sig[k]) * c + sig[k] * eps, atol=1e-5)


def _tiny(tmp_path, method, **kw):
    base = TrainConfig.tiny(out_dir=str(tmp_path / "run"), embeddings=str(tmp_path / "emb"))
    d = base.to_dict()
    d["method"] = method
    for k, v in kw.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) else v
    return TrainConfig.from_dict(d)


@pytest.mark.parametrize("method", ["sid", "teacher_forcing", "diffusion_forcing", "flow_matching", "ode"])
def test_method_trains(method, tmp_path, info):
    write_embeddings(tmp_path / "emb")
    extra = {}
    if method in ("teacher_forcing", "diffusion_forcing", "flow_matching"):
        write_latents(tmp_path / "lat")
        extra["data"] = {"latents": str(tmp_path / "lat")}
    if method == "teacher_forcing":
        extra["supervised"] = {"noise_augmentation_max_timestep": 50}
    if method == "ode":
        cfg0 = _tiny(tmp_path, "dmd", supervised={"ode_steps": 8, "ode_keep": [0, 2, 4, 6, 8]})
        teacher = build_nets(cfg0).teacher
        generate_ode_pairs(cfg0, teacher, ShardDataset(tmp_path / "emb"), tmp_path / "ode", info)
        ds = ShardDataset(tmp_path / "ode")
        assert ds.kind == "ode" and len(ds) == 4 and ds[0].trajectory.shape == (5, 16, 6, 4, 4)
        extra.update(data={"latents": str(tmp_path / "ode")},
                     supervised={"ode_steps": 8, "ode_keep": [0, 2, 4, 6, 8]})
    cfg = _tiny(tmp_path, method, **extra)
    tr = Trainer(cfg, info)
    before = {n: p.detach().clone() for n, p in tr.nets.generator.named_parameters()}
    logs = [tr.train_step() for _ in range(2)]  # tiny preset: generator + critic, then critic only
    assert all(torch.isfinite(torch.tensor(m["generator_loss"])) for m in logs if "generator_loss" in m)
    assert any("generator_loss" in m for m in logs)
    changed = sum(not torch.equal(before[n], p) for n, p in tr.nets.generator.named_parameters())
    assert changed > len(before) // 2
    if method == "sid":
        assert any("critic_loss" in m for m in logs)


def test_lora_only_training_exports_merged_weights(tmp_path, info):
    from sf_core.checkpoints.weights import load_checkpoint
    from sf_core.model.transformer import WanTransformer, randomize_weights

    write_embeddings(tmp_path / "emb")
    cfg = _tiny(tmp_path, "dmd", lora={"rank": 4, "alpha": 8.0, "targets": ["blocks.*.self_attn.*"]},
                ema={"decay": 0.5, "start_step": 1}, optim={"lr": 1e-2, "lr_critic": 1e-4}, dmd={"update_ratio": 1})
    tr = Trainer(cfg, info)
    names = [n for n, p in tr.nets.generator.named_parameters() if p.requires_grad]
    assert names and all(n.endswith(("lora_up", "lora_down")) and ".self_attn." in n for n in names)
    for _ in range(2):
        tr.train_step()  # generator updates at steps 0 and 1; the EMA starts after step 0 (step counter 1)
    assert tr.ema is not None and set(tr.ema.shadow) == set(names)
    out = tr.export(tmp_path / "lora.safetensors")
    sd = load_checkpoint(out).state_dict
    base = randomize_weights(WanTransformer(cfg.models.wan_config()), cfg.models.init_seed).state_dict()
    assert set(sd) == set(base)
    for k, w in base.items():
        if ".self_attn." in k and k.endswith(".weight") and "norm" not in k:
            prefix = k[:-len(".weight")]
            up, down = tr.ema.shadow[f"{prefix}.lora_up"], tr.ema.shadow[f"{prefix}.lora_down"]
            assert (up @ down).abs().max() > 0
            assert torch.allclose(sd[k], w + 2.0 * (up @ down), atol=1e-6), k
        else:
            assert torch.equal(sd[k], w), k  # frozen base weights are exported untouched


def test_in_process_training_on_memory_data(tmp_path, info):
    """What the toy-world experiments use: run_training on in-memory latents, own networks."""
    from sf_core.toy.text import ToyTextEncoder
    from sf_core.train.data import MemoryDataset
    from sf_core.train.trainer import run_training

    enc = ToyTextEncoder(text_dim=32)
    g = torch.Generator().manual_seed(0)
    lat = [torch.randn(16, 6, 4, 4, generator=g) for _ in range(2)]
    ds = MemoryDataset(list(enc.encode(["a red circle", "a blue square"])), ["a red circle", "a blue square"],
                       enc.encode([""])[0], latents=lat)
    cfg = _tiny(tmp_path, "diffusion_forcing", max_steps=3, data={"latents": "<memory>"}, optim={"lr": 1e-3})
    status, tr = run_training(cfg, dataset=ds)
    assert status["state"] == "finished" and status["step"] == 3 and Path(status["export"]).is_file()
