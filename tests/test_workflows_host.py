"""Shipped workflows run as shipped in the real ComfyUI server on a bare install (CPU, no model files).

Runs only with COMFYUI_DIR (see tests/test_host_e2e.py); port SF_WORKFLOWS_E2E_PORT (default 8211). The server's
base folder is empty apart from the pack: no text encoder, no weights, no input files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from host_e2e_support import ComfyServer, run_prompt

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("bare")
    srv = ComfyServer(Path(COMFYUI_DIR), base, int(os.environ.get("SF_WORKFLOWS_E2E_PORT", "8211"))).start()
    yield srv
    srv.stop()


def test_cpu_training_smoke_test_runs_on_a_bare_install(server, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    api = json.loads((ROOT / "workflows" / "api" / "training_smoke_test_cpu.api.json").read_text())
    assert not [p for p in server.base.rglob("*") if p.suffix in (".safetensors", ".pt", ".pth", ".txt")]
    run = run_prompt(server, api, timeout=900)
    assert not run.of("execution_error"), run.of("execution_error")
    train = next(k for k, v in api.items() if v["class_type"] == "SF_TrainSelfForcing")
    steps = api[train]["inputs"]["max_steps"]
    run_dir = server.base / "output" / "self_forcing_training" / api[train]["inputs"]["run_name"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["step"] == steps and status["state"] == "finished", status
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert rows and rows[-1]["step"] == steps
    outputs = server.get(f"/history/{run.prompt_id}")[run.prompt_id]["outputs"]
    preview = next(k for k, v in api.items() if v["class_type"] == "PreviewImage")
    assert outputs[preview]["images"], outputs  # the loss curves
    assert server.get("/system_stats")["system"]
