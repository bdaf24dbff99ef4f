"""Long videos up to the RoPE limit with constant memory, and a clear error for every kind of bad input."""
import pytest
import torch

from sessions_kit import HW, conditioning, tiny_model
from sf_core.config import ROPE_MAX_POSITIONS, CausalConfig, ConfigError
from sf_core.sampling.pipeline import generate, set_prompt
from sf_core.sampling.prompts import PromptError
from sf_core.model.rope import RopePositionError
from sf_core.sampling.sampler import NonFiniteError
from sf_core.sampling.session import SamplingSettings, new_session


def test_a_video_up_to_the_rope_limit_with_memory_fixed_by_the_window():
    model, a = tiny_model(), conditioning(0)
    # default rolling window 21, sink 3; absolute positions as the official code (they stop at the RoPE table)
    sess = new_session(model, a, latent_hw=HW, seed=0, settings=SamplingSettings(positions="absolute"))
    sizes, last = [], {}

    def on_chunk(r):
        sizes.append(r.session.cache.nbytes() + sum(t.numel() * t.element_size() for t in r.session.held.values()))
        last["x"] = r.latents

    out = generate(model, sess, num_frames=1023, on_chunk=on_chunk, keep_latents=False)
    assert out is None and len(sizes) == 341
    assert len(set(sizes[7:])) == 1  # constant once the window is full (chunk 7 on)
    assert sess.cache.capacity == 21 and len(sess.held) == 21
    assert sess.cache.positions == [0, 1, 2] + list(range(1005, 1023))
    assert torch.isfinite(last["x"]).all() and last["x"].abs().max() < 100
    assert sess.frames_left == 1
    with pytest.raises(RopePositionError, match=r"RoPE limit of 1024.*can still generate 1 latent frames"):
        generate(model, sess, num_chunks=1)
    assert sess.next_frame == 1023  # the refused call changed nothing


def test_length_past_the_rope_limit_is_refused_before_any_work():
    model = tiny_model()
    sess = new_session(model, conditioning(0), latent_hw=HW, settings=SamplingSettings(positions="absolute"))
    with pytest.raises(RopePositionError, match="1024"):
        generate(model, sess, num_frames=ROPE_MAX_POSITIONS + 2)
    assert sess.next_frame == 0 and sess.cache.length == 0


def test_lengths_that_do_not_fit_the_chunking_name_the_nearest_valid_ones():
    model = tiny_model()
    sess = new_session(model, conditioning(0), latent_hw=HW)
    with pytest.raises(ConfigError, match=r"nearest valid lengths: 6 latent frames \(21 video frames\) or 9"):
        generate(model, sess, num_frames=7)
    generate(model, sess, num_frames=3)
    with pytest.raises(ConfigError, match="nearest valid lengths: 3 or 6"):
        generate(model, sess, num_frames=4)
    first = new_session(model, conditioning(0), latent_hw=HW,
                        settings=SamplingSettings(causal=CausalConfig(3, independent_first_frame=True)))
    with pytest.raises(ConfigError, match="independent first frame; nearest valid lengths: 4"):
        generate(model, first, num_frames=6)


def test_wrong_latent_channels_or_shape():
    model = tiny_model()
    sess = new_session(model, conditioning(0), latent_hw=HW)
    with pytest.raises(ConfigError, match="16 latent channels"):
        generate(model, sess, num_frames=3, noise=torch.randn(1, 8, 3, *HW))
    with pytest.raises(ConfigError, match="latent size 4x6"):
        generate(model, sess, num_frames=3, noise=torch.randn(1, 16, 3, 4, 8))
    with pytest.raises(ConfigError, match="multiple of the patch 2x2"):
        new_session(model, conditioning(0), latent_hw=(5, 6))
    # given noise is the initial noise: the first step's prediction is then the same whatever the seed
    n = torch.randn(1, 16, 3, *HW)
    first_x0 = []
    for seed in (1, 2):
        s = new_session(model, conditioning(0), latent_hw=HW, seed=seed)
        generate(model, s, num_frames=3, noise=n, on_step=lambda i: first_x0.append(i.x0) if i.step == 0 else None)
    assert torch.equal(first_x0[0], first_x0[1])


def test_conditioning_of_the_wrong_width():
    model = tiny_model()
    with pytest.raises(PromptError, match="width 4096, the model expects text_dim=32"):
        new_session(model, torch.randn(1, 5, 4096), latent_hw=HW)
    sess = new_session(model, conditioning(0), latent_hw=HW)
    generate(model, sess, num_frames=3)
    with pytest.raises(PromptError, match="same width"):
        set_prompt(sess, torch.randn(1, 5, 16))
    with pytest.raises(PromptError, match="batch 2"):
        new_session(model, conditioning(0, batch=2), latent_hw=HW, batch=3)


def test_non_finite_values_stop_at_the_chunk_and_name_it():
    model = tiny_model()
    calls = {"n": 0}

    def poison(module, args, out):
        calls["n"] += 1
        return out * float("nan") if calls["n"] > 10 else out  # chunk 2's first step (4 steps per chunk)

    model.head.head.register_forward_hook(poison)
    sess = new_session(model, conditioning(0), latent_hw=HW)
    with pytest.raises(NonFiniteError, match=r"chunk 2 of the video \(latent frames 6\.\.8\) produced NaN"):
        generate(model, sess, num_frames=12)
    assert sess.next_frame == 6 and sess.cache.positions == list(range(6))


def test_window_smaller_than_a_chunk_is_refused():
    with pytest.raises(ConfigError, match="window_frames >= 4"):
        SamplingSettings(causal=CausalConfig(chunk_frames=3, window_frames=3, sink_frames=1))
    with pytest.raises(ConfigError, match="window_frames >= 3"):
        CausalConfig(chunk_frames=3, window_frames=2)
