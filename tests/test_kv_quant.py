"""KV-cache storage formats (sf_core.cache.kv_quant): 8-bit codes are bounded, half the bytes of bf16, and a run with an
int8 / fp8 cache stays close to the full-precision one (bounded per chunk) while 'auto' stays bit-identical."""
import dataclasses

import pytest
import torch

from sessions_kit import HW, conditioning, tiny_model
from sf_core.config import CausalConfig, ConfigError
from sf_core.model.forward import wan_forward
from sf_core.cache.kv_cache import KVCache
from sf_core.cache.kv_quant import KV_DTYPES, dequantise, quantise, resolve
from sf_core.sampling.pipeline import generate
from sf_core.sampling.session import SamplingSettings, new_session
from sf_core.sampling.session_io import load_session, save_session

ROLL = CausalConfig(chunk_frames=3, window_frames=9, sink_frames=3)


def _settings(kv: str, positions: str = "auto") -> SamplingSettings:
    return SamplingSettings(causal=ROLL, kv_dtype=kv, positions=positions)


def _run(kv: str, frames: int = 24, positions: str = "auto", seed: int = 3, **model_kw):
    model = tiny_model(**model_kw)
    s = new_session(model, conditioning(0), latent_hw=HW, seed=seed, settings=_settings(kv, positions))
    return generate(model, s, num_frames=frames), s


@pytest.mark.parametrize("kv", ["int8", "fp8"])
def test_codes_are_within_half_a_step_of_the_values(kv):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 50, 3, 32, generator=g) * torch.logspace(-3, 2, 50)[None, :, None, None]
    fmt = resolve(kv, torch.float32)
    q, s = quantise(x, fmt)
    assert q.dtype == fmt.storage and s.shape == (2, 50, 3, 1) and s.dtype == torch.float16
    err = (dequantise(q, s, torch.float32) - x).abs()
    amax = x.abs().amax(-1, keepdim=True)
    if kv == "int8":  # uniform step = the stored scale: error <= step / 2 (+ float rounding)
        assert (err <= 0.5 * s.float() * (1 + 1e-3) + 1e-7).all()
    else:  # e4m3: 3 mantissa bits, relative error <= 2^-4 of the value, or a subnormal step of the scale
        assert (err <= torch.maximum(x.abs() / 16, s.float() * 2 ** -9) * (1 + 1e-3)).all()
    assert (err <= amax / 16).all() and err.max() > 0


@pytest.mark.parametrize("head_dim,heads", [(128, 12), (32, 4)], ids=["wan1.3b_heads", "toy_heads"])
@pytest.mark.parametrize("kv", ["int8", "fp8"])
def test_8bit_cache_is_at_most_055_of_bf16(kv, head_dim, heads):
    def size(fmt):
        c = KVCache.allocate(3, 1, heads, head_dim, 40, window_frames=21, dtype=torch.bfloat16, kv_dtype=fmt)
        return c.nbytes()
    assert size(kv) <= 0.55 * size("auto")
    assert size("bf16") == size("auto")
    assert resolve(kv, torch.bfloat16).bytes_per_row(heads, head_dim) * 3 * 2 * 21 * 40 == size(kv)


def test_auto_and_same_dtype_storage_are_bit_identical():
    ref, _ = _run("auto")
    same, s = _run("fp32")
    assert torch.equal(ref, same) and s.cache.dtype == torch.float32


@pytest.mark.parametrize("kv,bound", [("bf16", 1e-3), ("fp16", 2e-4), ("int8", 3e-3), ("fp8", 0.012)])
@pytest.mark.parametrize("positions", ["absolute", "relative"])
def test_per_chunk_latent_error_is_bounded(kv, bound, positions):
    """24 frames through a window of 9 (5 evictions): every chunk's error relative to the latents' RMS."""
    ref, _ = _run("auto", positions=positions)
    got, s = _run(kv, positions=positions)
    assert s.cache.kv_dtype == kv
    rms = ref.pow(2).mean().sqrt()
    per_chunk = [((got[:, :, a:a + 3] - ref[:, :, a:a + 3]).pow(2).mean().sqrt() / rms).item()
                 for a in range(0, 24, 3)]
    assert per_chunk[0] == 0  # the first chunk attends only to itself: no stored row is read
    assert 0 < max(per_chunk) <= bound, per_chunk


