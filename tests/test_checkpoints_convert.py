"""`python -m sf_core.checkpoints.convert` (in-process and as a real subprocess) and `sf_core.checkpoints.hub` (no network needed).

Whether ComfyUI's own loader accepts the converted file is tested in test_comfy_model.py (needs ComfyUI).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sf_core.checkpoints.weights import load_checkpoint
from sf_core.config import CausalConfig
from sf_core.checkpoints.convert import main
from test_checkpoints import CFG, fsdp_names, make_sd

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sf_pt(tmp_path):
    gen, ema = make_sd(seed=1), make_sd(seed=2)
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator": {"model." + k: v for k, v in gen.items()}, "generator_ema": fsdp_names(ema),
                "critic": {"model." + k: v for k, v in make_sd(seed=3).items()}}, path)
    return path, gen, ema


def test_convert_ema_to_bf16(sf_pt, tmp_path, capsys):
    path, gen, ema = sf_pt
    out = tmp_path / "sf_ema_bf16.safetensors"
    assert main([str(path), str(out), "--which", "generator_ema", "--dtype", "bf16"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["which"] == "generator_ema" and summary["format"] == "self_forcing"
    stored = load_file(str(out))
    assert sorted(stored) == sorted(ema)  # Wan2.1 names, no prefix, no wrapper segments
    for k, v in stored.items():
        assert torch.equal(v, ema[k].to(torch.bfloat16)), k
    ck = load_checkpoint(out)
    assert ck.format == "sf_core" and ck.config == CFG and ck.meta["which"] == "generator_ema"
    assert ck.causal == CausalConfig(chunk_frames=3)  # a Self Forcing generator runs chunk-wise by default
    assert ck.meta["metadata"]["source"] == "self_forcing_dmd.pt"


def test_convert_generator_fp8_and_frame_wise(sf_pt, tmp_path, capsys):
    path, gen, _ = sf_pt
    out16, out8 = tmp_path / "g16.safetensors", tmp_path / "g8.safetensors"
    assert main([str(path), str(out16), "--which", "generator"]) == 0
    assert main([str(path), str(out8), "--which", "generator", "--dtype", "fp8", "--chunk-frames", "1"]) == 0
    capsys.readouterr()
    assert load_file(str(out8))["blocks.0.ffn.0.weight"].dtype == torch.float8_e4m3fn
    assert load_checkpoint(out8).causal.chunk_frames == 1
    assert out8.stat().st_size < 0.8 * out16.stat().st_size


def test_convert_refuses_overwrite_and_bad_input(sf_pt, tmp_path, capsys):
    path, _, _ = sf_pt
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"keep me")
    assert main([str(path), str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main([str(path), str(out), "--force"]) == 0
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x80\x02garbage")
    assert main([str(bad), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "broken.pt" in err and "Traceback" not in err
    assert main([str(path), str(tmp_path / "x.ckpt")]) == 2


def test_convert_cli_subprocess(sf_pt, tmp_path):
    path, _, ema = sf_pt
    out = tmp_path / "cli.safetensors"
    proc = subprocess.run([sys.executable, "-m", "sf_core.checkpoints.convert", str(path), str(out), "--dtype", "fp32"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["which"] == "generator_ema"
    stored = load_file(str(out))
    assert all(torch.equal(stored[k], ema[k]) for k in ema)


# ------------------------------------------------------------------------------------------ hub
def _hub(args, tmp_path, **env):
    e = dict(os.environ, PYTHONPATH=str(ROOT), HF_HOME=str(tmp_path / "hf_home"), **env)
    return subprocess.run([sys.executable, "-m", "sf_core.checkpoints.hub", *args], cwd=tmp_path, env=e, capture_output=True,
                          text=True, timeout=120)


def test_hub_offline_is_a_clear_error(tmp_path):
    proc = _hub(["download", "self-forcing-dmd", "--dir", str(tmp_path / "ckpt")], tmp_path, HF_HUB_OFFLINE="1")
    assert proc.returncode == 2
    assert "unreachable" in proc.stderr and "https://huggingface.co/gdhe17/Self-Forcing/resolve/main/" \
        "checkpoints/self_forcing_dmd.pt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_hub_offline_uses_a_file_already_in_the_folder(tmp_path):
    target = tmp_path / "ckpt" / "split_files" / "vae" / "wan_2.1_vae.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    proc = _hub(["download", "wan2.1-vae-comfy", "--dir", str(tmp_path / "ckpt")], tmp_path, HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == target


@pytest.mark.skipif(not os.environ.get("SF_SLOW_TESTS"), reason="~25 s of HTTP retries; set SF_SLOW_TESTS=1")
def test_hub_closed_endpoint_is_a_clear_error(tmp_path):
    proc = _hub(["download", "self-forcing-ode-init", "--dir", str(tmp_path)], tmp_path,
                HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="0")
    assert proc.returncode == 2 and "unreachable" in proc.stderr


def test_hub_names_and_lazy_import(tmp_path):
    from sf_core.checkpoints import hub

    with pytest.raises(hub.HubError, match="unknown checkpoint"):
        hub.resolve("self-forcing")
    spec = hub.resolve("gdhe17/Self-Forcing:checkpoints/self_forcing_sid.pt")
    assert spec.repo_id == "gdhe17/Self-Forcing" and spec.files == ("checkpoints/self_forcing_sid.pt",)
    assert hub.KNOWN["wan2.1-t2v-1.3b"].files == ("diffusion_pytorch_model.safetensors", "config.json")
    code = "import sys, sf_core.checkpoints.hub, sf_core.checkpoints.convert; print('huggingface_hub' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", "importing sf_core.checkpoints.hub must not import huggingface_hub"
