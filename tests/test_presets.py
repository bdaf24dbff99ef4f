"""The 1.3B and 14B presets have exactly Wan2.1's state-dict keys and shapes (built on the meta device).

The expected table is written out independently from the Wan2.1 key list (spec section 1.3), not derived
from our module code.
"""
import pytest
import torch

from sf_core.config import ConfigError, WanConfig
from sf_core.model.transformer import WanTransformer, expected_shapes


def wan21_table(dim, ffn, layers, text_dim=4096, freq=256, cin=16, cout=16):
    t = {
        "patch_embedding.weight": (dim, cin, 1, 2, 2), "patch_embedding.bias": (dim,),
        "text_embedding.0.weight": (dim, text_dim), "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim), "text_embedding.2.bias": (dim,),
        "time_embedding.0.weight": (dim, freq), "time_embedding.0.bias": (dim,),
        "time_embedding.2.weight": (dim, dim), "time_embedding.2.bias": (dim,),
        "time_projection.1.weight": (6 * dim, dim), "time_projection.1.bias": (6 * dim,),
        "head.modulation": (1, 2, dim), "head.head.weight": (4 * cout, dim), "head.head.bias": (4 * cout,),
    }
    for i in range(layers):
        b = f"blocks.{i}."
        t[b + "modulation"] = (1, 6, dim)
        for att in ("self_attn", "cross_attn"):
            for p in "qkvo":
                t[f"{b}{att}.{p}.weight"] = (dim, dim)
                t[f"{b}{att}.{p}.bias"] = (dim,)
            t[f"{b}{att}.norm_q.weight"] = (dim,)
            t[f"{b}{att}.norm_k.weight"] = (dim,)
        t[b + "norm3.weight"] = (dim,)
        t[b + "norm3.bias"] = (dim,)
        t[b + "ffn.0.weight"] = (ffn, dim)
        t[b + "ffn.0.bias"] = (ffn,)
        t[b + "ffn.2.weight"] = (dim, ffn)
        t[b + "ffn.2.bias"] = (dim,)
    return t


@pytest.mark.parametrize("preset,dim,ffn,layers", [
    (WanConfig.wan_1_3b, 1536, 8960, 30), (WanConfig.wan_14b, 5120, 13824, 40)], ids=["1.3B", "14B"])
def test_preset_keys_and_shapes(preset, dim, ffn, layers):
    assert expected_shapes(preset()) == wan21_table(dim, ffn, layers)


def test_1_3b_parameter_count():
    with torch.device("meta"):
        m = WanTransformer(WanConfig.wan_1_3b())
    sd = m.state_dict()
    assert len(sd) == 825
    assert sum(v.numel() for v in sd.values()) == 1_418_996_800


def test_config_validation_and_roundtrip():
    cfg = WanConfig.tiny()
    assert WanConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="divisible"):
        WanConfig(dim=100, num_heads=3)
    with pytest.raises(ConfigError, match="unknown WanConfig fields"):
        WanConfig.from_dict({"dim": 64, "num_heads": 2, "bogus": 1})