def test_relative_reroped_int8_keys_stay_close_to_exact_reroped_keys():
    """Decode -> re-rope -> re-encode on each eviction: the stored keys track the exact relative keys."""
    model = tiny_model()
    g = torch.Generator().manual_seed(5)
    x, ctx = torch.randn(1, 16, 18, *HW, generator=g), conditioning(0)
    caches = {kv: KVCache.for_config(ROLL, num_layers=2, num_heads=2, head_dim=32, tokens_per_frame=6,
                                     rope_mode="relative", kv_dtype=kv) for kv in ("auto", "int8")}
    with torch.no_grad():
        for a in range(0, 18, 3):
            for c in caches.values():
                wan_forward(model, x[:, :, a:a + 3], torch.full((1, 3), 500.0), ctx, cache=c, start_frame=a)
    exact, q = caches["auto"].valid(0)[0], caches["int8"].valid(0)[0]
    assert caches["int8"].positions == caches["auto"].positions == [0, 1, 2, 12, 13, 14, 15, 16, 17]
    rel = ((q - exact).norm(dim=-1) / exact.norm(dim=-1)).max().item()
    assert 0 < rel < 0.015, rel


def test_session_file_keeps_the_codes_and_continues_bit_identically(tmp_path):
    model, ctx = tiny_model(), conditioning(0)
    full = new_session(model, ctx, latent_hw=HW, seed=2, settings=_settings("int8"))
    generate(model, full, num_frames=12)
    path = save_session(full, tmp_path / "q.safetensors")
    rest = generate(model, full, num_frames=9)
    resumed = load_session(path, model)
    assert resumed.settings.kv_dtype == "int8" and resumed.cache.kv_dtype == "int8"
    assert resumed.cache.dtype == torch.int8 and resumed.cache.k_scale[0].dtype == torch.float16
    assert torch.equal(generate(model, resumed, num_frames=9), rest)
    moved = resumed.to("cpu", torch.float64)
    resumed.cache.reset_cross()  # `to` drops the text cache: compare the self-attention rows
    assert moved.cache.dtype == torch.int8 and moved.cache.nbytes() == resumed.cache.nbytes()


def test_quantised_cache_refuses_a_forward_with_grad():
    model = tiny_model()
    cache = KVCache.for_config(ROLL, num_layers=2, num_heads=2, head_dim=32, tokens_per_frame=6, kv_dtype="int8")
    x = torch.randn(1, 16, 3, *HW)
    with torch.enable_grad(), pytest.raises(ConfigError, match="inference only.*kv_dtype 'auto'"):
        wan_forward(model, x, torch.full((1, 3), 500.0), conditioning(0), cache=cache)
    assert cache.length == 0 and cache._plan is None  # nothing was written; the cache is still usable
    with torch.no_grad():
        wan_forward(model, x, torch.full((1, 3), 500.0), conditioning(0), cache=cache)
    assert cache.length == 3


def test_a_bad_kv_dtype_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="kv_dtype must be one of.*int8"):
        SamplingSettings(kv_dtype="int4")
    assert set(KV_DTYPES) == {"auto", "bf16", "fp16", "fp32", "int8", "fp8"}
    d = SamplingSettings(kv_dtype="fp8").to_dict()
    assert SamplingSettings.from_dict(d).kv_dtype == "fp8"
    old = {k: v for k, v in dataclasses.asdict(SamplingSettings()).items() if k != "kv_dtype"}
    assert SamplingSettings.from_dict(old).kv_dtype == "auto"  # files from before the option
