"""Reading checkpoint *containers* safely: safetensors (single file or sharded with an index) and PyTorch
pickles (`.pt`), the latter only with `torch.load(weights_only=True)` -- a pickle that needs code execution
is refused, never run.

A path may be a weights file, a shard, an index JSON or a directory. `read` returns the raw tensors (or the
unpickled object) plus the header metadata and a `config.json` found beside Wan/diffusers weights; what the
tensors *mean* is decided in `checkpoints.py`. Every failure is a `CheckpointError` naming the file and the fix.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

log = logging.getLogger(__name__)

SAFETENSORS_EXT = (".safetensors", ".sft")
PICKLE_EXT = (".pt", ".pth", ".ckpt", ".bin")
WAN_WEIGHTS = "diffusion_pytorch_model.safetensors"
_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<i>\d+)-of-(?P<n>\d+)\.safetensors$")
# torch's weights-only unpickler names what it refused: "Unsupported global: GLOBAL fractions.Fraction ..." (a
# module it does not allow-list) or, since ~2.7, "unsupported GLOBAL posix.system whose module posix is blocked"
_UNSAFE_GLOBAL_RE = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", re.IGNORECASE)


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file, what is wrong and how to fix it."""


@dataclass
class RawCheckpoint:
    """What a path holds before interpretation.

    container: "safetensors" | "sharded_safetensors" | "pickle".
    tensors: flat name -> tensor (safetensors); obj: the unpickled object (pickle).
    metadata: safetensors header metadata (str -> str; shards merged) or the index's "metadata".
    config_json: the parsed config.json beside Wan2.1 / diffusers weights, if any.
    """

    path: Path
    files: list[Path]
    container: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    obj: Any = None
    metadata: dict[str, str] = field(default_factory=dict)
    config_json: dict | None = None


