"""Determinism and configurability of the few-step causal sampler as driven by the pipeline.

The reference for every comparison is the core `rollout` over the whole video (parity-tested against the
official code) fed with noise drawn by hand in the order the sampler's docstring documents.
"""
import pytest
import torch

from sessions_kit import HW, conditioning, tiny_model
from sf_core.config import CausalConfig
from sf_core.sampling.denoiser import Denoiser
from sf_core.cache.kv_cache import KVCache
from sf_core.sampling.pipeline import generate
from sf_core.sampling.sampler import replay_noise, rollout
from sf_core.sampling.session import SamplingSettings, default_causal, new_session

CAUSALS = {
    "chunk3_global": (CausalConfig(chunk_frames=3), 9),
    "frame_global": (CausalConfig(chunk_frames=1), 5),
    "first_frame_chunk3": (CausalConfig(chunk_frames=3, independent_first_frame=True), 7),
    "chunk3_roll9_sink3": (CausalConfig(chunk_frames=3, window_frames=9, sink_frames=3), 18),
    "frame_roll4_sink1": (CausalConfig(chunk_frames=1, window_frames=4, sink_frames=1), 8),
}


def _reference(model, ctx, causal, frames, seed, settings):
    """Core rollout with draws made by hand: per chunk its initial noise, one per re-noising step, and one for
    the context pass when context_renoise is on -- all from one CPU generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    n_steps = len(settings.steps)
    draws = []
    for s, e in causal.chunk_bounds(frames):
        shape = (1, 16, e - s, *HW)
        draws.append(torch.randn(shape, generator=g))
        draws += [torch.randn(shape, generator=g) for _ in range(n_steps - 1)]
        if settings.context_renoise:
            draws.append(torch.randn(shape, generator=g))
    cfg = model.config
    cache = KVCache.allocate(cfg.num_layers, 1, cfg.num_heads, cfg.head_dim, 6, frames=frames,
                             window_frames=causal.window_frames, sink_frames=causal.sink_frames)
    den = Denoiser(model, settings.schedule, ctx)
    with torch.no_grad():
        out = rollout(den, cache, batch=1, num_frames=frames, latent_hw=HW, timesteps=settings.timesteps(),
                      causal=causal, noise_fn=replay_noise(draws), context_t=settings.context_t,
                      context_renoise=settings.context_renoise)
    return out, draws


@pytest.mark.parametrize("name", list(CAUSALS))
def test_pipeline_equals_core_rollout_with_the_documented_draw_order(name):
    causal, frames = CAUSALS[name]
    model, ctx = tiny_model(), conditioning(0)
    settings = SamplingSettings(causal=causal)
    ref, draws = _reference(model, ctx, causal, frames, 7, settings)
    sess = new_session(model, ctx, latent_hw=HW, seed=7, settings=settings)
    out = generate(model, sess, num_frames=frames)
    assert torch.equal(out, ref)
    assert out.abs().max() > 0.5  # not a trivial output
    # the session's generator has made exactly the documented draws
    g = torch.Generator().manual_seed(7)
    for d in draws:
        torch.randn(d.shape, generator=g)
    assert torch.equal(sess.generator.get_state(), g.get_state())


def test_same_seed_is_bit_identical_and_the_seed_matters():
    model, ctx = tiny_model(), conditioning(0)
    runs = [generate(model, new_session(model, ctx, latent_hw=HW, seed=s), num_frames=12) for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def test_context_renoise_draws_one_more_noise_per_chunk():
    model, ctx = tiny_model(), conditioning(0)
    settings = SamplingSettings(causal=CausalConfig(chunk_frames=3), context_t=250, context_renoise=True)
    ref, draws = _reference(model, ctx, settings.causal, 9, 1, settings)
    assert len(draws) == 3 * 5
    out = generate(model, new_session(model, ctx, latent_hw=HW, seed=1, settings=settings), num_frames=9)
    assert torch.equal(out, ref)


def test_default_timesteps_and_configurable_steps_and_shift():
    st = SamplingSettings()
    assert st.steps == (1000, 750, 500, 250) and st.shift == 5.0
    assert torch.allclose(st.timesteps(), torch.tensor([1000.0, 937.5, 833.3333, 625.0]), atol=1e-3)
    # warping t = 1000 * s*k / (1 + (s-1)*k), k = step/1000, written out independently
    for steps, shift in (((1000, 500), 3.0), ((900, 600, 300), 8.0)):
        st = SamplingSettings(steps=steps, shift=shift)
        want = [1000 * shift * (k / 1000) / (1 + (shift - 1) * k / 1000) for k in steps]
        assert torch.allclose(st.timesteps(), torch.tensor(want), atol=1e-3)
    assert SamplingSettings(steps=(800, 400), warp=False).timesteps().tolist() == [800.0, 400.0]
    with pytest.raises(ValueError, match="decrease"):
        SamplingSettings(steps=(250, 500))


def test_steps_shift_and_context_noise_change_the_video_as_expected():
    model, ctx = tiny_model(), conditioning(0)
    causal = CausalConfig(chunk_frames=3)

    def run(**kw):
        st = SamplingSettings(causal=causal, **kw)
        return generate(model, new_session(model, ctx, latent_hw=HW, seed=5, settings=st), num_frames=9)

    base = run()
    ctx_noisy = run(context_t=500)
    # the context timestep only affects what the cache holds: the first chunk is unchanged, later ones differ
    assert torch.equal(base[:, :, :3], ctx_noisy[:, :, :3])
    assert not torch.allclose(base[:, :, 3:], ctx_noisy[:, :, 3:])
    assert not torch.allclose(base[:, :, :3], run(shift=3.0)[:, :, :3])
    assert not torch.allclose(base[:, :, :3], run(steps=(1000, 500))[:, :, :3])


def test_default_window_and_sink():
    c = default_causal()
    assert (c.chunk_frames, c.window_frames, c.sink_frames) == (3, 21, 3)
    assert (default_causal(1).window_frames, default_causal(1).sink_frames) == (21, 1)
    f = default_causal(3, independent_first_frame=True)
    assert (f.window_frames, f.sink_frames) == (19, 1)
    assert SamplingSettings().causal == c


def test_short_video_with_the_default_window_equals_the_global_cache():
    """<= 21 frames: the default rolling window never evicts, so it is the official global-cache inference."""
    model, ctx = tiny_model(), conditioning(0)
    roll = generate(model, new_session(model, ctx, latent_hw=HW, seed=2), num_frames=21)
    glob = generate(model, new_session(model, ctx, latent_hw=HW, seed=2,
                                       settings=SamplingSettings(causal=CausalConfig(3))), num_frames=21)
    assert torch.equal(roll, glob)
