"""Conditioning the toy teacher on its motion words: motion-free prompts in the data, motion guidance, and the
block-causal share of flow-matching training (`supervised.causal_mix`)."""
import dataclasses

import pytest
import torch

from sf_core.sampling.denoiser import Denoiser
from sf_core.sampling.schedule import FlowSchedule
from sf_core.toy import recipes
from sf_core.toy.data import ToyWorldDataset
from sf_core.toy.guidance import Guidance, guided_denoiser, object_prompt
from sf_core.toy.text import ToyTextEncoder
from sf_core.train.config import TrainConfig
from sf_core.train.distributed import DistInfo
from sf_core.train.methods.base import Batch, StepEnv
from sf_core.train.methods.supervised import DiffusionForcing, FlowMatching
from sf_core.train.models import Nets
from sf_core.train.rng import keyed_generator
from train_kit import micro_model

_model = micro_model


def test_object_prompt_keeps_only_the_objects_words():
    assert object_prompt("a red square moving left fast") == "red square"
    assert object_prompt("the ball goes upwards quickly, teal") == "cyan circle"
    assert object_prompt("moving left") == ""
    assert ToyWorldDataset(0).scene(3).object_prompt.split()[1:] == \
        object_prompt(ToyWorldDataset(0).scene(3).prompt).split()


def test_motion_dropout_reduces_prompts_to_the_object_independently_of_the_empty_prompt():
    a = ToyWorldDataset(5, prompt_dropout=0.1, motion_dropout=0.3)
    plain = ToyWorldDataset(5, prompt_dropout=0.1)
    n = 400
    kinds = []
    for i in range(n):
        s, full = a[i], plain[i]
        assert torch.equal(s.latents, full.latents)  # the video never changes, only its prompt
        if full.prompt == "":
            assert s.prompt == ""  # the empty-prompt draw is the same as without motion dropout
            kinds.append("empty")
        elif s.prompt == full.prompt:
            kinds.append("full")
        else:
            assert s.prompt == a.scene(i).object_prompt and object_prompt(full.prompt) in s.prompt
            assert s.embeds.shape[0] == 2  # colour and shape rows only
            kinds.append("object")
    share = kinds.count("object") / (n - kinds.count("empty"))
    assert 0.22 < share < 0.38, share
    assert [a.prompt(i) for i in range(50)] == [ToyWorldDataset(5, prompt_dropout=0.1, motion_dropout=0.3).prompt(i)
                                                for i in range(50)]
    with pytest.raises(ValueError, match=r"motion_dropout must be in \[0, 1\), got 1.5"):
        ToyWorldDataset(0, motion_dropout=1.5)


