"""Issue 27 items 1, 2, 3 and 5 against the real ComfyUI server, through its unauthenticated HTTP API only.

Runs with COMFYUI_DIR (see tests/test_host_e2e.py; CI builds ComfyUI 0.27 with scripts/host_setup.sh); port
SF_ATTACK_E2E_PORT (default 8214). Each graph is what an attacker on the LAN could post to /prompt:
1. SF Load Conditioning through a link in the input folder to a file outside: refused, nothing in /history;
2. the training node with `reward.decoder="tempfile:mkdtemp"`: refused before anything is imported or launched;
3. a crafted session uploaded through /upload/image into SF Load Session: refused, the server's peak memory
   (VmHWM) does not move by more than 150 MB, and it keeps serving;
5. a live stream's filename_prefix through a symlinked folder inside output/: refused, nothing written there.
"""
from __future__ import annotations

import json
import os
import uuid
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from host_e2e_support import ComfyServer, run_prompt, wait_history

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from train_kit import write_embeddings

    base = tmp_path_factory.mktemp("attack")
    outside = tmp_path_factory.mktemp("outside")
    save_file({"context": torch.full((4, 4096), 7.0)}, str(outside / "secret.safetensors"))
    (base / "input").mkdir(parents=True)
    (base / "input" / "link.safetensors").symlink_to(outside / "secret.safetensors")
    (base / "output").mkdir()
    (base / "output" / "linked").symlink_to(outside, target_is_directory=True)
    write_embeddings(base / "input" / "emb", n=2)
    srv = ComfyServer(Path(COMFYUI_DIR), base, int(os.environ.get("SF_ATTACK_E2E_PORT", "8214"))).start()
    srv.outside = outside
    yield srv
    srv.stop()


def _error(server, prompt: dict) -> str:
    """The prompt's failure as the client sees it (a 400 from validation, or the execution error)."""
    try:
        run = run_prompt(server, prompt)
    except AssertionError as exc:  # refused by /prompt's own validation (400): that is a refusal too
        return str(exc)
    errs = run.of("execution_error")
    assert errs, f"the graph ran: {[k for k, _ in run.messages]}"
    hist = wait_history(server, run.prompt_id)  # written just after the websocket message
    assert not hist["outputs"], hist["outputs"]
    return errs[0]["exception_message"]


def test_load_conditioning_does_not_read_outside_input(server):
    prompt = {"1": {"class_type": "SF_LoadConditioning", "inputs": {"file": "link.safetensors", "key": ""}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    msg = _error(server, prompt)
    assert "outside ComfyUI's input folder" in msg and "7.0" not in msg


def training_prompt(data_dir: str, overrides: str) -> dict:
    """The shipped CPU training workflow with its data from a folder (no text encoder) and these overrides."""
    api = json.loads((Path(__file__).resolve().parents[1] / "workflows" / "api" /
                      "training_smoke_test_cpu.api.json").read_text())
    for k in [k for k, v in api.items() if v["class_type"] in ("CLIPLoader", "SF_EncodeTrainingPrompts")]:
        del api[k]
    train = next(v for v in api.values() if v["class_type"] == "SF_TrainSelfForcing")
    train["inputs"].pop("train_data")
    train["inputs"].update(data_dir=data_dir, max_steps=2, run_name="attack", overrides=overrides)
    return api


def test_training_node_does_not_import_code_from_prompt(server):
    prompt = training_prompt(str(server.base / "input" / "emb"), 'reward.decoder="tempfile:mkdtemp"')
    msg = _error(server, prompt)
    assert "import and call code" in msg and "refuses" in msg
    assert not (server.base / "output" / "self_forcing_training" / "attack").exists()


def _upload(server, path: Path) -> str:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(server.url + "/upload/image", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["name"]


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_crafted_session_upload_is_refused_without_allocating(server, tmp_path):
    from sessions_kit import HW, conditioning, tiny_model
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import new_session
    from sf_core.sampling.session_io import save_session

    model = tiny_model()
    s = new_session(model, conditioning(0), latent_hw=HW, seed=3)
    generate(model, s, num_frames=6)
    good = save_session(s, tmp_path / "good.safetensors")
    with safe_open(str(good), "pt") as f:
        md = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(md["sf_session"])
    cm = meta["cache"]
    per_frame = 2 * cm["num_layers"] * cm["batch"] * cm["tokens_per_frame"] * cm["num_heads"] * cm["head_dim"] * 4
    cm["window_frames"] = (3 << 30) // per_frame  # 3 GiB of zeroed cache on the old loader
    md["sf_session"] = json.dumps(meta)
    crafted = tmp_path / "crafted.safetensors"
    save_file(tensors, str(crafted), metadata=md)
    assert crafted.stat().st_size < 1 << 20
    name = _upload(server, crafted)
    before = _vm_hwm(server.proc.pid)
    msg = _error(server, {"1": {"class_type": "SF_LoadSession",
                                "inputs": {"session_file": str(server.base / "input" / name)}},
                          "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    assert "damaged or crafted" in msg, msg
    assert _vm_hwm(server.proc.pid) - before < 150 << 20
    assert server.get("/system_stats")


def test_live_output_through_a_symlinked_folder_is_refused(server):
    from test_live_host_e2e import live_graph

    prompt = live_graph(max_chunks=1)
    prompt["3"]["inputs"]["filename_prefix"] = "linked/live"
    before = sorted(os.listdir(server.outside))
    msg = _error(server, prompt)
    assert "outside ComfyUI's output folder" in msg
    assert sorted(os.listdir(server.outside)) == before


def test_cancelling_a_multi_node_training_frees_the_queue_in_seconds(server):
    """Item 7: with nnodes=2 the second node never joins; Cancel (POST /interrupt) used to hold the queue ~300 s
    (the launcher waited its whole grace period for a trainer that never started)."""
    import socket
    import threading
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prompt = training_prompt(str(server.base / "input" / "emb"), "checkpoint.every=100")
    train = next(v for v in prompt.values() if v["class_type"] == "SF_TrainSelfForcing")
    train["inputs"].update(nnodes=2, node_rank=0, master_addr="127.0.0.1", master_port=port, run_name="two_nodes")
    sent = {}

    def on_message(kind, data):
        if kind == "executing" and data.get("node") and not sent:
            sent["at"] = time.time() + 4  # torchrun is up and waiting for node 1
            threading.Timer(4, server.post, args=("/interrupt", {})).start()

    run = run_prompt(server, prompt, timeout=300, on_message=on_message)
    assert run.of("execution_interrupted"), [k for k, _ in run.messages][-6:]
    took = time.time() - sent["at"]
    assert took < 20, f"the queue was held {took:.0f} s after Cancel"
    status, _ = server.post("/prompt", {"prompt": {"1": {"class_type": "PreviewAny",
                                                         "inputs": {"source": "still serving"}}}, "client_id": "x"})
    assert status == 200
