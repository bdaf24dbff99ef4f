"""The training node inside a real ComfyUI server (CPU): API workflow in, trainer subprocess, progress text and
`selfforcing.training` events out, Cancel (POST /interrupt) stops it after a checkpoint, a second queue of
the same workflow resumes it to the end.

Runs only when COMFYUI_DIR points at a ComfyUI checkout (its Python: COMFY_PYTHON, default
<COMFYUI_DIR>/../comfyvenv/bin/python); port SF_TRAIN_E2E_PORT (default 8210).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from host_e2e_support import ComfyServer
    from train_kit import write_embeddings

    base = tmp_path_factory.mktemp("train_host")
    write_embeddings(base / "input" / "train_emb", n=4)
    srv = ComfyServer(Path(COMFYUI_DIR), base, int(os.environ.get("SF_TRAIN_E2E_PORT", "8210"))).start()
    yield srv
    srv.stop()


def workflow(base: Path, max_steps: int) -> dict:
    api = json.loads((Path(__file__).resolve().parents[1] / "workflows" / "api" / "training_smoke_test_cpu.api.json").read_text())
    train = next(k for k, v in api.items() if v["class_type"] == "SF_TrainSelfForcing")
    for k in [k for k, v in api.items() if v["class_type"] in ("CLIPLoader", "SF_EncodeTrainingPrompts")]:
        del api[k]  # no umT5 on the test machine: the data comes from encode-prompts (toy encoder) instead
    inputs = api[train]["inputs"]
    inputs.pop("train_data")
    inputs.update(data_dir=str(base / "input" / "train_emb"), max_steps=max_steps, run_name="e2e",
                  overrides="checkpoint.every=100\nema.start_step=1")
    return api


def test_train_interrupt_resume_in_the_real_host(server):
    from host_e2e_support import run_prompt

    run_dir = server.base / "output" / "self_forcing_training" / "e2e"

    lock = threading.Lock()

    def cancel_when_training(kind, data):
        # interrupt once the trainer has logged twice *and* the node has forwarded progress to this client (the
        # node sends its progress text before the event), so the checks below do not race the node's polling
        if kind == "selfforcing.training":
            cancel_when_training.seen = True
        m = run_dir / "metrics.jsonl"
        with lock:  # called from the websocket loop and the watcher thread: interrupt once
            if cancel_when_training.seen and m.exists() and len(m.read_text().splitlines()) >= 2 \
                    and not cancel_when_training.sent:
                cancel_when_training.sent = True
                threading.Thread(target=server.post, args=("/interrupt", {})).start()
    cancel_when_training.sent = False
    cancel_when_training.seen = False

    # poll the metrics file from a side thread too: the websocket may be quiet between progress updates
    stop = threading.Event()

    def watcher():
        while not stop.is_set():
            cancel_when_training("tick", {})
            time.sleep(0.2)

    th = threading.Thread(target=watcher)
    th.start()
    try:
        run = run_prompt(server, workflow(server.base, 400), timeout=600, on_message=cancel_when_training)
    finally:
        stop.set()
        th.join()
    assert run.of("execution_interrupted"), [k for k, _ in run.messages][-10:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "stopped" and status["step"] >= 2
    assert (run_dir / "checkpoints" / f"step_{status['step']:07d}").is_dir()
    assert run.of("selfforcing.training") and 3 in run.binary  # events and progress text reached the client

    run2 = run_prompt(server, workflow(server.base, status["step"] + 1), timeout=600)
    assert not run2.of("execution_error"), run2.of("execution_error")
    hist = server.get(f"/history/{run2.prompt_id}")[run2.prompt_id]
    assert hist["status"]["status_str"] == "success"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    listed = server.get("/models/diffusion_models")  # what Load Diffusion Model offers
    assert any(n.startswith("self_forcing/e2e_generator_ema_step_") for n in listed), listed
    outputs = hist["outputs"]
    assert any("images" in o for o in outputs.values())  # the loss plot reached PreviewImage
