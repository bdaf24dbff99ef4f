"""The KV-cache storage widget of SF Causal Sampler and SF Live Stream: last, optional, and it reaches the cache."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from nodes_harness import FakePatcher, install_stubs, tiny_wan


@pytest.fixture()
def host(tmp_path):
    install_stubs(str(tmp_path))
    return tmp_path


def _kw(**over):
    kw = dict(width=16, height=16, length=33, batch_size=1, seed=7, timesteps="1000,750,500,250",
              warp_timesteps=True, shift=5.0, chunk_frames=3, window_frames=6, sink_frames=3, fps=16.0,
              live_preview=False)
    kw.update(over)
    return kw


def test_the_widget_is_the_last_optional_input_of_both_nodes(host):
    from nodes.live import LiveStreamNode
    from nodes.sampler import CausalSampler

    for node in (CausalSampler, LiveStreamNode):
        inputs = node.define_schema().inputs
        ids = [i.id for i in inputs]
        last = inputs[ids.index("kv_cache_dtype")]
        # after every widget of earlier versions (saved workflows keep their values); only newer optional ones follow
        assert last.optional and all(i.optional for i in inputs[ids.index("kv_cache_dtype"):]), node.__name__
        assert list(last.opts["options"]) == ["auto", "bf16", "fp16", "fp32", "int8", "fp8"] and last.default == "auto"


def test_sampler_int8_cache_is_close_to_the_exact_one(host):
    from nodes.sampler import CausalSampler

    dm = tiny_wan(0)
    g = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 8, 32, generator=g), {"pooled_output": None}]]
    exact = CausalSampler.run(model=FakePatcher(dm), positive=cond, **_kw())
    quant = CausalSampler.run(model=FakePatcher(dm), positive=cond, kv_cache_dtype="int8", **_kw())
    assert exact[1].cache.kv_dtype == "auto" and exact[1].settings.kv_dtype == "auto"
    assert quant[1].cache.kv_dtype == "int8" and quant[1].cache.dtype == torch.int8
    a, b = exact[0]["samples"], quant[0]["samples"]
    rel = ((a - b).pow(2).mean().sqrt() / a.pow(2).mean().sqrt()).item()
    assert 0 < rel < 5e-3, rel


def test_live_stream_makes_an_int8_session(host):
    from nodes.live import LiveStreamNode
    from nodes.toy import EmptyToyLatent, LoadToyModel

    model, decoder, clip = LoadToyModel.run(upscale=1).args
    latent = EmptyToyLatent.run(frames=3, batch_size=1)[0]
    box = {}

    def go():
        box["out"] = LiveStreamNode.run(
            model=model, clip=clip, prompt="a red square moving right slow", latent=latent, preview_decoder=decoder,
            width=832, height=480, seed=0, timesteps="1000,750,500,250", warp_timesteps=True, shift=5.0,
            chunk_frames=3, window_frames=12, sink_frames=3, positions="relative", fps=8.0, max_chunks=5,
            max_minutes=0.0, keep_last_frames=0, filename_prefix="selfforcing/kvq", kv_cache_dtype="int8")

    th = threading.Thread(target=go)
    th.start()
    t0 = time.time()
    while th.is_alive() and time.time() - t0 < 120:
        th.join(0.1)
    assert "out" in box
    session = box["out"].args[1]
    assert session.next_frame == 15 and session.settings.kv_dtype == "int8"
