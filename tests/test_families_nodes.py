"""The family inputs of the nodes (host-free stand-ins): SF Load Self Forcing Checkpoint takes a family's real
file (and LongLive's LoRA), records the family on the MODEL, and SF Causal Sampler samples it with the family's
preset (widgets moved off their defaults still win); results compared with sf_core called directly."""
from __future__ import annotations

import pytest
import torch

from family_files import longlive_lora, lora_factors, merged_by_hand, training_checkpoint
from nodes_harness import FakePatcher, install_stubs
from sessions_kit import tiny_model

REAL = dict(dim=128, num_heads=1, ffn_dim=128, text_len=512, text_dim=4096)  # what ComfyUI's loader accepts


@pytest.fixture()
def host(tmp_path, monkeypatch):
    install_stubs(str(tmp_path))
    from nodes import host as h

    built = []

    def fake_loader(sd, dtype=None, metadata=None):  # the stand-in of comfy.sd's loader: a MODEL holding these weights
        from sf_core.checkpoints.weights import load_model  # noqa: F401 - same model class as the host's tree
        from sf_core.config import WanConfig
        from sf_core.model.transformer import WanTransformer

        m = WanTransformer(WanConfig(**{**WanConfig.tiny().to_dict(), **REAL})).eval()
        m.load_state_dict(sd)
        built.append(m)
        return FakePatcher(m, shift=5.0)

    monkeypatch.setattr(h, "load_diffusion_state_dict", fake_loader)
    return tmp_path


def test_loader_family_lora_and_sampler_preset(host):
    from nodes.loaders import LoadCheckpoint, model_family
    from nodes.sampler import CausalSampler
    from sf_core.checkpoints.families import settings_for
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import new_session
    from sf_core.vae.latent import denormalize

    gen, ema = tiny_model(0, **REAL), tiny_model(1, **REAL)
    dmodels = host / "models" / "diffusion_models"
    training_checkpoint(dmodels / "rolling_forcing_dmd.pt", gen, ema)
    model = LoadCheckpoint.execute("rolling_forcing_dmd.pt", "auto", "default")[0]
    assert model_family(model) == "rolling_forcing"
    assert torch.equal(model.model.diffusion_model.blocks[0].self_attn.q.weight, ema.blocks[0].self_attn.q.weight)
    g = torch.Generator().manual_seed(1)
    c = [[torch.randn(1, 6, 4096, generator=g), {"pooled_output": None}]]
    kw = dict(width=16, height=16, length=21, batch_size=1, seed=7, timesteps="1000,750,500,250",
              warp_timesteps=True, shift=5.0, chunk_frames=3, window_frames=21, sink_frames=3, fps=16.0,
              live_preview=False)
    out = CausalSampler.run(model=model, positive=c, **kw)
    s = new_session(ema, c[0][0], latent_hw=(2, 2), seed=7, settings=settings_for("rolling_forcing"))
    want = generate(ema, s, num_frames=6)
    torch.testing.assert_close(out[0]["samples"], denormalize(want), rtol=0, atol=1e-5)
    assert out[1].settings.sampler == "rolling" and out[1].pending is not None
    # a widget moved off its default wins over the preset; 'custom' ignores the family
    out2 = CausalSampler.run(model=model, positive=c, **{**kw, "window_frames": 30})
    assert out2[1].settings.causal.window_frames == 30 and out2[1].settings.sampler == "rolling"
    out3 = CausalSampler.run(model=model, positive=c, family="custom", **kw)
    assert out3[1].settings.sampler == "chunk" and out3[1].settings.causal.window_frames == 21

    # LongLive: base + LoRA from models/loras
    training_checkpoint(dmodels / "longlive_base.pt", gen)
    factors = lora_factors(gen, rank=2)
    longlive_lora(host / "models" / "loras" / "lora.pt", factors)
    ll = LoadCheckpoint.execute("longlive_base.pt", "auto", "default", family="auto", lora="lora.pt")[0]
    want_w = merged_by_hand(gen.state_dict(), factors)["blocks.1.ffn.2.weight"]
    assert model_family(ll) == "longlive"
    assert (ll.model.diffusion_model.blocks[1].ffn[2].weight - want_w).abs().max() < 1e-6
    # the LoRA given as the model: a clear error naming what it is
    from nodes.host import NodeInputError

    (dmodels / "lora.pt").write_bytes((host / "models" / "loras" / "lora.pt").read_bytes())
    with pytest.raises(NodeInputError, match="LongLive's LoRA"):
        LoadCheckpoint.execute("lora.pt", "auto", "default")
