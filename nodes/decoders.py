"""Chunk decoders for the nodes: a stock ComfyUI VAE or a pack decoder (TAEHV, toy codec) behind one protocol.

A chunk decoder has `decode_chunk(z, state=None) -> (frames, state)`: z = a chunk of *model-space*
(normalised) latents [B, C, n, h, w], frames [B, 3, T, H, W] in [-1, 1] (see `sf_core.vae.protocol`).
`sf_core.vae` implements it for ComfyUI's loaded WanVAE and for TAEHV; this module only picks the
implementation for a host object and says how a LATENT's raw values map to model space.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import host


@dataclass
class HostDecoder:
    """A chunk decoder and how raw LATENT values become its model-space input (None: Wan2.1 normalisation)."""

    decoder: Any
    name: str = "decoder"
    latent_in: Callable[[torch.Tensor], torch.Tensor] | None = None

    def to_model_space(self, raw: torch.Tensor) -> torch.Tensor:
        if self.latent_in is not None:
            return self.latent_in(raw)
        from sf_core.vae.latent import normalize

        return normalize(raw)

    def decode_chunk(self, z: torch.Tensor, state=None):
        return self.decoder.decode_chunk(z, state)

    def prepare(self) -> None:
        """Load host-managed weights onto their device (the ComfyUI VAE does it per chunk itself)."""


def from_host_vae(vae) -> HostDecoder:
    """A stock `VAE` (VAELoader) holding a Wan2.1 VAE as a chunk decoder, or a clear error."""
    from sf_core.vae.comfy_decoder import ComfyWanDecoder
    from sf_core.vae.protocol import VAEError

    try:
        dec = ComfyWanDecoder(vae, prepare=lambda: host.load_vae(vae))
    except VAEError as e:
        raise host.NodeInputError(f"vae: {e}") from None
    return HostDecoder(dec, name="vae")


def pick_decoder(vae=None, decoder=None) -> HostDecoder | None:
    """The decoder a node uses: a pack decoder (SF_DECODER input) if given, else the stock VAE, else None."""
    if decoder is not None:
        return decoder if isinstance(decoder, HostDecoder) else HostDecoder(decoder)
    if vae is not None:
        return vae if isinstance(vae, HostDecoder) else from_host_vae(vae)
    return None


def decode_stream(dec: HostDecoder, chunks, on_chunk: Callable[[int, torch.Tensor], None] | None = None,
                  check: Callable[[], None] | None = None, state: Any = None) -> tuple[torch.Tensor, Any]:
    """Decode an iterable of model-space latent chunks [B, C, n, h, w] carrying the decoder's causal state.

    on_chunk(i, frames [B, T, H, W, 3] in [0, 1]) after each chunk; `check` runs before each chunk (the
    host's interruption check); `state` continues an earlier stream. Returns (all frames [B, T_total, H, W, 3]
    on the CPU, the decoder state after the last chunk).
    """
    from .streaming import frames_to_image

    dec.prepare()
    out = []
    for i, z in enumerate(chunks):
        if check is not None:
            check()
        with torch.no_grad():
            frames, state = dec.decode_chunk(z, state)
        img = frames_to_image(frames).cpu()
        out.append(img)
        if on_chunk is not None:
            on_chunk(i, img)
    return torch.cat(out, dim=1), state
