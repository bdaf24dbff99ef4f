"""`python -m sf_core generate` end to end on tiny random models: files in, a real mp4 out (read back with PyAV)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sessions_kit import StubDecoder, conditioning, tiny_model
from sf_core.cli import generate as cli
from sf_core.config import CausalConfig
from sf_core.sampling.pipeline import Bundle
from sf_core.sampling.session import SamplingSettings, default_causal
from sf_core.video import probe_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path):
    """A tiny model file (CORE-IO's format), an embeddings file with two prompts."""
    from sf_core.checkpoints.weights import save_model

    model = tiny_model()
    save_model(tmp_path / "tiny.safetensors", model, model.config, causal=CausalConfig(chunk_frames=3))
    save_file({"context": conditioning(0)[0], "a dog": conditioning(1, length=7)[0]}, str(tmp_path / "emb.safetensors"))
    return tmp_path


def _run(argv, bundle=None, capsys=None):
    code = cli.main(argv, bundle=bundle)
    out = capsys.readouterr() if capsys else None
    return code, out


def _stub_bundle(model=None):
    return Bundle(transformer=model or tiny_model(), text_encoder=None, decoder=StubDecoder(),
                  settings=SamplingSettings(causal=default_causal()), fps=8, latent_hw=(4, 6), spatial_scale=2)


def test_generate_from_files_writes_an_mp4(files, capsys):
    pytest.importorskip("sf_core.vae.tiny")
    from sf_core.vae.loader import save_wan_vae
    from sf_core.vae.tiny import tiny_wan_vae

    save_wan_vae(files / "vae.safetensors", tiny_wan_vae(with_encoder=False))
    out = files / "out.mp4"
    code, io = _run(["--model", str(files / "tiny.safetensors"), "--vae", str(files / "vae.safetensors"),
                     "--embeddings", str(files / "emb.safetensors"), "--width", "48", "--height", "32",
                     "--frames", "21", "--fps", "8", "-o", str(out), "-q"], capsys=capsys)
    assert code == 0, io.err
    info = probe_video(out)
    assert (info["frames"], info["width"], info["height"], info["fps"]) == (21, 48, 32, 8.0)
    summary = json.loads(io.out.strip().splitlines()[-1])
    assert summary["video_frames"] == 21 and summary["latent_frames"] == 6 and summary["fps"] > 0


def test_same_seed_same_latents_and_resume_equals_one_run(files, capsys):
    common = ["--model", str(files / "tiny.safetensors"), "--embeddings", str(files / "emb.safetensors"),
              "--width", "12", "--height", "8", "-q", "--seed", "5"]
    lat = lambda name: load_file(str(files / name))["latents"]  # noqa: E731
    bundle = lambda: _stub_bundle(cli.inputs.load_bundle(cli.build_parser().parse_args(common), torch.device("cpu"),  # noqa: E731
                                                         torch.float32).transformer)
    assert _run(common + ["--latent-frames", "12", "--prompt", "0:context", "--prompt", "2:a dog", "-o",
                          str(files / "a.mp4"), "--latents-out", str(files / "a.st")], bundle(), capsys)[0] == 0
    assert _run(common + ["--latent-frames", "12", "--prompt", "0:context", "--prompt", "2:a dog", "-o", "",
                          "--latents-out", str(files / "b.st")], bundle(), capsys)[0] == 0
    assert torch.equal(lat("a.st"), lat("b.st"))
    assert probe_video(files / "a.mp4")["frames"] == 1 + 4 * 11
    # the same video in two runs: 6 frames, save the session, resume with the switch to "a dog"
    assert _run(common + ["--latent-frames", "6", "--prompt", "0:context", "-o", str(files / "p1.mp4"),
                          "--latents-out", str(files / "c1.st"), "--save-session", str(files / "s.st")],
                bundle(), capsys)[0] == 0
    assert _run(common + ["--latent-frames", "6", "--resume", str(files / "s.st"), "--prompt", "0:a dog",
                          "-o", str(files / "p2.mp4"), "--latents-out", str(files / "c2.st")], bundle(), capsys)[0] == 0
    assert torch.equal(torch.cat([lat("c1.st"), lat("c2.st")], dim=2), lat("a.st"))
    assert probe_video(files / "p1.mp4")["frames"] + probe_video(files / "p2.mp4")["frames"] == 1 + 4 * 11


def test_bad_input_exits_with_a_clear_message(files, capsys):
    base = ["--model", str(files / "tiny.safetensors"), "--embeddings", str(files / "emb.safetensors"),
            "--width", "12", "--height", "8", "-q", "--latents-out", str(files / "l.st")]
    cases = [
        (["--frames", "20", "-o", "x.mp4"], "nearest valid video lengths: 9 or 21 frames"),
        (["--latent-frames", "7", "-o", ""], "nearest valid lengths: 6 latent frames"),
        (["--width", "13", "-o", ""], "multiple of 4 pixels"),
        (["--window", "2", "-o", ""], "use window_frames >= 6"),
        (["--prompt", "0:a cat", "-o", ""], "has no tensor 'a cat'"),
        (["--prompt", "2:a dog", "-o", ""], "first prompt starts at chunk 2"),
        (["--latent-frames", "1026", "--positions", "absolute", "-o", ""], "RoPE limit"),
        (["--resume", str(files / "emb.safetensors"), "-o", ""], "not a Self Forcing session file"),
    ]
    for extra, msg in cases:
        code, io = _run(base + extra, _stub_bundle() if "--resume" not in extra else None, capsys)
        assert code == 2 and msg in io.err, (extra, io.err)
    code, io = _run(["--model", str(files / "tiny.safetensors"), "--embeddings", str(files / "emb.safetensors"),
                     "-o", str(files / "x.mp4"), "-q"], capsys=capsys)
    assert code == 2 and "needs a decoder" in io.err


def test_text_encoder_path_and_the_encode_command(tmp_path, capsys):
    pytest.importorskip("transformers")
    from test_cli_text import make_tiny_umt5

    enc_dir = make_tiny_umt5(tmp_path / "umt5", d_model=32)
    from sf_core.__main__ import main as sf_main

    assert sf_main(["encode", "--text-encoder", str(enc_dir), "--prompt", "a red square", "--prompt", "a dog",
                    "--dtype", "fp32", "-o", str(tmp_path / "e.safetensors")]) == 0
    emb = load_file(str(tmp_path / "e.safetensors"))
    assert set(emb) == {"context", "a red square", "a dog"} and emb["a dog"].shape == (3, 32)
    model = tiny_model()
    args = ["--text-encoder", str(enc_dir), "--latent-frames", "6", "-q", "-o", "", "--seed", "1"]
    b = _stub_bundle(model)
    b.text_encoder = __import__("sf_core.text", fromlist=["load_umt5"]).load_umt5(enc_dir, dtype=torch.float32)
    assert _run(args + ["--prompt", "a dog", "--latents-out", str(tmp_path / "t.st")], b, capsys)[0] == 0
    b2 = _stub_bundle(model)
    assert _run(["--embeddings", str(tmp_path / "e.safetensors"), "--prompt", "a dog", "--latent-frames", "6",
                 "-q", "-o", "", "--seed", "1", "--latents-out", str(tmp_path / "e.st")], b2, capsys)[0] == 0
    assert torch.allclose(load_file(str(tmp_path / "t.st"))["latents"], load_file(str(tmp_path / "e.st"))["latents"],
                          atol=1e-5)


def test_module_entry_point_lists_commands():
    r = subprocess.run([sys.executable, "-m", "sf_core", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "generate" in r.stdout and "encode" in r.stdout
    r = subprocess.run([sys.executable, "-m", "sf_core", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_toy_model_end_to_end(tmp_path, capsys):
    toy = pytest.importorskip("sf_core.toy.bundle")
    if not toy.DEFAULT_MODEL.is_file():
        pytest.skip("the toy model file is not in this checkout yet")
    out = tmp_path / "toy.mp4"
    code, io = _run(["--model", "toy", "--prompt", "a red square moving left fast", "--seconds", "2", "-o", str(out),
                     "-q"], capsys=capsys)
    assert code == 0, io.err
    summary = json.loads(io.out.strip().splitlines()[-1])
    info = probe_video(out)
    from sf_core.toy.spec import FPS

    assert info["frames"] == summary["video_frames"] >= 2 * FPS  # 2 s, rounded up to whole chunks
    assert info["fps"] == FPS and summary["fps"] > 0
