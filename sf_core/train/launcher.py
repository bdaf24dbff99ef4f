"""Run the trainer as a subprocess (torchrun) and follow it: what the ComfyUI training node uses.

Host-independent: the node passes its progress / interruption hooks in. The trainer reports through files
in its run directory (`status.json`, `metrics.jsonl`, progress.py), so following it needs no pipe parsing
and survives a restarted UI. Stopping is cooperative: a `STOP` file makes every rank finish the current
step, write a checkpoint and exit 0; only if that does not happen within `grace_s` is the process group
terminated (SIGTERM, which the trainer also turns into a checkpoint) and finally killed.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .progress import ACTIVE, read_jsonl, read_status, write_json_atomic

log = logging.getLogger(__name__)

PACK_ROOT = Path(__file__).resolve().parents[2]


class TrainingFailed(RuntimeError):
    """The trainer exited with an error; the message carries its last output lines."""


@dataclass(frozen=True)
class LaunchSpec:
    config: Path
    out_dir: Path
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    overrides: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable

    def command(self) -> list[str]:
        """`python -m torch.distributed.run ... -m sf_core.train run --config ... --out-dir ...`."""
        cmd = [self.python, "-m", "torch.distributed.run", "--nproc_per_node", str(self.nproc_per_node)]
        if self.nnodes == 1:
            cmd += ["--standalone"]  # a free rendezvous port on this machine
        else:
            cmd += ["--nnodes", str(self.nnodes), "--node_rank", str(self.node_rank),
                    "--master_addr", self.master_addr, "--master_port", str(self.master_port)]
        cmd += ["-m", "sf_core.train", "run", "--config", str(self.config), "--out-dir", str(self.out_dir)]
        for k, v in self.overrides.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd


def running_pid(out_dir: str | Path) -> int | None:
    """The pid of a trainer that is still running in out_dir (from its status.json), else None."""
    st = read_status(out_dir)
    return st["pid"] if st.get("state") in ACTIVE else None


class TrainingProcess:
    def __init__(self, spec: LaunchSpec, env: dict[str, str] | None = None):
        self.spec = spec
        self.out_dir = Path(spec.out_dir)
        self.log_path = self.out_dir / "train.log"
        self._rows_seen = 0
        other = running_pid(self.out_dir)
        if other is not None:
            raise TrainingFailed(f"a trainer (pid {other}) is already running in {self.out_dir}; stop it first")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._rows_seen = len(read_jsonl(self.out_dir / "metrics.jsonl"))
        (self.out_dir / "STOP").unlink(missing_ok=True)  # requests of earlier runs are stale
        full_env = dict(os.environ, **(env or {}))
        self.launched_at = time.time()
        full_env["SF_TRAIN_LAUNCHED_AT"] = repr(self.launched_at)
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACK_ROOT), full_env.get("PYTHONPATH", "")) if p)
        full_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(spec.nproc_per_node, 1))))
        self._log = open(self.log_path, "ab")
        self._log_start = self._log.tell()  # this launch's output starts here (the log accumulates over runs)
        # own session: the node can signal the whole group (torchrun and its workers) and nothing else
        self.proc = subprocess.Popen(spec.command(), cwd=str(PACK_ROOT), env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.info("started trainer pid %d: %s", self.proc.pid, " ".join(spec.command()))

    def poll(self) -> int | None:
        return self.proc.poll()

    def new_rows(self) -> list[dict]:
        rows = read_jsonl(self.out_dir / "metrics.jsonl")
        if len(rows) < self._rows_seen:  # the trainer rewound metrics on resume
            self._rows_seen = 0
        new, self._rows_seen = rows[self._rows_seen:], len(rows)
        return new

    def status(self) -> dict:
        return read_status(self.out_dir, repair=False)

    def record_exit(self, code: int) -> dict:
        """After the process exited: a status.json still saying starting/running (the trainer was killed, or
        died before it could write) becomes `failed` with the exit code. Returns the status."""
        st = read_status(self.out_dir, repair=False)
        if st.get("state") in ACTIVE or (st.get("state") == "interrupted" and code != 0):
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            st.update(state="failed", error=self.error_line() or f"the trainer ended without a final state ({how})")
            try:
                write_json_atomic(self.out_dir / "status.json", st)
            except OSError:
                pass
        return st

    def output(self) -> str:
        """Everything this launch wrote to train.log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_start)
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def error_line(self) -> str | None:
        """The trainer's own one-line error (`error: ...`, printed by rank 0 on bad inputs) of this launch, if any:
        torchrun's failure summary comes after it, so it is looked for in the whole output."""
        errors = [ln for ln in self.output().splitlines() if ln.startswith("error: ")]
        return errors[-1][len("error: "):] if errors else None

    def request_stop(self) -> None:
        (self.out_dir / "STOP").touch()

    def training(self) -> bool:
        """True once this launch's trainer reports that it is training (status.json written since the launch, state
        running): only then can it answer STOP with a checkpoint. Before that (torchrun waiting for the other nodes
        of a multi-node run, or still loading) there is nothing to save."""
        try:
            fresh = (self.out_dir / "status.json").stat().st_mtime >= self.launched_at - 1
        except OSError:
            return False
        return fresh and self.status().get("state") == "running"

    def _escalate(self, grace_s: float) -> int:
        for sig, wait in ((None, grace_s), (signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            if sig is not None and self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                return self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.wait()

    def stop(self, grace_s: float = 300.0, detach_after_s: float | None = None) -> int | None:
        """Cooperative stop (checkpoint, exit), then SIGTERM, then SIGKILL; returns the exit code.

        A trainer that is not training yet is terminated at once (nothing to checkpoint; a multi-node launch
        whose other nodes never came would otherwise hold the caller for `grace_s`). With `detach_after_s`, a
        trainer still writing its checkpoint after that many seconds is left to finish in the background (a
        thread escalates after `grace_s` as before) and None is returned: the caller is free within seconds."""
        self.request_stop()
        if not self.training():
            return self._escalate(0.0 if self.proc.poll() is None else 5.0)
        if detach_after_s is None:
            return self._escalate(grace_s)
        try:
            return self.proc.wait(timeout=detach_after_s)
        except subprocess.TimeoutExpired:
            pass
        threading.Thread(target=self._escalate, args=(max(0.0, grace_s - detach_after_s),), daemon=True,
                         name=f"sf-train-stop-{self.proc.pid}").start()
        return None

    def close(self) -> None:
        self._log.close()


def follow(proc: TrainingProcess, on_rows: Callable[[list[dict], dict], None],
           check_interrupt: Callable[[], None] = lambda: None, *, poll_s: float = 0.5,
           grace_s: float = 300.0, detach_after_s: float | None = 10.0) -> dict:
    """Forward new metric rows until the trainer exits. If `check_interrupt` or `on_rows` raises (the user
    cancelled: the host's progress updates check for that too), stop the trainer cooperatively (it writes a
    checkpoint) and re-raise. Raises TrainingFailed on a
    non-zero exit. Returns the final status.json content."""
    try:
        while True:
            try:
                rows = proc.new_rows()
                if rows:
                    on_rows(rows, proc.status())  # the host's progress update is an interruption point too
                check_interrupt()
            except BaseException:
                code = proc.stop(grace_s, detach_after_s=detach_after_s)
                if code is None:
                    log.warning("training cancelled: the trainer (pid %d) is writing its checkpoint in the "
                                "background and exits by itself (killed after %.0f s if it does not)",
                                proc.proc.pid, grace_s)
                else:
                    proc.record_exit(code)
                    log.info("training stopped on request (exit code %s)", code)
                raise
            code = proc.poll()
            if code is not None:
                rows = proc.new_rows()
                if rows:
                    on_rows(rows, proc.status())
                break
            time.sleep(poll_s)
    finally:
        proc.close()
    status = proc.record_exit(code)
    if code != 0:
        error = proc.error_line()
        raise TrainingFailed(error if error is not None else
                             f"the trainer exited with code {code}; last output:\n{proc.log_tail()}")
    return status
