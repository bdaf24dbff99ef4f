"""Host-free tests of the node pack (CI): nodes run against small stand-ins of the host modules.

Results are compared with sf_core called directly (rollout over a KV cache, full decodes), not with the
nodes' own code paths.
"""
from __future__ import annotations

import asyncio
import os

import pytest
import torch

from nodes_harness import FakePatcher, events, install_stubs, tiny_wan


@pytest.fixture()
def host(tmp_path):
    install_stubs(str(tmp_path))
    import comfy.model_management as mm
    import comfy.utils as cu

    return {"mm": mm, "cu": cu, "dir": tmp_path}


@pytest.fixture(scope="module")
def dm():
    return tiny_wan(0)


def cond(text_dim=32, seed=1, length=8):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, length, text_dim, generator=g), {"pooled_output": None}]]


def sampler_kw(**over):
    kw = dict(width=16, height=16, length=33, batch_size=1, seed=7, timesteps="1000,750,500,250",
              warp_timesteps=True, shift=5.0, chunk_frames=3, window_frames=21, sink_frames=3, fps=16.0,
              live_preview=True)
    kw.update(over)
    return kw


def reference_rollout(dm, context, frames, hw, seed, steps=(1000, 750, 500, 250), shift=5.0, window=21, sink=3,
                      chunk=3):
    """Self Forcing sampling with sf_core's primitives directly: latents in model space."""
    from sf_core.config import CausalConfig
    from sf_core.sampling.denoiser import Denoiser
    from sf_core.cache.kv_cache import KVCache
    from sf_core.sampling.sampler import generator_noise, rollout
    from sf_core.sampling.schedule import FlowSchedule

    causal = CausalConfig(chunk_frames=chunk, window_frames=window, sink_frames=sink)
    cfg = dm.config
    tpf = (hw[0] // 2) * (hw[1] // 2)
    cache = KVCache.allocate(cfg.num_layers, context.shape[0], cfg.num_heads, cfg.head_dim, tpf,
                             window_frames=window, sink_frames=sink, chunk_frames=chunk)
    sched = FlowSchedule(shift)
    den = Denoiser(dm, sched, context=context)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return rollout(den, cache, batch=context.shape[0], num_frames=frames, latent_hw=hw,
                       timesteps=sched.warp(list(steps)), causal=causal, noise_fn=generator_noise(gen))


# ------------------------------------------------------------------------------------------------ registry
def test_registry_schemas_are_complete(host):
    from nodes import NODES, SelfForcingExtension

    listed = asyncio.run(SelfForcingExtension().get_node_list())
    assert listed == NODES and len(NODES) >= 10
    ids = [n.define_schema().node_id for n in NODES]
    assert len(set(ids)) == len(ids)
    for node in NODES:
        s = node.define_schema()
        assert s.node_id.startswith("SF_"), s.node_id
        assert s.category.startswith("Self Forcing")
        for i in s.inputs:
            assert i.tooltip and len(i.tooltip) > 10, f"{s.node_id}.{i.id} has no tooltip"
        names = [i.id for i in s.inputs]
        assert len(set(names)) == len(names)


def test_pack_import_has_no_side_effects():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('pack', "
            f"r'{root}/__init__.py', submodule_search_locations=[r'{root}']); m = importlib.util.module_from_spec(spec);"
            " sys.modules['pack'] = m; spec.loader.exec_module(m); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'comfy', 'comfy_api', 'nodes')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]" and out.stderr == ""


# ------------------------------------------------------------------------------------------------ sampler
def test_sampler_matches_sf_core_rollout(host, dm):
    from nodes.sampler import CausalSampler
    from sf_core.vae.latent import denormalize

    c = cond()
    out = CausalSampler.run(model=FakePatcher(dm), positive=c, **sampler_kw())
    latent, session = out[0], out[1]
    ref = reference_rollout(dm, c[0][0], frames=9, hw=(2, 2), seed=7)
    assert latent["samples"].shape == (1, 16, 9, 2, 2)
    torch.testing.assert_close(latent["samples"], denormalize(ref), rtol=0, atol=1e-5)
    # the session is on the CPU, continues at frame 9, and its frames output blocks (no VAE connected)
    assert session.next_frame == 9 and session.cache.k[0].device.type == "cpu"
    assert type(out[2]).__name__ == "ExecutionBlocker" and "VAE" in out[2].message
    # progress: 3 chunks x 4 steps, ending at the total; no live stream without a decoder
    ups = host["cu"].updates
    assert ups[-1][:2] == (12, 12) and len(ups) >= 12
    assert events() == []


def test_sampler_length_from_latent_and_model_shift(host, dm):
    from nodes.sampler import CausalSampler
    from sf_core.vae.latent import denormalize

    c = cond()
    empty = {"samples": torch.zeros(1, 16, 6, 2, 2)}
    out = CausalSampler.run(model=FakePatcher(dm, shift=3.0), positive=c, latent=empty,
                            **sampler_kw(shift=0.0, width=512, length=81))
    ref = reference_rollout(dm, c[0][0], frames=6, hw=(2, 2), seed=7, shift=3.0)
    torch.testing.assert_close(out[0]["samples"], denormalize(ref), rtol=0, atol=1e-5)


def test_continue_session_equals_one_long_run(host, dm):
    from nodes.sampler import CausalSampler
    from nodes.session import ContinueSession

    c = cond()
    long = CausalSampler.run(model=FakePatcher(dm), positive=c, **sampler_kw(length=45))  # 12 latent frames
    first = CausalSampler.run(model=FakePatcher(dm), positive=c, **sampler_kw(length=21))  # 6 latent frames
    snapshot = first[1].cache.k[0].clone()
    more = ContinueSession.run(model=FakePatcher(dm), session=first[1], chunks=2, switch_policy="recache",
                               fps=16.0, live_preview=False)
    torch.testing.assert_close(more[0]["samples"], long[0]["samples"][:, :, 6:], rtol=0, atol=1e-5)
    assert more[1].next_frame == 12 and first[1].next_frame == 6  # the input session is untouched
    assert torch.equal(first[1].cache.k[0], snapshot)
    again = ContinueSession.run(model=FakePatcher(dm), session=first[1], chunks=2, switch_policy="recache",
                                fps=16.0, live_preview=False)  # host cache re-run: same result
    assert torch.equal(again[0]["samples"], more[0]["samples"])


def test_continue_with_new_prompt_switches_from_next_chunk(host, dm):
    from nodes.sampler import CausalSampler
    from nodes.session import ContinueSession

    a, b = cond(seed=1), cond(seed=2)
    first = CausalSampler.run(model=FakePatcher(dm), positive=a, **sampler_kw(length=21))
    same = ContinueSession.run(model=FakePatcher(dm), session=first[1], chunks=1, switch_policy="keep",
                               fps=16.0, live_preview=False)
    new = ContinueSession.run(model=FakePatcher(dm), session=first[1], chunks=1, switch_policy="keep",
                              positive=b, fps=16.0, live_preview=False)
    assert not torch.allclose(same[0]["samples"], new[0]["samples"])
    assert new[1].prompts.context_at(new[1].chunk_index - 1) is not None


def test_prompt_schedule_node_matches_pipeline_schedule(host, dm):
    from nodes.prompts import PromptScheduleNode
    from nodes.sampler import CausalSampler
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.prompts import PromptEntry, PromptSchedule
    from sf_core.sampling.session import SamplingSettings, default_causal, new_session
    from sf_core.vae.latent import denormalize

    a, b = cond(seed=1), cond(seed=2)
    sched = PromptScheduleNode.run(conditioning=b, start_chunk=2, switch_policy="recache", transition_chunks=0)[0]
    out = CausalSampler.run(model=FakePatcher(dm), positive=a, prompt_schedule=sched, **sampler_kw())
    ps = PromptSchedule((PromptEntry(0, a[0][0]), PromptEntry(2, b[0][0])), policy="recache")
    s = new_session(dm, ps, latent_hw=(2, 2), seed=7, settings=SamplingSettings(causal=default_causal()))
    with torch.no_grad():
        ref = generate(dm, s, num_frames=9)
    torch.testing.assert_close(out[0]["samples"], denormalize(ref), rtol=0, atol=1e-5)
    plain = CausalSampler.run(model=FakePatcher(dm), positive=a, **sampler_kw())
    torch.testing.assert_close(out[0]["samples"][:, :, :6], plain[0]["samples"][:, :, :6], rtol=0, atol=1e-6)
    assert not torch.allclose(out[0]["samples"][:, :, 6:], plain[0]["samples"][:, :, 6:])


# ------------------------------------------------------------------------------------------------ streaming
@pytest.fixture(scope="module")
def tiny_vae():
    from sf_core.vae.wan_vae import WanVAE, WanVAEConfig

    torch.manual_seed(0)
    vae = WanVAE(WanVAEConfig.tiny(), with_encoder=False).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.ndim == 1 else 0.0))
    return vae