def test_guided_denoiser_is_cfg_plus_the_motion_term():
    m = _model()
    prompts = ["a red square moving left fast", "a blue circle moving up slow"]
    enc = ToyTextEncoder()
    sch = FlowSchedule(5.0)
    x = torch.randn(2, 12, 6, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.full((2, 6), 800.0)
    with torch.no_grad():
        stock = Denoiser(m, sch, enc.encode(prompts), negative=enc.encode(["", ""]), guidance=1.5)(x, t)
        assert torch.equal(guided_denoiser(m, sch, prompts, Guidance(cfg=1.5))(x, t), stock)
        c = Denoiser(m, sch, enc.encode(prompts))(x, t)
        u = Denoiser(m, sch, enc.encode(["", ""]))(x, t)
        o = Denoiser(m, sch, enc.encode(["red square", "blue circle"]))(x, t)
        got = guided_denoiser(m, sch, prompts, Guidance(cfg=1.5, motion=3.0))(x, t)
    assert (got - (c + 1.5 * (c - u) + 3.0 * (c - o))).abs().max() < 1e-5
    assert (o - c).abs().max() > 1e-3  # the motion words change the estimate, so the term is not zero
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            Guidance(motion=bad)


def _setup(ids: list[int], step: int, **supervised):
    """A tiny 6-frame config with `supervised` settings, a batch of toy-world samples `ids`, a step env."""
    cfg = TrainConfig.tiny(out_dir="unused")
    cfg = dataclasses.replace(cfg, supervised=dataclasses.replace(cfg.supervised, **supervised),
                              rollout=dataclasses.replace(cfg.rollout, num_frames=6, latent_height=8, latent_width=8,
                                                          chunk_frames=3))
    data = ToyWorldDataset(2, frames=6)
    samples = [data[i] for i in ids]
    ctx = torch.zeros(len(ids), 8, 32)
    for i, s in enumerate(samples):
        ctx[i, :s.embeds.shape[0]] = s.embeds
    batch = Batch(list(ids), ctx, torch.zeros(len(ids), 8, 32), [s.prompt for s in samples],
                  torch.stack([s.latents for s in samples]))
    return cfg, batch, StepEnv(cfg, step, DistInfo(0, 1, 0, 1, torch.device("cpu"), "gloo"), torch.float32)


def _step(mix: float, method=FlowMatching):
    cfg, batch, env = _setup(list(range(100, 108)), 7, causal_mix=mix)
    return method(cfg).generator_loss(Nets(_model(3)), batch, env)


def test_causal_mix_zero_is_flow_matching_and_one_is_diffusion_forcing():
    fm, _ = _step(0.0)
    df, _ = _step(0.0, DiffusionForcing)
    all_causal, logs = _step(1.0)
    all_causal, df, fm = (float(x.detach()) for x in (all_causal, df, fm))
    assert all_causal == pytest.approx(df, rel=1e-6) and "loss_full" not in logs
    assert abs(fm - df) > 1e-4  # the two methods differ, so the equality above says something


def test_causal_mix_is_the_batch_mean_over_both_groups():
    loss, logs = _step(0.5)
    seed = TrainConfig.tiny(out_dir="unused").seed
    n_causal = sum(1 for i in range(100, 108)  # the per-sample draw, made independently here
                   if torch.randint(0, 1 << 24, (), generator=keyed_generator(seed, 7, "causal-mix", i)) / (1 << 24)
                   < 0.5)
    assert 0 < n_causal < 8  # both groups present in this batch
    want = (logs["loss_causal"] * n_causal + logs["loss_full"] * (8 - n_causal)) / 8
    assert float(loss.detach()) == pytest.approx(want, rel=1e-5)
    assert loss.requires_grad  # a graph, not a float: the trainer backpropagates it


def test_causal_mix_is_checked():
    cfg = TrainConfig.tiny(out_dir="unused")
    with pytest.raises(ValueError, match=r"causal_mix must be in \[0, 1\], got 1.5"):
        dataclasses.replace(cfg.supervised, causal_mix=1.5)


def test_a_stage_refuses_to_resume_with_other_dataset_settings(tmp_path):
    recipes._check_data_record(tmp_path, {"motion_dropout": 0.15, "prompt_dropout": 0.1})
    recipes._check_data_record(tmp_path, {"motion_dropout": 0.15, "prompt_dropout": 0.1})  # same: fine
    with pytest.raises(ValueError, match=r"other dataset settings .*motion_dropout.*0.15, 0.0"):
        recipes._check_data_record(tmp_path, {"motion_dropout": 0.0, "prompt_dropout": 0.1})


def test_image_mix_gives_a_clean_first_frame_and_leaves_it_out_of_the_loss():
    """Independent computation of the image-to-video samples' loss: frame 0 exactly clean at timestep 0, the
    other frames noised at the sample's level, the flow error averaged over frames 1.. only."""
    cfg, batch, env = _setup(list(range(4)), 3, image_mix=1.0, loss_weighting=False)
    x0, ctx = batch.latents, batch.context
    model = _model(4)
    loss, logs = FlowMatching(cfg).generator_loss(Nets(model), batch, env)
    assert set(logs) == {"generator_loss", "loss_image"}

    sch = FlowSchedule(cfg.supervised.shift)
    idx = torch.stack([torch.randint(0, 1000, (2,), generator=keyed_generator(cfg.seed, 3, "timestep", i))
                       for i in range(4)])
    eps = torch.stack([torch.randn(x0.shape[1:], generator=keyed_generator(cfg.seed, 3, "noise", i))
                       for i in range(4)])
    level = sch.timesteps[idx[:, 0]]  # one level per sample: its first chunk's draw
    t = level[:, None].repeat(1, 6)
    t[:, 0] = 0
    sigma = sch.sigma(t)[:, None, :, None, None]
    xt = (1 - sigma) * x0 + sigma * eps
    xt[:, :, 0] = x0[:, :, 0]
    with torch.no_grad():
        flow = model(xt, t, ctx)
    want = ((flow - (eps - x0))[:, :, 1:] ** 2).mean()
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)


