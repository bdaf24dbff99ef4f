"""Bad checkpoint input: each is a CheckpointError (a ValueError, so a host catches it) that names the file and
says what is wrong -- never a crash, never code execution."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from sf_core.checkpoints.weights import CheckpointError, load_checkpoint, load_model, save_model
from sf_core.config import WanConfig
from test_checkpoints import CFG, WAN_CONFIG_JSON, make_sd, write_sharded


def expect_error(path, match, **kw):
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path, **kw)
    assert isinstance(info.value, ValueError)
    assert os.path.basename(str(path).rstrip("/")) in str(info.value), "the message must name the file"
    return str(info.value)


def test_missing_path(tmp_path):
    expect_error(tmp_path / "nope.safetensors", "does not exist")


@pytest.mark.parametrize("name", ["empty.safetensors", "empty.pt", "empty"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    expect_error(tmp_path / name, "empty")


def test_directory_without_weights(tmp_path):
    (tmp_path / "README.md").write_text("hello")
    expect_error(tmp_path, "holds no weights")


def test_directory_with_several_weight_files(tmp_path):
    save_file({"a": torch.zeros(1)}, str(tmp_path / "a.safetensors"))
    save_file({"a": torch.zeros(1)}, str(tmp_path / "b.safetensors"))
    expect_error(tmp_path, "several weight files")


def test_unknown_format_keys(tmp_path):
    save_file({"encoder.layer.0.weight": torch.zeros(2, 2)}, str(tmp_path / "bert.safetensors"))
    msg = expect_error(tmp_path / "bert.safetensors", "unknown format")
    assert "encoder.layer.0.weight" in msg


def test_unknown_format_bytes(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + os.urandom(200))
    expect_error(tmp_path / "model.gguf", "unknown format")
    (tmp_path / "model.bin").write_bytes(b"GGUF" + os.urandom(200))
    expect_error(tmp_path / "model.bin", "not a PyTorch checkpoint")


def test_missing_keys_are_named(tmp_path):
    sd = make_sd()
    del sd["blocks.1.ffn.2.weight"], sd["blocks.0.cross_attn.norm_k.weight"]
    save_file(sd, str(tmp_path / "m.safetensors"))
    msg = expect_error(tmp_path / "m.safetensors", "missing keys")
    assert "blocks.1.ffn.2.weight" in msg and "blocks.0.cross_attn.norm_k.weight" in msg


def test_unexpected_keys_are_named(tmp_path):
    sd = make_sd()
    sd["blocks.0.self_attn.lora_A.weight"] = torch.zeros(4, 256)
    save_file(sd, str(tmp_path / "m.safetensors"))
    msg = expect_error(tmp_path / "m.safetensors", "unexpected keys")
    assert "blocks.0.self_attn.lora_A.weight" in msg


def test_unexpected_keys_outside_the_model_prefix(tmp_path):
    sd = {"model." + k: v for k, v in make_sd().items()}
    sd["optimizer.step"] = torch.zeros(1)
    torch.save({"generator": sd}, tmp_path / "m.pt")
    assert "optimizer.step" in expect_error(tmp_path / "m.pt", "unexpected keys")


def test_wrong_shapes(tmp_path):
    sd = make_sd()
    sd["blocks.1.self_attn.q.weight"] = torch.zeros(256, 128)
    save_file(sd, str(tmp_path / "m.safetensors"))
    msg = expect_error(tmp_path / "m.safetensors", "wrong shapes")
    assert "blocks.1.self_attn.q.weight (256, 128) (expected (256, 256))" in msg


def test_integer_tensors_are_refused(tmp_path):
    sd = make_sd()
    sd["blocks.0.norm3.bias"] = torch.zeros(256, dtype=torch.int64)
    save_file(sd, str(tmp_path / "m.safetensors"))
    expect_error(tmp_path / "m.safetensors", "non-floating-point")


def test_truncated_safetensors(tmp_path):
    save_file(make_sd(), str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / "cut.safetensors", "truncated")
    (tmp_path / "garbage.safetensors").write_bytes(os.urandom(4096))
    expect_error(tmp_path / "garbage.safetensors", "corrupt")


def test_truncated_and_corrupt_pt(tmp_path):
    torch.save({"generator": make_sd()}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / "cut.pt", "truncated or corrupt")
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x02" + os.urandom(3000))
    expect_error(tmp_path / "garbage.pt", "not a readable weights-only")


class _Payload:
    """Unpickling this object calls open(marker, 'w'): a stand-in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_that_needs_code_execution_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator": {"model." + k: v for k, v in make_sd().items()}, "hook": _Payload(marker)}, path)
    msg = expect_error(path, "refused")
    assert "code execution" in msg and "open" in msg
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists(), "the payload ran"
    # the file really is dangerous: an unsafe load executes the payload (proves this test can fail)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_config_metadata_contradicting_the_weights(tmp_path):
    sd = make_sd()
    path = save_model(tmp_path / "m.safetensors", sd, CFG)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    meta["wan_config"] = WanConfig(dim=256, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32).to_json()
    save_file(sd, str(tmp_path / "lying.safetensors"), metadata=meta)
    msg = expect_error(tmp_path / "lying.safetensors", "contradict|says ffn_dim=128")
    assert "ffn_dim=64" in msg


