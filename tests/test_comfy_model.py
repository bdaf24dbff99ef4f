"""The causal forward on ComfyUI's own `WanModel`, loaded by ComfyUI's stock UNETLoader from our converter's output.

Needs the real host: set COMFYUI_DIR (here /work/comfy/ComfyUI); ComfyUI's python dependencies live in its own
venv, so the checks run in a subprocess with COMFY_PYTHON (default $COMFYUI_DIR/../comfyvenv/bin/python) --
this file is also that script (`python tests/test_comfy_model.py OUT_DIR` with ComfyUI on the path). Without
COMFYUI_DIR every test here is skipped.

What is compared (tiny real-format Wan2.1: dim 256 = 2 heads of 128, text_dim 4096, random non-zero head):
- a Self Forcing `.pt` (generator_ema with FSDP names) -> `python -m sf_core.checkpoints.convert` -> UNETLoader gives
  WAN21 / WAN21_T2V / WanModel with the right dims;
- `wan_forward` on ComfyUI's module tree == on our WanTransformer (same weights): bidirectional, block-causal,
  KV cache chunk by chunk (global and rolling + sink), per-frame timesteps;
- ComfyUI's own `dm(x, t, ctx)` == our bidirectional forward up to ComfyUI's float32 timestep sinusoid and
  RoPE (we use float64, as the reference): sinusoid angles t*w reach 1000 rad, whose float32 rounding is up
  to 1000 * 2^-24 = 6e-5 rad, so outputs may differ by O(1e-5) relative; the bound is 2e-4 * max|out|;
- fp8: UNETLoader(weight_dtype="fp8_e4m3fn") and our own fp8 file (`--dtype fp8`) through the default loader.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 3


def _host():
    import pytest

    d = os.environ.get("COMFYUI_DIR")
    if not d:
        pytest.skip("set COMFYUI_DIR to run the ComfyUI host tests (COMFY_PYTHON: ComfyUI's python)")
    py = os.environ.get("COMFY_PYTHON") or str(Path(d).resolve().parent / "comfyvenv" / "bin" / "python")
    if not Path(py).exists():
        pytest.skip(f"ComfyUI's python {py} not found; set COMFY_PYTHON")
    return Path(d).resolve(), py


_REPORT = None


def report(tmp_path_factory=None):
    """Run the checks once in ComfyUI's interpreter and return their JSON."""
    global _REPORT
    if _REPORT is None:
        host, py = _host()
        out = tmp_path_factory.mktemp("comfy_model")
        # host first: `import nodes` must find ComfyUI's nodes.py, not this pack's nodes/ package
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(host), str(ROOT)]))
        proc = subprocess.run([py, str(Path(__file__).resolve()), str(out)], cwd=host, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        _REPORT = json.loads(proc.stdout.strip().splitlines()[-1])
    return _REPORT


def test_converted_file_loads_as_wan21_t2v(tmp_path_factory):
    r = report(tmp_path_factory)["load"]
    assert r["base"] == "WAN21" and r["config"] == "WAN21_T2V" and r["net"] == "WanModel"
    assert r["dims"] == {"dim": 256, "num_heads": 2, "num_layers": 2, "ffn_dim": 512, "in_dim": 16, "out_dim": 16,
                         "text_len": 512, "model_type": "t2v"}
    assert r["weights_equal_source"], "UNETLoader's weights differ from the checkpoint's generator_ema"
    assert r["bf16_base"] == "WAN21" and r["bf16_weights_equal_source"]


def test_wan_forward_on_comfy_module_equals_ours(tmp_path_factory):
    r = report(tmp_path_factory)["fp32"]
    scale = r["out_max"]
    assert scale > 1.0  # non-trivial outputs (random non-zero head)
    for key in ("bidirectional", "bidirectional_per_frame_t", "block_causal", "kv_cache_global",
                "kv_cache_rolling_sink"):
        assert r[key] <= 1e-5 * scale, (key, r[key])


def test_kv_cache_on_comfy_module_equals_block_causal_full_sequence(tmp_path_factory):
    r = report(tmp_path_factory)["fp32"]
    assert r["kv_cache_vs_full_global"] <= 2e-5 * r["out_max"]
    assert r["kv_cache_vs_full_rolling_sink"] <= 2e-5 * r["out_max"]


def test_comfy_own_forward_matches_up_to_float32_sinusoid_and_rope(tmp_path_factory):
    r = report(tmp_path_factory)["fp32"]
    for key in ("comfy_dm_vs_ours", "comfy_dm_vs_ours_per_frame_t"):
        assert r[key] <= 2e-4 * r["out_max"], (key, r[key])
    # the difference really comes from the float32 tables: with them on our side it (nearly) vanishes
    assert r["comfy_dm_vs_ours_tables32"] <= 0.25 * r["comfy_dm_vs_ours"]


def test_fp8_weights_through_unetloader(tmp_path_factory):
    r = report(tmp_path_factory)["fp8"]
    assert r["unetloader_weight_dtype"] == "torch.float8_e4m3fn"
    # same stored values -> same outputs, cached and not
    assert r["same_weights_bidirectional"] <= 1e-5 * r["out_max"]
    assert r["same_weights_kv_cache"] <= 1e-5 * r["out_max"]
    # fp8 quantisation error against the fp32 model: below one fp8 rounding step (2^-4) in relative L2
    assert 0 < r["rel_l2_vs_fp32"] < 2 ** -4


def test_our_fp8_file_through_default_unetloader(tmp_path_factory):
    r = report(tmp_path_factory)["own_fp8"]
    assert r["base"] == "WAN21"  # ComfyUI may upcast the fp8 values to its compute dtype on load
    assert r["vs_load_model"] <= 1e-5 * r["out_max"]
    assert 0 < r["rel_l2_vs_fp32"] < 2 ** -4


# ================================================================================================ the script
def _maxabs(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


def _rel_l2(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _chunked(net, x, t, ctx, causal, tpf, cfg):
    import torch
    from sf_core.model.forward import wan_forward
    from sf_core.cache.kv_cache import KVCache

    cache = KVCache.allocate(cfg.num_layers, x.shape[0], cfg.num_heads, cfg.head_dim, tpf,
                             frames=None if causal.rolling else x.shape[2], window_frames=causal.window_frames,
                             sink_frames=causal.sink_frames, chunk_frames=causal.chunk_frames)
    outs = []
    for s, e in causal.chunk_bounds(x.shape[2]):
        wan_forward(net, torch.randn_like(x[:, :, s:e]), t[:, s:e] * 0.5, ctx, cache=cache, start_frame=s)
        outs.append(wan_forward(net, x[:, :, s:e], t[:, s:e], ctx, cache=cache, start_frame=s))
        # the cache-only pass (as the clean context pass): same rows again, without the head
        wan_forward(net, x[:, :, s:e], t[:, s:e], ctx, cache=cache, start_frame=s, need_output=False)
    return torch.cat(outs, dim=2)


def run_checks(out_dir: Path) -> dict:
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import torch

    import folder_paths
    import nodes
    from sf_core.model.attention import BlockCausalMask
    from sf_core.checkpoints.weights import load_model
    from sf_core.config import CausalConfig, WanConfig
    from sf_core.checkpoints.convert import convert
    from sf_core.model.forward import wan_forward
    from sf_core.model.transformer import WanTransformer, randomize_weights

    torch.manual_seed(0)
    cfg = WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=4096, text_len=512)
    ours_src = randomize_weights(WanTransformer(cfg), SEED)
    src_sd = ours_src.state_dict()
    # a Self Forcing training checkpoint, EMA weights with FSDP wrapper names
    pt = out_dir / "self_forcing_tiny.pt"
    torch.save({"generator": {"model." + k: v * 0.5 for k, v in src_sd.items()},
                "generator_ema": {"model._fsdp_wrapped_module." + k: v for k, v in src_sd.items()}}, pt)
    models = out_dir / "diffusion_models"
    models.mkdir()
    convert(pt, models / "sf_tiny_fp32.safetensors", which="generator_ema", dtype="fp32")
    convert(pt, models / "sf_tiny_fp8.safetensors", which="generator_ema", dtype="fp8")
    convert(pt, models / "sf_tiny_bf16.safetensors")  # the converter's defaults: auto (= EMA), bf16
    folder_paths.add_model_folder_path("diffusion_models", str(models), is_default=True)
    loader = nodes.UNETLoader()
    res: dict = {}

    patcher = loader.load_unet("sf_tiny_fp32.safetensors", "default")[0]
    base = patcher.model
    dm = base.diffusion_model
    dm_sd = dm.state_dict()
    res["load"] = {
        "base": type(base).__name__, "config": type(base.model_config).__name__, "net": type(dm).__name__,
        "dims": {"dim": dm.dim, "num_heads": dm.num_heads, "num_layers": len(dm.blocks), "ffn_dim": dm.ffn_dim,
                 "in_dim": dm.in_dim, "out_dim": dm.out_dim, "text_len": dm.text_len, "model_type": dm.model_type},
        "weights_equal_source": all(torch.equal(dm_sd[k].float(), v) for k, v in src_sd.items()),
    }
    pb = loader.load_unet("sf_tiny_bf16.safetensors", "default")[0]
    bf_sd = pb.model.diffusion_model.state_dict()
    res["load"]["bf16_base"] = type(pb.model).__name__
    res["load"]["bf16_weights_equal_source"] = all(
        torch.equal(bf_sd[k].float(), v.to(torch.bfloat16).float()) for k, v in src_sd.items())

    ours = load_model(models / "sf_tiny_fp32.safetensors")
    g = torch.Generator().manual_seed(1)
    frames, h, w = 6, 8, 12
    x = torch.randn(1, 16, frames, h, w, generator=g)
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)  # full length: dm does not pad the text
    t_scalar = torch.tensor([700.0])
    t_frames = torch.tensor([[900.0, 900.0, 900.0, 400.0, 400.0, 400.0]])
    tpf = cfg.tokens_per_frame(h, w)
    chunk3 = CausalConfig(3)
    roll = CausalConfig(3, window_frames=4, sink_frames=1)
    r: dict = {}
    with torch.no_grad():
        ref = wan_forward(ours, x, t_scalar, ctx)
        r["out_max"] = float(ref.abs().max())
        r["bidirectional"] = _maxabs(wan_forward(dm, x, t_scalar, ctx), ref)
        ref_pf = wan_forward(ours, x, t_frames, ctx)
        r["bidirectional_per_frame_t"] = _maxabs(wan_forward(dm, x, t_frames, ctx), ref_pf)
        r["comfy_dm_vs_ours"] = _maxabs(dm(x, t_scalar, ctx), ref)
        r["comfy_dm_vs_ours_per_frame_t"] = _maxabs(dm(x, t_frames, ctx), ref_pf)
        # the same tables as ComfyUI (float32 sinusoid and RoPE) on our side: the difference must vanish
        import sf_core.model.forward as fwd

        def sinusoid32(dim, t):
            freqs = torch.pow(10000.0, -torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
            ang = torch.outer(t.float().flatten(), freqs)
            return torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)

        f64 = fwd.sinusoidal_embedding
        fwd.sinusoidal_embedding = sinusoid32
        try:
            ours_tables32 = wan_forward(ours, x, t_scalar, ctx, rope_dtype=torch.float32)
        finally:
            fwd.sinusoidal_embedding = f64
        r["comfy_dm_vs_ours_tables32"] = _maxabs(dm(x, t_scalar, ctx), ours_tables32)
        for name, causal in (("global", chunk3), ("rolling_sink", roll)):
            mask = BlockCausalMask(tuple(causal.chunk_bounds(frames)), tpf, causal.window_frames, causal.sink_frames)
            full = wan_forward(ours, x, t_frames, ctx, mask=mask)
            if name == "global":
                r["block_causal"] = _maxabs(wan_forward(dm, x, t_frames, ctx, mask=mask), full)
            torch.manual_seed(5)
            on_dm = _chunked(dm, x, t_frames, ctx, causal, tpf, cfg)
            torch.manual_seed(5)
            on_ours = _chunked(ours, x, t_frames, ctx, causal, tpf, cfg)
            r[f"kv_cache_{name}"] = _maxabs(on_dm, on_ours)
            r[f"kv_cache_vs_full_{name}"] = _maxabs(on_dm, full)
    res["fp32"] = r

    # fp8 through the stock loader's weight_dtype option
    p8 = loader.load_unet("sf_tiny_fp32.safetensors", "fp8_e4m3fn")[0]
    dm8 = p8.model.diffusion_model
    same = WanTransformer(cfg)
    same.load_state_dict({k: v.float() for k, v in dm8.state_dict().items() if k in src_sd})
    with torch.no_grad():
        out8 = wan_forward(dm8, x, t_frames, ctx)
        torch.manual_seed(5)
        c8 = _chunked(dm8, x, t_frames, ctx, chunk3, tpf, cfg)
        torch.manual_seed(5)
        c_same = _chunked(same, x, t_frames, ctx, chunk3, tpf, cfg)
        res["fp8"] = {"unetloader_weight_dtype": str(dm8.blocks[0].self_attn.q.weight.dtype),
                      "out_max": float(ref_pf.abs().max()),
                      "same_weights_bidirectional": _maxabs(out8, wan_forward(same, x, t_frames, ctx)),
                      "same_weights_kv_cache": _maxabs(c8, c_same),
                      "rel_l2_vs_fp32": _rel_l2(out8, ref_pf)}

    # our own fp8 file (block Linear weights fp8, rest bf16) through the default loader
    po = loader.load_unet("sf_tiny_fp8.safetensors", "default")[0]
    dmo = po.model.diffusion_model
    ours8 = load_model(models / "sf_tiny_fp8.safetensors")
    with torch.no_grad():
        a = wan_forward(dmo, x, t_frames, ctx)
        res["own_fp8"] = {"base": type(po.model).__name__,
                          "block_linear_dtype": str(dmo.blocks[1].ffn[0].weight.dtype),
                          "model_dtype": str(po.model.get_dtype()),
                          "out_max": float(ref_pf.abs().max()),
                          "vs_load_model": _maxabs(a, wan_forward(ours8, x, t_frames, ctx)),
                          "rel_l2_vs_fp32": _rel_l2(a, ref_pf)}
    return res


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.ERROR)
    result = run_checks(Path(sys.argv[1]))
    print(json.dumps(result))
