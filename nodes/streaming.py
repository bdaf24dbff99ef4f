"""Live streaming of decoded chunks to the browser while a node is still running.

Each decoded chunk becomes one JPEG *strip* (its frames stacked vertically) in the host's temp folder,
served by `/view?type=temp`, and one custom websocket event announces it. The pack's frontend
(`js/self_forcing_player.js`) queues the frames and plays them at the chosen FPS.

Events (sent to the client that queued the prompt):
- `selfforcing.stream_start` {stream, node, source, fps, total_chunks, width, height}
- `selfforcing.chunk` {stream, node, source, chunk, total_chunks, start_frame, frames, width, height, fps,
  image: {filename, subfolder, type}, elapsed_s}
- `selfforcing.stream_end` {stream, node, source, chunks, frames, elapsed_s, status: "done"|"interrupted"|"error"}
Live streams (SF Live Stream, `live: true`) add: `prompt` on stream_start and on every chunk (the prompt in effect),
`actions` (controls applied before the chunk), `gen_fps`, `chunk_s`; `selfforcing.live_state` {stream, node,
source, state, chunk, prompt, paused} when the state changes; `stream_end` gets `file` (the finished mp4) and
status "stopped"/"limit". The contract (with the control route) is in docs/comfyui.md.
"""
from __future__ import annotations

import os
import time
import uuid

import numpy as np
import torch
from PIL import Image

from . import host

SUBFOLDER = "selfforcing"


def frames_to_image(frames: torch.Tensor) -> torch.Tensor:
    """Decoder frames [B, 3, T, H, W] in [-1, 1] -> IMAGE-style [B, T, H, W, 3] float32 in [0, 1]."""
    if frames.ndim != 5 or frames.shape[1] != 3:
        raise ValueError(f"decoded frames must be [B, 3, T, H, W], got {tuple(frames.shape)}")
    return ((frames.float() + 1) * 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).contiguous()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[..., H, W, 3] in [0, 1] -> uint8 numpy."""
    return (img.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def strip_image(frames: torch.Tensor) -> Image.Image:
    """[T, H, W, 3] in [0, 1] -> one PIL image of height T*H (frames top to bottom)."""
    t, h, w, _ = frames.shape
    return Image.fromarray(to_uint8(frames).reshape(t * h, w, 3))


class LiveStream:
    """Announces one node's decoded chunks to the UI (batch item 0 only)."""

    def __init__(self, node_id: str | None, source: str, fps: float, total_chunks: int | None,
                 enabled: bool = True, quality: int = 85, start_extra: dict | None = None):
        self.node_id = node_id
        self.source = source
        self.fps = float(fps)
        self.total_chunks = None if total_chunks is None else int(total_chunks)
        self.start_extra = dict(start_extra or {})
        self.enabled = enabled
        self.quality = quality
        self.stream = uuid.uuid4().hex[:12]
        self.chunks = 0
        self.frames = 0
        self.t0 = time.perf_counter()
        self._started = False

    def _base(self) -> dict:
        return {"stream": self.stream, "node": self.node_id, "source": self.source}

    def push(self, chunk_frames: torch.Tensor, chunk: int, start_frame: int,
             extra: dict | None = None) -> Image.Image | None:
        """chunk_frames: [T, H, W, 3] in [0, 1]. Writes the strip, sends the event. Returns the last frame for the
        host's own progress preview when the player is off, and None while the player streams: the player shows
        the frames, and a second (host) preview would repeat them (frontend 1.58's Nodes 2.0 renderer draws it
        under the player, where the classic renderer's hook used to hide it)."""
        t, h, w, _ = chunk_frames.shape
        if not self.enabled:
            return Image.fromarray(to_uint8(chunk_frames[-1]))
        if not self._started:
            host.send_event("stream_start", {**self._base(), "fps": self.fps, "total_chunks": self.total_chunks,
                                             "width": int(w), "height": int(h), "first_chunk": int(chunk),
                                             **self.start_extra})
            self._started = True
        folder = os.path.join(host.temp_directory(), SUBFOLDER)
        os.makedirs(folder, exist_ok=True)
        name = f"{self.stream}_{chunk:05d}.jpg"
        strip_image(chunk_frames).save(os.path.join(folder, name), quality=self.quality)
        host.send_event("chunk", {**self._base(), "chunk": int(chunk), "total_chunks": self.total_chunks,
                                  "start_frame": int(self.frames), "latent_start": int(start_frame),
                                  "frames": int(t), "width": int(w), "height": int(h), "fps": self.fps,
                                  "image": {"filename": name, "subfolder": SUBFOLDER, "type": "temp"},
                                  "elapsed_s": round(time.perf_counter() - self.t0, 4), **(extra or {})})
        self.chunks += 1
        self.frames += t
        return None

    def state(self, data: dict) -> None:
        """A live stream's state changed (paused, resumed, stopping...): `selfforcing.live_state`."""
        if self.enabled:
            host.send_event("live_state", {**self._base(), **data})

    def end(self, status: str = "done", extra: dict | None = None) -> None:
        if self.enabled and (self._started or extra):
            host.send_event("stream_end", {**self._base(), "chunks": self.chunks, "frames": self.frames,
                                           "elapsed_s": round(time.perf_counter() - self.t0, 4), "status": status,
                                           **(extra or {})})