def test_sampler_streams_vae_frames_equal_to_full_decode(host, dm, tiny_vae, monkeypatch):
    import nodes.decoders as decoders
    from nodes.sampler import CausalSampler

    # the stock VAE is replaced by sf_core's Wan VAE (the host's WanVAE runs in tests/test_host_e2e.py)
    monkeypatch.setattr(decoders, "from_host_vae", lambda vae: decoders.HostDecoder(vae, name="vae"))
    out = CausalSampler.run(model=FakePatcher(dm), positive=cond(), vae=tiny_vae, **sampler_kw())
    z = out[1].held_latents()  # clean latents of the cached frames (all 9: nothing evicted)
    with torch.no_grad():
        full = tiny_vae.decode(z)
    frames = out[2]
    assert frames.shape == (33, 16, 16, 3)
    ref = ((full + 1) * 0.5).clamp(0, 1)[0].permute(1, 2, 3, 0)
    torch.testing.assert_close(frames, ref, rtol=0, atol=1e-5)
    chunks = events("chunk")
    assert [d["frames"] for _, d in chunks] == [9, 12, 12]
    assert [d["start_frame"] for _, d in chunks] == [0, 9, 21]
    for _, d in chunks:
        img = d["image"]
        assert img["type"] == "temp" and os.path.isfile(host["dir"] / "temp" / img["subfolder"] / img["filename"])
    assert events("stream_start")[0][1]["total_chunks"] == 3
    assert events("stream_end")[0][1]["status"] == "done" and events("stream_end")[0][1]["frames"] == 33
    # while the player streams, the host's own progress preview is not sent (it would repeat the frames under
    # the player in Nodes 2.0); with the player off, one preview image per chunk
    assert sum(1 for u in host["cu"].updates if u[2]) == 0
    host["cu"].updates.clear()
    CausalSampler.run(model=FakePatcher(dm), positive=cond(), vae=tiny_vae, **sampler_kw(live_preview=False))
    assert sum(1 for u in host["cu"].updates if u[2]) == 3


