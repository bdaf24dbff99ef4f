"""RoPE frame positions of a rolling cache: absolute (official), relative (re-based to the cache) and auto.

Independent checks: re-roping composes (shift_time == roping at the shifted position); a rolled relative cache's
first-layer keys equal keys computed from scratch at the slot positions; relative/auto equal absolute until the
first eviction / the RoPE table's end; sessions in relative mode continue bit-identically.
"""
import pytest
import torch

from sessions_kit import HW, conditioning, tiny_model
from sf_core.config import CausalConfig, ConfigError
from sf_core.sampling.denoiser import Denoiser
from sf_core.cache.kv_cache import KVCache
from sf_core.sampling.pipeline import generate
from sf_core.model.rope import apply_rope, rope_cos_sin, shift_time
from sf_core.sampling.session import SamplingSettings, new_session
from sf_core.sampling.session_io import load_session, save_session

ROLL = CausalConfig(chunk_frames=3, window_frames=9, sink_frames=3)


def _settings(mode, causal=ROLL):
    return SamplingSettings(causal=causal, positions=mode)


def test_shift_time_equals_roping_at_the_shifted_position():
    g = torch.Generator().manual_seed(0)
    head_dim, gh, gw, frames = 24, 2, 3, 4
    raw = torch.randn(2, frames * gh * gw, 3, head_dim, dtype=torch.float64, generator=g)
    at = lambda p: apply_rope(raw, *rope_cos_sin(head_dim, p, frames, gh, gw, raw.device))  # noqa: E731
    assert torch.allclose(shift_time(at(40), -37, gh * gw), at(3), atol=1e-12)
    per_frame = torch.tensor([-40.0, -2.0, 0.0, 5.0])
    want = torch.cat([apply_rope(raw[:, i * 6:(i + 1) * 6], *rope_cos_sin(head_dim, 40 + i + int(d), 1, gh, gw,
                                                                           raw.device))
                      for i, d in enumerate(per_frame)], 1)
    assert torch.allclose(shift_time(at(40), per_frame, gh * gw), want, atol=1e-12)
    assert not torch.allclose(at(40), at(3))  # the check is not vacuous


@pytest.mark.parametrize("mode", ["relative", "auto"])
def test_modes_equal_absolute_until_positions_differ(mode):
    model, a = tiny_model(), conditioning(0)
    ref = generate(model, new_session(model, a, latent_hw=HW, seed=3, settings=_settings("absolute")), num_frames=9)
    got = generate(model, new_session(model, a, latent_hw=HW, seed=3, settings=_settings(mode)), num_frames=9)
    assert torch.equal(ref, got)  # the window (9 frames) is never rolled: slot == frame


def test_relative_differs_after_eviction_and_auto_does_not():
    model, a = tiny_model(), conditioning(0)
    out = {m: generate(model, new_session(model, a, latent_hw=HW, seed=3, settings=_settings(m)), num_frames=18)
           for m in ("absolute", "relative", "auto")}
    assert torch.equal(out["absolute"], out["auto"])  # auto stays absolute inside the RoPE table
    assert torch.equal(out["absolute"][:, :, :9], out["relative"][:, :, :9])
    assert not torch.allclose(out["absolute"][:, :, 9:], out["relative"][:, :, 9:])


def test_rolled_relative_keys_equal_keys_computed_at_the_slot_positions():
    """Layer-0 keys depend only on the frame itself and its position: the re-roped rows of a rolled cache must
    equal the same frames committed from scratch at their slots."""
    model, a = tiny_model(), conditioning(0)
    sess = new_session(model, a, latent_hw=HW, seed=5, settings=_settings("relative"))
    generate(model, sess, num_frames=21)
    cache = sess.cache
    assert cache.positions == [0, 1, 2, 15, 16, 17, 18, 19, 20]
    fresh = KVCache.for_config(ROLL, num_layers=len(model.blocks), num_heads=cache.k[0].shape[2],
                               head_dim=cache.k[0].shape[3], tokens_per_frame=6, rope_mode="relative")
    den = Denoiser(model, sess.settings.schedule, a)
    lat = sess.held_latents()
    with torch.no_grad():
        den.commit(lat[:, :, :3], fresh, 0)
        for j in (3, 6):
            den.commit(lat[:, :, j:j + 3], fresh, cache.positions[j])
    k_old, _ = cache.valid(0)
    k_new, _ = fresh.valid(0)
    assert torch.allclose(k_old, k_new, atol=1e-5), (k_old - k_new).abs().max()


def test_auto_goes_past_the_rope_table_and_stays_bounded():
    model, a = tiny_model(), conditioning(0)
    causal = CausalConfig(chunk_frames=3, window_frames=6, sink_frames=3)
    sess = new_session(model, a, latent_hw=HW, seed=1, settings=_settings("auto", causal))
    last = {}
    generate(model, sess, num_frames=1035, keep_latents=False, on_chunk=lambda r: last.update(x=r.latents))
    assert sess.next_frame == 1035 and sess.frames_left is None and sess.cache.relative
    assert sess.cache.positions == [0, 1, 2, 1032, 1033, 1034]
    assert torch.isfinite(last["x"]).all() and last["x"].abs().max() < 100


def test_relative_session_continues_bit_identically(tmp_path):
    model, a = tiny_model(), conditioning(0)
    full = new_session(model, a, latent_hw=HW, seed=11, settings=_settings("relative"))
    first, rest = generate(model, full, num_frames=15), generate(model, full, num_frames=12)
    part = new_session(model, a, latent_hw=HW, seed=11, settings=_settings("relative"))
    assert torch.equal(generate(model, part, num_frames=15), first)
    resumed = load_session(save_session(part, tmp_path / "s.safetensors"), model)
    assert resumed.cache.relative and resumed.settings.positions == "relative"
    assert torch.equal(generate(model, resumed, num_frames=12), rest)


def test_relative_needs_a_rolling_window():
    with pytest.raises(ConfigError, match="rolling window"):
        SamplingSettings(causal=CausalConfig(chunk_frames=3), positions="relative")
    with pytest.raises(ConfigError, match="positions must be one of"):
        SamplingSettings(positions="sideways")
