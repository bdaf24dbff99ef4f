"""The CPU speed paths of the forward change no value: a contiguous residual stream and RoPE as one complex multiply
give bit-identical outputs to the strided layout and the four real float64 products they replaced."""
import pytest
import torch

import sf_core.model.forward as fwd
from sf_core.model.attention import BlockCausalMask
from sf_core.config import CausalConfig, WanConfig
from sf_core.model.transformer import WanTransformer, randomize_weights
from sf_core.sampling.pipeline import generate
from sf_core.model.rope import apply_rope, rope_cos_sin, rope_freqs
from sf_core.sampling.session import SamplingSettings, new_session


def four_products(x, cos, sin):
    """The previous RoPE: real products in the precision of cos/sin, stacked back into pairs."""
    b, l, h, d = x.shape
    xr = x.to(cos.dtype).reshape(b, l, h, d // 2, 2)
    xe, xo = xr[..., 0], xr[..., 1]
    return torch.stack((xe * cos - xo * sin, xe * sin + xo * cos), dim=-1).reshape(b, l, h, d).to(x.dtype)


def strided_rows(tokens):
    """The previous layout: the transposed view of the patch embeddings, strided through every block."""
    return tokens.flatten(2).transpose(1, 2)


@pytest.mark.parametrize("x_dtype,rope_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float64),
                                                 (torch.bfloat16, torch.float32), (torch.float16, torch.float32)])
def test_complex_rope_equals_four_real_products(x_dtype, rope_dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3 * 35, 4, 48, generator=g) * 3).to(x_dtype)
    cos, sin = rope_cos_sin(48, 17, 3, 5, 7, torch.device("cpu"), rope_dtype)
    want = four_products(x, cos, sin)
    assert torch.equal(apply_rope(x, cos, sin), want)
    assert torch.equal(apply_rope(x, rope_freqs(48, 17, 3, 5, 7, torch.device("cpu"), rope_dtype)), want)
    assert not torch.equal(want, x)  # it rotates


def _model(dtype):
    cfg = WanConfig(dim=96, ffn_dim=192, num_heads=4, num_layers=2, text_dim=32, text_len=16)
    return randomize_weights(WanTransformer(cfg), 0).eval().to(dtype)


def _outputs(dtype):
    model = _model(dtype)
    g = torch.Generator().manual_seed(1)
    ctx = torch.randn(2, 9, 32, generator=g)
    out = {}
    for pos in ("absolute", "relative"):
        st = SamplingSettings(causal=CausalConfig(chunk_frames=3, window_frames=9, sink_frames=3), positions=pos)
        s = new_session(model, ctx, latent_hw=(6, 10), batch=2, seed=0, settings=st, dtype=dtype)
        out[pos] = generate(model, s, num_frames=18)
    x = torch.randn(2, 16, 6, 6, 10, generator=g).to(dtype)
    t = torch.rand(2, 6, generator=g) * 1000
    with torch.no_grad():
        out["mask"] = fwd.wan_forward(model, x, t, ctx.to(dtype), mask=BlockCausalMask(((0, 3), (3, 6)), 15))
        out["bidirectional"] = fwd.wan_forward(model, x, t, ctx.to(dtype))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["fp32", "bf16", "fp64"])
def test_forward_is_bit_identical_to_the_strided_layout_and_real_rope(dtype, monkeypatch):
    new = _outputs(dtype)
    monkeypatch.setattr(fwd, "_rows", strided_rows)
    monkeypatch.setattr(fwd, "apply_rope", lambda x, freqs: four_products(x, freqs.real, freqs.imag))
    old = _outputs(dtype)
    for name in new:
        assert torch.equal(new[name], old[name]), name


def test_the_residual_stream_is_contiguous():
    model = _model(torch.float32)
    seen = []
    for blk in model.blocks:
        blk.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    with torch.no_grad():
        fwd.wan_forward(model, torch.randn(1, 16, 3, 6, 10), torch.full((1,), 500.0), torch.randn(1, 5, 32))
    assert seen == [True, True]
