"""Resumable training checkpoints through torch.distributed.checkpoint (DCP), written atomically.

Layout under `<out_dir>/checkpoints/`:

    step_0000050/            a complete checkpoint (renamed into place only when everything is written)
      .metadata, *.distcp    DCP: generator / critic weights, both optimisers, EMA shadow (sharded per rank,
                             reshardable to any world size)
      rng_rank00000.pt ...   each rank's global RNG state (loaded with weights_only=True)
      train_state.json       step, data position, whether the EMA exists, world size, the run config
    .tmp-step_0000060/       a checkpoint being written (ignored by resume, removed by the next save)

Only the last `keep_last` complete checkpoints are kept; older ones are removed after a new one is in place.
A checkpoint that cannot be read is reported with its path and the alternatives; nothing is deleted then.
The directory must be on a filesystem all ranks share (multi-node runs).
"""
from __future__ import annotations

import json
import logging
import os
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


def latest(out_dir: str | Path) -> Path | None:
    ck = list_checkpoints(out_dir)
    return ck[-1] if ck else None


def read_train_state(path: str | Path) -> dict[str, Any]:
    """Parse a checkpoint's train_state.json, with a clear error if the checkpoint is broken."""
    path = Path(path)
    others = [str(p) for p in list_checkpoints(path.parent.parent) if p != path]
    hint = (f"; other checkpoints: {others} (resume from one with checkpoint.resume=PATH)" if others
            else "; start a new run (checkpoint.resume=none, or another out_dir)")
    if not path.is_dir():
        raise CheckpointCorrupt(f"checkpoint {path} does not exist{hint}")
    if not (path / ".metadata").is_file():
        raise CheckpointCorrupt(f"checkpoint {path} is incomplete (no DCP .metadata){hint}")
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        int(state["step"]), int(state["data_position"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointCorrupt(f"checkpoint {path} has no readable {STATE_FILE} ({exc}){hint}") from None
    return state


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


def load(path: str | Path, state: dict[str, Any], info: DistInfo) -> dict[str, Any]:
    """Fill `state` (same structure as saved) in place from checkpoint `path`; restore this rank's RNG if the
    world size is unchanged. Returns the train state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    path = Path(path)
    train_state = read_train_state(path)
    try:
        dcp.load(state, checkpoint_id=str(path))
    except (Exception, CheckpointException) as exc:  # noqa: BLE001 - DCP's errors derive from BaseException
        others = [str(p) for p in list_checkpoints(path.parent.parent) if p != path]
        raise CheckpointCorrupt(
            f"checkpoint {path} cannot be loaded ({describe_error(exc)}). It is damaged or was "
            f"written by a different configuration; nothing was changed. Other checkpoints: {others or 'none'}; "
            f"resume from one with checkpoint.resume=PATH") from None
    rng = path / f"rng_rank{info.rank:05d}.pt"
    if rng.is_file() and int(train_state.get("world", info.world)) == info.world:
        set_rng_state(torch.load(rng, weights_only=True))
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
