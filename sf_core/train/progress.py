"""Progress of a run, written by rank 0 for humans and for the ComfyUI node that launched it.

- a log line per step (losses, grad norms, step time, ETA) on stderr;
- `metrics.jsonl`: one JSON object per step ({"step", "time", "step_time", "eta_s", losses, norms, ...});
- `status.json` (replaced atomically): {"state": starting|running|stopping|stopped|finished|failed|interrupted,
  "step", "max_steps", "metrics", "checkpoint", "export", "plot", "error", "pid", "host"} -- what the node polls.
  A trainer killed with SIGKILL cannot update it, so `read_status` (what the launcher, the node and
  `python -m sf_core.train status` use) turns an active state whose pid is gone into `interrupted` and rewrites
  the file; the launcher also writes `failed` when the process it started exits without a final state;
- `loss.png`: the loss curves (refreshed at every checkpoint and at the end).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any

from .plot import plot_metrics

log = logging.getLogger("sf_core.train")

PLOT_KEYS = ("generator_loss", "critic_loss", "generator_grad_norm", "critic_grad_norm")
LOG_EVERY_S = 30.0  # a log line at least this often, whatever log_every says (slow steps: no silent minutes)


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file; a torn last line (a writer killed mid-write) is ignored."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    tmp.replace(path)


ACTIVE = ("starting", "running", "stopping")


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_status(out_dir: str | Path, *, repair: bool = True) -> dict[str, Any]:
    """status.json of a run ({} if there is none), with a dead trainer's active state corrected to `interrupted`
    (and, with `repair`, written back). Only pids of this host are checked (a multi-node run's file may have been
    written elsewhere)."""
    path = Path(out_dir) / "status.json"
    try:
        st = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(st, dict):
        return {}
    if st.get("state") in ACTIVE and st.get("host", socket.gethostname()) == socket.gethostname() \
            and not _alive(st.get("pid")):
        st.update(state="interrupted", error=f"the trainer (pid {st.get('pid')}) ended without writing its final "
                                             f"state (killed or crashed at step {st.get('step')}); run the same "
                                             f"command again to resume from the latest checkpoint")
        if repair:
            try:
                write_json_atomic(path, st)
            except OSError:
                pass
    return st


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    """Rank 0's view of the run (other ranks get a Progress with `enabled=False`, which does nothing)."""

    def __init__(self, out_dir: str | Path, max_steps: int, *, enabled: bool = True, log_every: int = 1):
        self.dir = Path(out_dir)
        self.max_steps, self.enabled, self.log_every = max_steps, enabled, log_every
        self.metrics_path = self.dir / "metrics.jsonl"
        self.status_path = self.dir / "status.json"
        self.plot_path = self.dir / "loss.png"
        self.times: deque[float] = deque(maxlen=20)
        self.status: dict[str, Any] = {"state": "starting", "step": 0, "max_steps": max_steps, "pid": os.getpid(),
                                       "host": socket.gethostname()}
        self._last = time.monotonic()
        self._last_log = self._last
        self._first = 1

    def start(self, step: int) -> None:
        """Begin (or resume at) `step`: metrics of later steps from an interrupted run are dropped, since they
        will be recomputed identically."""
        if not self.enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        rows = [r for r in read_jsonl(self.metrics_path) if int(r.get("step", 0)) <= step]
        tmp = self.metrics_path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(self.metrics_path)
        self.update(state="running", step=step)
        self._last = self._last_log = time.monotonic()
        self._first = step + 1

    def update(self, **fields: Any) -> None:
        if not self.enabled:
            return
        self.status.update(fields)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.status_path, self.status)

    def step(self, step: int, metrics: dict[str, float]) -> None:
        """Record step `step` (1-based, after its updates)."""
        now = time.monotonic()
        dt, self._last = now - self._last, now
        self.times.append(dt)
        if not self.enabled:
            return
        eta = (self.max_steps - step) * (sum(self.times) / len(self.times))
        row = {"step": step, "time": time.time(), "step_time": dt, "eta_s": eta, **metrics}
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        self.update(step=step, metrics=metrics, eta_s=eta)
        if (step % self.log_every == 0 or step == self.max_steps or step == self._first
                or now - self._last_log >= LOG_EVERY_S):
            self._last_log = now
            parts = [f"step {step}/{self.max_steps}"]
            parts += [f"{k} {v:.4g}" for k, v in metrics.items() if k.endswith(("loss", "norm"))]
            parts += [f"{dt:.2f} s/it", f"ETA {format_eta(eta)}"]
            log.info(" | ".join(parts))

    def plot(self) -> Path | None:
        if not self.enabled:
            return None
        path = plot_metrics(read_jsonl(self.metrics_path), PLOT_KEYS, self.plot_path, title=str(self.dir.name))
        if path is not None:
            self.update(plot=str(path))
        return path
