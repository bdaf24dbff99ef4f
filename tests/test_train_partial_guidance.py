"""Partial-prompt guidance in the trainer (the toy's motion guidance inside DMD and the ODE pairs): the real
score and the ODE teacher add w (x0_c - x0_partial) against each sample's partial prompt, checked against the
sum of separately computed x0 estimates; runs without partial prompts are refused before any work."""
import dataclasses

import pytest
import torch

from sf_core.config import ConfigError
from sf_core.sampling.denoiser import Denoiser
from sf_core.sampling.schedule import FlowSchedule
from sf_core.toy.data import ToyWorldDataset
from sf_core.toy.guidance import object_prompt
from sf_core.toy.text import ToyTextEncoder
from sf_core.train.config import TrainConfig
from sf_core.train.data import MemoryDataset, ShardDataset, pad_stack, trim_embedding
from sf_core.train.distributed import DistInfo
from sf_core.train.methods.distribution import DistributionMatching
from sf_core.train.methods.ode import generate_ode_pairs, ode_trajectory
from sf_core.train.models import Nets
from sf_core.train.rng import keyed_generator
from train_kit import micro_model

_model = micro_model
INFO = DistInfo(0, 1, 0, 1, torch.device("cpu"), "gloo")


def _cfg(tmp_path, **sections):
    cfg = TrainConfig.tiny(out_dir=str(tmp_path / "run"))
    cfg = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, num_frames=3, latent_height=4,
                                                               latent_width=4, chunk_frames=3))
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()})


def test_the_real_score_adds_the_partial_term(tmp_path):
    cfg = _cfg(tmp_path, dmd={"guidance": 1.5, "partial_guidance": 2.0})
    teacher, critic = _model(1), _model(2)
    data = ToyWorldDataset(3, latents=False)
    samples = [data[i] for i in range(3)]
    for s in samples:  # each sample's partial prompt is its object's words
        assert torch.equal(s.partial, trim_embedding(ToyTextEncoder().encode([object_prompt(s.prompt)])[0]))
    ctx = pad_stack([s.embeds for s in samples])
    part = pad_stack([s.partial for s in samples])
    neg = data.negative[None].expand(3, -1, -1)
    x = torch.randn(3, 12, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    t = torch.full((3, 3), 700.0)
    sch = FlowSchedule(cfg.dmd.score_shift)
    with torch.no_grad():
        real = DistributionMatching(cfg).score_nets(Nets(critic, critic, teacher), ctx, neg, None, part).real(x, t)
        c, u, p = (Denoiser(teacher, sch, e)(x, t) for e in (ctx, neg, part))
    assert (real - (c + 1.5 * (c - u) + 2.0 * (c - p))).abs().max() < 1e-5
    assert (c - p).abs().max() > 1e-3  # the motion words change the estimate: the term is not zero
    with pytest.raises(ValueError, match="partial-prompt text embeddings"):
        DistributionMatching(cfg).score_nets(Nets(critic, critic, teacher), ctx, neg, None).real(x, t)


def test_ode_pairs_with_partial_guidance(tmp_path):
    cfg = _cfg(tmp_path, supervised={"ode_steps": 4, "ode_keep": (0, 2, 4), "ode_guidance": 2.5,
                                     "ode_partial_guidance": 2.0})
    teacher = _model(4)
    data = ToyWorldDataset(7, size=2, latents=False)
    out = generate_ode_pairs(cfg, teacher, data, tmp_path / "pairs", INFO)
    got = ShardDataset(out, expect=["ode"])
    sch = FlowSchedule(cfg.dmd.score_shift)
    for i in range(2):
        s = data[i]
        c, u, p = (Denoiser(teacher, sch, e[None]) for e in (s.embeds, data.negative, s.partial))

        def guided(x, t):  # x0_u + 2.5 (x0_c - x0_u) + 2 (x0_c - x0_partial), from three separate estimates
            xc, xu, xp = c(x, t), u(x, t), p(x, t)
            return xu + 2.5 * (xc - xu) + 2.0 * (xc - xp)

        noise = torch.randn((1, 12, 3, 4, 4), generator=keyed_generator(cfg.seed, "ode", i))
        want = ode_trajectory(guided, noise, 4, cfg.dmd.score_shift, (0, 2, 4))[0]
        assert got[i].prompt == s.prompt
        assert (got[i].trajectory - want).abs().max() < 1e-4


def test_partial_guidance_without_partial_prompts_is_refused_before_work(tmp_path):
    enc = ToyTextEncoder(text_dim=32)
    mem = MemoryDataset(list(enc.encode(["a red circle", "a blue square"])), ["a red circle", "a blue square"],
                        enc.encode([""])[0])
    cfg = _cfg(tmp_path, supervised={"ode_steps": 4, "ode_keep": (0, 2, 4), "ode_partial_guidance": 1.0})
    with pytest.raises(ConfigError, match=r"ode_partial_guidance=1.0 needs a partial prompt per sample"):
        generate_ode_pairs(cfg, _model(0), mem, tmp_path / "pairs", INFO)
    assert not list((tmp_path / "pairs").rglob("*.safetensors"))

    from sf_core.train.trainer import Trainer

    cfg = dataclasses.replace(_cfg(tmp_path, dmd={"partial_guidance": 2.0}),
                              models=dataclasses.replace(TrainConfig.tiny().models))
    with pytest.raises(ConfigError, match=r"dmd.partial_guidance=2.0 needs a partial prompt per sample .* "
                                          r"set dmd.partial_guidance=0"):
        Trainer(cfg, INFO, dataset=mem)
    with pytest.raises(ValueError, match=r"dmd.partial_guidance=-1.0 must be a finite number >= 0"):
        _cfg(tmp_path, dmd={"partial_guidance": -1.0})


def test_jsonl_partial_prompts_reach_the_shards(tmp_path):
    import json

    from sf_core.train.cli import main as train_cli
    from sf_core.train.data import DataError, read_partial_prompts

    rows = [{"prompt": "a red square moving left fast", "partial": "a red square"}, "",
            {"prompt": "a blue circle moving up slow", "partial": ""}]
    src = tmp_path / "p.jsonl"
    src.write_text("\n".join(json.dumps(r) if r else "" for r in rows), encoding="utf-8")
    assert train_cli(["encode-prompts", "--prompts", str(src), "--out", str(tmp_path / "emb"),
                      "--encoder", "toy"]) == 0
    ds = ShardDataset(tmp_path / "emb")
    enc = ToyTextEncoder()
    assert ds.index["partial"] is True and len(ds) == 2
    for i, text in enumerate(["a red square", ""]):
        assert torch.equal(ds[i].partial, trim_embedding(enc.encode([text])[0]))
        assert torch.equal(ds[i].embeds, trim_embedding(enc.encode([ds[i].prompt])[0]))
    plain = tmp_path / "p.txt"
    plain.write_text("a red square moving left fast\n", encoding="utf-8")
    assert read_partial_prompts(plain) is None
    src.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"prompt": "a blue circle"}), encoding="utf-8")
    with pytest.raises(DataError, match=r"lines \[2\] have no \"partial\" text while others do"):
        read_partial_prompts(src)
