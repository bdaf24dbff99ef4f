"""The embedded toy model as a generation bundle: transformer + text encoder + chunk decoder + defaults.

    from sf_core.toy import load_toy_bundle
    b = load_toy_bundle()                        # the shipped Self Forcing student (sf_core/toy/assets)
    ctx = b.text_encoder.encode(["a red square moving left fast"])   # [1, 8, 32]
    # b.transformer: a WanTransformer; b.decoder.decode_chunk(z, state) -> (frames, state);
    # b.settings: 4 steps at shift 5, chunks of 3, rolling window of 12 frames

`python -m sf_core generate --model toy` and the ComfyUI nodes use exactly this object, through the same
session / sampler / decoder code as a Wan2.1 model.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .codec import BLOCK, ToyDecoder
from .spec import FPS, LATENT_HW, SHIFT, STEPS, UPSCALE, toy_causal
from .text import ToyTextEncoder

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS / "toy_sf.safetensors"
RECORD = ASSETS / "toy_sf.json"  # metrics recorded when the model was shipped (checked by the tests)


class ToyModelError(FileNotFoundError):
    pass


def toy_model_path(path: str | Path | None = None) -> Path:
    p = Path(path) if path is not None else DEFAULT_MODEL
    if not p.is_file():
        raise ToyModelError(f"toy model file {p} does not exist; the pack ships {DEFAULT_MODEL} -- reinstall it, "
                            f"or train one: python -m sf_core.toy train sf --seed 0")
    return p


def load_toy_transformer(path: str | Path | None = None, *, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float32):
    """The toy WanTransformer (eval mode, no grad) from `path` (default: the shipped model)."""
    from ..checkpoints.weights import load_model

    model = load_model(toy_model_path(path), dtype=dtype, device=device)
    return model.eval().requires_grad_(False)


def load_toy_bundle(path: str | Path | None = None, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32, upscale: int = UPSCALE):
    """A `sf_core.sampling.pipeline.Bundle` for the toy model (default: the shipped Self Forcing student).

    upscale: nearest-neighbour enlargement of the decoded 16x16 frames (viewing only; 1 = world size).
    """
    from ..sampling.pipeline import Bundle
    from ..sampling.session import SamplingSettings

    model = load_toy_transformer(path, device=device, dtype=dtype)
    cfg = model.config
    return Bundle(transformer=model, text_encoder=ToyTextEncoder(text_dim=cfg.text_dim, text_len=cfg.text_len),
                  decoder=ToyDecoder(upscale=upscale),
                  settings=SamplingSettings(steps=STEPS, shift=SHIFT, causal=toy_causal()),
                  negative_prompt="", fps=float(FPS), latent_hw=LATENT_HW, temporal_scale=1,
                  spatial_scale=BLOCK * upscale, name="toy")


def recorded_metrics(path: str | Path = RECORD) -> dict:
    """The evaluation recorded with the shipped model (see `sf_core.toy.evaluate.record`)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
