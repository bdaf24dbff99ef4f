"""Rolling Forcing's joint rolling-window sampler: structure, sessions, continuation, the official flush.

Numerical parity with the official code is `tests/test_parity_fixture.py` on `rf_ref_tiny`; here: the window
schedule (which chunk is at which step), that sessions continue bit-identically, that the cache stays bounded,
and that the attention pattern is the official one (sink + working cache + window) against a dense re-computation.
"""
from __future__ import annotations

import pytest
import torch

from sf_core.config import ConfigError
from sf_core.sampling.denoiser import Denoiser
from sf_core.checkpoints.families import settings_for
from sf_core.cache.kv_cache import KVCache
from sf_core.sampling.pipeline import generate
from sf_core.model.rope import shift_time
from sf_core.sampling.rolling import rolling_rollout, run_window, window_call
from sf_core.sampling.sampler import generator_noise
from sf_core.sampling.session import SamplingSettings, new_session
from sf_core.sampling.session_io import load_session, save_session
from sessions_kit import HW, conditioning, tiny_model

ST = settings_for("rolling_forcing")


def _cache(st, rope_mode="auto"):
    return KVCache.for_config(st.causal, num_layers=2, num_heads=2, head_dim=32, tokens_per_frame=6,
                              rope_mode=rope_mode)


