"""Resumable training checkpoints through torch.distributed.checkpoint (DCP), written atomically.

Layout under `<out_dir>/checkpoints/`:

    step_0000050/            a complete checkpoint (renamed into place only when everything is written)
      .metadata, *.distcp    DCP: generator / critic weights, both optimisers, EMA shadow (sharded per rank,
                             reshardable to any world size)
      rng_rank00000.pt ...   each rank's global RNG state (loaded with weights_only=True)
      train_state.json       step, data position, whether the EMA exists, world size, the run config
    .tmp-step_0000060/       a checkpoint being written (ignored by resume, removed by the next save)
    step_0000070.incomplete/ a step folder found without its .metadata or train_state.json when step 70 was saved
                             again (kept for inspection, never resumed from; delete it when done)

Only the last `keep_last` complete checkpoints are kept; older ones are removed after a new one is in place.
A checkpoint that cannot be read is reported with its path and the alternatives; nothing is deleted then.
Loading never runs code from the checkpoint (it may come from someone else): the DCP files are read through
`dcp_safe` (allow-listed metadata unpickler, weights-only items), the RNG files with weights_only=True, and
train_state.json is parsed as JSON and checked field by field.
The directory must be on a filesystem all ranks share (multi-node runs).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from .distributed import DistInfo, barrier
from .rng import rng_state, set_rng_state

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step_(\d{7,})$")
STATE_FILE = "train_state.json"


class CheckpointCorrupt(ConfigError):
    """A checkpoint that cannot be resumed from (message names it and the alternatives)."""


class CheckpointRefused(CheckpointCorrupt):
    """A checkpoint file holds something that could run code when loaded; it was refused and nothing ran."""


class CheckpointFileError(CheckpointCorrupt):
    """A checkpoint file that cannot be read (truncated, not the expected format); the message names it."""


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def step_name(step: int) -> str:
    return f"step_{step:07d}"


def is_complete(path: Path) -> bool:
    return path.is_dir() and (path / STATE_FILE).is_file() and (path / ".metadata").is_file()


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and is_complete(p)]
    return [p for _, p in sorted(found)]


def incomplete(out_dir: str | Path) -> list[Path]:
    """Step folders that are not complete checkpoints (damaged or partly copied), oldest first."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and not is_complete(p)]
    return [p for _, p in sorted(found)]


def latest(out_dir: str | Path) -> Path | None:
    ck = list_checkpoints(out_dir)
    return ck[-1] if ck else None


def _alternatives(path: Path) -> str:
    others = [str(p) for p in list_checkpoints(path.parent.parent) if p != path]
    return (f"; other checkpoints: {others} (resume from one with checkpoint.resume=PATH)" if others
            else "; start a new run (checkpoint.resume=none, or another out_dir)")


