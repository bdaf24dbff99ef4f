"""Every checkpoint load path, with tiny real-format files written by the test.

Each file is built from a model's own state dict by an independent writer (the formats as the Wan2.1
release, ComfyUI, diffusers and the Self Forcing trainer store them), then loaded back: the tensors must be
the same, the config right, and the model built from it must compute the same outputs.
"""
import functools
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from sf_core.checkpoints.weights import CheckpointError, load_checkpoint, load_model, save_model
from sf_core.config import CausalConfig, WanConfig
from sf_core.model.transformer import WanTransformer, randomize_weights

# dim 256 = 2 heads of Wan's 128: the number of heads is inferable from shapes (dim // 128)
CFG = WanConfig(dim=256, ffn_dim=64, num_heads=2, num_layers=2, text_dim=32, text_len=512)


@functools.lru_cache(maxsize=8)
def _random_sd(cfg, seed):
    return randomize_weights(WanTransformer(cfg), seed).state_dict()


def make_sd(cfg=CFG, seed=0, dtype=torch.float32):
    """Seeded random weights (cached: building a model is the slow part of these tests); a fresh dict."""
    return {k: v.to(dtype).contiguous() for k, v in _random_sd(cfg, seed).items()}


def assert_same(sd_a, sd_b):
    assert sorted(sd_a) == sorted(sd_b)
    for k in sd_a:
        assert sd_a[k].dtype == sd_b[k].dtype, k
        assert torch.equal(sd_a[k], sd_b[k]), k


def outputs(model, cfg):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, cfg.in_dim, 3, 4, 6, generator=g)
    ctx = torch.randn(1, 7, cfg.text_dim, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([[900.0, 500.0, 100.0]]), ctx)


WAN_CONFIG_JSON = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": 256, "eps": 1e-06,
                   "ffn_dim": 64, "freq_dim": 256, "in_dim": 16, "model_type": "t2v", "num_heads": 2,
                   "num_layers": 2, "out_dim": 16, "text_len": 512}


