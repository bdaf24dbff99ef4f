"""The toy recipes run on the project's trainer: the world dataset, a short teacher run that lowers the loss,
and every stage's config is valid."""
import pytest
import torch

from sf_core.config import WanConfig
from sf_core.toy import codec, recipes
from sf_core.toy.data import ToyWorldDataset
from sf_core.toy.world import render

MICRO = WanConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=12, out_dim=12, text_dim=32, text_len=8,
                  freq_dim=32)


def test_world_dataset_is_deterministic_and_drops_prompts():
    a, b = ToyWorldDataset(3, prompt_dropout=0.25), ToyWorldDataset(3, prompt_dropout=0.25)
    s1, s2 = a[17], b[17]
    assert s1.prompt == s2.prompt and torch.equal(s1.latents, s2.latents) and torch.equal(s1.embeds, s2.embeds)
    assert s1.latents.shape == (12, 12, 8, 8)
    assert (codec.decode(s1.latents[None])[0] - render(a.scene(17), 12)).abs().max() < 1e-5
    dropped = [a[i].prompt == "" for i in range(200)]
    assert 0.15 < sum(dropped) / 200 < 0.35
    empty = a[dropped.index(True)]
    assert empty.embeds.abs().sum() == 0 and empty.embeds.shape == (1, 32)
    assert ToyWorldDataset(4)[17].prompt != s1.prompt or not torch.equal(ToyWorldDataset(4)[17].latents, s1.latents)
    assert ToyWorldDataset(3, latents=False)[17].latents is None


@pytest.mark.parametrize("stage", recipes.STAGES)
def test_stage_configs_are_valid(stage, tmp_path):
    cfg = recipes.base_config(stage, 0, tmp_path)
    assert cfg.method == recipes.SETTINGS[stage].method
    assert cfg.rollout.num_frames == 12 and cfg.rollout.latent_height == 8
    assert cfg.out_dir == str(tmp_path / "seed0" / stage)


def _fixed_loss(path, data) -> float:
    """Flow-matching loss of a weights file on a fixed batch, fixed timesteps and noise."""
    from sf_core.toy.bundle import load_toy_transformer

    model = load_toy_transformer(path)
    samples = [data[i] for i in range(8)]
    x0 = torch.stack([s.latents for s in samples])
    ctx = torch.zeros(8, 8, 32)
    for i, s in enumerate(samples):
        ctx[i, :s.embeds.shape[0]] = s.embeds
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(x0.shape, generator=g)
    sigma = torch.linspace(0.2, 0.9, 8)
    xt = (1 - sigma.view(-1, 1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1, 1) * eps
    with torch.no_grad():
        v = model(xt, sigma * 1000, ctx)
    return float(((v - (eps - x0)) ** 2).mean())


def test_short_teacher_run_lowers_the_loss(tmp_path):
    """Init file -> the project's Trainer on the toy world -> export: the held-out loss goes down."""
    out = recipes.train_stage("teacher", 0, tmp_path, steps=60, model_config=MICRO,
                              overrides={"data.batch_size": 8, "optim.lr": 3e-3, "ema.start_step": 59,
                                         "checkpoint.every": 60})
    assert out == tmp_path / "seed0" / "teacher.safetensors" and out.is_file()
    held_out = ToyWorldDataset(1234)
    before = _fixed_loss(tmp_path / "seed0" / "init.safetensors", held_out)
    after = _fixed_loss(out, held_out)
    assert after < 0.92 * before, (before, after)
    assert (tmp_path / "seed0" / "teacher" / "metrics.jsonl").is_file()


def test_student_stage_needs_the_teacher(tmp_path):
    with pytest.raises(FileNotFoundError, match="train it first: python -m sf_core.toy train teacher"):
        recipes.train_stage("tf", 0, tmp_path, steps=1)


def test_train_command_takes_config_overrides(tmp_path):
    """`python -m sf_core.toy train STAGE --set KEY=VALUE` reaches the stage's TrainConfig (recipe probes)."""
    import json

    from sf_core.toy.cli import main

    assert main(["train", "teacher", "--seed", "0", "--root", str(tmp_path), "--steps", "2",
                 "--set", "supervised.shift=2.0", "--set", "ema.decay=0.999"]) == 0
    cfg = json.loads((tmp_path / "seed0" / "teacher" / "config.json").read_text())
    assert cfg["supervised"]["shift"] == 2.0 and cfg["ema"]["decay"] == 0.999


def test_a_stopped_stage_says_so_in_one_line_and_resumes(tmp_path, capsys):
    """A stop request (SIGTERM, or the STOP file) ends the command with exit 75 and one line, no traceback; the
    same command resumes from the checkpoint and finishes."""
    from sf_core.toy.cli import main

    run = tmp_path / "seed0" / "teacher"
    run.mkdir(parents=True)
    (run / "STOP").touch()  # newer than this process: honoured after the first step
    args = ["train", "teacher", "--seed", "0", "--root", str(tmp_path), "--steps", "3", "--set", "data.batch_size=2"]
    assert main(args) == 75
    err = capsys.readouterr().err
    assert "stage teacher (seed 0) stopped at step 1 with a checkpoint; run the same command again" in err
    assert "Traceback" not in err
    assert main(args) == 0 and (tmp_path / "seed0" / "teacher.safetensors").is_file()