def _is_count(v: Any, minimum: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def validate_train_state(state: Any, where: str) -> dict[str, Any]:
    """Check the fields of a train_state.json (plain data; each wrong field is named)."""
    if not isinstance(state, dict):
        raise CheckpointFileError(f"{where} holds a JSON {type(state).__name__}, not an object")
    problems = []
    for key, minimum, required in (("step", 0, True), ("data_position", 0, True), ("world", 1, False)):
        if (required or key in state) and not _is_count(state.get(key), minimum):
            problems.append(f"{key}={state.get(key)!r} (an integer >= {minimum})")
    if "ema" in state and not isinstance(state["ema"], bool):
        problems.append(f"ema={state['ema']!r} (true or false)")
    if "method" in state and not isinstance(state["method"], str):
        problems.append(f"method={state['method']!r} (a method name)")
    for key in ("config", "wan_config"):
        if key in state and not isinstance(state[key], dict):
            problems.append(f"{key} is a {type(state[key]).__name__} (an object)")
    if problems:
        raise CheckpointFileError(f"{where} has invalid fields: {', '.join(problems)}")
    return state


def read_train_state(path: str | Path) -> dict[str, Any]:
    """Parse and check a checkpoint's train_state.json, with a clear error if the checkpoint is broken."""
    path = Path(path)
    hint = _alternatives(path)
    if not path.is_dir():
        raise CheckpointCorrupt(f"checkpoint {path} does not exist{hint}")
    if not (path / ".metadata").is_file():
        raise CheckpointCorrupt(f"checkpoint {path} is incomplete (no DCP .metadata){hint}")
    file = path / STATE_FILE
    try:
        if file.stat().st_size > 16 << 20:
            raise ValueError(f"{file.stat().st_size} bytes, far more than a train state")
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointFileError(f"checkpoint {path} has no readable {STATE_FILE} ({exc}){hint}") from None
    try:
        return validate_train_state(state, str(file))
    except CheckpointFileError as exc:
        raise CheckpointFileError(f"{exc}{hint}") from None


def load_rng_file(path: Path) -> dict[str, torch.Tensor]:
    """A rank's RNG state file: weights_only, then checked to be {"cpu": uint8 tensor[, "cuda": ...]}."""
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise CheckpointRefused(f"refused to load {path}: it holds more than an RNG state ({first}); loading it "
                                f"could run code from the file, so nothing from it was run") from None
    except Exception as exc:  # noqa: BLE001 - truncated zips, garbage: many types
        raise CheckpointFileError(f"{path} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
                                  f"delete it to resume without restoring that rank's RNG state") from None
    ok = isinstance(st, dict) and set(st) <= {"cpu", "cuda"} and "cpu" in st and all(
        isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 1 for v in st.values())
    if not ok:
        raise CheckpointFileError(f"{path} is not an RNG state (expected {{'cpu': uint8 tensor}}, got "
                                  f"{type(st).__name__}); delete it to resume without restoring the RNG state")
    return st


def save(out_dir: str | Path, step: int, state: dict[str, Any], train_state: dict[str, Any], info: DistInfo,
         keep_last: int) -> Path:
    """Write checkpoint `step` (collective: every rank calls it with its shard of `state`)."""
    import torch.distributed.checkpoint as dcp

    root = checkpoint_root(out_dir)
    final = root / step_name(step)
    tmp = root / f".tmp-{step_name(step)}"
    if is_complete(final):  # e.g. stopping right after a resume: the same step is already saved
        return final
    if info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        if final.exists():  # an incomplete folder of this step is in the way of the rename: move it aside
            aside = _free_name(root, f"{final.name}.incomplete")
            os.replace(final, aside)
            log.warning("%s was incomplete (no .metadata or %s); moved it to %s and saving step %d anew",
                        final, STATE_FILE, aside, step)
    barrier(info)
    dcp.save(state, checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / f"rng_rank{info.rank:05d}.pt")
    barrier(info)
    if info.is_main:
        st = dict(train_state, step=step, world=info.world)
        with open(tmp / STATE_FILE, "w", encoding="utf-8") as f:
            json.dump(st, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)  # the atomic step: a checkpoint exists completely or not at all
        for old in list_checkpoints(out_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(".tmp-step_*"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier(info)
    return final


def _free_name(root: Path, name: str) -> Path:
    path, i = root / name, 1
    while path.exists():
        i += 1
        path = root / f"{name}{i}"
    return path


def load(path: str | Path, state: dict[str, Any], info: DistInfo) -> dict[str, Any]:
    """Fill `state` (same structure as saved) in place from checkpoint `path`; restore this rank's RNG if the
    world size is unchanged. Returns the train state. Runs no code from the checkpoint's files."""
    from . import dcp_safe

    path = Path(path)
    train_state = read_train_state(path)
    rng = path / f"rng_rank{info.rank:05d}.pt"
    same_world = int(train_state.get("world", info.world)) == info.world
    rng_state_saved = load_rng_file(rng) if rng.is_file() and same_world else None  # checked before any change
    try:
        dcp_safe.load(state, path)
    except CheckpointCorrupt as exc:
        raise type(exc)(f"checkpoint {path} cannot be loaded: {exc}. Nothing was changed{_alternatives(path)}"
                        ) from None
    except BaseException as exc:  # noqa: BLE001 - DCP's CheckpointException derives from BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise CheckpointCorrupt(
            f"checkpoint {path} cannot be loaded ({describe_error(exc)}). It is damaged or was "
            f"written by a different configuration; nothing was changed{_alternatives(path)}") from None
    if rng_state_saved is not None:
        try:
            set_rng_state(rng_state_saved)
        except RuntimeError as exc:
            raise CheckpointFileError(f"{rng} holds an RNG state this torch cannot use ({exc}); delete it to "
                                      f"resume without restoring the RNG state") from None
    return train_state


def describe_error(exc: BaseException) -> str:
    """One line for an exception; DCP's CheckpointException carries the per-rank causes in `failures`."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        rank, wrapped = next(iter(failures.items()))
        inner = wrapped[0] if isinstance(wrapped, tuple) else getattr(wrapped, "exc", wrapped)
        return f"rank {rank}: {type(inner).__name__}: {str(inner)[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def resolve_resume(resume: str, out_dir: str | Path) -> Path | None:
    """checkpoint.resume -> the checkpoint to load: auto = the latest complete one (None if there is none),
    none = never, else a path (validated)."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest(out_dir)
    path = Path(resume)
    read_train_state(path)
    return path
