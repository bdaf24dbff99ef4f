"""Session files: a `Session` as one safetensors file (tensors) with its state as JSON metadata.

Tensors: `cache.k.<layer>` / `cache.v.<layer>` (the valid rows of the self-attention KV cache; the text's
cross-attention cache is rebuilt from the conditioning), `rng` (the CPU generator state), `held` (clean latents
of the cached frames), `context` (the conditioning of the last chunk), `prompt.<i>` (the schedule's
conditionings), `decoder.<i>` (tensors of the chunk decoder's state), `pending` (the rolling sampler's noisy
chunks in flight, `sf_core.sampling.rolling`). Metadata `sf_session`: everything else
(format version, sampling settings, model identity, sizes, positions, schedule, decoder-state structure).

`include_cache=False` writes a small file without the KV cache; loading it recomputes the cache from the held
latents under the last conditioning (one context pass per chunk in the window; needs the model). That is
exact for a video still inside a global cache, an approximation once a rolling window has evicted frames.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..config import ConfigError
from .denoiser import Denoiser
from ..fileio import atomic_path
from ..cache.kv_cache import KVCache
from .prompts import PromptEntry, PromptError, PromptSchedule
from .session import SamplingSettings, Session, SessionError, recommit
from .session_limits import check_declared_sizes

FORMAT = "sf_session"
VERSION = 1
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}


def save_session(session: Session, path: str | Path, *, include_cache: bool = True) -> Path:
    """Write `session` to `path` (.safetensors); returns the path. The session itself is not changed."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    try:
        cache_meta, cache_rows = session.cache.state(include_rows=include_cache and not session.cache_stale)
    except RuntimeError as exc:
        raise SessionError("cannot save a session while a chunk is being generated") from exc
    tensors.update({f"cache.{k}": v for k, v in cache_rows.items()})
    tensors["rng"] = session.generator.get_state()
    held_frames = sorted(session.held)
    if held_frames:
        tensors["held"] = torch.stack([session.held[f] for f in held_frames], dim=2)
    if session.context is not None:
        tensors["context"] = session.context
    if session.pending is not None:  # the rolling sampler's chunks in flight
        tensors["pending"] = session.pending
    for i, e in enumerate(session.prompts.entries):
        tensors[f"prompt.{i}"] = e.context
    decoder_spec = _pack(session.decoder_state, "decoder", tensors)
    meta = {
        "format": FORMAT, "version": VERSION, "settings": session.settings.to_dict(), "model": session.model_id,
        "batch": session.batch, "latent_hw": list(session.latent_hw), "channels": session.channels,
        "seed": session.seed, "dtype": _dtype_name(session.dtype), "next_frame": session.next_frame,
        "chunk_index": session.chunk_index, "held_frames": held_frames, "cache_stale": session.cache_stale,
        "cache": cache_meta,
        "prompts": {"policy": session.prompts.policy, "transition_chunks": session.prompts.transition_chunks,
                    "entries": [{"start_chunk": e.start_chunk, "text": e.text} for e in session.prompts.entries]},
        "decoder": decoder_spec, "decoded_frames": session.decoded_frames,
        "sampled_chunks": session.sampled_chunks,
        "uncommitted": None if session.uncommitted is None else list(session.uncommitted),
    }
    # independent CPU copies: safetensors refuses tensors that share storage
    out = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:  # a crash never leaves a half-written session; umask permissions
        save_file(out, str(tmp), metadata={"format": FORMAT, FORMAT: json.dumps(meta)})
    return path


