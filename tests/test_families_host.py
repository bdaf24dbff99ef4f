"""Checkpoint families in the real ComfyUI server (CPU): a family's official file, converted with
`python -m sf_core.checkpoints.convert --family NAME` (LongLive: `--lora lora.pt`), loads through the stock UNETLoader and
samples through SF Causal Sampler with `family` set; the latents equal sf_core's own run of that family's preset
on the weights the family's authors sample with (built here independently: the EMA or the raw generator, the
LoRA merged by hand).

Runs only with COMFYUI_DIR (see tests/test_host_e2e.py); port SF_FAMILIES_E2E_PORT (default 8213).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from family_files import lora_factors, longlive_lora, merged_by_hand, training_checkpoint
from host_e2e_support import COND_FILES, ComfyServer, run_prompt
from host_e2e_support import wait_history

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")
ROOT = Path(__file__).resolve().parents[1]
SEED = 5
# family -> (official file under the scratch folder, weights its authors sample, latent frames, prompt switch chunk)
CASES = {
    "rolling_forcing": ("checkpoints/rolling_forcing_dmd.pt", "ema", 9, None),
    "causal_forcing_2step": ("checkpoints/causal-forcing++/framewise-2step.pt", "ema", 6, None),
    "longlive": ("models/longlive_base.pt", "gen+lora", 18, 5),  # switch after the first eviction
}


def _tiny(seed: int):
    from sf_core.config import WanConfig
    from sf_core.model.transformer import WanTransformer, randomize_weights

    cfg = WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=4096, text_len=512)
    return randomize_weights(WanTransformer(cfg), seed=seed).eval()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from safetensors.torch import save_file

    base, src = tmp_path_factory.mktemp("families_base"), tmp_path_factory.mktemp("official")
    (base / "models/diffusion_models").mkdir(parents=True)
    (base / "input").mkdir()
    for i, name in enumerate(COND_FILES):
        g = torch.Generator().manual_seed(100 + i)
        save_file({"context": torch.randn(512, 4096, generator=g) * 0.1}, str(base / "input" / name))
    gen, ema = _tiny(0), _tiny(1)
    factors = lora_factors(gen, rank=4, seed=2)
    expected = {}
    for fam, (rel, takes, _, _) in CASES.items():
        path = training_checkpoint(src / rel, gen, ema)
        cmd = [sys.executable, "-m", "sf_core.checkpoints.convert", str(path),
               str(base / "models/diffusion_models" / f"{fam}.safetensors"), "--family", fam, "--dtype", "fp32"]
        if takes == "gen+lora":
            cmd += ["--lora", str(longlive_lora(src / "models/lora.pt", factors))]
            expected[fam] = merged_by_hand(gen.state_dict(), factors)
        else:
            expected[fam] = (ema if takes == "ema" else gen).state_dict()
        subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    srv = ComfyServer(Path(COMFYUI_DIR), base, int(os.environ.get("SF_FAMILIES_E2E_PORT", "8213"))).start()
    srv.expected = expected
    yield srv
    srv.stop()


def _prompt(fam: str, frames: int, switch: int | None) -> dict:
    api = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": f"{fam}.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "SF_LoadConditioning", "inputs": {"file": COND_FILES[0], "key": ""}},
        "3": {"class_type": "SF_CausalSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "width": 32, "height": 32, "length": 4 * (frames - 1) + 1,
            "batch_size": 1, "seed": SEED, "timesteps": "1000,750,500,250", "warp_timesteps": True, "shift": 5.0,
            "chunk_frames": 3, "window_frames": 21, "sink_frames": 3, "fps": 16.0, "live_preview": False,
            "family": fam}},
        "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": f"latents/{fam}"}},
    }
    if switch is not None:
        api["5"] = {"class_type": "SF_LoadConditioning", "inputs": {"file": COND_FILES[1], "key": ""}}
        api["6"] = {"class_type": "SF_PromptSchedule", "inputs": {
            "conditioning": ["5", 0], "start_chunk": switch, "switch_policy": "recache", "transition_chunks": 0}}
        api["3"]["inputs"]["prompt_schedule"] = ["6", 0]
    return api


def _reference(server, fam: str, frames: int, switch: int | None, preset: str | None = None) -> torch.Tensor:
    from safetensors.torch import load_file

    from sf_core.checkpoints.families import settings_for
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.prompts import PromptEntry, PromptSchedule
    from sf_core.sampling.session import new_session
    from sf_core.vae.latent import denormalize

    model = _tiny(9)
    model.load_state_dict(server.expected[fam])
    ctx = [load_file(str(server.base / "input" / n))["context"][None] for n in COND_FILES]
    entries = [PromptEntry(0, ctx[0])] + ([PromptEntry(switch, ctx[1])] if switch is not None else [])
    s = new_session(model, PromptSchedule(tuple(entries), policy="recache"), latent_hw=(4, 4), seed=SEED,
                    settings=settings_for(preset or fam))
    with torch.no_grad():
        return denormalize(generate(model, s, num_frames=frames))


@pytest.mark.parametrize("fam", list(CASES))
def test_converted_family_file_through_unetloader_and_sampler(server, fam):
    from safetensors.torch import load_file

    _, _, frames, switch = CASES[fam]
    run = run_prompt(server, _prompt(fam, frames, switch), timeout=900)
    errs = run.of("execution_error")
    assert not errs, errs[0]["exception_message"] + "".join(errs[0]["traceback"])[-3000:]
    hist = wait_history(server, run.prompt_id)
    item = hist["outputs"]["4"]["latents"][0]
    got = load_file(str(server.base / "output" / item.get("subfolder", "") / item["filename"]))["latent_tensor"]
    ref = _reference(server, fam, frames, switch)
    assert got.shape == ref.shape == (1, 16, frames, 4, 4)
    err = (got - ref).abs().max().item()
    print(json.dumps({"family": fam, "frames": frames, "max_abs_diff": err, "seconds": round(run.seconds, 1)}))
    assert err < 1e-4, err
    # not vacuous: the same weights under Self Forcing's preset give another video
    assert (got - _reference(server, fam, frames, switch, preset="self_forcing")).abs().max() > 1e-2
