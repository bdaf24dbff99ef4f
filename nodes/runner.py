"""Drive `sf_core.sampling.pipeline.generate` from inside a node: progress, decoding, live streaming, interruption.

The generation is sf_core's (a `Session` advanced chunk by chunk over the host's own WanModel modules); this
module wires the host's callbacks into it and moves sessions between the compute device and the CPU, where
they live between nodes (a node never modifies the session it receives).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from sf_core.config import plan_chunks
from sf_core.sampling.pipeline import ChunkResult, generate
from sf_core.sampling.session import Session

from . import host
from .decoders import HostDecoder
from .streaming import LiveStream, frames_to_image

log = logging.getLogger("selfforcing.nodes")


def session_to(session: Session, device, dtype: torch.dtype | None = None) -> Session:
    """An independent copy of a session on `device` (sessions live on the CPU between nodes)."""
    return session.to(device, dtype)


# ---------------------------------------------------------------------------------------------- one run
@dataclass
class RunOutput:
    latents: torch.Tensor  # model space [B, C, F, h, w] on the compute device
    images: torch.Tensor | None  # VAE frames [B, T, H, W, 3] in [0, 1] on the CPU, if a VAE was given
    preview_state: Any


def run(module, session: Session, *, num_frames: int | None = None, num_chunks: int | None = None,
        vae: HostDecoder | None = None, preview: HostDecoder | None = None, preview_state: Any = None,
        live: LiveStream | None = None, node_id: str | None = None) -> RunOutput:
    """Advance `session` (on the compute device, modified in place) and report every step to the host.

    The VAE goes through the pipeline (its stream state is kept in the session: a continuation decodes
    seamlessly); the preview decoder runs here only for the live view. Interruption: every step calls the
    host's check; the pipeline rolls an interrupted chunk back, so the session stays consistent.
    """
    causal = session.settings.causal
    if num_chunks is None:
        num_chunks = len(plan_chunks(causal, session.next_frame, num_frames=num_frames))
    n_steps = len(session.settings.steps)
    progress = host.Progress(num_chunks * n_steps, node_id)
    first_chunk = session.chunk_index
    kept: list[torch.Tensor] = []
    state = {"preview": preview_state}
    t0 = time.perf_counter()
    for d in (vae, preview):
        if d is not None:
            d.prepare()

    def on_step(info) -> None:
        host.check_interrupt()
        progress.update((info.chunk - first_chunk) * n_steps + info.step + 1)

    def on_chunk(res: ChunkResult) -> None:
        i = res.index - first_chunk
        shown = None
        if res.frames is not None:
            img = frames_to_image(res.frames).cpu()
            kept.append(img)
            shown = img
        if preview is not None:
            host.check_interrupt()
            with torch.no_grad():
                px, state["preview"] = preview.decode_chunk(res.latents, state["preview"])
            shown = frames_to_image(px).cpu()
        last = live.push(shown[0], res.index, res.start_frame) if (live is not None and shown is not None) else None
        progress.update((i + 1) * n_steps, last)
        if live is None or not live.enabled:  # the live player shows its own status line
            host.send_text(f"chunk {i + 1}/{num_chunks}: {res.seconds:.2f} s"
                           f"{' (new prompt)' if res.switched else ''}", node_id)

    z = generate(module, session, num_chunks=num_chunks, decoder=vae, on_step=on_step, on_chunk=on_chunk)
    log.info("Self Forcing: %d chunks in %.2f s", num_chunks, time.perf_counter() - t0)
    images = torch.cat(kept, dim=1) if kept else None
    return RunOutput(z, images, state["preview"])