def load_session(path: str | Path, model=None, *, device: torch.device | str | None = None,
                 backend: str = "sdpa") -> Session:
    """Read a session file. With `model`, check it is the model the session was made with (SessionError if not).

    device: where the cache goes (default: the model's device, else CPU). A file written without its KV cache
    needs `model` to recompute it.
    """
    path = Path(path)
    if not path.is_file():
        raise SessionError(f"session file {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            md = f.metadata() or {}
            if md.get("format") != FORMAT or FORMAT not in md:
                raise SessionError(f"{path} is not a Self Forcing session file (no '{FORMAT}' metadata); session "
                                   f"files are written by save_session / `python -m sf_core generate --save-session`")
            meta = json.loads(md[FORMAT])
            if device is None:
                device = model.patch_embedding.weight.device if model is not None else "cpu"
            device = torch.device(device)
            # every size the file declares is checked against what it holds before anything is allocated
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            check_declared_sizes(meta, shapes, model, _DTYPES[meta["dtype"]], device, path.stat().st_size)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SessionError:
        raise
    except (SafetensorError, OSError) as exc:
        raise SessionError(f"{path} is not a readable session file (truncated or corrupt?): {exc}") from exc
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise SessionError(f"{path} is a damaged session file ({type(exc).__name__}: {exc})") from exc
    try:
        return _build(meta, tensors, model, device, backend)
    except SessionError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, ConfigError, PromptError) as exc:
        raise SessionError(f"{path} is a damaged session file ({type(exc).__name__}: {exc})") from exc


def _build(meta: dict, tensors: dict[str, torch.Tensor], model, device, backend: str) -> Session:
    if int(meta["version"]) > VERSION:
        raise SessionError(f"session format version {meta['version']} is newer than this sf_core ({VERSION}); "
                           f"update the pack")
    if device is None:
        device = model.patch_embedding.weight.device if model is not None else "cpu"
    device = torch.device(device)
    dtype = _DTYPES[meta["dtype"]]
    pm = meta["prompts"]
    entries = tuple(PromptEntry(int(e["start_chunk"]), tensors[f"prompt.{i}"], e.get("text"))
                    for i, e in enumerate(pm["entries"]))
    prompts = PromptSchedule(entries, policy=pm["policy"], transition_chunks=int(pm["transition_chunks"]))
    gen = torch.Generator("cpu")
    gen.set_state(tensors["rng"])
    cm = dict(meta["cache"])
    settings = SamplingSettings.from_dict(meta["settings"])
    cm.setdefault("batch", meta["batch"])
    cm.setdefault("rope_mode", settings.rope_mode)  # files from before relative positions
    rows = {k.removeprefix("cache."): v for k, v in tensors.items() if k.startswith("cache.")}
    try:
        cache = KVCache.from_state(cm, rows, device=device, dtype=dtype)
    except (KeyError, ValueError) as exc:
        raise SessionError(f"the KV cache in the file does not match its metadata ({exc}): the file is damaged") from exc
    held_frames = [int(f) for f in meta["held_frames"]]
    held = {}
    if held_frames:
        lat = tensors["held"].to(device)
        held = {f: lat[:, :, j] for j, f in enumerate(held_frames)}
    context = tensors.get("context")
    session = Session(settings=settings, cache=cache, prompts=prompts,
                      generator=gen, batch=int(meta["batch"]), latent_hw=tuple(meta["latent_hw"]),
                      channels=int(meta["channels"]), model_id=meta["model"], seed=int(meta["seed"]), dtype=dtype,
                      next_frame=int(meta["next_frame"]), chunk_index=int(meta["chunk_index"]), held=held,
                      context=context, decoder_state=_unpack(meta["decoder"], "decoder", tensors, device),
                      decoded_frames=int(meta["decoded_frames"]), cache_stale=bool(meta.get("cache_stale")),
                      pending=tensors["pending"].to(device=device, dtype=dtype) if "pending" in tensors else None,
                      sampled_chunks=int(meta.get("sampled_chunks", meta["chunk_index"])),
                      uncommitted=_frames_pair(meta.get("uncommitted"), held_frames))
    if model is not None:
        session.check_model(model)
    if not cm["included"] and held_frames:
        if model is None:
            raise SessionError("this session file was saved without its KV cache: pass the model to load_session "
                               "so the cache can be recomputed from the saved latents")
        if context is None:
            raise SessionError("session file without KV cache and without conditioning: cannot rebuild the cache")
        ctx = context.to(device).expand(session.batch, -1, -1)
        den = Denoiser(model, session.settings.schedule, ctx, dtype=dtype, backend=backend)
        st = session.settings
        recommit(den, cache, held_frames, torch.stack([held[f] for f in held_frames], 2), st.causal, st.context_t)
        session.cache_stale = False
        session.uncommitted = None
    return session


