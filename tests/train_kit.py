"""Helpers for the training tests: tiny embedding / latent shards, tiny configs, the trainer CLI as a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red circle moving left", "a blue square moving up fast", "a green triangle moving right slowly",
           "a yellow circle moving down", "a cyan square moving left slowly", "a magenta triangle moving up"]


def write_embeddings(out: Path, n: int = 4, partial: bool = False) -> Path:
    """Prompt shards; partial=True adds each prompt's first two words as its partial prompt."""
    from sf_core.train.data import encode_prompts
    from sf_core.toy.text import ToyTextEncoder

    enc = ToyTextEncoder(text_dim=32)
    parts = [" ".join(p.split()[:2]) for p in PROMPTS[:n]] if partial else None
    return encode_prompts(PROMPTS[:n], enc.encode, out, negative_prompt="", encoder_name="toy", partials=parts)


def write_latents(out: Path, n: int = 4, frames: int = 6, hw: int = 4, seed: int = 0) -> Path:
    """Clean 'videos': smooth random latents (a moving blob would do as well; any fixed data works)."""
    from sf_core.train.data import write_latent_shards
    from sf_core.toy.text import ToyTextEncoder

    enc = ToyTextEncoder(text_dim=32)
    g = torch.Generator().manual_seed(seed)
    lat = [torch.randn(16, frames, hw, hw, generator=g).cumsum(1) * 0.3 for _ in range(n)]
    emb = enc.encode(PROMPTS[:n])
    return write_latent_shards(out, lat, list(emb), PROMPTS[:n], enc.encode([""])[0], encoder="toy")


def tiny_config(tmp: Path, **overrides):
    from sf_core.train.config import TrainConfig

    return TrainConfig.tiny(out_dir=str(tmp / "run"), embeddings=str(tmp / "emb"), **overrides)


def write_config(path: Path, cfg) -> Path:
    path.write_text(cfg.to_json(), encoding="utf-8")
    return path


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "1"
    return e


def cli(*args: str, nproc: int = 0, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run `python -m sf_core.train ARGS` (under torchrun --standalone with nproc > 0)."""
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "sf_core.train", *args]
    else:
        cmd = [sys.executable, "-m", "sf_core.train", *args]
    return subprocess.run(cmd, cwd=str(ROOT), env=env(), capture_output=True, text=True, timeout=timeout, **kw)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def load_export(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# -- stand-in reward models and decoder for the T2V-Turbo reward term (real ones load local weights) ----------
def brightness_reward():
    """Image reward stand-in: mean brightness of each image [N, 3, H, W] -> [N]."""
    return lambda images, prompts: images.mean(dim=(1, 2, 3))


def smoothness_reward():
    """Video reward stand-in: minus the mean absolute frame difference of each clip [N, T, 3, H, W] -> [N]."""
    return lambda clips, prompts: -(clips[:, 1:] - clips[:, :-1]).abs().mean(dim=(1, 2, 3, 4))


def tiny_decoder():
    from sf_core.vae.tiny import tiny_taehv

    return tiny_taehv(0).requires_grad_(False)




def micro_model(seed: int = 0):
    """A micro Wan transformer in the toy world's sizes (12 latent channels, text_dim 32, text_len 8), eval mode,
    its zero-initialised output head randomised (or every x0 estimate would equal its input)."""
    from sf_core.config import WanConfig
    from sf_core.model.transformer import WanTransformer

    torch.manual_seed(seed)
    m = WanTransformer(WanConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=2, in_dim=12, out_dim=12, text_dim=32,
                                 text_len=8, freq_dim=32)).eval()
    for n, p in m.named_parameters():
        if n.startswith("head"):
            p.data.normal_(0, 0.2)
    return m
