"""Prompt schedules: parsing, interpolation, and what a switch does to the video and the KV cache."""
import pytest
import torch

from sessions_kit import HW, conditioning, tiny_model
from sf_core.config import CausalConfig
from sf_core.sampling.denoiser import Denoiser
from sf_core.model.forward import wan_forward
from sf_core.cache.kv_cache import KVCache
from sf_core.sampling.pipeline import generate, set_prompt
from sf_core.sampling.prompts import (PromptEntry, PromptError, PromptSchedule, parse_prompt, resolve_starts,
                             seconds_to_chunk)
from sf_core.sampling.sampler import generator_noise, rollout
from sf_core.sampling.session import SamplingSettings, commit_groups, new_session


def _settings(window=None, sink=0):
    return SamplingSettings(causal=CausalConfig(chunk_frames=3, window_frames=window, sink_frames=sink))


def test_schedule_validation():
    a = conditioning(0)
    with pytest.raises(PromptError, match="start at chunk 0"):
        PromptSchedule((PromptEntry(2, a),))
    with pytest.raises(PromptError, match="strictly increase"):
        PromptSchedule((PromptEntry(0, a), PromptEntry(3, a), PromptEntry(3, a)))
    with pytest.raises(PromptError, match="policy"):
        PromptSchedule.single(a, policy="forget")
    with pytest.raises(PromptError, match="same width"):
        PromptSchedule((PromptEntry(0, a), PromptEntry(1, conditioning(1, width=16))))
    with pytest.raises(PromptError, match=r"\[B, L, text_dim\]"):
        PromptSchedule.single(a[0])
    with pytest.raises(PromptError, match="width 16, the model expects text_dim=32"):
        PromptSchedule.single(conditioning(0, width=16)).check(32, 1)
    with pytest.raises(PromptError, match="NaN"):
        PromptSchedule.single(a * float("nan")).check(32, 1)


def test_interpolation_endpoints_and_padding():
    a, b = conditioning(0, length=5), conditioning(1, length=8)
    s = PromptSchedule((PromptEntry(0, a), PromptEntry(4, b)), transition_chunks=3)
    assert s.context_at(3) is a and s.context_at(6) is b and s.context_at(9) is b
    pad_a = torch.cat([a, torch.zeros(1, 3, 32)], dim=1)
    assert torch.allclose(s.context_at(4), pad_a * 2 / 3 + b / 3, atol=1e-6)
    assert torch.allclose(s.context_at(5), pad_a / 3 + b * 2 / 3, atol=1e-6)
    assert s.context_at(4) is s.context_at(4)  # one tensor per chunk: the cross-attention cache stays valid
    hard = PromptSchedule((PromptEntry(0, a), PromptEntry(4, b)), transition_chunks=1)
    assert hard.context_at(4) is b and hard.context_at(3) is a


def test_prompt_text_parsing_and_times():
    assert parse_prompt("3:a red square") == parse_prompt("3c: a red square")
    p = parse_prompt("2.5s:a dog: running")
    assert (p.start, p.unit, p.text) == (2.5, "s", "a dog: running")
    assert parse_prompt("a cat at 10:30").text == "a cat at 10:30"
    with pytest.raises(PromptError, match="fractional chunk"):
        parse_prompt("1.5:x")
    # 16 fps, Wan VAE: 3 s = video frame 48 = latent frame 12 = chunk 4
    assert seconds_to_chunk(3.0, 16, 3) == 4
    assert seconds_to_chunk(0.0, 16, 3) == 0
    assert seconds_to_chunk(3.0, 16, 1) == 12
    specs = [parse_prompt("0:a"), parse_prompt("3s:b"), parse_prompt("2:c")]
    assert resolve_starts(specs, fps=16, chunk_frames=3) == [(0, "a"), (2, "c"), (4, "b")]
    assert resolve_starts(specs[:1], fps=16, chunk_frames=3, offset_chunk=7) == [(7, "a")]


@pytest.mark.parametrize("typo", ["1m:a blue circle", "-1:a cat", "nans:a cat", "inf:a cat", "3x:a cat", "+2:a cat",
                                  "1e3s:a cat"])
def test_a_mistyped_start_is_refused_not_taken_as_the_opening_prompt(typo):
    with pytest.raises(PromptError, match=r"starts with '[^']+:', which is not a start: write CHUNK:TEXT"):
        parse_prompt(typo)


def test_a_word_before_a_colon_is_text_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="sf_core.sampling.prompts"):
        p = parse_prompt("xs:a blue circle")
    assert (p.start, p.unit, p.text) == (0.0, "chunk", "xs:a blue circle")
    assert "'xs:', which is not a start" in caplog.text and "Write '0:xs:a blue circle'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sf_core.sampling.prompts"):
        assert parse_prompt("0:Style: film noir").text == "Style: film noir"  # explicit start: no warning
        assert parse_prompt("a cat at 10:30").text == "a cat at 10:30"  # not one word before the colon
    assert caplog.text == ""


