"""Unit tests of the trainer's parts: timesteps, EMA, keyed randomness, sampler, data, LoRA, config, plot."""
import json
import math

import pytest
import torch

from sf_core.config import ConfigError, WanConfig
from sf_core.model.transformer import WanTransformer, randomize_weights
from sf_core.train import data as D
from sf_core.train.config import TrainConfig, apply_overrides, parse_set_args
from sf_core.train.ema import EMA, maybe_start
from sf_core.train.launcher import LaunchSpec
from sf_core.train.lora import LoRALinear, apply_lora, lora_scales, merge_state_dict
from sf_core.train.losses import dmd_timestep
from sf_core.train.rng import SampleDraws
from sf_core.train.rollout import draw_exit_steps


def test_dmd_timestep_formula_and_clamp():
    raw = torch.tensor([0, 88, 500, 999])
    t = dmd_timestep(raw, frames=3, shift=5.0, min_step=20, max_step=980)
    assert t.shape == (4, 3) and t.dtype == torch.float32
    for r, row in zip(raw.tolist(), t):
        u = r / 1000
        want = min(max(1000 * 5 * u / (1 + 4 * u), 20), 980)
        assert torch.allclose(row, torch.full((3,), want, dtype=torch.float32), atol=1e-3)
    assert float(t[1, 0]) == pytest.approx(325.44378662109375, abs=1e-4)  # the fixture's recorded value


def test_ema_math():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    values = [torch.randn(2, 3) for _ in range(4)]
    ema = None
    for step, v in enumerate(values, start=1):
        with torch.no_grad():
            m.weight.copy_(v)
        if ema is not None:
            ema.update(m)
        ema = maybe_start(ema, m, step, decay=0.9, start_step=2)
    # created after step 2 from values[1], then updated with values[2] and values[3]
    want = 0.9 * (0.9 * values[1] + 0.1 * values[2]) + 0.1 * values[3]
    assert torch.allclose(ema.shadow["weight"], want, atol=1e-6)
    assert ema.shadow["weight"].dtype == torch.float32
    assert maybe_start(None, m, 5, decay=0.0, start_step=0) is None  # decay 0 disables it
    e2 = EMA.create(m, 0.5)
    e2.load_state_dict({k: torch.zeros_like(v) for k, v in ema.shadow.items()})
    assert float(e2.shadow["weight"].abs().sum()) == 0


def test_keyed_draws_do_not_depend_on_the_batch_split():
    together = SampleDraws(7, 3, "noise", [10, 11]).randn((2, 4))
    alone = torch.cat([SampleDraws(7, 3, "noise", [i]).randn((2, 4)) for i in (10, 11)])
    assert torch.equal(together, alone)
    assert not torch.equal(SampleDraws(7, 4, "noise", [10]).randn((2, 4)), together[:1])  # step matters
    fn = SampleDraws(7, 3, "noise", [10, 11]).noise_fn()
    assert fn((2, 2, 4)).shape == (2, 2, 4)
    with pytest.raises(ValueError):
        fn((3, 2, 4))


def test_global_batch_sampler():
    s = D.GlobalBatchSampler(10, 4, seed=1)
    assert s.per_epoch == 2
    b0, b1, b2 = s.global_batch(0), s.global_batch(1), s.global_batch(2)
    assert len(set(b0 + b1)) == 8  # distinct inside an epoch (drop_last)
    assert s.global_batch(0) == b0 and D.GlobalBatchSampler(10, 4, seed=1).global_batch(2) == b2
    two = s.local_batch(5, 0, 2)[0] + s.local_batch(5, 1, 2)[0]
    assert two == s.local_batch(5, 0, 1)[0] == s.global_batch(5)
    assert s.local_batch(5, 1, 2)[1] == [22, 23]  # global sample ids key the randomness
    with pytest.raises(D.DataError, match="cannot fill one global batch"):
        D.GlobalBatchSampler(1, 2, seed=0)


def test_exit_steps():
    a = draw_exit_steps(0, 5, "generator", 7, 4)
    assert len(set(a)) == 1 and 0 <= a[0] < 4
    b = draw_exit_steps(0, 5, "generator", 7, 4, same_step_across_blocks=False)
    assert b[0] == a[0] and all(0 <= x < 4 for x in b)
    assert draw_exit_steps(0, 5, "generator", 3, 4, last_step_only=True) == [3, 3, 3]
    seen = {draw_exit_steps(0, s, "generator", 1, 4)[0] for s in range(40)}
    assert seen == {0, 1, 2, 3}


def test_read_prompts(tmp_path):
    t = tmp_path / "p.txt"
    t.write_text("# header\n first prompt \n\nsecond\n")
    assert D.read_prompts(t) == ["first prompt", "second"]
    j = tmp_path / "p.jsonl"
    j.write_text('{"prompt": "a"}\n"b"\n{"caption": "c"}\n\n')
    assert D.read_prompts(j) == ["a", "b", "c"]
    with pytest.raises(D.DataError, match="does not exist"):
        D.read_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    with pytest.raises(D.DataError, match="contains no prompts"):
        D.read_prompts(tmp_path / "empty.txt")
    (tmp_path / "bad.jsonl").write_text('{"prompt": 3}\n')
    with pytest.raises(D.DataError, match="bad.jsonl:1"):
        D.read_prompts(tmp_path / "bad.jsonl")