def read(path: str | Path) -> RawCheckpoint:
    """Resolve `path` (file, shard, index or directory) and read it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (or download it first)")
    if path.is_dir():
        target = _pick_in_dir(path)
    else:
        target = path
    name = target.name
    if name.endswith(".index.json"):
        raw = _read_sharded(path, target)
    elif _SHARD_RE.match(name):
        raw = _read_sharded(path, _index_for_shard(target))
    elif name.lower().endswith(SAFETENSORS_EXT):
        raw = RawCheckpoint(path, [target], "safetensors")
        raw.tensors, raw.metadata = _read_safetensors(target)
    elif name.lower().endswith(PICKLE_EXT):
        raw = RawCheckpoint(path, [target], "pickle", obj=read_pickle(target))
    else:
        kind = _sniff(target)
        if kind == "safetensors":
            raw = RawCheckpoint(path, [target], "safetensors")
            raw.tensors, raw.metadata = _read_safetensors(target)
        else:
            raw = RawCheckpoint(path, [target], "pickle", obj=read_pickle(target))
    # config.json beside Wan / diffusers weights describes them; elsewhere it may belong to anything else
    if target.name.startswith("diffusion_pytorch_model") or raw.container == "sharded_safetensors":
        raw.config_json = _read_config_json(target.parent / "config.json")
    return raw


# ------------------------------------------------------------------------------------------ resolution
def _pick_in_dir(d: Path) -> Path:
    indexes = sorted(d.glob("*.safetensors.index.json"))
    if len(indexes) == 1:
        return indexes[0]
    if len(indexes) > 1:
        raise CheckpointError(f"directory {d} holds several index files ({', '.join(p.name for p in indexes)}); "
                              "pass the one you want")
    if (d / WAN_WEIGHTS).is_file():
        return d / WAN_WEIGHTS
    weights = sorted(p for p in d.iterdir() if p.is_file() and p.name.lower().endswith(SAFETENSORS_EXT + PICKLE_EXT))
    shards = [p for p in weights if _SHARD_RE.match(p.name)]
    if shards and len(shards) == len(weights):
        return shards[0]
    if len(weights) == 1:
        return weights[0]
    if not weights:
        present = sorted(p.name for p in d.iterdir())[:8]
        raise CheckpointError(
            f"directory {d} holds no weights (.safetensors / .pt / .pth / .ckpt / .bin); it contains "
            f"{present or 'nothing'}. Point to the folder of a Wan2.1 model (with {WAN_WEIGHTS} or its shards "
            "and index) or to a weights file")
    raise CheckpointError(f"directory {d} holds several weight files ({', '.join(p.name for p in weights[:6])}); "
                          "pass the file you want")


def _index_for_shard(shard: Path) -> Path:
    m = _SHARD_RE.match(shard.name)
    index = shard.parent / f"{m['stem']}.safetensors.index.json"
    if index.is_file():
        return index
    # no index: the shard names themselves say how many there are
    n, width = int(m["n"]), len(m["i"])
    files = [shard.parent / f"{m['stem']}-{i:0{width}d}-of-{m['n']}.safetensors" for i in range(1, n + 1)]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise CheckpointError(f"{shard} is shard {int(m['i'])} of {n} but {', '.join(missing[:4])} "
                              f"{'is' if len(missing) == 1 else 'are'} missing from {shard.parent} (and there is no "
                              f"{index.name}); download every shard")
    return shard  # sentinel: _read_sharded globs the siblings


def _read_sharded(given: Path, index: Path) -> RawCheckpoint:
    if index.name.endswith(".index.json"):
        try:
            spec = json.loads(index.read_text())
            weight_map = dict(spec["weight_map"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"index {index} is not a valid safetensors index (needs a 'weight_map' "
                                  f"object: {exc}); download it again") from exc
        shard_names = sorted(set(weight_map.values()))
        files = [index.parent / s for s in shard_names]
        missing = [p.name for p in files if not p.is_file()]
        if missing:
            raise CheckpointError(f"index {index} lists shards that are missing from {index.parent}: "
                                  f"{', '.join(missing[:4])}; download every shard")
        meta = {k: str(v) for k, v in (spec.get("metadata") or {}).items()}
    else:
        m = _SHARD_RE.match(index.name)
        width = len(m["i"])
        files = [index.parent / f"{m['stem']}-{i:0{width}d}-of-{m['n']}.safetensors" for i in range(1, int(m["n"]) + 1)]
        weight_map, meta = None, {}
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        part, md = _read_safetensors(f)
        dup = set(part) & set(tensors)
        if dup:
            raise CheckpointError(f"shard {f} repeats keys of another shard ({', '.join(sorted(dup)[:3])}); "
                                  "the shards are from different models or versions; download them again")
        tensors.update(part)
        meta.update(md)
        if weight_map is not None:
            wrong = [k for k in part if weight_map.get(k) != f.name]
            if wrong:
                raise CheckpointError(f"shard {f} holds keys its index does not assign to it "
                                      f"({', '.join(wrong[:3])}); the index and shards do not match")
    if weight_map is not None:
        absent = sorted(set(weight_map) - set(tensors))
        if absent:
            raise CheckpointError(f"index {index} lists keys that no shard holds ({', '.join(absent[:3])}); "
                                  "a shard is truncated or from another version; download it again")
    return RawCheckpoint(given, files, "sharded_safetensors", tensors=tensors, metadata=meta)


def _sniff(path: Path) -> str:
    head = _head(path, 16)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise CheckpointError(f"{path} is neither safetensors nor a PyTorch checkpoint (unknown format, first bytes "
                          f"{head[:8]!r}); use a .safetensors or .pt file of a Wan2.1 model")


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            head = fh.read(n)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or copy did not finish; fetch the file again")
    return head


# ------------------------------------------------------------------------------------------ readers
def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    _head(path, 1)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as exc:
        msg = str(exc)
        why = ("truncated (the file is shorter than its header says)" if "not fully covered" in msg
               or "incomplete" in msg else "corrupt or not a safetensors file")
        raise CheckpointError(f"{path} is {why}: {msg}. Download or copy it again") from exc
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read {path} as safetensors ({exc}); download or copy it again") from exc
    return tensors, meta


def pickle_only_folder(folder: Path) -> list[str]:
    """The pickle weight files of a model folder (e.g. transformers' pytorch_model.bin) when it has no
    .safetensors file, else []: such a folder would be loaded by unpickling, which can run code."""
    folder = Path(folder)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_EXT)


def refuse_pickle_folder(folder: Path, what: str) -> None:
    """CheckpointError naming the folder and the fix if `pickle_only_folder` finds pickle weights only."""
    pickles = pickle_only_folder(folder)
    if pickles:
        raise CheckpointError(
            f"{what} {folder} holds only pickle weights ({', '.join(pickles[:3])}): loading them could run code "
            f"stored in the file, so they are refused. Use the model's safetensors files (model.safetensors), or "
            f"convert them once where you trust the file: transformers' save_pretrained(..., "
            f"safe_serialization=True)")


def read_pickle(path: Path) -> Any:
    """torch.load with weights_only=True (never executes code), memory-mapped when the format allows."""
    head = _head(path, 16)
    if not (head[:2] == b"PK" or head[:1] == b"\x80"):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (unknown format, first bytes {head[:8]!r}); "
                              "use a .safetensors or .pt file of a Wan2.1 model")
    mmap = head[:2] == b"PK"  # only the zip format can be memory-mapped
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - translate every failure of an untrusted file
        msg = str(exc)
        m = _UNSAFE_GLOBAL_RE.search(msg)
        if m:
            raise CheckpointError(
                f"refused to load {path}: its pickle needs code execution (it references {m.group(1)}), which "
                "could run arbitrary code, so it was not executed. Weights-only checkpoints never need this; if "
                "you trust the file, re-save just its tensors (`torch.save(state_dict)` or safetensors) in a "
                "trusted environment and load that") from exc
        if "central directory" in msg or isinstance(exc, EOFError) or "unexpected EOF" in msg:
            raise CheckpointError(f"{path} is truncated or corrupt ({msg.splitlines()[0] if msg else type(exc).__name__}); "
                                  "download or copy it again") from exc
        raise CheckpointError(f"{path} is not a readable weights-only PyTorch checkpoint "
                              f"({type(exc).__name__}: {msg.splitlines()[-1] if msg else ''}); "
                              "download it again or convert it to safetensors") from exc


def _read_config_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} does not hold a JSON object; fix or delete it")
    return cfg