def test_world_with_a_clock_ticks_on_the_wall_and_leaves_the_metrics_alone():
    from sf_core.toy.metrics import score_video
    from sf_core.toy.world import WorldError, WorldSpec, render, sample_scene

    plain, clocked = WorldSpec(), WorldSpec(clock=True)
    for seed in range(5):
        a = sample_scene(torch.Generator().manual_seed(seed), plain)
        b = sample_scene(torch.Generator().manual_seed(seed), clocked)
        assert dataclasses.replace(b, clock=0) == a  # the ticker's phase is drawn last: same scenes otherwise
        assert 0 <= b.clock < clocked.clock_period == 14
        va, vb = render(a, 20, plain), render(b, 20, clocked)
        changed = (va != vb).any(dim=0)  # [T, H, W]
        assert changed.sum(dim=(1, 2)).tolist() == [1] * 20  # one pixel per frame...
        for t in range(20):
            (y, x), = changed[t].nonzero().tolist()
            assert y == 0 and x == 1 + (b.clock + t) % 14  # ...on the top wall, one step right per frame
            assert vb[:, t, y, x].tolist() == [1.0, 1.0, 1.0]
        sa, sb = score_video(va, a.prompt, plain), score_video(vb, b.prompt, clocked)
        for k in sa:
            assert torch.allclose(sa[k], sb[k], equal_nan=True), k  # flicker too: the walls are left out
    with pytest.raises(WorldError, match="needs a wall"):
        WorldSpec(clock=True, wall=0, height=12, width=12)


def test_clock_is_recorded_with_the_stage(tmp_path):
    recipes._check_data_record(tmp_path, {"motion_dropout": 0.0, "prompt_dropout": 0.1, "clock": True})
    with pytest.raises(ValueError, match="clock"):
        recipes._check_data_record(tmp_path, {"motion_dropout": 0.0, "prompt_dropout": 0.1, "clock": False})
    clocked = recipes.Recipe(clock=True)
    assert recipes.dataset("teacher", 0, clocked).spec.clock and not recipes.dataset("teacher", 0).spec.clock


def test_a_root_records_its_recipe_and_its_stages_follow_it(tmp_path):
    new = recipes.root_recipe(tmp_path / "a", {"clock": True, "motion_guidance": None})
    assert new == recipes.Recipe(clock=True) and new.world.clock
    assert recipes.root_recipe(tmp_path / "a") == new  # read back by every later stage
    with pytest.raises(ValueError, match=r"another recipe: \{'clock': \(True, False\)\}"):
        recipes.root_recipe(tmp_path / "a", {"clock": False})
    legacy = tmp_path / "b" / "seed0"
    legacy.mkdir(parents=True)
    (legacy / "teacher.safetensors").write_bytes(b"")
    assert recipes.root_recipe(tmp_path / "b") == recipes.LEGACY  # a root trained before records
    cfg = recipes.base_config("sf", 0, tmp_path / "a", recipe=new)
    assert cfg.dmd.partial_guidance == new.motion_guidance == cfg.supervised.ode_partial_guidance
    teacher = recipes.base_config("teacher", 0, tmp_path / "a", recipe=new)
    assert (teacher.max_steps, teacher.supervised.image_mix) == (new.teacher_steps, new.image_mix)
    assert recipes.base_config("tf", 0, tmp_path / "a", recipe=new).supervised.image_mix == 0.0
    assert recipes.dataset("teacher", 0, new).motion_dropout == new.motion_dropout
    assert recipes.dataset("sf", 0, new).motion_dropout == 0.0
