"""Writing generated frames to mp4 (H.264 through PyAV), one chunk at a time.

Frames come from a chunk decoder as [3, T, H, W] (or [B, 3, T, H, W] with B = 1) floats in [-1, 1]; they are
mapped to uint8 RGB and encoded as yuv420p H.264, the format every player reads. yuv420p needs even sizes:
an odd height or width is padded by repeating the last row / column (logged once).

The file is written to a hidden temporary file beside the final one and renamed onto it (with the user's umask
permissions) only when `close()` has finished it, so a failed or interrupted write (a full disk, a crash) never
leaves a broken file that looks like a video; `abort()` drops the temporary file.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fileio import default_mode

log = logging.getLogger(__name__)


class VideoError(ValueError):
    """Frames or a video file that cannot be written / read as asked."""


def _av():
    try:
        import av  # noqa: PLC0415 - optional dependency of the standalone CLI
    except ImportError as exc:
        raise VideoError("writing mp4 needs PyAV: pip install av (it bundles ffmpeg)") from exc
    return av


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] (or [1, 3, T, H, W]) in [-1, 1] -> uint8 array [T, H, W, 3]."""
    if frames.ndim == 5:
        if frames.shape[0] != 1:
            raise VideoError(f"one video at a time: got a batch of {frames.shape[0]}; write each item separately")
        frames = frames[0]
    if frames.ndim != 4 or frames.shape[0] != 3:
        raise VideoError(f"frames must be [3, T, H, W] RGB in [-1, 1], got shape {tuple(frames.shape)}")
    x = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().cpu().numpy()


class VideoWriter:
    """An mp4 written chunk by chunk: `with VideoWriter(path, fps) as w: w.write(frames)`.

    crf: H.264 quality (0 = lossless, 18 = visually lossless, 23 = libx264's default). The file appears at `path`
    when `close()` returns (the `with` block ends without an exception); until then it is a temporary file beside
    it, removed by `abort()` (an exception in the `with` block).
    """

    def __init__(self, path: str | Path, fps: float, *, crf: int = 18, codec: str = "libx264"):
        if not fps > 0:
            raise VideoError(f"fps must be > 0, got {fps}")
        self.path = Path(path)
        self.fps = fps
        self.crf = int(crf)
        self.codec = codec
        self.frames_written = 0
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self._tmp: Path | None = None
        _av()  # import PyAV now (a few hundred ms), not inside the first chunk's callback; a missing PyAV fails here

    def _open(self, height: int, width: int) -> None:
        av = _av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix or ".mp4",
                                   dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        try:
            self._container = av.open(tmp, mode="w", format=None if self.path.suffix else "mp4")
        except BaseException:
            self.abort()
            raise
        stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self.crf)}
        if (height % 2) or (width % 2):
            log.info("padding %dx%d frames to even size %dx%d for yuv420p", width, height, stream.width,
                     stream.height)
        self._stream = stream
        self._size = (height, width)
        self._pts = 0  # every frame gets its own timestamp, in frames (the stream's time base is 1 / fps)
        self._time_base = stream.codec_context.time_base or 1 / Fraction(self.fps).limit_denominator(1001)

    def _encode(self, frame: Any) -> None:
        frame.pts, frame.time_base = self._pts, self._time_base
        self._pts += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        """Append frames: a tensor [3, T, H, W] / [1, 3, T, H, W] in [-1, 1], or uint8 [T, H, W, 3]."""
        arr = to_uint8(frames) if isinstance(frames, torch.Tensor) else np.asarray(frames)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise VideoError(f"expected uint8 frames [T, H, W, 3], got {arr.dtype} {arr.shape}")
        if self._container is None:
            self._open(arr.shape[1], arr.shape[2])
        if arr.shape[1:3] != self._size:
            raise VideoError(f"frame size changed from {self._size} to {arr.shape[1:3]} within one video")
        av = _av()
        ph, pw = self._stream.height - arr.shape[1], self._stream.width - arr.shape[2]
        if ph or pw:
            arr = np.pad(arr, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
        for img in arr:
            self._encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24"))
        self.frames_written += arr.shape[0]

    def copy_from(self, path: str | Path) -> int:
        """Append every frame of the video at `path`; returns how many. Frames are re-encoded as decoded (YUV, no
        colour conversion), so with crf 0 the copy is exact and otherwise it costs one H.264 generation."""
        av = _av()
        n = 0
        with av.open(str(path)) as c:
            for f in c.decode(video=0):
                if self._container is None:
                    self._open(f.height, f.width)
                if (f.height, f.width) != (self._stream.height, self._stream.width):
                    raise VideoError(f"{path}: frames of {f.width}x{f.height}, this video is "
                                     f"{self._stream.width}x{self._stream.height}")
                f = f if f.format.name == "yuv420p" else f.reformat(format="yuv420p")
                self._encode(f)  # a new timestamp: the input's own (or none) would repeat or clash
                n += 1
        self.frames_written += n
        return n

    def close(self) -> None:
        """Finish the file and move it into place (nothing happens if no frame was written)."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.chmod(self._tmp, default_mode())
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the unfinished file (the final path is left as it was)."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            self._tmp = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | Path, frames: torch.Tensor, fps: float, **kw) -> Path:
    """Write all frames [3, T, H, W] (or [1, 3, T, H, W]) in [-1, 1] to an mp4 at once."""
    with VideoWriter(path, fps, **kw) as w:
        w.write(frames)
    return Path(path)


def probe_video(path: str | Path) -> dict[str, Any]:
    """{"frames", "width", "height", "fps"} of a video file, frames counted by decoding it."""
    av = _av()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return {"frames": n, "width": s.codec_context.width, "height": s.codec_context.height,
                "fps": float(s.average_rate) if s.average_rate else None}


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video file as uint8 [T, H, W, 3]."""
    av = _av()
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


__all__ = ["VideoWriter", "VideoError", "write_video", "probe_video", "read_video", "to_uint8"]
