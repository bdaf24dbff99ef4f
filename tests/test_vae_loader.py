"""Loading Wan2.1 VAE weight files: the original .pth, ComfyUI's .safetensors, wrapper prefixes, decoder-only
files, dtypes, and clear errors for every wrong file."""
import pytest
import torch
from safetensors.torch import save_file

from sf_core.vae import VAEError, WanVAE, detect_format, load_decoder, load_wan_vae, save_wan_vae
from sf_core.vae.tiny import tiny_wan_vae




@pytest.fixture(scope="module")
def ref():
    return tiny_wan_vae(seed=6)


@pytest.fixture(scope="module")
def z():
    return torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(0))


def _sd(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "first_stage_model", "nested_pth"])
def test_load_formats(ref, z, tmp_path, fmt):
    sd = _sd(ref)
    if fmt == "pth":  # Wan2.1_VAE.pth: a plain state dict saved with torch.save
        path = tmp_path / "Wan2.1_VAE.pth"
        torch.save(sd, path)
    elif fmt == "safetensors":  # ComfyUI's wan_2.1_vae.safetensors: the same names, no prefix
        path = tmp_path / "wan_2.1_vae.safetensors"
        save_wan_vae(path, ref)
    elif fmt == "first_stage_model":  # a VAE inside a full checkpoint
        path = tmp_path / "ckpt.safetensors"
        save_file({**{"first_stage_model." + k: v for k, v in sd.items()},
                   "model.diffusion_model.x.weight": torch.zeros(2)}, str(path))
    else:
        path = tmp_path / "vae.pt"
        torch.save({"state_dict": sd, "step": torch.tensor(3)}, path)
    model = load_wan_vae(path)
    assert isinstance(load_decoder(path), WanVAE)
    assert model.has_encoder and model.config == ref.config and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model.decode(z), ref.decode(z))


def test_decoder_only_file(ref, z, tmp_path):
    """The Self Forcing demo keeps only `decoder.*` and `conv2.*`."""
    sd = {k: v for k, v in _sd(ref).items() if k.startswith(("decoder.", "conv2."))}
    torch.save(sd, tmp_path / "dec.pth")
    model = load_wan_vae(tmp_path / "dec.pth")
    assert not model.has_encoder
    with torch.no_grad():
        assert torch.equal(model.decode(z), ref.decode(z))


def test_dtype_and_bf16_file(ref, z, tmp_path):
    save_file({k: v.to(torch.bfloat16) for k, v in _sd(ref).items()}, str(tmp_path / "bf16.safetensors"))
    model = load_wan_vae(tmp_path / "bf16.safetensors", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    with torch.no_grad():
        out = model.decode(z)
        ref32 = ref.decode(z)
    assert out.dtype == torch.float32 and out.shape == ref32.shape
    assert (out - ref32).abs().max() < 0.25  # bf16 weights and activations: close, not equal


def test_detect_format():
    assert detect_format({"decoder.middle.0.residual.0.gamma": 0}) == "wan21"
    assert detect_format({"decoder.upsamples.0.upsamples.0.residual.2.weight": 0,
                          "decoder.middle.0.residual.0.gamma": 0}) == "wan22"
    assert detect_format({"post_quant_conv.weight": 0}) == "diffusers_wan"
    assert detect_format({"decoder.1.weight": 0, "decoder.3.conv.0.weight": 0}) == "taehv"
    assert detect_format({"foo": 0}) == "unknown"


def test_wrong_files(ref, tmp_path):
    sd = _sd(ref)
    with pytest.raises(VAEError, match="not found"):
        load_wan_vae(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(VAEError, match="cannot read"):
        load_wan_vae(tmp_path / "junk.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(VAEError, match="dict of tensors"):
        load_wan_vae(tmp_path / "list.pth")
    with pytest.raises(VAEError, match="Wan2.2 VAE"):
        load_wan_vae(dict(sd, **{"decoder.upsamples.0.upsamples.0.residual.2.weight": torch.zeros(1)}))
    with pytest.raises(VAEError, match="diffusers"):
        load_wan_vae({"post_quant_conv.weight": torch.zeros(16, 16, 1, 1, 1),
                      "decoder.up_blocks.0.resnets.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(VAEError, match="load_taehv"):
        load_wan_vae({"decoder.1.weight": torch.zeros(256, 16, 3, 3), "decoder.3.conv.0.weight": torch.zeros(1)})
    with pytest.raises(VAEError, match="no known VAE layout"):
        load_wan_vae({"blocks.0.weight": torch.zeros(1)})
    partial = dict(sd)
    del partial["decoder.middle.1.proj.weight"]
    with pytest.raises(VAEError, match="1 missing.*decoder.middle.1.proj.weight"):
        load_wan_vae(partial)
    with pytest.raises(VAEError, match="unexpected.*extra.weight"):
        load_wan_vae(dict(sd, **{"extra.weight": torch.zeros(1)}))
    bad = dict(sd, **{"decoder.conv1.bias": torch.zeros(5)})
    with pytest.raises(VAEError, match="other shapes.*decoder.conv1.bias"):
        load_wan_vae(bad)
    with pytest.raises(VAEError, match="16"):
        load_wan_vae(dict(sd, **{"conv2.weight": torch.zeros(48, 48, 1, 1, 1)}))
    with pytest.raises(VAEError, match="kind"):
        load_decoder(tmp_path / "list.pth", kind="lightvae")
