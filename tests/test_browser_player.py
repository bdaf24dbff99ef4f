"""The live player in the real frontend: headless Chromium against the real server (skipped unless available).

Needs COMFYUI_DIR (as tests/test_host_e2e.py), Debian's chromium (or CHROMIUM=path) and
`npm install` in tests/browser (playwright-core, dev only). The page queues the prompt itself, so the pack's
websocket events reach the page's own client; the player must show frames before the stream has ended.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from host_e2e_support import ComfyServer, write_models

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not os.environ.get("COMFYUI_DIR") or not os.path.exists(CHROMIUM) or shutil.which("node") is None
    or not (ROOT / "tests/browser/node_modules/playwright-core").is_dir(),
    reason="needs COMFYUI_DIR, chromium, node and `npm install` in tests/browser")


def test_live_player_shows_chunks_while_running(tmp_path):
    base = tmp_path / "base"
    files = write_models(base)
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": files["dit"], "weight_dtype": "default"}},
        "2": {"class_type": "SF_LoadConditioning", "inputs": {"file": files["cond_a"], "key": ""}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"]}},
        "4": {"class_type": "SF_CausalSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "vae": ["3", 0], "width": 32, "height": 32, "length": 21,
            "batch_size": 1, "seed": 1, "timesteps": "1000,750,500,250", "warp_timesteps": True, "shift": 5.0,
            "chunk_frames": 3, "window_frames": 21, "sink_frames": 3, "fps": 8.0, "live_preview": True}},
        "5": {"class_type": "CreateVideo", "inputs": {"images": ["4", 2], "fps": 16.0}},
        "6": {"class_type": "SaveVideo", "inputs": {"video": ["5", 0], "filename_prefix": "video/sf_browser",
                                                     "format": "auto", "codec": "auto"}},
    }
    pfile = tmp_path / "prompt.json"
    pfile.write_text(json.dumps(prompt))
    shot = Path(os.environ.get("SF_SCREENSHOT", tmp_path / "player.png"))
    srv = ComfyServer(Path(os.environ["COMFYUI_DIR"]), base, int(os.environ.get("SF_BROWSER_PORT", "8206"))).start()
    try:
        out = subprocess.run(["node", str(ROOT / "tests/browser/player_check.mjs"), srv.url, str(pfile), str(shot)],
                             capture_output=True, text=True, timeout=900, env={**os.environ, "CHROMIUM": CHROMIUM})
    finally:
        srv.stop()
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["extensionLoaded"], report
    assert not [e for e in report["errors"] if "selfforcing" in e or "self_forcing" in e], report["errors"]
    during, after = report["during"], report["after"]
    assert during["frames"] >= 9 and not during["ended"], during  # frames on screen before the run finished
    assert after["chunks"] == 2 and after["frames"] == 21 and after["end"]["status"] == "done", after
    assert after["status"].startswith("done") and after["litPixels"] > 0
    assert shot.exists()
