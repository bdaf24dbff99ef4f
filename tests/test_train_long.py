"""Long-rollout training (long_rollout.factor K > 1, Self-Forcing++ / LongLive): memory per step bounded in K,
gradient only through the exit steps of the trained window, the window equal to the frames of one plain long
rollout, and the trainer step."""
import dataclasses

import pytest
import torch

from sf_core.config import ConfigError
from sf_core.train.config import DistConfig, LongRolloutConfig, TrainConfig
from sf_core.train.methods.base import Batch, StepEnv
from sf_core.train.methods.distribution import DistributionMatching
from sf_core.train.models import build_nets
from sf_core.train.rng import SampleDraws
from sf_core.train.rollout import window_start


@pytest.fixture(scope="module")
def info():
    from sf_core.train.distributed import init_distributed, shutdown

    i = init_distributed(DistConfig(mixed_precision=False))
    yield i
    shutdown()


def _cfg(tmp_path, frames=6, **long):
    cfg = TrainConfig.tiny(out_dir=str(tmp_path))
    return dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, num_frames=frames),
                               long_rollout=LongRolloutConfig(**long))


def _saved_bytes(fn, model) -> int:
    """Bytes of the distinct storages autograd saves for backward while fn() runs, the weights excepted: the
    activation memory a training step holds until its backward (what grows if a long rollout kept its history)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.sum().backward()
    return sum(seen.values())


def _generator_step_bytes(cfg, info) -> int:
    torch.manual_seed(0)
    nets = build_nets(cfg)
    method = DistributionMatching(cfg)
    batch = Batch([0], torch.randn(1, 4, 32), torch.zeros(1, 1, 32), ["p"])
    env = StepEnv(cfg, 0, info, torch.float32)
    return _saved_bytes(lambda: method.generator_loss(nets, batch, env)[0], nets.generator)


def test_memory_per_step_is_bounded_in_K(tmp_path, info):
    long = {k: _generator_step_bytes(_cfg(tmp_path, factor=k, window="last"), info) for k in (1, 2, 4)}
    # K = 2 and 4 train the same-sized window behind a full cache; K = 1's first chunk sees no cache yet
    assert long[4] == long[2] and long[2] < 1.5 * long[1], long
    # the measure does see growth: a plain rollout of 4x the frames keeps all of it for backward
    plain = {n: _generator_step_bytes(_cfg(tmp_path, frames=n), info) for n in (6, 24)}
    assert plain[24] > 3 * plain[6] and plain[24] > 2 * long[4], (plain, long)


@pytest.mark.filterwarnings("ignore:For backward hooks to be called", "ignore:Full backward hook is firing")
def test_gradient_flows_only_through_the_window_exit_steps(tmp_path):
    cfg = _cfg(tmp_path, factor=4)
    nets = build_nets(cfg)
    calls, backward = [], []
    nets.generator.register_forward_pre_hook(
        lambda m, a, kw: calls.append((kw.get("start_frame", 0), float(a[1].flatten()[0]), torch.is_grad_enabled(),
                                       kw.get("need_output", True))), with_kwargs=True)
    nets.generator.register_full_backward_hook(lambda m, gi, go: backward.append(1))
    method = DistributionMatching(cfg)
    start, exits = 9, [1, 3, 0, 2, 3, 1, 2, 0]  # 24 frames = 8 chunks; the window is chunks 3 and 4
    d = SampleDraws(0, 0, "t", [0])
    x = method.long_rollout(nets, torch.randn(1, 4, 32), noise=d.randn((16, start + 6, 4, 4)), noise_fn=d.noise_fn(),
                            exit_steps=exits, start=start)
    assert x.shape == (1, 16, 6, 4, 4)
    ts = method.timesteps.tolist()
    assert max(c[0] for c in calls) == 12  # nothing after the window is generated
    for chunk in range(5):
        mine = [c for c in calls if c[0] == 3 * chunk]
        e = exits[chunk]
        assert [c[1] for c in mine[:-1]] == pytest.approx(ts[:e + 1])
        in_window = 3 * chunk >= start
        assert [c[2] for c in mine[:-1]] == [False] * e + [in_window]  # only a window chunk's exit step
        assert mine[-1][2] is False and mine[-1][3] is False  # the context pass: no grad, no output
    x.sum().backward()
    # the backward ran through exactly the two grad-carrying calls (the window's exit steps) and reached every
    # weight; nothing before the window is in the graph
    assert len(backward) == 2
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in nets.generator.parameters())


def test_window_equals_the_frames_of_one_long_rollout(tmp_path):
    """The grad-carrying window (functional cache rows, re-roped on eviction) == the same frames of one no-grad
    rollout (in-place rows); relative and absolute positions agree up to rounding."""
    from sf_core.sampling.sampler import rollout
    from sf_core.train.rollout import long_cache, sampling_timesteps

    cfg = _cfg(tmp_path, factor=4)
    nets = build_nets(cfg)
    method = DistributionMatching(cfg)
    ctx = torch.randn(1, 4, 32)
    start, exits = 12, [3, 2, 1, 3, 0, 2, 3, 1]
    outs = {}
    for mode in ("relative", "absolute"):
        m = DistributionMatching(dataclasses.replace(cfg, long_rollout=LongRolloutConfig(factor=4, positions=mode)))
        d = SampleDraws(0, 0, "t", [0])
        outs[mode] = m.long_rollout(nets, ctx, noise=d.randn((16, 18, 4, 4)), noise_fn=d.noise_fn(),
                                    exit_steps=exits, start=start)
    d = SampleDraws(0, 0, "t", [0])
    noise = d.randn((16, 18, 4, 4))
    den = method.generator_denoiser(nets, ctx, None)
    with torch.no_grad():
        cache = long_cache(nets.generator, 1, cfg.rollout, cfg.long_rollout, grad_mode="straight_through",
                           dtype=torch.float32, device="cpu")
        ref = rollout(den, cache, batch=1, num_frames=18, latent_hw=(4, 4), timesteps=sampling_timesteps(cfg.rollout),
                      causal=cfg.rollout.causal(), noise_fn=d.noise_fn(), noise=noise, channels=16,
                      context_renoise=True, exit_steps=exits[:6])
    assert cache.length == 6 and cache.positions == list(range(12, 18))  # the rolling window really rolled
    assert torch.allclose(outs["relative"], ref[:, :, start:], atol=1e-5)
    assert torch.allclose(outs["absolute"], outs["relative"], atol=1e-4)
    assert not torch.allclose(outs["relative"], ref[:, :, :6], atol=1e-2)


def test_windows_and_config_errors(tmp_path):
    cfg = _cfg(tmp_path, factor=4)
    starts = {window_start(0, s, "generator", cfg.rollout, cfg.long_rollout) for s in range(60)}
    assert starts == {0, 3, 6, 9, 12, 15, 18}  # every chunk start with a whole window behind it
    last = _cfg(tmp_path, factor=4, window="last").long_rollout
    assert window_start(0, 5, "generator", cfg.rollout, last) == 18
    base = TrainConfig.tiny().to_dict()
    for change, msg in ((dict(method="teacher_forcing"), "applies to the self-rollout methods"),
                        (dict(rollout={**base["rollout"], "independent_first_frame": True, "num_frames": 7}),
                         "chunks of equal size"),
                        (dict(long_rollout={"factor": 2, "cache_frames": 4, "sink_frames": 2}),
                         "cannot hold a chunk of 3 frames plus 2 sink frames")):
        d = {**base, "long_rollout": {"factor": 2}, **change}
        with pytest.raises(ConfigError, match=msg):
            TrainConfig.from_dict(d)
    with pytest.raises(ConfigError, match="long_rollout.window='first'"):
        LongRolloutConfig(factor=2, window="first")


def test_trainer_steps_with_long_rollouts(tmp_path, info):
    from sf_core.train.trainer import Trainer
    from train_kit import write_embeddings

    write_embeddings(tmp_path / "emb")
    cfg = TrainConfig.tiny(out_dir=str(tmp_path / "run"), embeddings=str(tmp_path / "emb"))
    cfg = dataclasses.replace(cfg, long_rollout=LongRolloutConfig(factor=3, sink_frames=0))
    tr = Trainer(cfg, info)
    before = {n: p.detach().clone() for n, p in tr.nets.generator.named_parameters()}
    logs = tr.train_step()
    assert logs["window_start"] in (0.0, 3.0, 6.0, 9.0, 12.0) and logs["generator_loss"] > 0
    assert "critic_loss" in logs
    assert sum(not torch.equal(before[n], p) for n, p in tr.nets.generator.named_parameters()) > len(before) // 2
