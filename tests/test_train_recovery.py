"""A run is never stuck (issue 14, item 11): a newest step folder without `.metadata` is reported and moved aside
when that step is saved again (it used to crash every rerun with `OSError: Directory not empty`), and
`status.json` never keeps saying "running" for a trainer that was killed."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from train_kit import ROOT, cli, env, tiny_config, write_config, write_embeddings


@pytest.fixture()
def work(tmp_path):
    write_embeddings(tmp_path / "emb", n=2)
    cfg = tiny_config(tmp_path, max_steps=4, checkpoint={"every": 2, "keep_last": 3}, export_at_end=False)
    write_config(tmp_path / "cfg.json", cfg)
    return tmp_path


def _run(work, steps: int, caplog) -> tuple[dict, str]:
    from sf_core.train.cli import main

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["run", "--config", str(work / "cfg.json"), "--max-steps", str(steps)]) == 0
    return json.loads((work / "run" / "status.json").read_text()), caplog.text


def test_newest_checkpoint_without_metadata_does_not_block_the_run(work, caplog):
    root = work / "run" / "checkpoints"
    _run(work, 4, caplog)
    (root / "step_0000004" / ".metadata").unlink()  # e.g. a partial copy of the run folder
    status, text = _run(work, 6, caplog)
    assert "ignoring incomplete checkpoint folders ['step_0000004']" in text and "resuming from the older" in text
    assert "moved it to" in text
    assert status["state"] == "finished" and status["step"] == 6
    assert (root / "step_0000004.incomplete" / "train_state.json").is_file()  # kept, not deleted
    from sf_core.train.checkpoint import list_checkpoints

    assert [p.name for p in list_checkpoints(work / "run")] == ["step_0000002", "step_0000004", "step_0000006"]
    status, text = _run(work, 8, caplog)  # and the next rerun goes on as usual
    assert status["state"] == "finished" and status["step"] == 8 and "incomplete" not in text


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_status_of_a_dead_trainer_is_interrupted(tmp_path, capsys):
    from sf_core.train.cli import main
    from sf_core.train.launcher import running_pid
    from sf_core.train.progress import read_status

    run = tmp_path / "run"
    run.mkdir()
    status = run / "status.json"
    status.write_text(json.dumps({"state": "running", "step": 7, "pid": os.getpid()}))
    assert read_status(run)["state"] == "running" and running_pid(run) == os.getpid()
    status.write_text(json.dumps({"state": "running", "step": 7, "pid": _dead_pid()}))
    st = read_status(run)
    assert st["state"] == "interrupted" and "step 7" in st["error"] and running_pid(run) is None
    assert json.loads(status.read_text())["state"] == "interrupted"  # the file itself is corrected
    assert main(["status", "--run", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "interrupted"


def _wait_for_step(run, proc, step: int = 1, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            st = json.loads((run / "status.json").read_text())
        except (OSError, ValueError):
            st = {}
        if st.get("state") == "running" and st.get("step", 0) >= step:
            return st
        time.sleep(0.05)
    raise AssertionError("the trainer did not get going")


def test_kill_9_standalone_and_launched(work):
    """SIGKILL a CLI trainer: status says interrupted when read; SIGKILL a launched one: the launcher writes failed."""
    from sf_core.train.launcher import LaunchSpec, TrainingFailed, TrainingProcess, follow
    from sf_core.train.progress import read_status

    run = work / "run"
    cmd = [sys.executable, "-m", "sf_core.train", "run", "--config", str(work / "cfg.json"), "--max-steps", "400"]
    p = subprocess.Popen(cmd, cwd=str(ROOT), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    st = _wait_for_step(run, p)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert json.loads((run / "status.json").read_text())["state"] == "running"  # nothing could update it
    r = cli("status", "--run", str(run))
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "interrupted", r.stderr
    assert read_status(run)["pid"] == st["pid"]

    proc = TrainingProcess(LaunchSpec(work / "cfg.json", run, overrides={"max_steps": "400"}),
                           env={"OMP_NUM_THREADS": "1"})
    box = {}

    def on_rows(rows, status):
        if "killed" not in box and status.get("state") == "running" and status.get("pid") != st["pid"]:
            box["killed"] = status["pid"]
            os.kill(status["pid"], signal.SIGKILL)  # the worker, as the OOM killer would

    with pytest.raises(TrainingFailed):
        follow(proc, on_rows, poll_s=0.1)
    final = json.loads((run / "status.json").read_text())
    assert box.get("killed") and final["state"] == "failed" and "error" in final, final