def test_streaming_decode_node_equals_full_decode(host, tiny_vae):
    from nodes.decode import StreamingDecode
    from nodes.decoders import HostDecoder
    from sf_core.vae.latent import denormalize

    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 16, 7, 2, 2, generator=g)
    out = StreamingDecode.run(samples={"samples": denormalize(z)}, decoder=HostDecoder(tiny_vae), chunk_frames=3,
                              fps=8.0, live_preview=True)[0]
    with torch.no_grad():
        full = ((tiny_vae.decode(z) + 1) * 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).reshape(-1, 16, 16, 3)
    assert out.shape == (2 * 25, 16, 16, 3)
    torch.testing.assert_close(out, full, rtol=0, atol=1e-5)
    assert [d["frames"] for _, d in events("chunk")] == [9, 12, 4]


def test_interrupt_stops_and_frees(host, dm, tiny_vae, monkeypatch):
    import nodes.decoders as decoders
    from nodes.sampler import CausalSampler

    monkeypatch.setattr(decoders, "from_host_vae", lambda vae: decoders.HostDecoder(vae, name="vae"))
    host["mm"].interrupt_after = 12  # 9 checks in the first chunk (4 steps x 2 + its preview): this is the second
    with pytest.raises(host["mm"].InterruptProcessingException):
        CausalSampler.run(model=FakePatcher(dm), positive=cond(), vae=tiny_vae, **sampler_kw())
    assert ("soft_empty_cache",) in host["mm"].calls
    assert len(events("chunk")) == 1 and events("stream_end")[0][1]["status"] == "interrupted"