def test_shards_round_trip_and_trimming_is_lossless(tmp_path):
    g = torch.Generator().manual_seed(0)
    embeds = []
    for n in (3, 5, 1):
        e = torch.zeros(8, 6)
        e[:n] = torch.randn(n, 6, generator=g)
        embeds.append(e)
    neg = torch.zeros(8, 6)
    D.write_shards(tmp_path / "emb", embeds, ["a", "b", "c"], neg, shard_size=2, negative_prompt="")
    ds = D.ShardDataset(tmp_path / "emb")
    assert len(ds) == 3 and ds.text_dim == 6 and len(ds.index["shards"]) == 2
    for i, e in enumerate(embeds):
        s = ds[i]
        assert s.prompt == "abc"[i]
        n = s.embeds.shape[0]
        assert n < 8 and torch.equal(s.embeds, e[:n]) and not e[n:].any()
    # the model zero-pads to text_len itself, so trimmed and padded embeddings give the same output
    cfg = WanConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, text_dim=6, text_len=8)
    m = randomize_weights(WanTransformer(cfg), 0)
    x = torch.randn(1, 16, 1, 4, 4, generator=g)
    with torch.no_grad():
        a = m(x, torch.tensor([500.0]), embeds[1][None])
        b = m(x, torch.tensor([500.0]), ds[1].embeds[None])
    assert torch.equal(a, b)
    assert D.pad_stack([ds[0].embeds, ds[1].embeds]).shape == (2, 5, 6)
    with pytest.raises(D.DataError, match="no index.json"):
        D.ShardDataset(tmp_path)


def test_lora_starts_at_the_base_and_merges_exactly():
    cfg = WanConfig.tiny()
    base = randomize_weights(WanTransformer(cfg), 0)
    lora = randomize_weights(WanTransformer(cfg), 0)
    names = apply_lora(lora, rank=4, targets=("blocks.*.self_attn.*", "blocks.*.ffn.*"), alpha=8.0)
    assert names and all(".self_attn." in n or ".ffn." in n for n in names)
    assert all(not p.requires_grad for n, p in lora.named_parameters() if "lora_" not in n)
    x = torch.randn(1, 16, 3, 4, 4)
    ctx = torch.randn(1, 5, cfg.text_dim)
    t = torch.tensor([700.0])
    with torch.no_grad():
        assert torch.allclose(base(x, t, ctx), lora(x, t, ctx), atol=1e-6)  # up = 0 at init
        for m in lora.modules():
            if isinstance(m, LoRALinear):
                m.lora_up.normal_(0, 0.1)
        y_lora = lora(x, t, ctx)
        merged = WanTransformer(cfg)
        merged.load_state_dict(merge_state_dict({**lora.state_dict(), **lora_scales(lora)}))
        assert torch.allclose(merged(x, t, ctx), y_lora, atol=1e-5)
        assert not torch.allclose(base(x, t, ctx), y_lora, atol=1e-3)
    with pytest.raises(ValueError, match="match no Linear"):
        apply_lora(WanTransformer(cfg), rank=2, targets=("nothing.*",))


def test_config_files_overrides_and_errors(tmp_path):
    cfg = TrainConfig.tiny(out_dir=str(tmp_path / "r"))
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    (tmp_path / "c.toml").write_text('method = "sid"\nmax_steps = 3\n[data]\nembeddings = "e"\n[optim]\nlr = 1e-5\n')
    c = TrainConfig.load(tmp_path / "c.toml", {"optim.betas": "[0.9, 0.99]"})
    assert (c.method, c.max_steps, c.optim.lr, c.optim.betas) == ("sid", 3, 1e-5, (0.9, 0.99))
    assert apply_overrides(cfg, parse_set_args(["rollout.num_frames=9"])).rollout.num_frames == 9
    with pytest.raises(ConfigError, match="unknown config keys"):
        TrainConfig.from_dict({"optim": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="nearest valid lengths"):
        apply_overrides(cfg, {"rollout.num_frames": 7})
    from sf_core.train.trainer import open_dataset

    with pytest.raises(ConfigError, match="data.latents"):
        open_dataset(apply_overrides(cfg, {"method": "teacher_forcing"}))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_args(["optim.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.load(tmp_path / "none.json")


def test_plot_png(tmp_path):
    from PIL import Image

    from sf_core.train.plot import plot_metrics

    rows = [{"step": s, "generator_loss": math.exp(-s / 10), "critic_loss": 1 + 0.1 * math.sin(s)} for s in range(1, 50)]
    p = plot_metrics(rows, ["generator_loss", "critic_loss", "absent"], tmp_path / "loss.png", title="t")
    img = Image.open(p)
    assert img.size[0] == 800 and img.size[1] > 400
    assert len(img.getcolors(maxcolors=1 << 20)) > 3  # something was drawn
    assert plot_metrics([], ["generator_loss"], tmp_path / "none.png") is None


def test_torchrun_command():
    spec = LaunchSpec("c.json", "out", nproc_per_node=8, nnodes=2, node_rank=1, master_addr="10.0.0.1",
                      master_port=29511, overrides={"optim.lr": "1e-6"}, python="py")
    cmd = spec.command()
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"]
    assert ["--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1", "--master_port", "29511"] == cmd[5:13]
    assert cmd[-2:] == ["--set", "optim.lr=1e-6"]
    assert "--standalone" in LaunchSpec("c.json", "out").command()
