"""The trainer as users run it (CLI subprocesses, torchrun with gloo): 2 processes == 1 process with the same
global batch, kill -9 + resume == uninterrupted, export loads back, and bad inputs fail cleanly."""
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sf_core.checkpoints.weights import load_checkpoint
from train_kit import (ROOT, cli, env, load_export, metrics,
                       tiny_config, write_config, write_embeddings)

STEPS = 10


def _ckpt_state(path: Path) -> dict:
    """Everything a checkpoint holds (weights, optimiser states, EMA) as plain tensors."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = path.parent / f"{path.name}.pt"
    dcp_to_torch_save(str(path), str(out))
    return torch.load(out, weights_only=True)


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        elif isinstance(v, torch.Tensor):
            yield f"{prefix}{k}", v


def _compare(a: dict, b: dict, atol: float) -> float:
    fa, fb = dict(_flat(a)), dict(_flat(b))
    assert fa.keys() == fb.keys()
    worst = max(float((fa[k].double() - fb[k].double()).abs().max()) for k in fa if fa[k].numel())
    assert worst <= atol, worst
    return worst


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train_dist")
    write_embeddings(tmp / "emb", n=4)
    cfg = tiny_config(tmp, max_steps=STEPS, checkpoint={"every": 3, "keep_last": 5})
    write_config(tmp / "cfg.json", cfg)
    return tmp


@pytest.fixture(scope="module")
def baseline(work):
    """One process, global batch 2, uninterrupted."""
    r = cli("run", "--config", str(work / "cfg.json"), "--set", "data.batch_size=2", "--out-dir", str(work / "one"))
    assert r.returncode == 0, r.stderr[-3000:]
    return work / "one"


def test_two_processes_equal_one(work, baseline):
    r = cli("run", "--config", str(work / "cfg.json"), "--set", "data.batch_size=1", "--out-dir", str(work / "two"),
            nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = metrics(baseline), metrics(work / "two")
    assert [m["step"] for m in one] == [m["step"] for m in two] == list(range(1, STEPS + 1))
    for a, b in zip(one, two):
        for k in a:
            if k.endswith(("loss", "norm")):
                assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), (a["step"], k)
    name = f"step_{STEPS:07d}"
    _compare(_ckpt_state(baseline / "checkpoints" / name), _ckpt_state(work / "two" / "checkpoints" / name), 1e-5)
    ea = load_export(next((baseline / "export").glob("*.safetensors")))
    eb = load_export(next((work / "two" / "export").glob("*.safetensors")))
    assert max(float((ea[k] - eb[k]).abs().max()) for k in ea) <= 1e-5


def test_kill_and_resume_equals_uninterrupted(work, baseline):
    out = work / "killed"
    cmd = [sys.executable, "-m", "sf_core.train", "run", "--config", str(work / "cfg.json"), "--set",
           "data.batch_size=2", "--out-dir", str(out)]
    p = subprocess.Popen(cmd, cwd=str(ROOT), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and p.poll() is None:
        m = out / "metrics.jsonl"
        steps = [int(line.split('"step": ')[1].split(",")[0]) for line in m.read_text().splitlines()] if m.exists() else []
        if steps and steps[-1] >= 4:  # checkpoint 3 is written, the run is mid-way
            os.kill(p.pid, signal.SIGKILL)
            killed_at = steps[-1]
            break
        time.sleep(0.02)
    p.wait()
    assert killed_at is not None and killed_at < STEPS, "the run finished before it could be killed"
    assert not (out / "export").exists()
    r = cli("run", "--config", str(work / "cfg.json"), "--set", "data.batch_size=2", "--out-dir", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr
    assert [m["step"] for m in metrics(out)] == list(range(1, STEPS + 1))
    name = f"step_{STEPS:07d}"
    assert _compare(_ckpt_state(baseline / "checkpoints" / name), _ckpt_state(out / "checkpoints" / name), 0.0) == 0
    a = load_export(next((baseline / "export").glob("*.safetensors")))
    b = load_export(next((out / "export").glob("*.safetensors")))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_export_loads_back_and_offline_export_agrees(work, baseline):
    exported = next((baseline / "export").glob("*.safetensors"))
    ck = load_checkpoint(exported)  # the pack's loader (the stock UNETLoader reads the same keys)
    assert ck.config.dim == 64 and ck.causal.chunk_frames == 3 and ck.meta["which"] == "generator_ema"
    state = _ckpt_state(baseline / "checkpoints" / f"step_{STEPS:07d}")
    for k, v in state["ema"].items():
        assert torch.equal(ck.state_dict[k], v), k  # the EMA shadow, not the raw generator
    assert any(not torch.equal(state["ema"][k], state["generator"][k]) for k in state["ema"])
    from sf_core.train.cli import main

    assert main(["export", "--run", str(baseline), "--weights", "generator", "--out", str(work / "gen.safetensors")]) == 0
    raw = load_checkpoint(work / "gen.safetensors")
    for k, v in state["generator"].items():
        assert torch.equal(raw.state_dict[k], v), k


def _tree_digest(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _main(capsys, *args) -> tuple[int, str]:
    from sf_core.train.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


def test_bad_inputs_fail_cleanly(work, baseline, tmp_path, capsys):
    code, err = _main(capsys, "encode-prompts", "--prompts", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "e"))
    assert code == 2 and "missing.txt does not exist" in err
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    code, err = _main(capsys, "encode-prompts", "--prompts", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "e"))
    assert code == 2 and "contains no prompts" in err and not (tmp_path / "e").exists()
    code, err = _main(capsys, "run", "--config", str(work / "cfg.json"), "--set",
                      f"models.generator={tmp_path / 'nope.pt'}", "--out-dir", str(tmp_path / "r"))
    assert code == 2 and "models.generator" in err and "nope.pt does not exist" in err
    assert not (tmp_path / "r").exists()
    # a corrupt checkpoint to resume from: a clear error, and every saved byte is still there
    run = tmp_path / "corrupt"
    subprocess.run(["cp", "-r", str(baseline), str(run)], check=True)
    latest = run / "checkpoints" / f"step_{STEPS:07d}"
    shard = next(latest.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])
    before = _tree_digest(run)
    code, err = _main(capsys, "run", "--config", str(work / "cfg.json"), "--set", "data.batch_size=2", "--out-dir",
                      str(run), "--max-steps", str(STEPS + 2))
    assert code == 2, err[-2000:]
    assert f"checkpoint {latest} cannot be loaded" in err and "step_0000009" in err
    assert _tree_digest(run) == before
    # more ranks than prompts (two real processes)
    write_embeddings(tmp_path / "one_prompt", n=1)
    r = cli("run", "--config", str(work / "cfg.json"), "--set", f"data.embeddings={tmp_path / 'one_prompt'}",
            "--out-dir", str(tmp_path / "r2"), nproc=2)
    assert r.returncode != 0 and "1 samples cannot fill one global batch of 2" in r.stderr
