"""Long preparation steps show progress and survive interruptions (issue 14, item 16): ODE pairs are saved as
they go and an interrupted generation continues after the last saved part, writing exactly what an
uninterrupted one writes; training logs its first step at once (not only every log_every steps)."""
import logging

import pytest
import torch

from train_kit import tiny_config, write_embeddings


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from sf_core.train.config import DistConfig
    from sf_core.train.distributed import init_distributed, shutdown
    from sf_core.train.models import build_nets

    tmp = tmp_path_factory.mktemp("ode_resume")
    write_embeddings(tmp / "emb", n=6)
    cfg = tiny_config(tmp, supervised={"ode_steps": 4, "ode_keep": [0, 2, 4]})
    info = init_distributed(DistConfig(mixed_precision=False))
    teacher = build_nets(cfg).teacher.requires_grad_(False)
    yield tmp, cfg, info, teacher
    shutdown()


def _pairs(path):
    from sf_core.train.data import ShardDataset

    ds = ShardDataset(path, expect=["ode"])
    return [(ds[i].prompt, ds[i].trajectory) for i in range(len(ds))]


def test_interrupted_ode_pairs_resume_after_the_last_saved_part(setup, tmp_path):
    from sf_core.train.data import ShardDataset
    from sf_core.train.methods.ode import generate_ode_pairs

    tmp, cfg, info, teacher = setup
    prompts = ShardDataset(tmp / "emb")
    full = generate_ode_pairs(cfg, teacher, prompts, tmp_path / "full", info, save_every=2)

    calls = []

    def stop_after_five(n, total):
        calls.append(n)
        if n == 5:
            raise Stop  # Ctrl-C after pair 5: pairs 1-4 are saved (two parts), pair 5 is not

    with pytest.raises(Stop):
        generate_ode_pairs(cfg, teacher, prompts, tmp_path / "cut", info, save_every=2, progress=stop_after_five)
    assert len(list((tmp_path / "cut").glob("rank00000/part*/index.json"))) == 2
    assert not (tmp_path / "cut" / "index.json").exists()
    calls.clear()
    out = generate_ode_pairs(cfg, teacher, prompts, tmp_path / "cut", info, save_every=2,
                             progress=lambda n, t: calls.append((n, t)))
    assert calls == [(5, 6), (6, 6)]  # only the 2 pairs not saved were made again
    a, b = _pairs(full), _pairs(out)
    assert [p for p, _ in a] == [p for p, _ in b] == [prompts[i].prompt for i in range(6)]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
    # and once complete, a rerun makes nothing
    calls.clear()
    generate_ode_pairs(cfg, teacher, prompts, tmp_path / "cut", info, save_every=2,
                       progress=lambda n, t: calls.append((n, t)))
    assert calls == []


def test_first_step_is_logged_at_once(tmp_path, caplog):
    from sf_core.train.progress import Progress

    p = Progress(tmp_path, max_steps=20, log_every=25)
    p.start(0)
    with caplog.at_level(logging.INFO, logger="sf_core.train"):
        for step in range(1, 4):
            p.step(step, {"generator_loss": 1.0})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(lines) == 1 and lines[0].startswith("step 1/20")
    p.start(7)  # resumed: the first step after the resume is logged too
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sf_core.train"):
        p.step(8, {"generator_loss": 1.0})
    assert any(r.getMessage().startswith("step 8/20") for r in caplog.records)
