"""Chunk-by-chunk KV-cached forward == block-causal whole-sequence forward (x-transformers' key test).

Covers chunk-wise and frame-wise chunking, an independent first frame, global and rolling + sink caches
(with evictions), H != W, fp32 and fp64, and re-denoising the same chunk before committing it.
"""
import pytest
import torch

from sf_core.model.attention import BlockCausalMask
from sf_core.config import CausalConfig, ConfigError, WanConfig
from sf_core.model.forward import wan_forward
from sf_core.cache.kv_cache import KVCache
from sf_core.model.transformer import WanTransformer, randomize_weights

CASES = {
    "chunk3_global": CausalConfig(chunk_frames=3),
    "frame_global": CausalConfig(chunk_frames=1),
    "chunk3_roll6_sink1": CausalConfig(chunk_frames=3, window_frames=6, sink_frames=1),
    "chunk3_roll7_sink1": CausalConfig(chunk_frames=3, window_frames=7, sink_frames=1),
    "frame_roll4_sink2": CausalConfig(chunk_frames=1, window_frames=4, sink_frames=2),
    "chunk2_roll5_nosink": CausalConfig(chunk_frames=2, window_frames=5),
    "first_frame_chunk3_roll5_sink1": CausalConfig(chunk_frames=3, independent_first_frame=True,
                                                   window_frames=5, sink_frames=1),
}
FRAMES = {"first_frame_chunk3_roll5_sink1": 10}


def _setup(dtype, frames, seed=0):
    cfg = WanConfig(dim=48, ffn_dim=96, num_heads=2, num_layers=2, text_dim=24, text_len=10)
    model = randomize_weights(WanTransformer(cfg), seed).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, 16, frames, 6, 10, generator=g, dtype=dtype)  # H != W
    ctx = torch.randn(1, 7, cfg.text_dim, generator=g, dtype=dtype)
    t = torch.rand(1, frames, generator=g, dtype=dtype) * 1000
    return cfg, model, x, ctx, t


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-12)], ids=["fp32", "fp64"])
@pytest.mark.parametrize("name", list(CASES))
def test_cached_equals_full_sequence(name, dtype, tol):
    causal = CASES[name]
    frames = FRAMES.get(name, 12)
    cfg, model, x, ctx, t = _setup(dtype, frames)
    bounds = causal.chunk_bounds(frames)
    tpf = cfg.tokens_per_frame(6, 10)
    # the whole-sequence forward uses the same chunk layout for its timesteps
    for s, e in bounds:
        t[:, s:e] = t[:, s:s + 1]
    mask = BlockCausalMask(tuple(bounds), tpf, causal.window_frames, causal.sink_frames)
    with torch.no_grad():
        full = wan_forward(model, x, t, ctx, mask=mask)
        cache = KVCache.allocate(cfg.num_layers, 1, cfg.num_heads, cfg.head_dim, tpf,
                                 frames=4 if causal.window_frames is None else None,  # global grows
                                 window_frames=causal.window_frames, sink_frames=causal.sink_frames,
                                 dtype=dtype, chunk_frames=causal.chunk_frames)
        outs = []
        for s, e in bounds:
            # a first denoising call on other inputs, overwritten by the final call of the same chunk
            wan_forward(model, torch.randn_like(x[:, :, s:e]), t[:, s:e] * 0.5, ctx, cache=cache, start_frame=s)
            outs.append(wan_forward(model, x[:, :, s:e], t[:, s:e], ctx, cache=cache, start_frame=s))
        chunked = torch.cat(outs, dim=2)
    assert (chunked - full).abs().max().item() <= tol * max(1.0, full.abs().max().item())
    if causal.window_frames is not None:
        assert cache.capacity == causal.window_frames  # memory fixed by the window
        assert cache.length <= causal.window_frames
        assert cache.positions[:causal.sink_frames] == list(range(causal.sink_frames))
        assert cache.positions[-1] == frames - 1


def test_future_frames_do_not_leak():
    """Perturbing a later chunk leaves earlier chunks' outputs bit-identical (causality)."""
    cfg, model, x, ctx, t = _setup(torch.float32, 9)
    mask = BlockCausalMask(tuple(CausalConfig(3).chunk_bounds(9)), cfg.tokens_per_frame(6, 10))
    with torch.no_grad():
        a = wan_forward(model, x, t, ctx, mask=mask)
        x2 = x.clone()
        x2[:, :, 6:] += 1.0
        b = wan_forward(model, x2, t, ctx, mask=mask)
    assert torch.equal(a[:, :, :6], b[:, :, :6])
    assert not torch.equal(a[:, :, 6:], b[:, :, 6:])


def test_rolling_memory_is_fixed_by_the_window():
    cfg, model, x, ctx, t = _setup(torch.float32, 3)
    tpf = cfg.tokens_per_frame(6, 10)
    cache = KVCache.allocate(cfg.num_layers, 1, cfg.num_heads, cfg.head_dim, tpf, window_frames=6,
                             sink_frames=1, chunk_frames=3)
    before = cache.nbytes()
    with torch.no_grad():
        for c in range(20):
            wan_forward(model, x, t, ctx, cache=cache, start_frame=3 * c)
    assert cache.nbytes() == before + sum(k.numel() * k.element_size() * 2 for k in cache.cross_k)
    assert cache.positions == [0, 55, 56, 57, 58, 59]


def test_bad_windows_and_rewrites_are_refused():
    with pytest.raises(ConfigError, match="window"):
        CausalConfig(chunk_frames=3, window_frames=3, sink_frames=1)
    with pytest.raises(ConfigError, match="nearest valid"):
        CausalConfig(chunk_frames=3).chunk_bounds(7)
    cfg, model, x, ctx, t = _setup(torch.float32, 3)
    cache = KVCache.allocate(cfg.num_layers, 1, cfg.num_heads, cfg.head_dim, cfg.tokens_per_frame(6, 10), frames=9)
    with torch.no_grad():
        wan_forward(model, x, t, ctx, cache=cache, start_frame=0)
        wan_forward(model, x, t, ctx, cache=cache, start_frame=3)
        with pytest.raises(ConfigError, match="cannot be rewritten"):
            wan_forward(model, x, t, ctx, cache=cache, start_frame=0)
        # the cache is still usable after the refused call
        wan_forward(model, x, t, ctx, cache=cache, start_frame=6)
    assert cache.positions == list(range(9))
