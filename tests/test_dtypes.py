"""Compute dtypes (fp32 / bf16 / fp16), fp8 (e4m3fn) stored weights, and attention backends on CPU.

Tolerances are relative L2 errors against the fp32 forward, set from each format's unit roundoff u
(bf16 u = 2^-9, fp16 u = 2^-12, fp8 e4m3 u = 2^-4): a 2-layer forward does a few dozen roundings in
sequence, so the error is a small multiple of u; the measured values (bf16 0.7%, fp16 0.09%, fp8
storage 2.2%) sit well inside the bounds.
"""
import warnings

import pytest
import torch

import sf_core.model.attention as attn
from sf_core.model.attention import BlockCausalMask
from sf_core.checkpoints.weights import cast_for_storage
from sf_core.config import CausalConfig, WanConfig
from sf_core.model.forward import wan_forward
from sf_core.cache.kv_cache import KVCache
from sf_core.model.transformer import WanTransformer, expected_shapes, randomize_weights

CFG = WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64, text_len=16)


@pytest.fixture(scope="module")
def setup():
    model = randomize_weights(WanTransformer(CFG), 0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 6, 8, 8, generator=g)
    ctx = torch.randn(1, 16, CFG.text_dim, generator=g)
    t = torch.rand(1, 6, generator=g) * 1000
    with torch.no_grad():
        ref = wan_forward(model, x, t, ctx)
    return model, x, ctx, t, ref


def rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def with_storage(model, dtype):
    m = WanTransformer(CFG)
    m.load_state_dict(cast_for_storage(model.state_dict(), dtype), assign=True)
    return m


@pytest.mark.parametrize("dtype,bound", [(torch.bfloat16, 12 * 2 ** -9), (torch.float16, 16 * 2 ** -12)],
                         ids=["bf16", "fp16"])
def test_half_precision_compute_is_close_to_fp32(setup, dtype, bound):
    model, x, ctx, t, ref = setup
    m = with_storage(model, dtype)
    with torch.no_grad():
        out = wan_forward(m, x.to(dtype), t, ctx.to(dtype))
    assert out.dtype == dtype
    err = rel_l2(out, ref)
    assert 0 < err < bound, err


def test_fp8_weights_are_upcast_per_layer_exactly(setup):
    """fp8-stored weights computed in fp32 == an fp32 model holding the same (dequantised) values: the per-layer
    upcast adds no error of its own."""
    model, x, ctx, t, ref = setup
    m8 = with_storage(model, "fp8")
    assert m8.blocks[1].self_attn.q.weight.dtype == torch.float8_e4m3fn
    m32 = WanTransformer(CFG)
    m32.load_state_dict({k: v.float() for k, v in m8.state_dict().items()})
    with torch.no_grad():
        a = wan_forward(m8, x, t, ctx)
        b = wan_forward(m32, x, t, ctx)
    assert torch.equal(a, b)
    assert m8.blocks[1].self_attn.q.weight.dtype == torch.float8_e4m3fn  # nothing was upcast in place


@pytest.mark.parametrize("compute", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fp8_storage_is_close_to_fp32(setup, compute):
    model, x, ctx, t, ref = setup
    m8 = with_storage(model, "fp8")
    with torch.no_grad():
        out = wan_forward(m8, x.to(compute), t, ctx.to(compute))
    err = rel_l2(out, ref)
    assert 0 < err < 2 ** -4, err  # below one fp8 rounding step of a single weight


def _bytes(shapes, storage):
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    return sum(v.numel() * v.element_size() for v in cast_for_storage(sd, storage).values())


def test_fp8_storage_halves_memory(setup):
    shapes = expected_shapes(WanConfig.wan_1_3b())
    fp32, bf16, fp8 = (_bytes(shapes, d) for d in ("fp32", "bf16", "fp8"))
    assert bf16 * 2 == fp32
    assert 0.5 < fp8 / bf16 < 0.52  # 98% of the 1.3B parameters are block Linear weights
    # a real model in memory holds exactly what the accounting says (the tiny one has relatively large
    # embeddings, so its ratio is higher than the 1.3B's)
    m8 = with_storage(setup[0], "fp8")
    assert sum(p.numel() * p.element_size() for p in m8.parameters()) == _bytes(expected_shapes(CFG), "fp8")


# ------------------------------------------------------------------------------------------ backends
def test_sage_and_auto_fall_back_to_sdpa_on_cpu(setup, monkeypatch):
    """Even when sageattention is importable, CPU tensors never reach it: results are bit-identical."""
    model, x, ctx, t, ref = setup

    def sage_must_not_run(*a, **k):
        raise AssertionError("sageattention called on CPU")

    monkeypatch.setattr(attn, "_sage", lambda: sage_must_not_run)
    tpf = CFG.tokens_per_frame(8, 8)
    with torch.no_grad():
        for backend in ("sage", "auto"):
            assert torch.equal(wan_forward(model, x, t, ctx, backend=backend), ref)
        outs = {}
        for backend in ("sdpa", "sage", "auto"):
            cache = KVCache.allocate(CFG.num_layers, 1, CFG.num_heads, CFG.head_dim, tpf, frames=6)
            outs[backend] = torch.cat([wan_forward(model, x[:, :, s:s + 3], t[:, s:s + 3], ctx, cache=cache,
                                                   start_frame=s, backend=backend) for s in (0, 3)], dim=2)
        assert torch.equal(outs["sage"], outs["sdpa"]) and torch.equal(outs["auto"], outs["sdpa"])


@pytest.mark.parametrize("causal", [CausalConfig(3), CausalConfig(1, window_frames=4, sink_frames=1),
                                    CausalConfig(2, window_frames=5)], ids=["chunk3", "frame_roll4_sink1", "chunk2_roll5"])
def test_flex_block_mask_equals_dense_mask(causal):
    from torch.nn.attention.flex_attention import create_mask

    frames, tpf = 6, 10  # 60 tokens: padded to 128, so the padding rule is exercised too
    spec = BlockCausalMask(tuple(causal.chunk_bounds(frames)), tpf, causal.window_frames, causal.sink_frames)
    padded = 128
    bm = attn._flex_block_mask(spec, padded, "cpu")
    flex = create_mask(bm.mask_mod, None, None, padded, padded, device="cpu")[0, 0]
    n = frames * tpf
    assert torch.equal(flex[:n, :n], spec.dense())
    assert not flex[:n, n:].any()  # real queries never see padding keys


def test_flex_forward_equals_dense_sdpa_forward(setup):
    model, x, ctx, t, _ = setup
    causal = CausalConfig(3, window_frames=5, sink_frames=1)
    mask = BlockCausalMask(tuple(causal.chunk_bounds(6)), CFG.tokens_per_frame(8, 8), 5, 1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex on CPU warns that it is unfused
        a = wan_forward(model, x, t, ctx, mask=mask, backend="flex")
        b = wan_forward(model, x, t, ctx, mask=mask, backend="sdpa")
    assert (a - b).abs().max().item() <= 1e-5 * b.abs().max().item()