def test_prompts_landing_on_one_chunk_warn_and_long_texts_are_cut(caplog):
    with caplog.at_level("WARNING", logger="sf_core.sampling.prompts"):
        got = resolve_starts([parse_prompt("a cat"), parse_prompt("0:a dog")], fps=16, chunk_frames=3)
    assert got == [(0, "a dog")] and "'a cat' and 'a dog' both start at chunk 0" in caplog.text
    from sf_core.sampling.prompts import shorten

    long = "red " * 2500
    assert len(shorten(long)) < 120 and "(10000 characters)" in shorten(long)
    with pytest.raises(PromptError) as e:
        parse_prompt("1m:" + long)
    assert len(str(e.value)) < 400


def test_a_switch_changes_later_chunks_only():
    model, a, b = tiny_model(), conditioning(0), conditioning(1)
    base = generate(model, new_session(model, a, latent_hw=HW, seed=3), num_frames=15)
    sched = PromptSchedule((PromptEntry(0, a), PromptEntry(3, b)))
    switched = generate(model, new_session(model, sched, latent_hw=HW, seed=3), num_frames=15)
    assert torch.equal(base[:, :, :9], switched[:, :, :9])
    assert (base[:, :, 9:] - switched[:, :, 9:]).abs().max() > 0.1


@pytest.mark.parametrize("window,sink,before,groups", [
    (None, 0, 12, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]),
    (9, 3, 12, [[0, 1, 2], [6, 7, 8], [9, 10, 11]]),
    (8, 2, 12, [[0, 1], [6, 7, 8], [9, 10, 11]]),
    (8, 1, 9, [[0], [2], [3, 4, 5], [6, 7, 8]]),
], ids=["global", "roll9_sink3", "roll8_sink2", "roll8_sink1"])
def test_recache_equals_a_cache_rebuilt_from_scratch_under_the_new_prompt(window, sink, before, groups):
    model, a, b = tiny_model(), conditioning(0), conditioning(1, length=7)
    sess = new_session(model, a, latent_hw=HW, seed=5, settings=_settings(window, sink))
    clean = generate(model, sess, num_frames=before)
    held = [f for g in groups for f in g]
    assert sess.cache.positions == held
    assert [[held[i] for i in range(x, y)] for x, y in commit_groups(held, sess.settings.causal)] == groups
    first = CausalConfig(chunk_frames=3, independent_first_frame=True)
    assert commit_groups([0, 1, 2, 3, 5, 6, 7], first) == [(0, 1), (1, 4), (4, 6), (6, 7)]  # chunks 0|1-3|4-6|7-9
    rng = sess.generator.get_state()
    set_prompt(sess, b)
    out = generate(model, sess, num_frames=6)

    # by hand: a fresh cache, each group of clean frames passed once at t=0 at its own position, prompt b
    cfg = model.config
    cache = KVCache.allocate(cfg.num_layers, 1, cfg.num_heads, cfg.head_dim, 6, frames=before,
                             window_frames=window, sink_frames=sink)
    with torch.no_grad():
        for g in groups:
            wan_forward(model, clean[:, :, g], torch.zeros(1, len(g)), b, cache=cache, start_frame=g[0])
        gen = torch.Generator().manual_seed(0)
        gen.set_state(rng)
        ref = rollout(Denoiser(model, sess.settings.schedule, b), cache, batch=1, num_frames=6, latent_hw=HW,
                      timesteps=sess.settings.timesteps(), causal=sess.settings.causal,
                      noise_fn=generator_noise(gen), start_frame=before)
    assert torch.equal(out, ref)

    # "keep" keeps the old keys/values: another result, and not the same as never switching either
    def variant(policy, switch=True):
        s = new_session(model, PromptSchedule.single(a, policy=policy), latent_hw=HW, seed=5,
                        settings=_settings(window, sink))
        generate(model, s, num_frames=before)
        if switch:
            set_prompt(s, b)
        return generate(model, s, num_frames=6)

    keep = variant("keep")
    assert (keep - out).abs().max() > 1e-3
    assert (keep - variant("keep", switch=False)).abs().max() > 1e-3


def test_smooth_transition_equals_an_explicit_schedule_of_blends():
    model, a, b = tiny_model(), conditioning(0, length=5), conditioning(1, length=8)
    smooth = PromptSchedule((PromptEntry(0, a), PromptEntry(2, b)), transition_chunks=3)
    pad_a = torch.cat([a, torch.zeros(1, 3, 32)], dim=1)
    blends = [(1 - w) * pad_a + w * b for w in (1 / 3, 2 / 3)]
    explicit = PromptSchedule((PromptEntry(0, a), PromptEntry(2, blends[0]), PromptEntry(3, blends[1]),
                               PromptEntry(4, b)))
    outs = [generate(model, new_session(model, s, latent_hw=HW, seed=8, settings=_settings(9, 3)), num_frames=18)
            for s in (smooth, explicit)]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    hard = generate(model, new_session(model, PromptSchedule((PromptEntry(0, a), PromptEntry(2, b))),
                                       latent_hw=HW, seed=8, settings=_settings(9, 3)), num_frames=18)
    assert torch.equal(hard[:, :, :6], outs[0][:, :, :6])
    assert (hard[:, :, 6:9] - outs[0][:, :, 6:9]).abs().max() > 1e-3
