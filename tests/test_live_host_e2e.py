"""The live stream in the real ComfyUI server (CPU), through the HTTP contract alone (no browser).

Runs only with COMFYUI_DIR (see tests/test_host_e2e.py); port SF_LIVE_E2E_PORT (default 8207). The shipped toy
model streams live; a client steers it with POST /selfforcing/live/control while it runs: bad requests get
400/404 and the stream goes on, a new prompt changes what the toy world's detector sees on the mp4 within two
chunks, stop ends it with the file in /history and a session; ComfyUI's Cancel (POST /interrupt) ends another
run with a finished mp4; the server stays healthy.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from host_e2e_support import ComfyServer, run_prompt

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")
RED, BLUE = "a red square moving right slow", "a blue circle moving down slow"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_live")
    srv = ComfyServer(Path(COMFYUI_DIR), base, int(os.environ.get("SF_LIVE_E2E_PORT", "8207"))).start()
    yield srv
    srv.stop()


def live_graph(prompt: str = RED, max_chunks: int = 0) -> dict:
    return {
        "1": {"class_type": "SF_LoadToyModel", "inputs": {"upscale": 1}},
        "2": {"class_type": "SF_EmptyToyLatent", "inputs": {"frames": 3, "batch_size": 1}},
        "3": {"class_type": "SF_LiveStream", "inputs": {
            "model": ["1", 0], "clip": ["1", 2], "preview_decoder": ["1", 1], "latent": ["2", 0], "prompt": prompt,
            "width": 832, "height": 480, "seed": 0, "timesteps": "1000,750,500,250", "warp_timesteps": True,
            "shift": 5.0, "chunk_frames": 3, "window_frames": 12, "sink_frames": 3, "positions": "relative",
            "fps": 8.0, "max_chunks": max_chunks, "max_minutes": 0.0, "keep_last_frames": 0,
            "filename_prefix": "selfforcing/live_e2e"}},
    }


def test_live_stream_steered_over_http_in_the_real_server(server):
    from sf_core.toy.metrics import detect
    from sf_core.toy.world import WorldSpec
    from sf_core.video import read_video

    seen, replies = {"chunks": 0}, {}

    def steer(sid):
        replies["unknown"] = server.post("/selfforcing/live/control", {"stream": "nope", "action": "pause"})
        replies["bad_action"] = server.post("/selfforcing/live/control", {"stream": sid, "action": "fly"})
        replies["empty"] = server.post("/selfforcing/live/control", {"stream": sid, "action": "prompt", "text": ""})
        replies["streams"] = server.get("/selfforcing/live/streams")
        replies["switch"] = server.post("/selfforcing/live/control", {"stream": sid, "action": "prompt", "text": BLUE})
        sw = replies["switch"][1].get("chunk", 0)
        while seen["chunks"] < sw + 5:
            time.sleep(0.02)
        replies["stop"] = server.post("/selfforcing/live/control", {"stream": sid, "action": "stop"})

    def on_message(kind, data):
        if kind == "selfforcing.chunk":
            seen["chunks"] += 1
            if seen["chunks"] == 2:
                threading.Thread(target=steer, args=(data["stream"],), daemon=True).start()

    run = run_prompt(server, live_graph(), timeout=300, on_message=on_message)
    assert not run.of("execution_error"), run.of("execution_error")
    assert replies["unknown"][0] == 404 and replies["bad_action"][0] == 400 and replies["empty"][0] == 400
    assert "unknown action" in replies["bad_action"][1]["error"]
    assert replies["streams"]["streams"][0]["state"] == "running"
    code, body = replies["switch"]
    assert code == 200 and body["applied"] and body["prompt"] == BLUE
    assert replies["stop"][0] == 200
    chunks = run.of("selfforcing.chunk")
    sw = body["chunk"]
    assert [c["prompt"] for c in chunks] == [RED] * sw + [BLUE] * (len(chunks) - sw)
    end = run.of("selfforcing.stream_end")[0]
    assert end["status"] == "stopped" and end["file"]["type"] == "output"
    hist = server.get(f"/history/{run.prompt_id}")[run.prompt_id]["outputs"]["3"]
    assert hist["images"][0]["filename"] == end["file"]["filename"]
    path = server.base / "output" / end["file"]["subfolder"] / end["file"]["filename"]
    mp4 = read_video(path)
    assert mp4.shape[0] == 3 * len(chunks)
    x = torch.from_numpy(mp4).permute(3, 0, 1, 2).float() / 127.5 - 1
    det = detect(x, WorldSpec())
    looks = list(zip(det["colour"], det["shape"]))
    before, after = looks[3:3 * sw], looks[3 * (sw + 2):]
    assert sum(lk == ("red", "square") for lk in before) >= 0.8 * len(before), before
    assert sum(lk == ("blue", "circle") for lk in after) >= 0.8 * len(after), after
    assert server.post("/selfforcing/live/control", {"stream": chunks[0]["stream"], "action": "pause"})[0] == 404
    assert server.get("/system_stats")["system"]


def test_cancel_ends_a_live_stream_with_a_finished_file(server):
    from sf_core.video import probe_video

    seen = {"n": 0}

    def on_message(kind, _data):
        if kind == "selfforcing.chunk":
            seen["n"] += 1
            if seen["n"] == 4:
                threading.Thread(target=lambda: server.post("/interrupt", {}), daemon=True).start()

    run = run_prompt(server, live_graph(seed_prompt := RED), timeout=300, on_message=on_message)
    assert run.of("execution_interrupted"), [k for k, _ in run.messages][-5:]
    end = run.of("selfforcing.stream_end")[0]
    assert end["status"] == "interrupted" and end["file"] is not None, end
    info = probe_video(server.base / "output" / end["file"]["subfolder"] / end["file"]["filename"])
    assert info["frames"] == 3 * len(run.of("selfforcing.chunk")) >= 12
    assert server.get("/selfforcing/live/streams")["streams"] == []
    again = run_prompt(server, live_graph(seed_prompt, max_chunks=3), timeout=300)  # the server still works
    assert run.of("selfforcing.stream_end") and again.of("selfforcing.stream_end")[0]["status"] == "limit"
