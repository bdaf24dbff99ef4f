"""Reading a training config: JSON / TOML files, plain data checked field by field against the dataclasses'
type hints (a mistyped value is named with its key, the expected type and the default), dotted overrides.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Mapping

from ..config import ConfigError


def read_file(path: str | Path) -> Any:
    """The plain data of a .json or .toml config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        try:
            import tomllib  # Python 3.11+
        except ImportError:  # pragma: no cover - Python 3.10
            raise ConfigError(f"{path}: TOML configs need Python 3.11 or newer; write the config as JSON") from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None


def plain(x):
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


def build(cls, d: Mapping[str, Any], where: str):
    if not isinstance(d, Mapping):
        raise ConfigError(f"config section {where or '<root>'} must be a table/object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown config keys {[where + k for k in unknown]}; known: {sorted(names)}")
    kw = {}
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kw[k] = build(t, v, f"{where}{k}.")
            continue
        v = tuple(v) if isinstance(v, list) else v
        if not _matches(v, t):
            default = defaults[k]
            example = "" if default is dataclasses.MISSING else f", e.g. {json.dumps(plain(default))} (the default)"
            raise ConfigError(f"{where}{k}={json.dumps(plain(v)) if _jsonable(v) else repr(v)}: expected "
                              f"{_describe(t)}{example}")
        kw[k] = float(v) if t is float else v
    try:
        return cls(**kw)
    except TypeError as exc:
        raise ConfigError(f"bad config section {where or '<root>'}: {exc}") from None


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _matches(v: Any, t: Any) -> bool:
    """Whether a config value fits its field's type hint (JSON types: int for float is fine, bool is no int)."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t is Any:
        return True
    if t is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if t in (bool, str, type(None)):
        return isinstance(v, t)
    if origin is typing.Union or type(t).__name__ == "UnionType":
        return any(_matches(v, a) for a in args)
    if origin is tuple:
        if not isinstance(v, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(x, args[0]) for x in v)
        return len(v) == len(args) and all(_matches(x, a) for x, a in zip(v, args))
    if origin in (dict, Mapping) or t in (dict, Mapping):
        return isinstance(v, Mapping)
    return True  # a type this check does not know: the dataclass validates it


def _describe(t: Any) -> str:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if t in _NAMES:
        return _NAMES[t]
    if origin is typing.Union or type(t).__name__ == "UnionType":
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if origin in (dict, Mapping) or t in (dict, Mapping):
        return "an object"
    return str(t)


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(plain(v))
        return True
    except (TypeError, ValueError):
        return False


def apply_overrides(cfg, overrides: Mapping[str, Any]):
    """Dotted-key overrides: {"optim.lr": 1e-5, "rollout.num_frames": 9}; string values are parsed as JSON
    when they look like JSON (numbers, true/false, lists), else kept as strings."""
    d = cfg.to_dict()
    for key, value in overrides.items():
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a config section")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"override {key!r}: unknown key {parts[-1]!r}; known: {sorted(node)}")
        node[parts[-1]] = value
    return type(cfg).from_dict(d)


def parse_set_args(items: list[str] | None) -> dict[str, str]:
    """['optim.lr=1e-5', ...] -> {'optim.lr': '1e-5'} (CLI --set)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=1e-5")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out