def test_window_schedule_and_draws():
    """Each window: oldest chunk at the highest step; one chunk finishes per window after n-1 warm-up windows."""
    m, ctx = tiny_model(), conditioning(0)
    den = Denoiser(m, ST.schedule, ctx)
    seen = []

    class Spy(Denoiser):
        def __call__(self, x, t, **kw):
            seen.append(t[0].tolist())
            return super().__call__(x, t, **kw)

    spy = Spy(m, ST.schedule, ctx)
    draws = []
    g = torch.Generator().manual_seed(0)
    base = generator_noise(g)

    def noise(shape):
        draws.append(tuple(shape))
        return base(shape)

    ts = ST.timesteps()
    out = rolling_rollout(spy, _cache(ST), batch=1, num_frames=21, latent_hw=HW, timesteps=ts, chunk_frames=3,
                          noise_fn=noise)
    assert out.shape == (1, 16, 21, *HW)
    # the denoising calls (windows) are the calls whose timesteps are not all 0 (context passes are t = 0)
    windows = [w for w in seen if any(v > 0 for v in w)]
    assert len(windows) == 7 + 5 - 1
    t = [float(x) for x in ts]
    assert windows[0] == [t[0]] * 3
    assert windows[4] == sum(([t[4 - i]] * 3 for i in range(5)), [])  # first full window: steps 4..0
    assert windows[-1] == [t[4]] * 3  # the flush ends with the last chunk alone at the last step
    # a new chunk's noise then one draw per unfinished chunk: window 0 draws 2, the first full window 1 + 4
    assert draws[:2] == [(1, 16, 3, *HW)] * 2  # window 0: the new chunk's noise, then its re-noising
    assert len(draws) == 7 + sum(len(w) // 3 for w in windows) - 7  # one re-noise per unfinished chunk-window
    del den


def test_sessions_continue_bit_identically_and_rollout_prefix(tmp_path):
    m, ctx = tiny_model(), conditioning(0)
    s1 = new_session(m, ctx, latent_hw=HW, seed=3, settings=ST)
    full = generate(m, s1, num_chunks=10)
    s2 = new_session(m, ctx, latent_hw=HW, seed=3, settings=ST)
    a = generate(m, s2, num_chunks=4)
    save_session(s2, tmp_path / "rf.safetensors")
    s3 = load_session(tmp_path / "rf.safetensors", m)
    assert s3.pending is not None and s3.pending.shape[2] == 4 * 3  # n - 1 chunks in flight
    b = generate(m, s3, num_chunks=6)
    assert torch.equal(full, torch.cat([a, b], 2))
    # the cache is bounded by the window (24 frames: the sink chunk and the last 7 chunks)
    assert s1.cache.positions == [0, 1, 2] + list(range(9, 30))
    # the official fixed-length run (with its flush) draws the same noise in the same order until the flush
    den = Denoiser(m, ST.schedule, ctx)
    r = rolling_rollout(den, _cache(ST), batch=1, num_frames=30, latent_hw=HW, timesteps=ST.timesteps(),
                        chunk_frames=3, noise_fn=generator_noise(torch.Generator().manual_seed(3)))
    assert torch.equal(r[:, :, :18], full[:, :, :18])
    assert not torch.equal(r[:, :, 27:], full[:, :, 27:])  # the flush finishes the tail in shrinking windows


def test_window_attention_is_sink_working_window():
    """A window's x0 equals the same call on a plain cache holding only what the official code attends to: the
    sink re-roped to sit right before the working frames, then the working frames (21 - 15 - 3 = 3 of them)."""
    m, ctx = tiny_model(), conditioning(1)
    s = new_session(m, ctx, latent_hw=HW, seed=1, settings=ST)
    generate(m, s, num_chunks=4)  # committed: frames 0..11; in flight: 4 chunks from frame 12
    cache, ts, tpf = s.cache, ST.timesteps(), 6
    x = torch.cat([s.pending, torch.randn(1, 16, 3, *HW, generator=torch.Generator().manual_seed(5))], 2)
    t = torch.cat([ts[k].expand(3) for k in (4, 3, 2, 1, 0)])[None]
    den = Denoiser(m, ST.schedule, ctx)
    tensors = {}
    for i in range(2):
        kk, vv = cache.valid(i)
        tensors[f"k.{i}"] = torch.cat([shift_time(kk[:, :3 * tpf], 6, tpf), kk[:, 9 * tpf:12 * tpf]], 1)
        tensors[f"v.{i}"] = torch.cat([vv[:, :3 * tpf], vv[:, 9 * tpf:12 * tpf]], 1)
    meta = {"tokens_per_frame": tpf, "window_frames": None, "sink_frames": 0, "length": 6, "end_frame": 12,
            "positions": list(range(6, 12)), "capacity": 30, "num_layers": 2, "num_heads": 2, "head_dim": 32,
            "batch": 1, "included": True, "rope_mode": "absolute", "relative": False}
    plain = KVCache.from_state(meta, tensors)
    with torch.no_grad():
        got = window_call(den, cache, x, 12, t, 3)
        want = den(x, t, cache=plain, start_frame=12)
    assert torch.equal(got, want)
    assert cache.positions == list(range(12))  # a denoising call writes nothing


def test_rolling_needs_a_window_and_refuses_given_noise():
    with pytest.raises(ConfigError, match="rolling KV cache"):
        settings_for("rolling_forcing", window_frames="global")
    m, ctx = tiny_model(), conditioning(0)
    s = new_session(m, ctx, latent_hw=HW, seed=0, settings=ST)
    with pytest.raises(ConfigError, match="initial noise"):
        generate(m, s, num_chunks=1, noise=torch.zeros(1, 16, 3, *HW))
    assert s.next_frame == 0 and s.pending is None


def test_steps_changed_mid_flight_is_refused():
    m, ctx = tiny_model(), conditioning(0)
    den = Denoiser(m, ST.schedule, ctx)
    pending = torch.zeros(1, 16, 12, *HW)
    with pytest.raises(ConfigError, match="steps"):
        run_window(den, _cache(ST), pending, 4, 0, ST.timesteps()[:3], generator_noise(torch.Generator()),
                   chunk_frames=3, chunk_shape=(1, 16, *HW))


def test_settings_round_trip():
    d = ST.to_dict()
    assert SamplingSettings.from_dict(d) == ST
    cf = settings_for("causal_forcing_2step")
    assert SamplingSettings.from_dict(cf.to_dict()) == cf
    assert [round(float(x), 2) for x in cf.timesteps(first=True)] == [1000.0, 937.5, 833.33, 625.0]
    assert [round(float(x), 2) for x in cf.timesteps()] == [1000.0, 833.33]