def test_config_json_contradicting_the_weights(tmp_path):
    save_file(make_sd(), str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(dict(WAN_CONFIG_JSON, num_layers=30)))
    expect_error(tmp_path / "diffusion_pytorch_model.safetensors", "says num_layers=30")


def test_explicit_config_contradicting_the_weights(tmp_path):
    save_file(make_sd(), str(tmp_path / "m.safetensors"))
    expect_error(tmp_path / "m.safetensors", "says dim=1536", config=WanConfig.wan_1_3b())


def test_newer_format_version_is_refused(tmp_path):
    sd = make_sd()
    save_file(sd, str(tmp_path / "future.safetensors"),
              metadata={"format": "sf_core.wan21", "format_version": "99", "wan_config": CFG.to_json()})
    expect_error(tmp_path / "future.safetensors", "format_version")


def test_missing_shard_and_incomplete_index(tmp_path):
    sd = make_sd()
    names = write_sharded(tmp_path, sd)
    (tmp_path / names[2]).unlink()
    expect_error(tmp_path / "diffusion_pytorch_model.safetensors.index.json", "missing")
    (tmp_path / "x").mkdir()
    names = write_sharded(tmp_path / "x", sd, index=False)
    (tmp_path / "x" / names[1]).unlink()
    expect_error(tmp_path / "x" / names[0], "missing")


def test_index_listing_keys_no_shard_has(tmp_path):
    sd = make_sd()
    write_sharded(tmp_path, sd)
    index = tmp_path / "diffusion_pytorch_model.safetensors.index.json"
    spec = json.loads(index.read_text())
    spec["weight_map"]["blocks.9.ffn.0.weight"] = spec["weight_map"]["head.head.weight"]
    index.write_text(json.dumps(spec))
    expect_error(index, "index does not assign|lists keys")


def test_which_that_the_file_does_not_hold(tmp_path):
    torch.save({"generator": make_sd(), "critic": make_sd()}, tmp_path / "m.pt")
    msg = expect_error(tmp_path / "m.pt", "no 'generator_ema'", which="generator_ema")
    assert "critic" in msg and "generator" in msg
    save_file(make_sd(), str(tmp_path / "one.safetensors"))
    expect_error(tmp_path / "one.safetensors", "single model", which="critic")
    with pytest.raises(CheckpointError, match="not one of"):
        load_checkpoint(tmp_path / "one.safetensors", which="teacher")


def test_image_to_video_models_are_named(tmp_path):
    sd = make_sd()
    sd["img_emb.proj.0.weight"] = torch.zeros(4)
    save_file(sd, str(tmp_path / "i2v.safetensors"))
    expect_error(tmp_path / "i2v.safetensors", "image-to-video")


@pytest.mark.parametrize("obj", [[torch.zeros(2)], {"step": 5}, {"generator": {"step": 1}}], ids=["list", "scalars", "nested"])
def test_pickles_that_are_not_models(tmp_path, obj):
    torch.save(obj, tmp_path / "x.pt")
    expect_error(tmp_path / "x.pt", "not a model checkpoint|not a dict")


def test_save_refuses_a_model_that_does_not_match_its_config(tmp_path):
    with pytest.raises(CheckpointError, match="missing keys|wrong shapes"):
        save_model(tmp_path / "x.safetensors", make_sd(), WanConfig.tiny())
    assert not list(tmp_path.iterdir())
