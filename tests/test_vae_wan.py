"""Our Wan2.1 VAE: equal to the official `wan/modules/vae.py` (fixture), streaming == full decode,
explicit immutable state, constant memory, gradients, bad input."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import FIXTURES
from sf_core.vae import (VAEError, WanDecoderState, WanVAE, WanVAEConfig, decode_stream, denormalize, frames_out,
                         normalize)
from sf_core.vae.latent import WAN21_MEAN, WAN21_STD
from sf_core.vae.tiny import random_state_dict, tiny_wan_vae

REF = FIXTURES / "vae_ref.safetensors"
TOL = 1e-5




@pytest.fixture(scope="module")
def vae():
    return tiny_wan_vae(seed=0)


@pytest.fixture(scope="module")
def z():
    return torch.randn(1, 16, 7, 3, 5, generator=torch.Generator().manual_seed(1))  # h != w


@pytest.fixture(scope="module")
def full(vae, z):
    with torch.no_grad():
        return vae.decode(z)


def test_official_fixture_decode_and_encode():
    ref = load_file(str(REF))
    meta = json.loads(safe_open(str(REF), "pt").metadata()["vae_meta_json"])
    cfg = WanVAEConfig(**meta["wan_config"])
    model = WanVAE(cfg)
    sd = random_state_dict({k: v.shape for k, v in model.state_dict().items()}, meta["wan_seed"])
    for k, v in sd.items():  # the weights the official run used, regenerated from the seed
        assert abs(v.double().sum().item() - ref[f"wan/wsum.{k}"].item()) < 1e-6, f"weight generation differs at {k}"
    model.load_state_dict(sd)
    model.eval()
    with torch.no_grad():
        frames = model.decode_raw(ref["wan/z_raw"])
        mu = model.encode_raw(ref["wan/video"])
    assert frames.shape == ref["wan/frames"].shape == (1, 3, 17, 32, 48)
    assert (frames - ref["wan/frames"]).abs().max().item() <= TOL
    assert ref["wan/frames"].std() > 0.1  # not a trivial (saturated or zero) output
    assert mu.shape == ref["wan/mu"].shape == (1, 16, 3, 4, 6)
    assert (mu - ref["wan/mu"]).abs().max().item() <= TOL


@pytest.mark.parametrize("per_call", [1, 3], ids=["per_frame", "3_per_call"])
@pytest.mark.parametrize("sizes", [3, 1, [2, 1, 3, 1], [1, 6]], ids=["chunk3", "frame", "uneven", "1+6"])
def test_stream_equals_full_decode(vae, z, full, sizes, per_call):
    """`full` is the reference per-frame decode; with 3 frames per call the grouping differs from it."""
    vae.frames_per_call = per_call
    try:
        with torch.no_grad():
            parts, state = decode_stream(vae, z, sizes)
    finally:
        vae.frames_per_call = 1
    sizes = [3, 3, 1] if sizes == 3 else [1] * 7 if sizes == 1 else sizes
    assert [p.shape[2] for p in parts] == [frames_out(n, i == 0) for i, n in enumerate(sizes)]
    streamed = torch.cat(parts, dim=2)
    assert streamed.shape == full.shape == (1, 3, 25, 24, 40)
    assert (streamed - full).abs().max().item() <= TOL
    assert state.latent_frames == 7


def test_chunk_frame_counts(vae, z):
    with torch.no_grad():
        parts, _ = decode_stream(vae, torch.cat([z, z[:, :, :2]], 2), 3)
    assert [p.shape[2] for p in parts] == [9, 12, 12]
    assert all(p.dtype == torch.float32 and p.min() >= -1 and p.max() <= 1 for p in parts)


def test_two_interleaved_streams_and_state_reuse(vae, z, full):
    other = torch.randn(2, 16, 4, 3, 5, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a0, sa = vae.decode_chunk(z[:, :, :3])
        b0, sb = vae.decode_chunk(other[:, :, :2])
        a1, sa1 = vae.decode_chunk(z[:, :, 3:], sa)
        again, _ = vae.decode_chunk(z[:, :, 3:], sa)  # the same state again: not consumed
        b1, _ = vae.decode_chunk(other[:, :, 2:], sb)
        other_full = vae.decode(other)
    assert torch.equal(a1, again)
    assert (torch.cat([a0, a1], 2) - full).abs().max().item() <= TOL
    assert (torch.cat([b0, b1], 2) - other_full).abs().max().item() <= TOL


def test_state_memory_is_constant(vae):
    zz = torch.randn(1, 16, 16, 3, 5, generator=torch.Generator().manual_seed(2))
    sizes, state = [], None
    with torch.no_grad():
        for i in range(8):
            _, state = vae.decode_chunk(zz[:, :, 2 * i:2 * i + 2], state)
            sizes.append(state.nbytes)
    assert sizes[1] > 0 and len(set(sizes[1:])) == 1, sizes
    # only 2-frame caches: no slot holds more than 2 frames
    assert all(c.shape[2] <= 2 for c in state.caches if isinstance(c, torch.Tensor))


def test_state_roundtrip_through_safetensors(vae, z, full, tmp_path):
    with torch.no_grad():
        first, state = vae.decode_chunk(z[:, :, :4])
        save_file(state.to_tensors("dec."), str(tmp_path / "s.safetensors"))
        restored = WanDecoderState.from_tensors(load_file(str(tmp_path / "s.safetensors")), "dec.")
        rest, _ = vae.decode_chunk(z[:, :, 4:], restored)
    assert restored.latent_frames == 4 and restored.hw == (3, 5)
    assert torch.equal(torch.cat([first, rest], 2), torch.cat([first, vae.decode_chunk(z[:, :, 4:], state)[0]], 2))
    assert (torch.cat([first, rest], 2) - full).abs().max().item() <= TOL


def test_gradient_reaches_latents_through_decode_chunk(vae, z):
    """Earlier chunks decoded without grad warm the cache; the gradient of a loss on the current chunk's
    frames equals the one through a full decode with the earlier latents held constant."""
    w = torch.randn(1, 3, 12, 24, 40, generator=torch.Generator().manual_seed(9))
    cur = z[:, :, 3:6].clone().requires_grad_(True)
    with torch.no_grad():
        _, state = vae.decode_chunk(z[:, :, :3])
    frames, _ = vae.decode_chunk(cur, state.detach())
    (frames * w).sum().backward()
    g_stream = cur.grad.clone()
    assert g_stream.abs().sum() > 0 and torch.isfinite(g_stream).all()

    cur2 = z[:, :, 3:6].clone().requires_grad_(True)
    full = vae.decode(torch.cat([z[:, :, :3], cur2], 2))
    (full[:, :, 9:21] * w).sum().backward()
    assert torch.allclose(g_stream, cur2.grad, atol=1e-5, rtol=1e-4)


def test_latent_normalisation():
    raw = torch.randn(2, 16, 3, 4, 4, dtype=torch.float64)
    assert torch.allclose(denormalize(normalize(raw)), raw, atol=1e-12)
    zero = torch.zeros(1, 16, 1, 1, 1)
    assert torch.allclose(denormalize(zero).flatten(), torch.tensor(WAN21_MEAN))
    assert torch.allclose(normalize(denormalize(zero) + torch.tensor(WAN21_STD).view(1, 16, 1, 1, 1)), zero + 1)
    assert normalize(raw.to(torch.bfloat16)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="16 channels"):
        normalize(torch.zeros(1, 4, 2, 2))


def test_full_size_layout_matches_the_real_vae():
    with torch.device("meta"):
        m = WanVAE()
    sd = m.state_dict()
    # 194 tensors / 126,892,531 parameters: the official WanVAE_ built with Wan2.1's config (checked once
    # against wan/modules/vae.py), the same key set as ComfyUI's (test_vae_comfy.py).
    assert len(sd) == 194 and sum(v.numel() for v in sd.values()) == 126_892_531
    assert tuple(sd["decoder.middle.0.residual.0.gamma"].shape) == (384, 1, 1, 1)
    assert tuple(sd["decoder.upsamples.3.resample.1.weight"].shape) == (192, 384, 3, 3)
    assert tuple(sd["decoder.upsamples.3.time_conv.weight"].shape) == (768, 384, 3, 1, 1)
    assert tuple(sd["encoder.downsamples.5.time_conv.weight"].shape) == (192, 192, 3, 1, 1)


def test_bad_input(vae, z):
    with pytest.raises(VAEError, match="16"):
        vae.decode_chunk(torch.zeros(1, 4, 2, 3, 3))
    with pytest.raises(VAEError, match="permute"):
        vae.decode_chunk(z.permute(0, 2, 1, 3, 4)[:, :4])
    with pytest.raises(VAEError, match="5-D"):
        vae.decode_chunk(z[:, :, 0])
    with pytest.raises(VAEError, match="floating"):
        vae.decode_chunk(torch.zeros(1, 16, 1, 2, 2, dtype=torch.int64))
    with torch.no_grad():
        _, state = vae.decode_chunk(z[:, :, :1])
    with pytest.raises(VAEError, match="same batch and size"):
        vae.decode_chunk(torch.zeros(1, 16, 1, 4, 5), state)
    with pytest.raises(VAEError, match="same batch and size"):
        vae.decode_chunk(torch.zeros(2, 16, 1, 3, 5), state)
    with pytest.raises(VAEError, match="WanDecoderState"):
        vae.decode_chunk(z[:, :, :1], {"feat": []})
    with pytest.raises(VAEError, match="1 \\+ 4k frames: use 5 or 9"):
        vae.encode(torch.zeros(1, 3, 6, 16, 16))
    with pytest.raises(VAEError, match="multiple of 8"):
        vae.encode(torch.zeros(1, 3, 5, 20, 16))
    with pytest.raises(VAEError, match="frames_per_call"):
        WanVAE(WanVAEConfig.tiny(), frames_per_call=0)
    with pytest.raises(VAEError, match="z_dim"):
        WanVAEConfig(z_dim=48)
    with pytest.raises(VAEError, match="sum to"):
        decode_stream(vae, z, [2, 2])
    decoder_only = tiny_wan_vae(with_encoder=False)
    with pytest.raises(VAEError, match="decoder-only"):
        decoder_only.encode(torch.zeros(1, 3, 5, 16, 16))
