"""The Wan2.1 forward as functions over a module tree with Wan's structure.

`wan_forward` runs on `sf_core.model.transformer.WanTransformer` and equally on ComfyUI's
`comfy.ldm.wan.model.WanModel` (the same submodule names: patch_embedding, text_embedding,
time_embedding, time_projection, blocks[i].{norm1, self_attn, norm3, cross_attn, norm2, ffn,
modulation}, head.{norm, head, modulation}). Only submodules are *called* (so host-side weight
casting, LoRA patches and low-VRAM offloading keep working); the attention pattern, RoPE, per-frame
timesteps and the KV cache are ours.

Three attention modes over the same weights:
- bidirectional (teacher, critic): `cache=None, mask=None`;
- block-causal over a whole sequence (training): `mask=BlockCausalMask(...)`;
- KV-cache inference chunk by chunk: `cache=KVCache, start_frame=...` (input = this chunk's frames).

Output is the flow (velocity) prediction v ~ noise - x0, shaped like the input [B, C, F, H, W].
"""
from __future__ import annotations

import functools

import torch
import torch.utils.checkpoint as ckpt

from .attention import BlockCausalMask, SplitKV, attention, split_attention
from ..cache.kv_cache import KVCache
from .transformer import Block
from .rope import apply_rope, rope_freqs


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's timestep embedding [N, dim] in float64: [cos(t w) | sin(t w)], w_k = 10000^(-k/(dim/2))."""
    half = dim // 2
    t = t.to(torch.float64).flatten()
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    ang = torch.outer(t, freqs)
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)