# ------------------------------------------------------------------------------------------------ errors
def test_clear_errors(host, dm):
    from nodes.host import NodeInputError
    from nodes.sampler import CausalSampler

    with pytest.raises(NodeInputError, match="not a Wan2.1"):
        CausalSampler.run(model=FakePatcher(torch.nn.Linear(2, 2)), positive=cond(), **sampler_kw())
    with pytest.raises(NodeInputError, match="conditioning width 768"):
        CausalSampler.run(model=FakePatcher(dm), positive=cond(text_dim=768), **sampler_kw())
    with pytest.raises(NodeInputError, match="timesteps"):
        CausalSampler.run(model=FakePatcher(dm), positive=cond(), **sampler_kw(timesteps="1000, abc"))
    with pytest.raises(NodeInputError, match="nearest valid lengths"):
        CausalSampler.run(model=FakePatcher(dm), positive=cond(), **sampler_kw(length=25))
    with pytest.raises(NodeInputError, match="video latent"):
        CausalSampler.run(model=FakePatcher(dm), positive=cond(), latent={"samples": torch.zeros(1, 4, 8, 8)},
                          **sampler_kw())
    with pytest.raises(NodeInputError, match="window"):
        CausalSampler.run(model=FakePatcher(dm), positive=cond(), **sampler_kw(window_frames=4, sink_frames=3))
    assert "timesteps" in CausalSampler.validate_inputs(timesteps="5, 10")
    assert CausalSampler.validate_inputs(timesteps="1000,500") is True


# ------------------------------------------------------------------------------------------------ files
def test_save_and_load_session_round_trip(host, dm):
    from nodes.sampler import CausalSampler
    from nodes.session import ContinueSession, LoadSession, SaveSession

    c = cond()
    first = CausalSampler.run(model=FakePatcher(dm), positive=c, **sampler_kw(length=21))
    saved = SaveSession.run(session=first[1], filename_prefix="selfforcing/test", include_cache=True)
    rel = saved[0]
    assert rel == "selfforcing/test_00001.safetensors" and saved.ui.as_dict()["text"]
    loaded = LoadSession.run(session_file=rel)[0]
    a = ContinueSession.run(model=FakePatcher(dm), session=first[1], chunks=1, switch_policy="recache", fps=16.0,
                            live_preview=False)
    b = ContinueSession.run(model=FakePatcher(dm), session=loaded, chunks=1, switch_policy="recache", fps=16.0,
                            live_preview=False)
    torch.testing.assert_close(a[0]["samples"], b[0]["samples"], rtol=0, atol=0)
    from nodes.host import NodeInputError

    with pytest.raises(NodeInputError, match="outside ComfyUI.s output folder"):
        SaveSession.run(session=first[1], filename_prefix="../escape", include_cache=True)
    with pytest.raises(NodeInputError, match="another model"):
        ContinueSession.run(model=FakePatcher(tiny_wan_other()), session=loaded, chunks=1, switch_policy="keep",
                            fps=16.0, live_preview=False)


def tiny_wan_other():
    from sf_core.config import WanConfig
    from sf_core.model.transformer import WanTransformer, randomize_weights

    cfg = WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=3, text_dim=32, text_len=16)
    return randomize_weights(WanTransformer(cfg), seed=1)