def write_sharded(folder, sd, n=3, index=True):
    keys = sorted(sd)
    names = [f"diffusion_pytorch_model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    weight_map = {}
    for i, name in enumerate(names):
        part = {k: sd[k] for k in keys[i::n]}
        save_file(part, str(folder / name))
        weight_map.update({k: name for k in part})
    if index:
        (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return names


def test_wan_original_single_file_and_folder(tmp_path):
    sd = make_sd()
    save_file(sd, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(WAN_CONFIG_JSON))
    for given in (tmp_path, tmp_path / "diffusion_pytorch_model.safetensors"):
        ck = load_checkpoint(given)
        assert ck.format == "wan_original" and ck.meta["config_source"] == "config.json"
        assert ck.config == CFG and ck.causal is None
        assert_same(ck.state_dict, sd)


def test_wan_original_sharded_by_folder_index_or_shard(tmp_path):
    sd = make_sd()
    names = write_sharded(tmp_path, sd)
    (tmp_path / "config.json").write_text(json.dumps(WAN_CONFIG_JSON))
    for given in (tmp_path, tmp_path / "diffusion_pytorch_model.safetensors.index.json", tmp_path / names[1]):
        ck = load_checkpoint(given)
        assert ck.format == "wan_original" and len(ck.meta["files"]) == 3
        assert ck.config == CFG
        assert_same(ck.state_dict, sd)


def test_shards_without_index_are_found_from_their_names(tmp_path):
    sd = make_sd()
    names = write_sharded(tmp_path, sd, n=2, index=False)
    ck = load_checkpoint(tmp_path / names[0])
    assert ck.meta["config_source"] == "inferred" and ck.config == CFG
    assert_same(ck.state_dict, sd)


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."], ids=["bare", "prefixed"])
def test_comfyui_repackaged(tmp_path, prefix):
    sd = make_sd(dtype=torch.float16)
    path = tmp_path / "wan2.1_t2v_tiny_fp16.safetensors"
    save_file({prefix + k: v for k, v in sd.items()}, str(path), metadata={"format": "pt"})
    ck = load_checkpoint(path)
    assert ck.format == "comfyui" and ck.meta["prefix"] == prefix
    # no metadata: num_heads = dim // 128 and text_len defaults to Wan's 512
    assert ck.config == CFG and ck.meta["config_source"] == "inferred"
    assert_same(ck.state_dict, sd)  # fp16 kept as stored


def test_full_comfy_checkpoint_ignores_other_components(tmp_path):
    sd = make_sd()
    full = {"model.diffusion_model." + k: v for k, v in sd.items()}
    full["first_stage_model.decoder.conv_in.weight"] = torch.zeros(3)
    full["cond_stage_model.t5.weight"] = torch.zeros(2)
    save_file(full, str(tmp_path / "full.safetensors"))
    ck = load_checkpoint(tmp_path / "full.safetensors")
    assert ck.meta["ignored_keys"] == 2
    assert_same(ck.state_dict, sd)


def fsdp_names(sd, prefix="model."):
    """How FSDP + activation checkpointing + torch.compile wrappers spell parameter names."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^blocks\.(\d+)\.", r"blocks.\1._fsdp_wrapped_module._checkpoint_wrapped_module.", k)
        out[f"{prefix}_orig_mod.{k}"] = v
    return out


def test_self_forcing_training_checkpoint(tmp_path):
    gen, ema, critic = make_sd(seed=1), make_sd(seed=2), make_sd(seed=3)
    path = tmp_path / "model.pt"
    torch.save({"generator": {"model." + k: v for k, v in gen.items()},
                "critic": {"model." + k: v for k, v in critic.items()},
                "generator_ema": fsdp_names(ema)}, path)
    auto = load_checkpoint(path)
    assert auto.format == "self_forcing" and auto.meta["which"] == "generator_ema"
    assert auto.meta["available"] == ["critic", "generator", "generator_ema"]
    assert_same(auto.state_dict, ema)
    assert_same(load_checkpoint(path, "generator").state_dict, gen)
    assert_same(load_checkpoint(path, "critic").state_dict, critic)
    assert load_checkpoint(path, "critic").config == CFG


def test_generator_only_checkpoint_auto_picks_it(tmp_path):
    gen = make_sd(seed=1)
    torch.save({"generator": {"model." + k: v for k, v in gen.items()}}, tmp_path / "ode_init.pt")
    ck = load_checkpoint(tmp_path / "ode_init.pt")
    assert ck.meta["which"] == "generator" and ck.format == "self_forcing"
    assert_same(ck.state_dict, gen)


@pytest.mark.parametrize("wrap", ["bare", "bare_prefixed", "model", "state_dict"])
def test_plain_pt_state_dicts(tmp_path, wrap):
    sd = make_sd()
    obj = {"bare": sd, "bare_prefixed": {"model." + k: v for k, v in sd.items()},
           "model": {"model": sd}, "state_dict": {"state_dict": sd, "epoch": 3}}[wrap]
    path = tmp_path / "weights.pth"
    torch.save(obj, path)
    ck = load_checkpoint(path)
    assert ck.format == "pt_state_dict"
    assert_same(ck.state_dict, sd)
    if wrap in ("model", "state_dict"):  # Self Forcing's train.py reads ["model"] when there is no generator
        assert_same(load_checkpoint(path, "generator").state_dict, sd)


def test_legacy_pickle_format(tmp_path):
    sd = make_sd()
    torch.save({"generator": sd}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert_same(load_checkpoint(tmp_path / "old.pt").state_dict, sd)


def to_diffusers(sd):
    """Wan2.1 -> diffusers WanTransformer3DModel names, written from the diffusers naming (independent of
    sf_core.checkpoints.keymap)."""
    top = {"text_embedding.0": "condition_embedder.text_embedder.linear_1",
           "text_embedding.2": "condition_embedder.text_embedder.linear_2",
           "time_embedding.0": "condition_embedder.time_embedder.linear_1",
           "time_embedding.2": "condition_embedder.time_embedder.linear_2",
           "time_projection.1": "condition_embedder.time_proj", "head.head": "proj_out",
           "head.modulation": "scale_shift_table"}
    block = [("self_attn.o", "attn1.to_out.0"), ("cross_attn.o", "attn2.to_out.0"), ("self_attn.", "attn1.to_"),
             ("cross_attn.", "attn2.to_"), ("norm3", "norm2"), ("ffn.0", "ffn.net.0.proj"), ("ffn.2", "ffn.net.2"),
             ("modulation", "scale_shift_table")]
    out = {}
    for k, v in sd.items():
        m = re.match(r"^(blocks\.\d+\.)(.*)$", k)
        if m:
            rest = m.group(2)
            for a, b in block:
                if rest.startswith(a):
                    rest = b + rest[len(a):]
                    break
            rest = rest.replace("to_norm_", "norm_")  # the norms are attn1.norm_q, not attn1.to_norm_q
            out[m.group(1) + rest] = v
        else:
            base = next((b + k[len(a):] for a, b in top.items() if k.startswith(a)), k)
            out[base] = v
    return out


def test_diffusers_layout(tmp_path):
    sd = make_sd()
    dsd = to_diffusers(sd)
    assert "blocks.0.attn1.to_q.weight" in dsd and "blocks.1.norm2.bias" in dsd and "scale_shift_table" in dsd
    (tmp_path / "transformer").mkdir()
    save_file(dsd, str(tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(
        {"_class_name": "WanTransformer3DModel", "num_attention_heads": 2, "attention_head_dim": 128,
         "in_channels": 16, "out_channels": 16, "ffn_dim": 64, "num_layers": 2, "text_dim": 32, "freq_dim": 256,
         "patch_size": [1, 2, 2], "eps": 1e-6, "qk_norm": "rms_norm_across_heads", "cross_attn_norm": True}))
    ck = load_checkpoint(tmp_path / "transformer")
    assert ck.format == "diffusers" and ck.config == CFG and ck.meta["config_source"] == "config.json"
    assert_same(ck.state_dict, sd)


def test_comfyui_scaled_fp8_is_dequantised(tmp_path):
    sd = make_sd()
    out, scales = {}, {}
    for k, v in sd.items():
        if re.match(r"blocks\.\d+\.(self_attn|cross_attn)\.[qkvo]\.weight$|blocks\.\d+\.ffn\.[02]\.weight$", k):
            scale = v.abs().max() / 448.0
            out[k] = (v / scale).to(torch.float8_e4m3fn)
            out[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
            scales[k] = scale
        else:
            out[k] = v.to(torch.bfloat16)
    out["scaled_fp8"] = torch.empty(2, dtype=torch.float8_e4m3fn)
    save_file(out, str(tmp_path / "wan_fp8_scaled.safetensors"))
    ck = load_checkpoint(tmp_path / "wan_fp8_scaled.safetensors")
    assert ck.meta["dequantized_scaled_fp8"] and sorted(ck.state_dict) == sorted(sd)
    for k, scale in scales.items():
        want = (out[k].float() * scale).to(torch.bfloat16)
        assert torch.equal(ck.state_dict[k], want), k
        # and it is the original weight up to fp8's 3 mantissa bits (relative step 2^-3, +bf16 rounding)
        assert ((ck.state_dict[k].float() - sd[k]).abs() <= sd[k].abs() * 2 ** -4 + scale * 2 ** -9 + 1e-6).all()


def test_own_format_roundtrip_keeps_config_causal_and_outputs(tmp_path):
    cfg = WanConfig.tiny()  # dim 64: num_heads cannot come from the shapes, only from the metadata
    model = randomize_weights(WanTransformer(cfg), 7)
    causal = CausalConfig(chunk_frames=3, window_frames=9, sink_frames=3)
    path = save_model(tmp_path / "sub" / "out.safetensors", model, cfg, causal=causal,
                      extra_meta={"step": 600, "note": "hi"}, source="self_forcing_dmd.pt", which="generator_ema")
    ck = load_checkpoint(path)
    assert ck.format == "sf_core" and ck.config == cfg and ck.causal == causal
    assert ck.meta["which"] == "generator_ema" and ck.meta["config_source"] == "metadata"
    md = ck.meta["metadata"]
    assert md["source"] == "self_forcing_dmd.pt" and md["step"] == "600" and md["note"] == "hi"
    assert_same(ck.state_dict, model.state_dict())
    loaded = load_model(path)
    assert torch.equal(outputs(loaded, cfg), outputs(model, cfg))
    assert not list(tmp_path.glob("sub/.*tmp*"))  # the temporary file was renamed away


@pytest.mark.parametrize("dtype,expect", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                          ("fp16", torch.float16), (torch.bfloat16, torch.bfloat16)])
def test_save_dtypes(tmp_path, dtype, expect):
    sd = make_sd()
    path = save_model(tmp_path / "m.safetensors", sd, CFG, dtype=dtype)
    stored = load_file(str(path))
    assert {v.dtype for v in stored.values()} == {expect}
    for k, v in stored.items():
        assert torch.equal(v, sd[k].to(expect)), k


def test_save_fp8_stores_block_linears_in_fp8_rest_bf16(tmp_path):
    sd = make_sd()
    path = save_model(tmp_path / "m8.safetensors", sd, CFG, dtype="fp8")
    stored = load_file(str(path))
    lin = re.compile(r"^blocks\.\d+\.((self|cross)_attn\.[qkvo]|ffn\.[02])\.weight$")
    for k, v in stored.items():
        assert v.dtype == (torch.float8_e4m3fn if lin.match(k) else torch.bfloat16), k
    assert sum(bool(lin.match(k)) for k in stored) == CFG.num_layers * 10
    model = load_model(path)  # fp8 weights stay fp8 in the model, upcast per layer
    assert model.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn
    assert model.head.head.weight.dtype == torch.bfloat16
    bf16 = save_model(tmp_path / "m16.safetensors", sd, CFG, dtype="bf16")
    assert path.stat().st_size < 0.8 * bf16.stat().st_size


def test_load_model_dtype_and_device(tmp_path):
    sd = make_sd()
    path = save_model(tmp_path / "m.safetensors", sd, CFG)
    m = load_model(path, dtype="bf16", device="cpu")
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in m.parameters())
    m32 = load_model(path)
    ref = WanTransformer(CFG)
    ref.load_state_dict(sd)
    assert torch.equal(outputs(m32, CFG), outputs(ref, CFG))


def test_num_heads_from_argument_when_shapes_cannot_tell(tmp_path):
    cfg = WanConfig.tiny()
    sd = make_sd(cfg)
    save_file(sd, str(tmp_path / "tiny.safetensors"))
    with pytest.raises(CheckpointError, match="num_heads"):
        load_checkpoint(tmp_path / "tiny.safetensors")
    ck = load_checkpoint(tmp_path / "tiny.safetensors", config={"num_heads": 2, "text_len": 16})
    assert ck.config == cfg and ck.meta["config_source"] == "argument"
    assert load_checkpoint(tmp_path / "tiny.safetensors", config=cfg).config == cfg