def _p(param: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A raw parameter (modulation) on the device and in the dtype of the activations."""
    return param.to(device=like.device, dtype=like.dtype)


def model_dims(model) -> tuple[int, int, int, tuple[int, int, int], int]:
    """(dim, heads, freq_dim, patch_size, out_dim) of a Wan module tree (ours or ComfyUI's)."""
    return (int(model.dim), int(model.num_heads), int(model.freq_dim), tuple(model.patch_size),
            int(model.out_dim))


def embed_text(model, context: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Zero-pad the text embeddings [B, L, text_dim] to `text_len` rows and apply `text_embedding`."""
    text_len = int(getattr(model, "text_len", context.shape[1]))
    if context.shape[1] < text_len:
        pad = context.new_zeros(context.shape[0], text_len - context.shape[1], context.shape[2])
        context = torch.cat([context, pad], dim=1)
    return model.text_embedding(context.to(dtype))


def time_embed(model, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame timesteps t [B, F] -> e [B, F, dim], e0 [B, F, 6, dim]."""
    b, f = t.shape
    e = model.time_embedding(sinusoidal_embedding(int(model.freq_dim), t).to(dtype))
    e0 = model.time_projection(e).unflatten(1, (6, int(model.dim)))
    return e.view(b, f, -1), e0.view(b, f, 6, -1)


def _cross_kv(attn, ctx: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    b = ctx.shape[0]
    k = attn.norm_k(attn.k(ctx)).view(b, ctx.shape[1], heads, -1)
    v = attn.v(ctx).view(b, ctx.shape[1], heads, -1)
    return k, v


def block_forward(block, x, e0, freqs, cross_k, cross_v, frames: int, heads: int, kv_source,
                  mask: BlockCausalMask | None, backend: str, need_ffn: bool = True, out_from: int = 0):
    """One transformer block. Returns (x, k, v) with this call's roped keys and raw values.

    x: the residual stream [B, L, dim] (contiguous); freqs: RoPE rotations [L, 1, head_dim/2] (`rope.rope_freqs`).

    `kv_source(k, v) -> (K, V)` gives what self-attention attends over: the tokens themselves (no cache)
    or all valid cache rows plus these (cache); or a SplitKV (a merged call: each query range its own keys).
    It must be pure under activation checkpointing.
    need_ffn=False: only this call's K, V are computed and given to kv_source; x comes back unchanged.
    out_from: only the rows from this token row on go on (a whole number of frames); the rows before it only
    give their K, V, and x comes back as the rows from out_from on (a merged call's last block).
    """
    b, length, dim = x.shape
    tpf = length // frames
    mod = (_p(block.modulation, e0).unsqueeze(1) + e0).chunk(6, dim=2)  # 6 x [B, F, 1, dim]

    def modulate(h, shift, scale):
        return (h.unflatten(1, (-1, tpf)) * (1 + scale) + shift).flatten(1, 2)

    def gate(y, g):
        return (y.unflatten(1, (-1, tpf)) * g).flatten(1, 2)

    sa = block.self_attn
    h = modulate(block.norm1(x), mod[0], mod[1])
    if not need_ffn:  # the last block of a cache-only call: only its K, V are used (written to the cache)
        k = sa.norm_k(sa.k(h)).view(b, length, heads, -1)
        v = sa.v(h).view(b, length, heads, -1)
        k = apply_rope(k, freqs).type_as(v)
        kv_source(k, v)
        return x, k, v
    k = sa.norm_k(sa.k(h)).view(b, length, heads, -1)
    v = sa.v(h).view(b, length, heads, -1)
    k = apply_rope(k, freqs).type_as(v)
    if out_from:
        f0 = out_from // tpf
        mod = tuple(m[:, f0:] for m in mod)
        x, h, freqs, length = x[:, out_from:], h[:, out_from:], freqs[out_from:], length - out_from
    q = sa.norm_q(sa.q(h)).view(b, length, heads, -1)
    q = apply_rope(q, freqs).type_as(v)
    kv = kv_source(k, v)
    if isinstance(kv, SplitKV):  # a merged call: each query range attends over its own keys
        y = split_attention(q, kv, backend, out_from).flatten(2)
    else:
        y = attention(q, kv[0], kv[1], mask, backend).flatten(2)
    x = x + gate(sa.o(y), mod[2])

    ca = block.cross_attn
    hq = ca.norm_q(ca.q(block.norm3(x))).view(b, length, heads, -1)
    y = attention(hq, cross_k, cross_v, None, backend).flatten(2)
    x = x + ca.o(y)
    x = x + gate(block.ffn(modulate(block.norm2(x), mod[3], mod[4])), mod[5])
    return x, k, v


def unpatchify(x: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int], c: int) -> torch.Tensor:
    """Tokens [B, L, p*q*r*c] (c fastest) -> [B, c, F*p, H*q, W*r]."""
    f, h, w = grid
    p, q, r = patch
    b = x.shape[0]
    x = x.view(b, f, h, w, p, q, r, c)
    x = torch.einsum("bfhwpqrc->bcfphqwr", x)
    return x.reshape(b, c, f * p, h * q, w * r)


def wan_forward(model, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, *,
                cache: KVCache | None = None, start_frame: int = 0, mask: BlockCausalMask | None = None,
                backend: str = "sdpa", checkpoint: bool = False, dtype: torch.dtype | None = None,
                rope_dtype: torch.dtype | None = None, need_output: bool = True) -> torch.Tensor | None:
    """Flow prediction of a Wan transformer.

    x: [B, C, F, H, W] latents (normalised space); t: [B] or [B, F] timesteps in 0..1000;
    context: [B, L, text_dim] text embeddings (zero-padded to text_len here).
    cache: KV cache (the chunk's K/V are written into it); start_frame: absolute index of x's first frame.
    mask: block-causal pattern for a whole-sequence causal forward.
    checkpoint: activation checkpointing per block (only when grad is enabled).
    dtype: compute dtype (default: x's dtype). rope_dtype: default float64 for fp32/fp64 compute
    (reference numerics), float32 for half precision.
    need_output: False for the context pass that only fills the cache (the last block computes only its K, V:
    no query, attention, FFN or head).
    """
    dim, heads, _, patch, out_dim = model_dims(model)
    dtype = dtype or x.dtype
    if rope_dtype is None:
        rope_dtype = torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32
    if cache is not None and mask is not None:
        raise ValueError("pass either a KV cache (chunk-by-chunk) or a block-causal mask (whole sequence), not both")
    b, _, f_in, h_in, w_in = x.shape
    frames, gh, gw = f_in // patch[0], h_in // patch[1], w_in // patch[2]  # the patch conv's output grid
    if t.ndim == 1:
        t = t[:, None].expand(b, frames)
    if t.shape != (b, frames):
        raise ValueError(f"timestep shape {tuple(t.shape)} does not match [B={b}, frames={frames}]")
    rope_start = start_frame
    if cache is not None:
        cache.begin(start_frame, frames)
        rope_start = cache.rope_start  # the frame's slot when the cache uses relative positions
    try:
        freqs = rope_freqs(dim // heads, rope_start, frames, gh, gw, x.device, rope_dtype)
        body = functools.partial(_body, model, context=context, cache=cache, mask=mask, backend=backend,
                                 checkpoint=checkpoint, dtype=dtype, need_output=need_output)
        graphs = getattr(model, "_sf_graphs", None)  # sf_core.model.accel.ChunkGraphs (CUDA graphs, opt-in)
        if graphs is not None and cache is not None and mask is None and not torch.is_grad_enabled():
            out = graphs.run(body, x, t, freqs, cache=cache, context=context, start_frame=start_frame,
                             need_output=need_output, backend=backend)
        else:
            out = body(x, t, freqs)
    except BaseException:
        if cache is not None:
            cache.abort()
        raise
    if cache is not None:
        cache.end()
    return out


def _body(model, x: torch.Tensor, t: torch.Tensor, freqs: torch.Tensor, *, context: torch.Tensor,
          cache: KVCache | None, mask: BlockCausalMask | None, backend: str, checkpoint: bool, dtype: torch.dtype,
          need_output: bool, merged: bool = False) -> torch.Tensor | None:
    """Patch embedding, time embedding, the blocks and the head of one call (the cache call already planned).

    Only tensors in, tensors out and in-place cache writes: a CUDA graph can capture it (sf_core.model.accel)."""
    dim, heads, _, patch, out_dim = model_dims(model)
    b, _, f_in, h_in, w_in = x.shape
    tokens = model.patch_embedding(x.float()).to(dtype)  # Wan keeps the patch conv in float32
    grid = tuple(tokens.shape[2:])
    frames, gh, gw = grid
    xs = _rows(tokens)
    del tokens  # only the residual stream keeps the patch embedding alive
    e, e0 = time_embed(model, t, dtype)
    ctx_key = context
    ctx = None  # embedded text, computed only if some layer misses the cross cache
    grad_ckpt = checkpoint and torch.is_grad_enabled()
    compiled = None if merged else getattr(model, "_sf_block_fn", None)  # sf_core.model.accel (inference only)
    if compiled is not None and not torch.is_grad_enabled():
        freqs = torch.view_as_real(freqs)  # real (cos, sin) pairs: a view; the compiled graph takes no complex input
    for i, block in enumerate(model.blocks):
        cached = cache.cross(i, ctx_key) if cache is not None else None
        if cached is None:
            if ctx is None:
                ctx = embed_text(model, context, dtype)
            cached = _cross_kv(block.cross_attn, ctx, heads)
            if cache is not None:
                cache.set_cross(i, ctx_key, *cached)
        ck, cv = cached
        need_ffn = need_output or i < len(model.blocks) - 1
        kv_source = _identity_kv if cache is None else cache.merged_source(i) if merged else cache.source(i)
        args = (xs, e0, freqs, ck, cv, frames, heads, kv_source, mask, backend, need_ffn)
        if merged and i == len(model.blocks) - 1:  # the committed chunk's rows end here, as in a context pass
            args += (cache.merged_rows,)
        if compiled is not None and not torch.is_grad_enabled():
            run = functools.partial(compiled, block)
        else:  # our blocks are called as modules (hooks such as FSDP2's unshard fire); host blocks via the function
            run = block if isinstance(block, Block) else functools.partial(block_forward, block)
        if grad_ckpt:
            xs, k, v = ckpt.checkpoint(run, *args, use_reentrant=False)
        else:
            xs, k, v = run(*args)
        if cache is not None:
            cache.store(i, k, v)
    if not need_output:
        return None
    if merged:  # only the next chunk's frames are left in the stream
        f0 = frames - xs.shape[1] // (gh * gw)
        e, frames, grid = e[:, f0:], frames - f0, (frames - f0, gh, gw)
        f_in = frames * patch[0]
    head = model.head
    hm = (_p(head.modulation, e).unsqueeze(1) + e.unsqueeze(2)).chunk(2, dim=2)  # 2 x [B, F, 1, dim]
    hx = (head.norm(xs).unflatten(1, (frames, gh * gw)) * (1 + hm[1]) + hm[0]).flatten(1, 2)
    out = unpatchify(head.head(hx), grid, patch, out_dim)
    return out[:, :, :f_in, :h_in, :w_in]


@torch.no_grad()
def wan_forward_merged(model, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, *, cache: KVCache,
                       start_frame: int, commit_frames: int, backend: str = "sdpa", dtype: torch.dtype | None = None,
                       rope_dtype: torch.dtype | None = None) -> torch.Tensor:
    """One forward over two chunks: the context pass of a finished chunk and the first denoising call of the next.

    x: [B, C, n + m, H, W] = the finished chunk's n frames (committed to the cache at `start_frame`, at their
    timesteps in t) followed by the next chunk's m frames (at start_frame + n). Every token-wise layer runs once
    over both; self-attention runs per part: the first n frames attend exactly as their own context pass would,
    the next m frames as their own first call would after the cache commits the first chunk and evicts for them
    (`KVCache.merged_source`). Only the first chunk's rows are written. Returns the flow of the m frames.
    Inference only (no grad); the caller checks `KVCache.mergeable` first.
    """
    dim, heads, _, patch, _ = model_dims(model)
    dtype = dtype or x.dtype
    if rope_dtype is None:
        rope_dtype = torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32
    b, _, f_in, h_in, w_in = x.shape
    n, m = commit_frames, f_in - commit_frames
    if patch[0] != 1 or n < 1 or m < 1:
        raise ValueError(f"a merged call needs a temporal patch of 1 and frames on both sides, got patch {patch}, "
                         f"{n} + {m} frames")
    if t.shape != (b, f_in):
        raise ValueError(f"timestep shape {tuple(t.shape)} does not match [B={b}, frames={f_in}]")
    cache.begin_merged(start_frame, n, m)
    try:
        freqs = rope_freqs(dim // heads, cache.rope_start, f_in, h_in // patch[1], w_in // patch[2], x.device,
                           rope_dtype)
        out = _body(model, x, t, freqs, context=context, cache=cache, mask=None, backend=backend, checkpoint=False,
                    dtype=dtype, need_output=True, merged=True)
    except BaseException:
        cache.abort()
        raise
    cache.end()
    return out


def _identity_kv(k, v):
    return k, v


def _rows(tokens: torch.Tensor) -> torch.Tensor:
    """Patch embeddings [B, dim, F, H, W] -> the residual stream [B, L, dim], contiguous.

    The transposed view would stay strided through every block: each LayerNorm would copy it first and the
    residual adds would mix layouts (several times slower on CPU). Only elementwise ops and LayerNorms read the
    stream, so one copy here changes no value."""
    return tokens.flatten(2).transpose(1, 2).contiguous()


def flow_to_x0(x_t: torch.Tensor, flow: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0 = x_t - sigma * flow, in float64, for latents [B, C, F, H, W] and per-frame sigma [B, F]."""
    s = sigma.to(device=x_t.device, dtype=torch.float64)[:, None, :, None, None]
    return (x_t.double() - s * flow.double()).to(x_t.dtype)


__all__ = ["wan_forward", "wan_forward_merged", "block_forward", "sinusoidal_embedding", "embed_text", "time_embed", "unpatchify",
           "flow_to_x0"]
