"""What a session file may make the loader allocate, checked before anything is allocated.

A session file is small but declares sizes (cache layers, heads, window, tokens per frame, picture size) that
the loader turns into preallocated buffers. A file from outside (ComfyUI's `/upload/image` puts one in the
input folder) must not make a server allocate gigabytes: every declared size is checked against the tensors
the file really holds (their shapes are read from the header, nothing is loaded), against the model identity
written in the same file, against the model the caller passes, and against sane bounds:

- a file *with* its KV cache: the rows it holds back every dimension; a rolling window may exceed the stored
  frames by at most `MAX_PREALLOC_RATIO` (a window of 21 latent frames saved after one chunk of 1 or 3 frames is
  21x or 7x); a global cache grows on demand, so its declared capacity is only preallocated up to that ratio;
- a file *without* its KV cache: refused without a model (nothing to recompute the cache with); with one, the
  declared layers/heads/head size/tokens per frame must be the model's, so the cache is the size a generation
  at that picture size would allocate anyway, and it must fit in the memory free on the target device.
"""
from __future__ import annotations

from typing import Any

import torch

from ..cache import kv_quant
from ..config import ConfigError
from .session import SessionError, check_model_shape

MAX_PREALLOC_RATIO = 64  # preallocated cache frames per stored frame (a file with its cache)
MAX_DIM = 1 << 20  # any single declared size (layers, heads, head size, tokens, frames, batch)
SMALL_BYTES = 64 << 20  # allocations below this are never refused by the ratio rule


def _int(meta: dict, key: str, lo: int = 0) -> int:
    try:
        v = int(meta[key])
    except (KeyError, TypeError, ValueError):
        raise SessionError(f"the session file's cache metadata has no valid '{key}' (got {meta.get(key)!r}): the "
                           f"file is damaged") from None
    if not lo <= v <= MAX_DIM:
        raise SessionError(f"the session file declares cache {key} = {v}, outside {lo}..{MAX_DIM}: the file is "
                           f"damaged or crafted; refused before allocating anything")
    return v


def check_declared_sizes(meta: dict, shapes: dict[str, tuple[int, ...]], model: Any, dtype: torch.dtype,
                         device: torch.device, file_bytes: int) -> int:
    """SessionError unless the cache `meta` declares is backed by the file (`shapes`: tensor name -> shape) or by
    `model`; returns the bytes the cache will preallocate. A global cache's capacity (a preallocation hint: it grows
    on demand) is clamped in `meta` to `MAX_PREALLOC_RATIO` x the stored frames instead of being refused."""
    cm = meta["cache"]
    layers, heads, head_dim = _int(cm, "num_layers", 1), _int(cm, "num_heads", 1), _int(cm, "head_dim", 1)
    tpf, batch, length = _int(cm, "tokens_per_frame", 1), _int(cm, "batch", 1), _int(cm, "length")
    window = cm.get("window_frames")
    if window:
        frames = _int(cm, "window_frames", 1)
    else:  # a global cache grows on demand: its declared capacity is only a preallocation hint, clamped here
        frames = max(min(max(_int(cm, "capacity"), 1), MAX_PREALLOC_RATIO * max(length, 1)), length, 1)
        cm["capacity"] = frames
    try:  # the storage format the cache will allocate (auto = the compute dtype, int8 / fp8 / bf16 / fp16 codes)
        element = kv_quant.resolve(cm.get("kv_dtype", "auto"), dtype).storage.itemsize
    except ConfigError as exc:
        raise SessionError(f"the session file's cache format is not valid ({exc}): the file is damaged") from None
    per_frame = 2 * layers * batch * tpf * heads * head_dim * element
    alloc = per_frame * max(frames, length)
    ident = meta.get("model") or {}
    hw = [int(x) for x in meta.get("latent_hw", ())]
    if "held" in shapes and (len(shapes["held"]) != 5 or list(shapes["held"][-2:]) != hw
                             or shapes["held"][0] != batch):
        raise SessionError(f"the session file's latents {list(shapes['held'])} do not match its declared batch "
                           f"{batch} and latent size {hw}: the file is damaged")
    patch = ident.get("patch_size") or [1, 2, 2]
    if len(hw) != 2 or len(patch) != 3 or tpf != (hw[0] // int(patch[1])) * (hw[1] // int(patch[2])):
        raise SessionError(f"the session file declares {tpf} tokens per frame for latent size {hw} and patch "
                           f"{patch}: the file is damaged or crafted")
    if model is not None:  # the model given must be the one the file names (the cache then has its shape)
        check_model_shape(ident, model)
    dims = (ident.get("num_layers"), ident.get("num_heads"), int(ident.get("dim", 0)) // heads)
    if dims != (layers, heads, head_dim):
        raise SessionError(f"the session file's cache ({layers} layers, {heads} heads of {head_dim}) is not the shape "
                           f"of the model it names ({dims[0]} layers, {dims[1]} heads of {dims[2]}): the file is "
                           f"damaged")
    if cm.get("included", True):
        for name in ("k", "v"):
            for i in range(layers):
                shape = shapes.get(f"cache.{name}.{i}")
                if shape is None:
                    raise SessionError(f"the session file declares {layers} cache layers but holds no tensor "
                                       f"cache.{name}.{i}: the file is damaged")
                if tuple(shape) != (batch, length * tpf, heads, head_dim):
                    raise SessionError(f"cache tensor {name}.{i} has shape {tuple(shape)}, expected "
                                       f"{[batch, length * tpf, heads, head_dim]} from the file's metadata: the "
                                       f"file is damaged")
        if window and alloc > SMALL_BYTES and frames > MAX_PREALLOC_RATIO * max(length, 1):
            raise SessionError(f"the session file stores {length} cache frames but declares a cache of {frames} "
                               f"frames ({alloc / 2**30:.2f} GiB) in a {file_bytes / 2**20:.2f} MiB file; at most "
                               f"{MAX_PREALLOC_RATIO}x the stored frames is accepted: the file is damaged or crafted")
    elif model is None and meta.get("held_frames"):
        raise SessionError("this session file was saved without its KV cache: pass the model to load_session "
                           "so the cache can be recomputed from the saved latents")
    from ..memory.plan import available_bytes

    free = available_bytes(device)
    if alloc > free:
        raise SessionError(f"the session's KV cache needs {alloc / 2**30:.2f} GiB on {device} but only "
                           f"{free / 2**30:.2f} GiB is free: load it on a machine with more memory (or a smaller "
                           f"picture size / window was meant: the file may be crafted)")
    return alloc


__all__ = ["check_declared_sizes", "MAX_PREALLOC_RATIO"]
