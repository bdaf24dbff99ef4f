"""generate(..., overlap_decode=True) (sf_core.sampling.overlap): chunk k decoded on a worker while chunk k+1 samples.
Judged against the sequential order: the same latents, frames (bit for bit) and decoder state, every chunk
delivered in order; an interruption delivers what was finished and leaves a session that continues the same."""
import threading

import pytest
import torch

from sf_core.config import CausalConfig
from sf_core.sampling.pipeline import generate
from sf_core.sampling.session import SamplingSettings, new_session
from sessions_kit import StubDecoder, conditioning, tiny_model

HW = (4, 6)
CAUSAL = CausalConfig(chunk_frames=3, window_frames=9, sink_frames=3)


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


class SlowDecoder(StubDecoder):
    """Records which thread decoded each chunk and waits a little, so decoding really overlaps sampling."""

    def __init__(self):
        super().__init__()
        self.threads = []

    def decode_chunk(self, z, state=None):
        self.threads.append(threading.current_thread().name)
        threading.Event().wait(0.01)
        return super().decode_chunk(z, state)


def _session(model, seed=0):
    return new_session(model, conditioning(0, width=model.config.text_dim), latent_hw=HW, seed=seed,
                       settings=SamplingSettings(causal=CAUSAL))


def _run(model, overlap, frames=24, **kw):
    s, dec, got = _session(model), SlowDecoder(), []
    lat = generate(model, s, num_frames=frames, decoder=dec, overlap_decode=overlap,
                   on_chunk=lambda r: got.append((r.index, r.frames)), **kw)
    return s, dec, lat, got


def test_same_frames_and_state_as_sequential(model):
    s0, d0, lat0, got0 = _run(model, False)
    s1, d1, lat1, got1 = _run(model, True)
    assert torch.equal(lat0, lat1)
    assert [i for i, _ in got1] == list(range(8))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got0, got1))
    assert s1.decoded_frames == s1.next_frame == 24
    assert torch.equal(s0.decoder_state["prev"], s1.decoder_state["prev"])
    assert s0.decoder_state["count"] == s1.decoder_state["count"]
    assert all(t.startswith("sf-decode") for t in d1.threads) and not any(t.startswith("sf-decode")
                                                                          for t in d0.threads)


def test_an_interruption_delivers_the_finished_chunks_and_continues_the_same(model):
    _, _, lat_all, got_all = _run(model, False, frames=24)
    s, dec, got = _session(model), SlowDecoder(), []

    def stop(info):
        if info.chunk == 4 and info.step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(model, s, num_frames=24, decoder=dec, overlap_decode=True, on_step=stop,
                 on_chunk=lambda r: got.append((r.index, r.frames)))
    assert [i for i, _ in got] == [0, 1, 2, 3]  # every finished chunk, decoded and delivered
    assert s.next_frame == s.decoded_frames == 12
    generate(model, s, num_frames=12, decoder=dec, overlap_decode=True,
             on_chunk=lambda r: got.append((r.index, r.frames)))
    assert [i for i, _ in got] == list(range(8))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, got_all))


def test_a_decoder_error_reaches_the_caller(model):
    class Broken(StubDecoder):
        def decode_chunk(self, z, state=None):
            if state is not None and state["count"] >= 6:
                raise RuntimeError("decoder out of memory")
            return super().decode_chunk(z, state)

    s = _session(model)
    with pytest.raises(RuntimeError, match="out of memory"):
        generate(model, s, num_frames=24, decoder=Broken(), overlap_decode=True)
    assert s.decoded_frames == 6  # the decoder state stays at the last chunk it finished
