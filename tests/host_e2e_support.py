"""Support for the real-host tests: tiny real-format models, a ComfyUI server on CPU, an API client.

The server is started from a ComfyUI checkout (`COMFYUI_DIR`) with its own Python (`COMFY_PYTHON`, default
`<COMFYUI_DIR>/../comfyvenv/bin/python`) and `--base-directory` pointing at a scratch folder that holds the
pack (a symlink in custom_nodes/), the models, input, output and temp folders: nothing in the checkout is
touched.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-SelfForcing"

DIT_FILE = "sf_tiny_wan21_t2v.safetensors"
SF_PT_FILE = "sf_tiny_self_forcing.pt"
VAE_FILE = "sf_tiny_wan21_vae_random.safetensors"
COND_FILES = ("sf_prompt_a.safetensors", "sf_prompt_b.safetensors")


def comfy_python(comfy_dir: Path) -> str:
    return os.environ.get("COMFY_PYTHON") or str(comfy_dir.parent / "comfyvenv" / "bin" / "python")


# ---------------------------------------------------------------------------------------------- models
def write_models(base: Path) -> dict[str, str]:
    """Tiny Wan2.1 T2V DiT (dim 256 = 2 heads of 128, text_dim 4096, random non-zero head) as a ComfyUI
    diffusion model and as an official Self Forcing .pt; a random-weight full-size Wan2.1 VAE (encoder and
    decoder, as in a real `wan_2.1_vae.safetensors`: ComfyUI fixes the VAE size, and 0.27's loader needs both); two saved prompt conditionings [512, 4096]."""
    from safetensors.torch import save_file

    from sf_core.config import WanConfig
    from sf_core.model.transformer import WanTransformer, randomize_weights
    from sf_core.vae.wan_vae import WanVAE, WanVAEConfig

    dm_dir, vae_dir, inp = base / "models/diffusion_models", base / "models/vae", base / "input"
    for d in (dm_dir, vae_dir, inp):
        d.mkdir(parents=True, exist_ok=True)
    cfg = WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=4096, text_len=512)
    sd = {k: v.contiguous() for k, v in randomize_weights(WanTransformer(cfg), seed=0).state_dict().items()}
    save_file(sd, str(dm_dir / DIT_FILE))
    ema = {f"model.{k}": v * 1.0 for k, v in sd.items()}
    torch.save({"generator": {f"model.{k}": v.clone() for k, v in sd.items()}, "generator_ema": ema},
               str(dm_dir / SF_PT_FILE))
    if not (vae_dir / VAE_FILE).exists():
        g = torch.Generator().manual_seed(0)
        vae = WanVAE(WanVAEConfig(), with_encoder=True)
        vsd = {}
        for k, v in vae.state_dict().items():
            r = torch.randn(v.shape, generator=g)
            vsd[k] = (1 + 0.1 * r if k.endswith("gamma") else r * (0.5 / max(1, v[0].numel()) ** 0.5)).to(
                torch.bfloat16).contiguous()
        save_file(vsd, str(vae_dir / VAE_FILE))
    for i, name in enumerate(COND_FILES):
        g = torch.Generator().manual_seed(100 + i)
        save_file({"context": torch.randn(512, 4096, generator=g) * 0.1}, str(inp / name))
    return {"dit": DIT_FILE, "sf_pt": SF_PT_FILE, "vae": VAE_FILE, "cond_a": COND_FILES[0], "cond_b": COND_FILES[1]}


# ---------------------------------------------------------------------------------------------- server
class ComfyServer:
    def __init__(self, comfy_dir: Path, base: Path, port: int, extra_args: tuple[str, ...] = ()):
        self.comfy_dir, self.base, self.port = Path(comfy_dir), Path(base), port
        self.url = f"http://127.0.0.1:{port}"
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base / "server.log"

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        cn = self.base / "custom_nodes"
        cn.mkdir(parents=True, exist_ok=True)
        link = cn / PACK_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [comfy_python(self.comfy_dir), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(self.base), "--disable-auto-launch", *self.extra_args],
            cwd=self.comfy_dir, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s; log:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- HTTP
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, data: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else {})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


class Run:
    """One prompt: every websocket message until the server says it is done with it."""

    def __init__(self):
        self.messages: list[tuple[str, dict]] = []
        self.binary: list[int] = []  # binary frame types (1/4 = preview image, 3 = progress text)
        self.prompt_id: str | None = None
        self.seconds = 0.0

    def of(self, kind: str) -> list[dict]:
        return [d for t, d in self.messages if t == kind]


def run_prompt(server: ComfyServer, prompt: dict, timeout: float = 600.0, on_message=None) -> Run:
    """POST /prompt with a fresh client id and collect its websocket traffic until it finished."""
    import websocket

    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}", timeout=timeout)
    run = Run()
    try:
        status, body = server.post("/prompt", {"prompt": prompt, "client_id": client_id})
        if status != 200:
            raise AssertionError(f"/prompt rejected the workflow ({status}): {json.dumps(body)[:3000]}")
        run.prompt_id = body["prompt_id"]
        t0 = time.time()
        while True:
            msg = ws.recv()
            if isinstance(msg, bytes):
                run.binary.append(int.from_bytes(msg[:4], "big"))
                continue
            m = json.loads(msg)
            kind, data = m.get("type"), m.get("data", {})
            run.messages.append((kind, data))
            if on_message is not None:
                on_message(kind, data)
            if data.get("prompt_id") not in (None, run.prompt_id):
                continue
            if kind == "executing" and data.get("node") is None and data.get("prompt_id") == run.prompt_id:
                break
            if kind in ("execution_error", "execution_interrupted"):
                break
        run.seconds = time.time() - t0
    finally:
        ws.close()
    return run


def wait_history(server, prompt_id: str, timeout: float = 30.0) -> dict:
    """The /history entry of a prompt (written just after its last websocket message)."""
    t0 = time.time()
    while True:
        h = server.get(f"/history/{prompt_id}")
        if prompt_id in h or time.time() - t0 > timeout:
            return h[prompt_id]
        time.sleep(0.2)