def test_load_conditioning(host):
    from safetensors.torch import save_file

    from nodes.host import NodeInputError
    from nodes.loaders import LoadConditioning

    inp = host["dir"] / "input"
    inp.mkdir(exist_ok=True)
    t = torch.randn(12, 4096)
    save_file({"context": t, "other": torch.zeros(3)}, str(inp / "prompt.safetensors"))
    schema = LoadConditioning.define_schema()
    assert "prompt.safetensors" in schema.inputs[0].opts["options"]
    c = LoadConditioning.run(file="prompt.safetensors", key="")[0]
    assert torch.equal(c[0][0], t[None]) and c[0][1] == {"pooled_output": None}
    with pytest.raises(NodeInputError, match="no tensor 'nope'"):
        LoadConditioning.run(file="prompt.safetensors", key="nope")
    with pytest.raises(NodeInputError, match="expected float embeddings"):
        LoadConditioning.run(file="prompt.safetensors", key="other")
    (inp / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(NodeInputError, match="not a readable"):
        LoadConditioning.run(file="bad.safetensors", key="")


def test_decode_with_session_continues_the_stream_seamlessly(host, dm, tiny_vae):
    from nodes.decode import StreamingDecode
    from nodes.decoders import HostDecoder
    from nodes.sampler import CausalSampler
    from nodes.session import ContinueSession
    from sf_core.vae.latent import normalize

    dec = HostDecoder(tiny_vae)
    first = CausalSampler.run(model=FakePatcher(dm), positive=cond(), **sampler_kw(length=21))
    img1, s1 = StreamingDecode.run(samples=first[0], decoder=dec, session=first[1], chunk_frames=3, fps=16.0,
                                   live_preview=False).args
    assert s1.decoded_frames == 6 and first[1].decoder_state is None  # a copy carries the stream on
    more = ContinueSession.run(model=FakePatcher(dm), session=s1, chunks=1, switch_policy="recache", fps=16.0,
                               live_preview=False)
    img2, s2 = StreamingDecode.run(samples=more[0], decoder=dec, session=more[1], chunk_frames=3, fps=16.0,
                                   live_preview=False).args
    assert img2.shape[0] == 12 and s2.decoded_frames == 9
    z = normalize(torch.cat([first[0]["samples"], more[0]["samples"]], dim=2))
    with torch.no_grad():
        full = ((tiny_vae.decode(z) + 1) * 0.5).clamp(0, 1)[0].permute(1, 2, 3, 0)
    torch.testing.assert_close(torch.cat([img1, img2]), full, rtol=0, atol=1e-5)
    # without the session the second decode starts a new stream (9 frames for 3 latent frames)
    alone = StreamingDecode.run(samples=more[0], decoder=dec, chunk_frames=3, fps=16.0, live_preview=False)[0]
    assert alone.shape[0] == 9


# ------------------------------------------------------------------------------------------------ toy model
@pytest.fixture()
def toy_file(tmp_path, monkeypatch):
    """A toy-size transformer (random weights) standing in for the shipped toy model file."""
    from sf_core.checkpoints.weights import save_model
    from sf_core.model.transformer import WanTransformer, randomize_weights
    from sf_core.toy import bundle
    from sf_core.toy.spec import toy_wan_config

    path = tmp_path / "toy.safetensors"
    save_model(path, randomize_weights(WanTransformer(toy_wan_config()), seed=3), toy_wan_config())
    monkeypatch.setattr(bundle, "DEFAULT_MODEL", path)
    return path


def test_toy_model_runs_through_the_same_nodes(host, toy_file):
    from nodes.decode import StreamingDecode
    from nodes.sampler import CausalSampler
    from nodes.toy import EmptyToyLatent, LoadToyModel, ToyTextEncode
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import SamplingSettings, new_session
    from sf_core.toy import load_toy_bundle
    from sf_core.toy.spec import toy_causal

    model, decoder, _clip = LoadToyModel.run(upscale=2).args
    cond = ToyTextEncode.run(text="a blue circle moving up slow")[0]
    latent = EmptyToyLatent.run(frames=12, batch_size=1)[0]
    out = CausalSampler.run(model=model, positive=cond, latent=latent,
                            **sampler_kw(window_frames=12, sink_frames=0, seed=5))
    b = load_toy_bundle(toy_file)
    s = new_session(b.transformer, b.text_encoder.encode(["a blue circle moving up slow"]), latent_hw=(8, 8),
                    seed=5, settings=SamplingSettings(causal=toy_causal()))
    with torch.no_grad():
        ref = generate(b.transformer, s, num_frames=12)
    torch.testing.assert_close(out[0]["samples"], ref, rtol=0, atol=1e-5)
    frames = StreamingDecode.run(samples=out[0], decoder=decoder, chunk_frames=3, fps=8.0, live_preview=True)[0]
    from sf_core.toy.spec import WORLD

    assert frames.shape == (12, WORLD.height * 2, WORLD.width * 2, 3)
    assert [d["frames"] for _, d in events("chunk")] == [3, 3, 3, 3]  # the toy codec: one frame per latent frame
    from nodes.host import NodeInputError

    with pytest.raises(NodeInputError, match="SF Empty Toy Latent"):
        CausalSampler.run(model=model, positive=cond, **sampler_kw())


def test_download_offline_is_a_clear_error(host, monkeypatch):
    from nodes.host import NodeInputError
    from nodes.loaders import DownloadCheckpoint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    options = DownloadCheckpoint.define_schema().inputs[0].opts["options"]
    assert "self-forcing-dmd" in options
    with pytest.raises(NodeInputError, match="unreachable|offline|by hand"):
        DownloadCheckpoint.run(checkpoint="self-forcing-dmd", which="auto", weight_dtype="default")


def test_preview_decoder_streams_live_and_taehv_loader(host, dm):
    from safetensors.torch import save_file

    from nodes.loaders import LoadPreviewDecoder
    from nodes.sampler import CausalSampler
    from sf_core.vae.taehv import TAEHV

    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in TAEHV().state_dict().items()}
    folder = host["dir"] / "models" / "vae_approx"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "taew2_1.safetensors"))
    assert "taew2_1.safetensors" in LoadPreviewDecoder.define_schema().inputs[0].opts["options"]
    dec = LoadPreviewDecoder.run(decoder_name="taew2_1.safetensors")[0]
    out = CausalSampler.run(model=FakePatcher(dm), positive=cond(), preview_decoder=dec, **sampler_kw(length=21))
    chunks = events("chunk")
    assert len(chunks) == 2 and chunks[0][1]["source"] == "sampler"
    assert type(out[2]).__name__ == "ExecutionBlocker"  # no VAE: the live view only, no frames output


def test_a_continued_stream_says_its_first_chunk(host, dm, tiny_vae, monkeypatch):
    """The player waited for chunk 0, so a stream that continues a session (or starts from an image / a video)
    stayed blank for runs of <= 8 chunks: stream_start now names the stream's first chunk."""
    import nodes.decoders as decoders
    from nodes.sampler import CausalSampler
    from nodes.session import ContinueSession

    monkeypatch.setattr(decoders, "from_host_vae", lambda vae: decoders.HostDecoder(vae, name="vae"))
    first = CausalSampler.run(model=FakePatcher(dm), positive=cond(), vae=tiny_vae, **sampler_kw(length=21))
    assert events("stream_start")[0][1]["first_chunk"] == 0
    host["cu"].updates.clear()
    ContinueSession.run(model=FakePatcher(dm), session=first[1], chunks=2, switch_policy="recache", fps=16.0,
                        live_preview=True, vae=tiny_vae)
    start = events("stream_start")[-1][1]
    chunks = [d for _, d in events("chunk") if d["stream"] == start["stream"]]
    assert start["first_chunk"] == first[1].chunk_index == 2 == chunks[0]["chunk"]
    assert [c["chunk"] for c in chunks] == [2, 3]
