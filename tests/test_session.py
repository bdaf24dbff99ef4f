"""Sessions: continuing a video (in memory, from a file, after an interruption) == an uninterrupted run."""
import pytest
import torch

from sessions_kit import HW, StubDecoder, conditioning, tiny_model
from sf_core.config import CausalConfig
from sf_core.sampling.pipeline import generate, set_prompt
from sf_core.sampling.session import SamplingSettings, SessionError, new_session
from sf_core.sampling.session_io import load_session, save_session

ROLL = SamplingSettings(causal=CausalConfig(chunk_frames=3, window_frames=9, sink_frames=3))
GLOBAL = SamplingSettings(causal=CausalConfig(chunk_frames=3))


class Stop(Exception):
    pass


@pytest.mark.parametrize("settings", [GLOBAL, ROLL], ids=["global", "rolling"])
@pytest.mark.parametrize("switch", [False, True], ids=["same_prompt", "new_prompt"])
def test_saved_session_continues_bit_identically(tmp_path, settings, switch):
    model, a, b = tiny_model(), conditioning(0), conditioning(1, length=7)
    full = new_session(model, a, latent_hw=HW, seed=11, settings=settings)
    first = generate(model, full, num_frames=15)
    if switch:
        set_prompt(full, b)
    rest = generate(model, full, num_frames=9)

    part = new_session(model, a, latent_hw=HW, seed=11, settings=settings)
    assert torch.equal(generate(model, part, num_frames=15), first)
    path = save_session(part, tmp_path / "s.safetensors")
    del part
    resumed = load_session(path, model)
    assert resumed.next_frame == 15 and resumed.chunk_index == 5
    if switch:
        set_prompt(resumed, b)
    assert torch.equal(generate(model, resumed, num_frames=9), rest)
    assert resumed.cache.positions == full.cache.positions
    for k1, k2 in zip(resumed.cache.k, full.cache.k):
        assert torch.equal(k1[:, :resumed.cache.length * 6], k2[:, :full.cache.length * 6])


def test_compact_session_without_cache_is_exact_inside_a_global_cache(tmp_path):
    model, a = tiny_model(), conditioning(0)
    full = new_session(model, a, latent_hw=HW, seed=1, settings=GLOBAL)
    generate(model, full, num_frames=9)
    path = save_session(full, tmp_path / "small.safetensors", include_cache=False)
    big = save_session(full, tmp_path / "big.safetensors")
    assert path.stat().st_size < big.stat().st_size
    with pytest.raises(SessionError, match="pass the model"):
        load_session(path)
    resumed = load_session(path, model)
    assert torch.equal(generate(model, resumed, num_frames=6), generate(model, full, num_frames=6))


@pytest.mark.parametrize("where", ["step", "chunk"])
def test_interrupted_generation_leaves_a_consistent_session(where):
    """A callback raising mid-chunk (after the chunk evicted frames) or after a chunk: continuing later gives
    the uninterrupted result."""
    model, a = tiny_model(), conditioning(0)
    ref = generate(model, new_session(model, a, latent_hw=HW, seed=4, settings=ROLL), num_frames=18)

    sess = new_session(model, a, latent_hw=HW, seed=4, settings=ROLL)

    def on_step(info):
        if info.chunk == 4 and info.step == 2:
            raise Stop

    def on_chunk(res):
        if res.index == 4:
            raise Stop

    with pytest.raises(Stop):
        generate(model, sess, num_frames=18, **({"on_step": on_step} if where == "step" else {"on_chunk": on_chunk}))
    done = 12 if where == "step" else 15
    assert sess.next_frame == done and sess.chunk_index == done // 3
    assert sess.cache.positions[-1] == done - 1 and sess.cache._plan is None
    rest = generate(model, sess, num_frames=18 - done)
    assert torch.equal(rest, ref[:, :, done:])


def _decoder(kind):
    if kind == "stub":
        return StubDecoder()
    tiny = pytest.importorskip("sf_core.vae.tiny")
    return tiny.tiny_wan_vae(with_encoder=False) if kind == "wan_vae" else tiny.tiny_taehv()


@pytest.mark.parametrize("kind", ["stub", "wan_vae", "taehv"])
def test_decoder_state_is_carried_and_saved(tmp_path, kind):
    model, a, dec = tiny_model(), conditioning(0), _decoder(kind)
    chunks = []
    sess = new_session(model, a, latent_hw=HW, seed=2, settings=ROLL)
    lat = generate(model, sess, num_frames=6, decoder=dec, on_chunk=lambda r: chunks.append(r.frames))
    assert [c.shape[2] for c in chunks] == [9, 12]
    assert sess.decoded_frames == 6 and sess.decoder_state is not None
    path = save_session(sess, tmp_path / "s.safetensors")
    resumed = load_session(path, model)
    assert type(resumed.decoder_state) is type(sess.decoder_state)
    more = []
    lat2 = generate(model, resumed, num_frames=6, decoder=dec, on_chunk=lambda r: more.append(r.frames))
    streamed = torch.cat(chunks + more, dim=2)
    full = dec.decode(torch.cat([lat, lat2], dim=2))
    scale = 2 if kind == "stub" else 8
    assert streamed.shape == full.shape == (1, 3, 9 + 3 * 12, HW[0] * scale, HW[1] * scale)
    assert torch.allclose(streamed, full, atol=1e-5)
    assert streamed.std() > 0.01


def test_session_from_another_model_is_refused(tmp_path):
    model = tiny_model()
    sess = new_session(model, conditioning(0), latent_hw=HW)
    generate(model, sess, num_frames=3)
    path = save_session(sess, tmp_path / "s.safetensors")
    other = tiny_model(num_layers=3)
    with pytest.raises(SessionError, match="another model.*num_layers: session 2 vs model 3"):
        load_session(path, other)
    with pytest.raises(SessionError, match="another model"):
        generate(other, load_session(path), num_frames=3)
    # same shapes, other weights: allowed, with a warning
    load_session(path, tiny_model(seed=9))


def test_corrupt_or_foreign_session_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    model = tiny_model()
    sess = new_session(model, conditioning(0), latent_hw=HW)
    generate(model, sess, num_frames=3)
    good = save_session(sess, tmp_path / "good.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(SessionError, match="not a readable session file"):
        load_session(cut)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(SessionError, match="not a readable session file"):
        load_session(junk)
    foreign = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(SessionError, match="not a Self Forcing session file"):
        load_session(foreign)
    with pytest.raises(SessionError, match="does not exist"):
        load_session(tmp_path / "missing.safetensors")
