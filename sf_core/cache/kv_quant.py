"""Storage formats of the self-attention KV cache: the compute dtype, another float dtype, or 8-bit codes.

`kv_dtype` (chosen per run: `SamplingSettings.kv_dtype`, `--kv-dtype`, the sampler nodes' `kv_cache_dtype`):
- "auto": rows are stored in the compute dtype -- the reference path, bit-identical to a cache without this option;
- "fp32" / "bf16" / "fp16": rows stored in that float dtype (cast on write, cast back to the compute dtype on read);
- "int8": per token and per head, `scale = max|x| / 127` (fp16), codes `round(x / scale)` in int8;
- "fp8": per token and per head, `scale = max|x| / 448` (fp16), codes `x / scale` in float8 e4m3 (where torch
  has the dtype).
Quantisation uses the stored (fp16-rounded) scale, so decoding is exact up to the 8-bit step. With head_dim 128
an int8 row costs 128 + 2 bytes per head instead of 256 in bf16 (0.51x); head_dim 32: 0.53x.

What is quantised: the rows *kept* in the cache. A forward call attends over the decoded earlier rows plus its
own rows at full precision (they are written quantised for the later calls), so the error of a chunk comes only
from its history. Keys are stored after RoPE; a relative-position cache that re-ropes keys on eviction decodes,
rotates and re-encodes them (one extra rounding per shift, at most window/chunk shifts per frame; measured in
bench/RESULTS.md). The text cross-attention cache is not quantised (it is small: text_len rows per layer).
Quantised caches are inference-only: a forward with grad (the training rollout) refuses them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ConfigError

KV_DTYPES = ("auto", "bf16", "fp16", "fp32", "int8", "fp8")
_FLOATS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCALE_DTYPE = torch.float16
_SCALE_MIN = 2.0 ** -14  # smallest normal fp16: a (near) zero row gets this step, its codes are 0


@dataclass(frozen=True)
class KVFormat:
    """How rows are stored: `storage` dtype, and for 8-bit codes the largest code `qmax`."""

    name: str
    storage: torch.dtype
    qmax: float = 0.0

    @property
    def quantised(self) -> bool:
        return self.qmax > 0

    def bytes_per_row(self, heads: int, head_dim: int) -> int:
        """Bytes of one token's K (or V) row: codes + one scale per head."""
        size = torch.empty((), dtype=self.storage).element_size() * heads * head_dim
        return size + (heads * torch.empty((), dtype=SCALE_DTYPE).element_size() if self.quantised else 0)


def fp8_dtype() -> torch.dtype | None:
    return getattr(torch, "float8_e4m3fn", None)


def check_kv_dtype(name: str) -> str:
    """`name` if it is a usable KV-cache format, else ConfigError naming the choices."""
    if name not in KV_DTYPES:
        raise ConfigError(f"kv_dtype must be one of {KV_DTYPES}, got {name!r} ('auto' = the compute dtype; 'int8' "
                          f"halves the cache of a bf16 run)")
    if name == "fp8" and fp8_dtype() is None:
        raise ConfigError(f"kv_dtype 'fp8' needs torch.float8_e4m3fn, which torch {torch.__version__} lacks; use "
                          f"'int8' (same memory)")
    return name


def resolve(name: str, compute: torch.dtype) -> KVFormat:
    """The storage format of `kv_dtype` name for a run computing in `compute`."""
    check_kv_dtype(name)
    if name == "auto":
        return KVFormat(name, compute)
    if name == "int8":
        return KVFormat(name, torch.int8, 127.0)
    if name == "fp8":
        return KVFormat(name, fp8_dtype(), float(torch.finfo(fp8_dtype()).max))
    return KVFormat(name, _FLOATS[name])


def quantise(x: torch.Tensor, fmt: KVFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, L, H, D] -> (codes [B, L, H, D] in fmt.storage, scales [B, L, H, 1] fp16), per token and head."""
    xf = x.detach().float()
    scale = (xf.abs().amax(dim=-1, keepdim=True) / fmt.qmax).clamp(_SCALE_MIN, torch.finfo(SCALE_DTYPE).max)
    scale = scale.to(SCALE_DTYPE)
    y = (xf / scale.float()).clamp(-fmt.qmax, fmt.qmax)
    if fmt.storage == torch.int8:
        y = y.round()
    return y.to(fmt.storage), scale


def dequantise(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None = None
               ) -> torch.Tensor:
    """codes [B, L, H, D] and scales [B, L, H, 1] -> values in `dtype` (written into `out` if given)."""
    if q.dtype != torch.int8:  # float8 has no arithmetic: widen first (exactly: e4m3 values are fp16 values)
        q = q.to(SCALE_DTYPE)
    if out is None:
        out = torch.empty(q.shape, dtype=dtype, device=q.device)
    # the product in float32 (fp16 for an fp16 run), rounded once into `out`
    return torch.mul(q, scale if dtype == SCALE_DTYPE else scale.float(), out=out)


def encode_into(x: torch.Tensor, fmt: KVFormat, codes: torch.Tensor, scales: torch.Tensor | None) -> None:
    """Store rows x [B, n, H, D] into the views `codes` (and `scales` for 8-bit formats)."""
    if fmt.quantised:
        q, s = quantise(x, fmt)
        codes.copy_(q)
        scales.copy_(s)
    else:
        codes.copy_(x.detach())


def decode_rows(codes: torch.Tensor, scales: torch.Tensor | None, dtype: torch.dtype,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Stored rows -> values in `dtype` (float storage: a cast; 8-bit: codes x scales)."""
    if scales is not None:
        return dequantise(codes, scales, dtype, out)
    if out is None:
        return codes.to(dtype)
    return out.copy_(codes)


def stored_source(fmt: KVFormat, kb: torch.Tensor, vb: torch.Tensor, ks: torch.Tensor | None,
                  vs: torch.Tensor | None, a: int, b: int):
    """`kv(k, v) -> (K, V)` of an in-place call writing rows a:b of buffers stored in another format.

    The new rows are encoded into the buffers; attention gets the decoded rows :a followed by k, v themselves
    (full precision: a chunk's error comes from its history only).
    """
    def read(x, codes, scales):
        out = x.new_empty((x.shape[0], b, *x.shape[2:]))
        if a:
            decode_rows(codes[:, :a], None if scales is None else scales[:, :a], x.dtype, out[:, :a])
        out[:, a:] = x
        return out

    def write(k, v):
        encode_into(k, fmt, kb[:, a:b], None if ks is None else ks[:, a:b])
        encode_into(v, fmt, vb[:, a:b], None if vs is None else vs[:, a:b])
        return read(k, kb, ks), read(v, vb, vs)
    return write


__all__ = ["KV_DTYPES", "KVFormat", "check_kv_dtype", "resolve", "quantise", "dequantise", "encode_into",
           "decode_rows", "stored_source", "fp8_dtype", "SCALE_DTYPE"]
