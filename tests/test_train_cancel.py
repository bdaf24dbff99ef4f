"""Cancel frees the caller within seconds, always (issue 27 item 7).

The training node with nnodes=2 kept ComfyUI's queue blocked ~300 s after Cancel: torchrun waited for the second
node, so the trainer never saw the STOP file, and the launcher waited its whole grace period. Now a trainer that
is not training yet is terminated at once, and one that is training gets `detach_after_s` to write its checkpoint
before the caller is released (a background thread escalates as before).
"""
from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sf_core.train.launcher import LaunchSpec, TrainingProcess, follow


class Cancel(Exception):
    pass


def _cancel():
    raise Cancel()


@dataclass(frozen=True)
class ScriptSpec(LaunchSpec):
    script: str = ""

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.script]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _follow_and_time(proc, **kw) -> float:
    t0 = time.time()
    with pytest.raises(Cancel):
        follow(proc, lambda rows, st: None, _cancel, poll_s=0.1, **kw)
    return time.time() - t0


def _fake_trainer(tmp_path: Path, then: str):
    """A process that reports it is training (status.json: running), then runs `then` (p = its run folder)."""
    run = tmp_path / "run"
    run.mkdir()
    script = (f"import json, os, time, pathlib\np = pathlib.Path({str(run)!r})\n"
              f"(p / 'status.json').write_text(json.dumps({{'state': 'running', 'step': 1, 'pid': os.getpid()}}))\n"
              + then)
    proc = TrainingProcess(ScriptSpec(tmp_path / "cfg.json", run, script=script))
    t0 = time.time()
    while not proc.training() and time.time() - t0 < 30:
        time.sleep(0.05)
    assert proc.training()
    return run, proc


def test_a_multi_node_launch_waiting_for_its_peers_is_cancelled_in_seconds(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text("{}")
    spec = LaunchSpec(cfg, tmp_path / "run", nproc_per_node=1, nnodes=2, node_rank=0, master_addr="127.0.0.1",
                      master_port=_free_port())
    proc = TrainingProcess(spec)
    time.sleep(3)  # torchrun is up and waiting for node 1, which never comes
    assert proc.poll() is None
    took = _follow_and_time(proc, grace_s=300.0)
    assert took < 15, took
    assert proc.poll() is not None


def test_a_trainer_that_does_not_answer_stop_is_left_to_finish_in_the_background(tmp_path):
    run, proc = _fake_trainer(tmp_path, "time.sleep(600)\n")
    took = _follow_and_time(proc, grace_s=3.0, detach_after_s=1.0)
    assert 0.9 < took < 5, took
    assert proc.poll() is None  # still writing its "checkpoint": not killed under the caller
    assert (run / "STOP").exists()
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < 60:  # escalated in the background after the grace
        time.sleep(0.1)
    assert proc.poll() is not None and time.time() - t0 < 40


def test_a_trainer_that_stops_in_time_is_waited_for(tmp_path):
    run, proc = _fake_trainer(tmp_path, "while not (p / 'STOP').exists(): time.sleep(0.05)\n"
                                        "(p / 'status.json').write_text(json.dumps({'state': 'stopped', 'step': 2}))\n")
    _follow_and_time(proc, grace_s=300.0, detach_after_s=20.0)
    assert proc.poll() == 0
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