def _frames_pair(value, held_frames: list[int]) -> tuple[int, int] | None:
    """The deferred chunk's frames [a, b) (merged commits); their clean latents must be in the file."""
    if value is None:
        return None
    a, b = (int(x) for x in value)
    if not a < b or any(f not in held_frames for f in range(a, b)):
        raise SessionError(f"uncommitted frames {a}..{b - 1} have no saved latents: the file is damaged")
    return a, b


def _dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise SessionError(f"sessions support dtypes {sorted(_DTYPES)}, got {dtype}")
    return name


# ------------------------------------------------------------------------------------------------------
# decoder state: a tree of tensors, lists/tuples, str-keyed dicts, scalars and sf_core dataclasses; sf_core
# classes with `to_tensors(prefix)` / `from_tensors(d, prefix)` (the VAE states) are stored their own way

def _pack(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"v": obj}
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{sum(k.startswith(prefix + '.') for k in tensors)}"
        tensors[key] = obj
        return {"t": key}
    if isinstance(obj, (list, tuple)):
        return {"l" if isinstance(obj, list) else "u": [_pack(x, prefix, tensors) for x in obj]}
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return {"d": {k: _pack(v, prefix, tensors) for k, v in obj.items()}}
    cls_name = f"{type(obj).__module__}:{type(obj).__qualname__}"
    if hasattr(obj, "to_tensors") and hasattr(type(obj), "from_tensors") and cls_name.startswith("sf_core."):
        sub = f"{prefix}.s{sum(k.startswith(prefix + '.s') for k in tensors)}."  # the VAE states' own format
        tensors.update(obj.to_tensors(sub))
        return {"s": cls_name, "p": sub}
    if dataclasses.is_dataclass(obj) and type(obj).__module__.startswith("sf_core."):
        fields = {f.name: _pack(getattr(obj, f.name), prefix, tensors) for f in dataclasses.fields(obj)}
        return {"c": cls_name, "f": fields}
    raise SessionError(f"the chunk decoder's state contains a {type(obj).__name__}, which a session file cannot "
                       f"store (allowed: tensors, lists, tuples, str-keyed dicts, numbers, strings, None and "
                       f"sf_core dataclasses); save the session without the decoder state")


def _unpack(spec: Any, prefix: str, tensors: dict[str, torch.Tensor], device: torch.device) -> Any:
    if "v" in spec:
        return spec["v"]
    if "t" in spec:
        return tensors[spec["t"]].to(device)
    if "l" in spec:
        return [_unpack(x, prefix, tensors, device) for x in spec["l"]]
    if "u" in spec:
        return tuple(_unpack(x, prefix, tensors, device) for x in spec["u"])
    if "d" in spec:
        return {k: _unpack(v, prefix, tensors, device) for k, v in spec["d"].items()}
    if "s" in spec:
        sub = spec["p"]
        return _state_class(spec["s"]).from_tensors({k: v.to(device) for k, v in tensors.items()
                                                     if k.startswith(sub)}, sub)
    if "c" in spec:
        cls = _state_class(spec["c"])
        if not dataclasses.is_dataclass(cls):
            raise SessionError(f"decoder state class {spec['c']} is not a dataclass")
        return cls(**{k: _unpack(v, prefix, tensors, device) for k, v in spec["f"].items()})
    raise SessionError(f"unknown decoder state entry {spec}")


def _state_class(name: str):
    module, qualname = name.split(":")
    if not module.startswith("sf_core."):  # never import arbitrary modules named by a file
        raise SessionError(f"decoder state class {name} is not part of sf_core")
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    return cls


__all__ = ["save_session", "load_session", "FORMAT", "VERSION"]
