"""TAEHV preview decoder: equal to madebyollin/taehv's `decode_video` (fixture), streaming == full decode,
real checkpoint formats (.pth / .safetensors, prefixed keys), wrong files, state, gradients."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import FIXTURES
from sf_core.vae import TAEHV, TAEHVState, VAEError, decode_stream, load_decoder, load_taehv
from sf_core.vae.tiny import random_state_dict, tiny_taehv

REF = FIXTURES / "vae_ref.safetensors"
TOL = 1e-5




@pytest.fixture(scope="module")
def tae():
    return tiny_taehv(seed=3)


@pytest.fixture(scope="module")
def z():
    return torch.randn(2, 16, 7, 3, 4, generator=torch.Generator().manual_seed(4))


def _real_layout_state_dict(seed: int) -> dict:
    """A state dict with every key and shape of the real taew2_1 file (decoder and encoder)."""
    sd = random_state_dict({k: v.shape for k, v in TAEHV().state_dict().items()}, seed)
    # the real file also holds the encoder (ignored by the decoder): a few of its keys
    sd.update({"encoder.0.weight": torch.zeros(64, 3, 3, 3), "encoder.0.bias": torch.zeros(64),
               "encoder.2.conv.weight": torch.zeros(64, 128, 1, 1), "encoder.17.weight": torch.zeros(16, 64, 3, 3)})
    return sd


def test_official_fixture():
    ref = load_file(str(REF))
    meta = json.loads(safe_open(str(REF), "pt").metadata()["vae_meta_json"])
    sd = random_state_dict({k: v.shape for k, v in TAEHV().state_dict().items()}, meta["taehv_seed"])
    for k, v in sd.items():
        assert abs(v.double().sum().item() - ref[f"taehv/wsum.{k}"].item()) < 1e-6, f"weight generation differs at {k}"
    model = load_taehv(sd)
    with torch.no_grad():
        frames = model.decode(ref["taehv/z"])
    expected = ref["taehv/frames"].permute(0, 2, 1, 3, 4) * 2 - 1  # official: NTCHW in [0, 1]
    assert frames.shape == expected.shape == (1, 3, 13, 24, 40)
    assert expected.std() > 0.05
    assert (frames - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("sizes", [3, 1, [2, 4, 1]], ids=["chunk3", "frame", "uneven"])
def test_stream_equals_full_decode(tae, z, sizes):
    with torch.no_grad():
        full = tae.decode(z)
        parts, state = decode_stream(tae, z, sizes)
    expect = {3: [9, 12, 4], 1: [1] + [4] * 6}.get(sizes if isinstance(sizes, int) else 0, [5, 16, 4])
    assert [p.shape[2] for p in parts] == expect
    assert full.shape == (2, 3, 25, 24, 32)
    assert (torch.cat(parts, 2) - full).abs().max().item() <= TOL
    assert state.latent_frames == 7 and len(state.memory) == 9


def test_state_reuse_roundtrip_and_constant_memory(tae, z, tmp_path):
    with torch.no_grad():
        a, state = tae.decode_chunk(z[:, :, :3])
        save_file(state.to_tensors(), str(tmp_path / "s.safetensors"))
        restored = TAEHVState.from_tensors(load_file(str(tmp_path / "s.safetensors")))
        b1, s1 = tae.decode_chunk(z[:, :, 3:5], state)
        b2, s2 = tae.decode_chunk(z[:, :, 3:5], restored)
        _, s3 = tae.decode_chunk(z[:, :, 5:7], s1)
    assert torch.equal(b1, b2)
    assert state.nbytes == s1.nbytes == s3.nbytes > 0  # one frame per MemBlock, whatever the length


def test_gradient_reaches_latents(tae, z):
    with torch.no_grad():
        _, state = tae.decode_chunk(z[:, :, :3])
    cur = z[:, :, 3:6].clone().requires_grad_(True)
    frames, _ = tae.decode_chunk(cur, state)
    frames.square().mean().backward()
    assert cur.grad is not None and cur.grad.abs().sum() > 0 and torch.isfinite(cur.grad).all()


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "prefixed", "nested"])
def test_load_real_formats(tmp_path, fmt):
    sd = _real_layout_state_dict(seed=8)
    path = tmp_path / ("taew2_1.safetensors" if fmt in ("safetensors", "prefixed") else "taew2_1.pth")
    if fmt == "prefixed":  # as ComfyUI-style loaders store it
        save_file({k.replace("decoder.", "taehv_decoder.").replace("encoder.", "taehv_encoder."): v
                   for k, v in sd.items()}, str(path))
    elif fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd} if fmt == "nested" else sd, str(path))
    model = load_taehv(path)
    auto = load_decoder(path)
    assert isinstance(auto, TAEHV) and model.widths == (256, 128, 64, 64) and model.time_strides == (1, 2, 2)
    assert not any(p.requires_grad for p in model.parameters())
    expected = load_taehv({k: v for k, v in sd.items() if k.startswith("decoder.")})
    zz = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.decode(zz), expected.decode(zz))
        assert torch.equal(auto.decode(zz), expected.decode(zz))


def test_half_precision_load(tmp_path):
    sd = {k: v.half() for k, v in _real_layout_state_dict(seed=1).items()}
    save_file(sd, str(tmp_path / "taew2_1.safetensors"))
    model = load_taehv(tmp_path / "taew2_1.safetensors", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    with torch.no_grad():
        out = model.decode(torch.randn(1, 16, 1, 2, 2))
    assert out.dtype == torch.float32 and out.shape == (1, 3, 1, 16, 16)


def test_wrong_files(tmp_path):
    good = {k: v for k, v in _real_layout_state_dict(seed=0).items() if k.startswith("decoder.")}
    wan22 = dict(good, **{"decoder.1.weight": torch.zeros(256, 48, 3, 3)})
    with pytest.raises(VAEError, match="48 latent channels.*taew2_2"):
        load_taehv(wan22)
    with pytest.raises(VAEError, match="'super' decoder"):
        load_taehv({"decoder.0.weight": torch.zeros(512, 16, 1, 1), "decoder.1.conv.0.weight": torch.zeros(1)})
    with pytest.raises(VAEError, match="load_wan_vae"):
        load_taehv({"decoder.middle.0.residual.0.gamma": torch.zeros(1), "conv2.weight": torch.zeros(16, 16, 1, 1, 1)})
    broken = dict(good)
    del broken["decoder.10.conv.2.weight"]
    with pytest.raises(VAEError, match="1 missing.*decoder.10.conv.2.weight"):
        load_taehv(broken)
    bad_shape = dict(good, **{"decoder.4.conv.2.weight": torch.zeros(256, 256, 1, 1)})
    with pytest.raises(VAEError, match="other shapes"):
        load_taehv(bad_shape)
    odd_time = dict(good, **{"decoder.13.conv.weight": torch.zeros(128, 128, 1, 1)})
    with pytest.raises(VAEError, match="2x frames"):
        load_taehv(odd_time)
    with pytest.raises(VAEError, match="TAEHVState"):
        tiny_taehv().decode_chunk(torch.zeros(1, 16, 1, 2, 2), state=("not", "a state"))
