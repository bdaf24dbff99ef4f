"""Checkpoint families: tiny files in each family's real format load with the right weights and preset, through
sf_core, the CLI, the converter and the loader / sampler nodes; wrong-family files give a clear message."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import save_file

from family_files import (longlive_lora, longlive_merged, lora_factors, merged_by_hand,
                          training_checkpoint)
from sessions_kit import HW, conditioning, tiny_model
from sf_core.checkpoints.files import CheckpointError
from sf_core.checkpoints.families import FAMILIES, FamilyError, detect_path, load_for_family, settings_for


REAL = dict(dim=128, num_heads=1, ffn_dim=128, text_len=512)  # as released Wan2.1: heads, text_len not in the file


@pytest.fixture(scope="module")
def models():
    return {"gen": tiny_model(0, **REAL), "ema": tiny_model(1, **REAL), "critic": tiny_model(2, **REAL)}


def _same(sd, model):
    ref = model.state_dict()
    return set(sd) == set(ref) and all(torch.equal(sd[k].float(), ref[k].float()) for k in ref)


@pytest.mark.parametrize("rel, family, takes", [
    ("checkpoints/rolling_forcing_dmd.pt", "rolling_forcing", "ema"),
    ("checkpoints/chunkwise/causal_forcing.pt", "causal_forcing", "gen"),
    ("checkpoints/framewise/causal_forcing.pt", "causal_forcing_framewise", "ema"),
    ("checkpoints/causal-forcing++/framewise-2step.pt", "causal_forcing_2step", "ema"),
    ("checkpoints/causal-forcing++/framewise-1step.pt", "causal_forcing_1step", "ema"),
    ("checkpoints/chunkwise/longvideo.pt", "causal_forcing_long", "ema"),
    ("checkpoints/self_forcing_dmd.pt", "self_forcing", "ema"),
])
def test_official_training_checkpoints(tmp_path, models, rel, family, takes):
    p = training_checkpoint(tmp_path / rel, models["gen"], models["ema"], models["critic"])
    ck, fam = load_for_family(p)
    assert fam == family and _same(ck.state_dict, models[takes])
    assert ck.meta["which"] == ("generator_ema" if takes == "ema" else "generator")
    ck2, _ = load_for_family(p, which="critic")
    assert _same(ck2.state_dict, models["critic"])


def test_causvid_and_unknown_files(tmp_path, models):
    p = training_checkpoint(tmp_path / "autoregressive_checkpoint" / "model.pt", models["gen"])
    ck, fam = load_for_family(p)
    assert fam == "causvid" and _same(ck.state_dict, models["gen"])
    st = settings_for(fam)
    assert st.steps == (1000, 757, 522) and not st.warp and st.shift == 8.0
    assert [float(t) for t in st.timesteps()] == [1000.0, 757.0, 522.0]
    other = training_checkpoint(tmp_path / "my_model.pt", models["gen"], models["ema"])
    assert load_for_family(other)[1] is None  # nothing to tell: the caller keeps its defaults
    assert load_for_family(other, family="longlive")[1] == "longlive"


def test_longlive_base_plus_lora_merged_and_merged_file(tmp_path, models, caplog):
    base = training_checkpoint(tmp_path / "models" / "longlive_base.pt", models["gen"], critic=models["critic"])
    factors = lora_factors(models["gen"], rank=4)
    lora = longlive_lora(tmp_path / "models" / "lora.pt", factors)
    want = merged_by_hand(models["gen"].state_dict(), factors)
    ck, fam = load_for_family(base, lora=lora)
    assert fam == "longlive" and ck.meta["lora_rank"] == 4
    assert max((ck.state_dict[k] - want[k]).abs().max().item() for k in want) < 1e-6
    # the bare peft state dict (the inference script reads both) and an alpha that is not the rank
    bare = longlive_lora(tmp_path / "bare.pt", factors, container=False)
    from sf_core.checkpoints.weights import load_checkpoint

    ck2 = load_checkpoint(base, which="generator", lora=bare, lora_alpha=2.0)
    half = merged_by_hand(models["gen"].state_dict(), factors, alpha=2.0)
    assert max((ck2.state_dict[k] - half[k]).abs().max().item() for k in half) < 1e-6
    # the base alone: LongLive, with a warning that its authors add the LoRA
    with caplog.at_level(logging.WARNING):
        _, fam = load_for_family(base)
    assert fam == "longlive" and "lora" in caplog.text.lower()
    # LongLive's merge script output is recognised by its marker whatever its name
    merged = longlive_merged(tmp_path / "whatever.pt", want)
    ck3, fam3 = load_for_family(merged)
    assert fam3 == "longlive" and max((ck3.state_dict[k] - want[k]).abs().max().item() for k in want) == 0
    st = settings_for("longlive")
    assert (st.causal.window_frames, st.causal.sink_frames, st.recache) == (12, 3, "window")


def test_wrong_family_messages(tmp_path, models, caplog):
    factors = lora_factors(models["gen"], rank=2)
    lora = longlive_lora(tmp_path / "lora.pt", factors)
    with pytest.raises(CheckpointError, match="LongLive's LoRA.*longlive_base.pt.*--lora"):
        load_for_family(lora)
    merged = longlive_merged(tmp_path / "merged.pt", merged_by_hand(models["gen"].state_dict(), factors))
    with pytest.raises(FamilyError, match="looks like LongLive.*--family longlive"):
        load_for_family(merged, family="rolling_forcing")
    rf = training_checkpoint(tmp_path / "rolling_forcing_dmd.pt", models["gen"], models["ema"])
    with caplog.at_level(logging.WARNING):
        _, fam = load_for_family(rf, family="causvid")  # a name only: warned, the user's choice stands
    assert fam == "causvid" and "looks like Rolling Forcing" in caplog.text
    assert detect_path("x/framewise/causal_forcing.pt").family == "causal_forcing_framewise"
    with pytest.raises(FamilyError, match="unknown checkpoint family 'rollingforcing'"):
        settings_for("rollingforcing")


def test_convert_records_the_family_and_the_merge(tmp_path, models):
    from sf_core.checkpoints.convert import main as convert_main
    from sf_core.checkpoints.families import detect

    base = training_checkpoint(tmp_path / "longlive_base.pt", models["gen"])
    factors = lora_factors(models["gen"], rank=3)
    lora = longlive_lora(tmp_path / "lora.pt", factors)
    out = tmp_path / "longlive_merged.safetensors"
    assert convert_main([str(base), str(out), "--lora", str(lora), "--dtype", "fp32"]) == 0
    out.unlink()
    from sf_core.checkpoints.convert import convert

    summary = convert(base, out, dtype="fp32", lora=str(lora))
    assert summary["family"] == "longlive" and summary["causal"]["chunk_frames"] == 3
    ck, fam = load_for_family(out)
    assert fam == "longlive" and detect(ck).strong
    want = merged_by_hand(models["gen"].state_dict(), factors)
    assert max((ck.state_dict[k] - want[k]).abs().max().item() for k in want) < 1e-6
    rf = training_checkpoint(tmp_path / "rolling_forcing_dmd.pt", models["gen"], models["ema"])
    out2 = tmp_path / "rf.safetensors"
    convert(rf, out2, dtype="fp32")
    ck2, fam2 = load_for_family(out2)
    assert fam2 == "rolling_forcing" and _same(ck2.state_dict, models["ema"])
    with pytest.raises(FamilyError):
        load_for_family(out2, family="longlive")  # recorded in our metadata: strong evidence


def test_cli_family_runs_each_sampler(tmp_path, models, capsys):
    from sf_core.cli import generate as cli
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import new_session

    save_file({"context": conditioning(0)[0]}, str(tmp_path / "emb.safetensors"))
    rf = training_checkpoint(tmp_path / "rolling_forcing_dmd.pt", models["gen"], models["ema"])
    for fam, path, frames in (("rolling_forcing", rf, 12), ("causal_forcing_2step", rf, 4)):
        lat = tmp_path / f"{fam}.st"
        code = cli.main(["--model", str(path), "--embeddings", str(tmp_path / "emb.safetensors"), "-o", "", "-q",
                         "--latents-out", str(lat), "--latent-frames", str(frames), "--width", "48", "--height", "32",
                         "--seed", "5", "--family", fam])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert json.loads(out.out.strip().splitlines()[-1])["latent_frames"] == frames
        from safetensors.torch import load_file

        got = load_file(str(lat))["latents"]
        ema = models["ema"]
        s = new_session(ema, conditioning(0), latent_hw=(4, 6), seed=5, settings=settings_for(fam))
        want = generate(ema, s, num_frames=frames)
        assert torch.equal(got, want), fam
    # an explicit override still wins over the preset
    code = cli.main(["--model", str(rf), "--embeddings", str(tmp_path / "emb.safetensors"), "-o", "", "-q",
                     "--save-session", str(tmp_path / "s.st"), "--latent-frames", "6", "--width", "48",
                     "--height", "32", "--steps", "1000,500", "--window", "30"])
    capsys.readouterr()
    from sf_core.sampling.session_io import load_session

    st = load_session(tmp_path / "s.st").settings
    assert code == 0 and st.sampler == "rolling" and st.steps == (1000, 500) and st.causal.window_frames == 30


def test_presets_are_consistent():
    for name, fam in FAMILIES.items():
        st = settings_for(name)
        assert st.family == name and st.causal.chunk_frames == fam.chunk_frames
        assert st.sampler == fam.sampler and len(st.timesteps()) == len(fam.steps)
    assert settings_for("causal_forcing_1step").first_steps == (1000, 750, 500, 250)
    assert settings_for("longlive", window_frames=0).causal.window_frames is None


def test_first_chunk_schedule_in_sessions():
    """Causal Forcing++: the first chunk (empty cache) gets 4 steps, the later ones 1."""
    from sf_core.sampling.denoiser import Denoiser
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import new_session

    m, ctx = tiny_model(), conditioning(0)
    calls = []
    orig = Denoiser.__call__

    def spy(self, x, t, **kw):
        calls.append(float(t.flatten()[0]))
        return orig(self, x, t, **kw)

    Denoiser.__call__ = spy
    try:
        s = new_session(m, ctx, latent_hw=HW, seed=0, settings=settings_for("causal_forcing_1step"))
        generate(m, s, num_frames=3)
    finally:
        Denoiser.__call__ = orig
    assert [round(c, 2) for c in calls] == [1000.0, 937.5, 833.33, 625.0, 1000.0, 1000.0]


def test_first_chunk_schedule_after_an_image_and_across_session_files(tmp_path):
    """Causal Forcing++ image-to-video: the first *sampled* frame after the committed image gets the 4 steps (the
    official pipeline: block 0 after the initial latents), the next ones 2; a session saved after it and continued
    from the file keeps that (2 steps) and equals the uninterrupted video."""
    from sf_core.sampling.context_frames import commit_frames, frames_settings
    from sf_core.sampling.denoiser import Denoiser
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import new_session
    from sf_core.sampling.session_io import load_session, save_session

    m, ctx = tiny_model(), conditioning(0)
    image = torch.randn(1, 16, 1, *HW, generator=torch.Generator().manual_seed(3))
    st = frames_settings(settings_for("causal_forcing_2step"))
    calls = []
    orig = Denoiser.__call__

    def spy(self, x, t, **kw):
        calls.append(round(float(t.flatten()[0]), 2))
        return orig(self, x, t, **kw)

    def start():
        s = new_session(m, ctx, latent_hw=HW, seed=0, settings=st)
        commit_frames(m, s, image)
        return s

    Denoiser.__call__ = spy
    try:
        whole = generate(m, start(), num_frames=3)
        assert calls == [1000.0, 937.5, 833.33, 625.0, 1000.0, 833.33, 1000.0, 833.33]
        calls.clear()
        s = start()
        first = generate(m, s, num_frames=1)
        save_session(s, tmp_path / "s.safetensors")
        s2 = load_session(tmp_path / "s.safetensors", m)
        assert s2.sampled_chunks == 1
        rest = generate(m, s2, num_frames=2)
    finally:
        Denoiser.__call__ = orig
    assert calls == [1000.0, 937.5, 833.33, 625.0, 1000.0, 833.33, 1000.0, 833.33]
    assert torch.equal(torch.cat([first, rest], dim=2), whole)
