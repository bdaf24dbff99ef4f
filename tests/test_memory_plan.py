"""The memory planner: its prediction vs the measured peak of real runs (allocator-level tensor bytes on CPU, within
15 %), exact cache sizes, and a run that cannot fit refused before the session is made, naming the knob."""
import pytest
import torch

import sf_core.memory.plan as mp
from sf_core.config import CausalConfig, ConfigError, WanConfig
from sf_core.memory.measure import peak_tensor_bytes, tensor_bytes
from sf_core.model.transformer import WanTransformer, randomize_weights
from sf_core.sampling.pipeline import generate
from sf_core.sampling.session import SamplingSettings, default_causal, new_session

MEDIUM = dict(dim=256, ffn_dim=1024, num_heads=4, num_layers=4, text_dim=64, text_len=32)
CASES = {  # WanConfig, latent, frames, window, sink, kv, dtype, batch
    "tiny_fp32_global": (dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=16), (8, 8), 12,
                         None, 0, "auto", torch.float32, 1),
    "medium_int8_rolling_batch2": (MEDIUM, (16, 16), 18, 9, 3, "int8", torch.float32, 2),
    "medium_bf16_rolling": (MEDIUM, (16, 16), 24, 12, 3, "auto", torch.bfloat16, 1),
    "wide_fp8_global": (dict(dim=512, ffn_dim=2048, num_heads=8, num_layers=2, text_dim=64, text_len=32), (16, 24), 9,
                        None, 0, "fp8", torch.float32, 1),
}


@pytest.mark.parametrize("name", list(CASES) + ["merged:medium_bf16_rolling", "merged:medium_int8_rolling_batch2"])
def test_prediction_is_within_15_percent_of_the_measured_peak(name):
    merge = name.startswith("merged:")
    over, hw, frames, window, sink, kv, dtype, batch = CASES[name.removeprefix("merged:")]
    cfg = WanConfig(**{**WanConfig.tiny().to_dict(), **over})
    model = randomize_weights(WanTransformer(cfg), 0).eval().requires_grad_(False).to(dtype)
    ctx = torch.randn(batch, cfg.text_len, cfg.text_dim)
    causal = CausalConfig(chunk_frames=3, window_frames=window, sink_frames=sink)
    settings = SamplingSettings(causal=causal, kv_dtype=kv, merge_commit=merge)

    import sf_core.model.rope as rope

    for fn in vars(rope).values():  # cold RoPE table caches, as in a fresh process (earlier tests may have warmed them)
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()

    def run():
        with torch.no_grad():
            s = new_session(model, ctx, latent_hw=hw, batch=batch, seed=0, settings=settings, dtype=dtype)
            generate(model, s, num_frames=frames, keep_latents=False)
    _, peak = peak_tensor_bytes(run)
    measured = tensor_bytes(model) + peak
    plan = mp.plan_memory(mp.RunShape(cfg, hw, causal, frames, batch=batch, dtype=dtype, kv_dtype=kv,
                                      merge_commit=merge))
    assert plan.parts["weights"] == tensor_bytes(model)
    assert abs(plan.peak / measured - 1) <= 0.15, (plan.peak, measured, plan.parts)
    assert plan.parts["transformer_activations"] > 0.1 * (measured - plan.parts["weights"])  # not weights alone


def test_cache_sizes_are_exact():
    cfg = WanConfig.wan_1_3b()
    bf16 = mp.plan_memory(mp.RunShape(cfg, (60, 104), default_causal(), 81, dtype=torch.bfloat16))
    assert bf16.parts["kv_cache"] == 30 * 2 * 21 * 1560 * 1536 * 2  # window 21 frames of 1,560 tokens
    int8 = mp.plan_memory(mp.RunShape(cfg, (60, 104), default_causal(), 81, dtype=torch.bfloat16, kv_dtype="int8"))
    assert int8.parts["kv_cache"] == 30 * 2 * 21 * 1560 * 12 * (128 + 2)
    assert int8.peak < bf16.peak
    assert mp.cache_frames(CausalConfig(3), 21) == 21 and mp.cache_frames(CausalConfig(3), 30) == 32  # 21 * 1.5
    tiny = WanConfig.tiny()
    assert mp.weight_bytes(tiny, torch.float32) == tensor_bytes(WanTransformer(tiny))
    assert 2 * mp.weight_bytes(cfg, torch.bfloat16) == mp.weight_bytes(cfg, torch.float32)
    assert mp.weight_bytes(cfg, torch.float8_e4m3fn) < 0.52 * mp.weight_bytes(cfg, torch.bfloat16)


def test_too_big_is_refused_with_the_knobs_and_what_each_saves():
    plan = mp.plan_memory(mp.RunShape(WanConfig.wan_1_3b(), (60, 104), default_causal(), 21, dtype=torch.bfloat16,
                                      decoder="wan", device="cuda"))
    mp.check_fits(plan, "cpu", available=plan.total)  # exactly enough: fine
    with pytest.raises(ConfigError) as e:
        mp.check_fits(plan, "cpu", available=9 * mp.GIB)
    msg = str(e.value)
    assert f"{plan.total / mp.GIB:.2f} GiB" in msg and "9.00 GiB" in msg
    assert "--kv-dtype int8" in msg and "TAEHV" in msg and "--window" in msg and "(fits)" in msg


def test_generate_refuses_before_the_session_and_plan_prints(monkeypatch, capsys, tmp_path):
    from sf_core.cli import generate as cli

    made = []

    class Reached(Exception):
        pass

    def session(*a, **k):
        made.append(1)
        raise Reached
    monkeypatch.setattr(cli, "new_session", session)
    argv = ["--model", "toy", "--prompt", "a red square", "--latent-frames", "12", "-o", "", "--latents-out",
            str(tmp_path / "l.safetensors"), "-q"]
    assert cli.main(argv + ["--plan"]) == 0
    out = capsys.readouterr().out
    assert "kv_cache" in out and "peak (tensors)" in out and made == []
    monkeypatch.setattr(mp, "available_bytes", lambda device: 1024)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "--kv-dtype int8" in err and "--no-memory-check" in err and made == []
    with pytest.raises(Reached):  # the run went past the check to the session
        cli.main(argv + ["--no-memory-check"])
    assert made == [1]
