"""Reading torch.distributed.checkpoint (DCP) directories without running code from them.

Checkpoints are shared between people like weights are, so loading one must never execute anything it
contains. Stock DCP does not guarantee that: `FileSystemReader.read_metadata` unpickles `.metadata` with plain
`pickle.load`, and `DefaultLoadPlanner.load_bytes` reads every non-tensor item of a `.distcp` file (optimiser
hyper-parameters, ...) with `torch.load(weights_only=False)`. A crafted `.metadata` or `.distcp` would run its
code on `train run` (auto-resume), `train export`, the toy trainer and the training node.

This module closes both paths:
- `read_metadata` unpickles `.metadata` with an allow-list: only DCP's metadata dataclasses and the few torch
  and pathlib types they hold (found by unpickling real checkpoints of this project). A global outside the list,
  a persistent id, or a BUILD on a class object is refused before anything is called. Shard file names in the
  metadata must be plain names inside the checkpoint folder.
- `SafeReader` (a FileSystemReader) reads its metadata that way and names the shard file in every error.
- `SafeLoadPlanner` (a DefaultLoadPlanner) reads non-tensor items with `torch.load(weights_only=True)`; tensors
  are already read that way by FileSystemReader.

`load(state, path)` is `dcp.load` with both, and errors that name the file: `CheckpointRefused` when a file
holds something that could run code (nothing from it was run), `CheckpointFileError` when it is unreadable.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from .checkpoint import CheckpointFileError, CheckpointRefused

METADATA_FILE = ".metadata"
_DCP_META = "torch.distributed.checkpoint.metadata"
_ALLOWED_NAMES = {
    _DCP_META: {"Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
                "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},  # looks a torch.layout up by its name
    "torch": {"Size"},
    "pathlib": {"PosixPath", "PurePosixPath", "PureWindowsPath"},  # StorageMeta.checkpoint_id (the writer's path)
}
_TORCH_CONSTANTS = (torch.dtype, torch.layout, torch.memory_format)


class _Refused(Exception):
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def _allowed_global(module: str, name: str) -> Any:
    if module == "torch" and name not in _ALLOWED_NAMES["torch"]:
        obj = getattr(torch, name, None)  # dtypes / layouts / memory formats pickle as torch.<name>
        if isinstance(obj, _TORCH_CONSTANTS):
            return obj
        raise _Refused(f"torch.{name}")
    if name not in _ALLOWED_NAMES.get(module, ()):
        raise _Refused(f"{module}.{name}")
    if module == "pathlib":
        return {"PosixPath": PurePosixPath, "PurePosixPath": PurePosixPath, "PureWindowsPath": PureWindowsPath}[name]
    if module == "torch":
        return torch.Size
    import importlib

    return getattr(importlib.import_module(module), name)


class _MetadataUnpickler(pickle._Unpickler):  # the Python unpickler: BUILD can be checked before it runs
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        return _allowed_global(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"persistent id {pid!r}")

    def load_build(self) -> None:
        inst = self.stack[-2]  # the stack ends with: object, state
        if isinstance(inst, type):  # setting attributes on a class would change it for the whole process
            raise _Refused(f"setting the state of the class {inst.__qualname__}")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


def _refused_message(path: Path, what: str) -> str:
    return (f"refused to load {path}: it asks for {what}, which DCP checkpoint data never contains; loading it "
            f"could run code from the file, so nothing from it was run. Use a checkpoint from a source you trust "
            f"(or one this project wrote)")


def read_metadata(path: str | Path) -> Any:
    """Unpickle a DCP `.metadata` file with the allow-list; validate its shard file names."""
    from torch.distributed.checkpoint.metadata import Metadata

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            meta = _MetadataUnpickler(fh).load()
    except _Refused as exc:
        raise CheckpointRefused(_refused_message(path, exc.what)) from None
    except FileNotFoundError:
        raise CheckpointFileError(f"{path} does not exist: the checkpoint is incomplete") from None
    except Exception as exc:  # noqa: BLE001 - truncated or garbage pickles raise many types
        raise CheckpointFileError(f"{path} is not a readable DCP metadata file "
                                  f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(meta, Metadata) or not isinstance(getattr(meta, "storage_data", None), dict):
        raise CheckpointFileError(f"{path} is not DCP metadata (it holds a {type(meta).__name__})")
    for info in meta.storage_data.values():
        rel = getattr(info, "relative_path", None)
        if not isinstance(rel, str) or rel in ("", ".", "..") or "/" in rel or "\\" in rel or os.sep in rel:
            raise CheckpointRefused(f"refused to load {path}: it points at the data file {rel!r}, which is not a "
                                    f"plain file name inside the checkpoint folder")
    return meta


class SafeReader(FileSystemReader):
    """FileSystemReader that reads `.metadata` with the allow-list and names the shard file in errors."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        from torch.distributed.checkpoint.metadata import StorageMeta

        rank = kwargs.get("rank")
        name = METADATA_FILE if rank is None else f"__{rank}{METADATA_FILE}"
        meta = read_metadata(Path(self.path) / name)
        if getattr(meta, "storage_meta", None) is None:
            meta.storage_meta = StorageMeta()
        meta.storage_meta.load_id = self.load_id
        return meta

    def read_data(self, plan: Any, planner: Any) -> Any:
        by_file: dict[str, list] = {}
        for item in plan.items:
            by_file.setdefault(self.storage_data[item.storage_index].relative_path, []).append(item)
        fut = None
        for rel, items in by_file.items():  # one file at a time, so an error can name it
            file = Path(self.path) / rel
            try:
                fut = super().read_data(dataclasses.replace(plan, items=items), planner)
                fut.wait()
            except (CheckpointRefused, CheckpointFileError):
                raise
            except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) refused a global
                raise CheckpointRefused(_refused_message(file, _first_line(exc))) from None
            except Exception as exc:  # noqa: BLE001
                raise CheckpointFileError(f"{file} cannot be read ({type(exc).__name__}: "
                                          f"{_first_line(exc)})") from None
        if fut is None:
            fut = super().read_data(plan, planner)
        return fut


class SafeLoadPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner whose non-tensor items are read with torch.load(weights_only=True)."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointRefused(_refused_message(Path(f"item {read_item.dest_index.fqn!r}"),
                                                     _first_line(exc))) from None
        # hand the stock planner a copy we serialised ourselves (its own torch.load then reads only our bytes)
        buf = io.BytesIO()
        torch.save(obj, buf)
        buf.seek(0)
        super().load_bytes(read_item, buf)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def unwrap(exc: BaseException) -> list[BaseException]:
    """The per-rank causes inside DCP's CheckpointException (or [exc])."""
    failures = getattr(exc, "failures", None)
    if not isinstance(failures, dict) or not failures:
        return [exc]
    out = []
    for wrapped in failures.values():
        out.append(wrapped[0] if isinstance(wrapped, tuple) else getattr(wrapped, "exc", wrapped))
    return out


def load(state: dict[str, Any], path: str | Path) -> None:
    """`dcp.load(state, path)` that never runs code from the checkpoint. The metadata is checked first (a refused
    or broken `.metadata` raises directly); errors while reading shards come back as CheckpointRefused /
    CheckpointFileError naming the file, others as DCP raised them."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    path = Path(path)
    read_metadata(path / METADATA_FILE)
    try:
        with warnings.catch_warnings():  # DCP warns when it loads in a single process: that is intended here
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(path), storage_reader=SafeReader(str(path)),
                     planner=SafeLoadPlanner())
    except (Exception, CheckpointException) as exc:  # noqa: BLE001 - DCP's errors derive from BaseException
        for inner in unwrap(exc):
            if isinstance(inner, (CheckpointRefused, CheckpointFileError)):
                raise inner from None
        raise


__all__ = ["SafeReader", "SafeLoadPlanner", "read_metadata", "load",
           "unwrap", "METADATA_FILE"]
