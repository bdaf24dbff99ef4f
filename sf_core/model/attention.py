"""Attention backends and the block-causal mask.

Layout everywhere is Wan's [B, L, heads, head_dim]. Backends:
- "sdpa"  PyTorch scaled_dot_product_attention (default; the only backend used on CPU);
- "sage"  sageattention's `sageattn`, used only when the package is installed, the tensors are on CUDA
          in fp16/bf16 and there is no mask; otherwise it falls back to SDPA (import is lazy);
- "flex"  flex attention with a BlockMask for the block-causal training forward (long sequences, where
          a dense L x L mask would not fit); a dense boolean mask is used for "sdpa".
"auto" picks sage where it can run, else SDPA.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BACKENDS = ("sdpa", "sage", "flex", "auto")


@dataclass(frozen=True)
class BlockCausalMask:
    """Attention pattern of the whole-sequence causal forward, in latent frames.

    chunks: [(start, end)] frame ranges; attention is bidirectional inside a chunk, causal across chunks.
    window_frames / sink_frames: a key frame is visible to a query if it lies in the query's chunk or
    earlier and either among the last `window_frames - sink_frames` frames up to the end of the query's
    chunk or among the first `sink_frames` frames -- exactly the frames a rolling KV cache holds.
    """

    chunks: tuple[tuple[int, int], ...]
    tokens_per_frame: int
    window_frames: int | None = None
    sink_frames: int = 0

    @property
    def num_frames(self) -> int:
        return self.chunks[-1][1] if self.chunks else 0

    def frame_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Bool [F, F]: query frame may attend key frame."""
        n = self.num_frames
        chunk_end = torch.empty(n, dtype=torch.long)
        for s, e in self.chunks:
            chunk_end[s:e] = e
        kf = torch.arange(n)
        allowed = kf[None, :] < chunk_end[:, None]
        if self.window_frames is not None:
            recent = kf[None, :] >= chunk_end[:, None] - (self.window_frames - self.sink_frames)
            allowed &= recent | (kf[None, :] < self.sink_frames)
        return allowed.to(device)

    def dense(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Bool [L, L] token mask (L = frames * tokens_per_frame)."""
        return _dense_mask(self, str(device))


class SplitKV(tuple):
    """What a KV source returns when the call's queries attend over different keys by query range:
    parts ((q_start, q_end, K, V), ...) in token rows, covering the queries in order (a merged call:
    `sf_core.cache.kv_cache.KVCache.merged_source`)."""

    @property
    def parts(self) -> tuple:
        return tuple(self)


def split_attention(q: torch.Tensor, kv: SplitKV, backend: str = "sdpa", offset: int = 0) -> torch.Tensor:
    """`attention` per query range of a SplitKV, concatenated in query order; q holds the query rows from
    `offset` on (the ranges before it are skipped)."""
    return torch.cat([attention(q[:, max(a - offset, 0):b - offset], k, v, None, backend)
                      for a, b, k, v in kv.parts if b > offset], dim=1)


@functools.lru_cache(maxsize=8)
def _dense_mask(spec: BlockCausalMask, device: str) -> torch.Tensor:
    t = spec.tokens_per_frame
    fm = spec.frame_mask()
    return fm.repeat_interleave(t, 0).repeat_interleave(t, 1).to(device)


@functools.lru_cache(maxsize=1)
def _sage():
    try:
        from sageattention import sageattn  # type: ignore
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        log.info("sageattention not available (%s); using SDPA", exc)
        return None
    return sageattn


def sage_available() -> bool:
    return _sage() is not None


def _can_sage(q: torch.Tensor) -> bool:
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _sage() is not None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: BlockCausalMask | None = None,
              backend: str = "sdpa") -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v for q [B, Lq, H, D], k/v [B, Lk, H, D] -> [B, Lq, H, D]."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if mask is not None:
        if backend == "flex" or (backend == "auto" and q.is_cuda and q.shape[1] > 16384):
            return _flex(q, k, v, mask)
        return _sdpa(q, k, v, mask.dense(q.device))
    if backend in ("sage", "auto") and _can_sage(q):
        return _sage()(q, k, v, tensor_layout="NHD", is_causal=False)
    return _sdpa(q, k, v, None)


def _sdpa(q, k, v, dense_mask):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=dense_mask)
    return out.transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# flex attention (block-causal training forward on long sequences)

@functools.lru_cache(maxsize=1)
def _flex_fn():
    from torch.nn.attention.flex_attention import flex_attention
    if torch.cuda.is_available():
        try:
            return torch.compile(flex_attention, dynamic=False)
        except Exception as exc:  # noqa: BLE001
            log.warning("torch.compile(flex_attention) failed (%s); running it eagerly", exc)
    return flex_attention


@functools.lru_cache(maxsize=8)
def _flex_block_mask(spec: BlockCausalMask, padded: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    t = spec.tokens_per_frame
    length = spec.num_frames * t
    fm = spec.frame_mask(device)

    def mask_mod(b, h, qi, ki):
        real = (qi < length) & (ki < length)
        qf = torch.clamp(qi // t, max=spec.num_frames - 1)
        kf = torch.clamp(ki // t, max=spec.num_frames - 1)
        return (real & fm[qf, kf]) | (qi == ki)

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=padded, KV_LEN=padded, device=device)


def _flex(q, k, v, spec: BlockCausalMask):
    length = q.shape[1]
    padded = -(-length // 128) * 128
    pad = padded - length

    def prep(x):
        x = x.transpose(1, 2)
        return F.pad(x, (0, 0, 0, pad)) if pad else x

    bm = _flex_block_mask(spec, padded, str(q.device))
    out = _flex_fn()(prep(q), prep(k), prep(v), block_mask=bm)
    return out[:, :, :length].transpose(1, 2)
