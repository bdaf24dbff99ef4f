"""Host-free harness for the node tests: the stand-in host modules on sys.path and a tiny MODEL stand-in.

The MODEL stand-in is what the nodes touch of a ComfyUI ModelPatcher: `.model` (a BaseModel-like object with
`diffusion_model`, `process_latent_in/out`, `get_dtype`, `manual_cast_dtype`), `.load_device` and
`get_model_object("model_sampling")`. Its diffusion model is sf_core's own WanTransformer, which has
ComfyUI's WanModel submodule names (the real WanModel is exercised by tests/test_host_e2e.py).
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

STUBS = Path(__file__).resolve().parent / "host_stubs"


def install_stubs(base_dir: str) -> None:
    """Put the stand-ins first on sys.path (once) and point their folders at `base_dir`."""
    if str(STUBS) not in sys.path:
        sys.path.insert(0, str(STUBS))
    import folder_paths

    folder_paths.base = str(base_dir)
    import comfy.model_management as mm
    import comfy.utils as cu
    from server import PromptServer

    mm.reset()
    cu.updates.clear()
    PromptServer.instance.events.clear()
    PromptServer.instance.texts.clear()


class FakeBase:
    """The parts of comfy.model_base.WAN21 the nodes use (Wan21 latent format: (z - mean) / std)."""

    def __init__(self, dm, dtype=torch.float32):
        self.diffusion_model = dm
        self.manual_cast_dtype = None
        self._dtype = dtype

    def get_dtype(self):
        return self._dtype

    def process_latent_in(self, z):
        from sf_core.vae.latent import normalize

        return normalize(z)

    def process_latent_out(self, z):
        from sf_core.vae.latent import denormalize

        return denormalize(z)


class FakePatcher:
    def __init__(self, dm, shift: float = 8.0):
        self.model = FakeBase(dm)
        self.load_device = torch.device("cpu")
        self._ms = SimpleNamespace(shift=shift)

    def get_model_object(self, name):
        if name != "model_sampling":
            raise AttributeError(name)
        return self._ms


def tiny_wan(seed: int = 0):
    """A tiny Wan2.1 T2V transformer (16 latent channels) with non-trivial weights."""
    from sf_core.config import WanConfig
    from sf_core.model.transformer import WanTransformer, randomize_weights

    return randomize_weights(WanTransformer(WanConfig.tiny()), seed=seed).eval()


def events(kind: str | None = None) -> list[tuple[str, dict]]:
    from server import PromptServer

    ev = PromptServer.instance.events
    return [e for e in ev if kind is None or e[0] == "selfforcing." + kind]
