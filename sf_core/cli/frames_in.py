"""`--image PATH` / `--video PATH` for `generate` and `live`: start from an image, or continue any video.

The frames are read with PyAV (images and videos alike; a video is streamed and only its last frames are kept),
encoded by the bundle's decoder (the Wan VAE with its encoder, or the toy codec) and committed into a fresh
session's KV cache with `sf_core.sampling.context_frames` (the first frame is a chunk of its own and the attention sink).
With --image the video starts with the image; with --video the output holds the given video followed by the
continuation (its frames copied over).
"""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..sampling.context_frames import commit_frames, frames_settings, usable_frames
from ..sampling.pipeline import Bundle
from ..sampling.session import SamplingSettings, Session, new_session


def add_arguments(parser) -> None:
    g = parser.add_argument_group("start from frames (image to video, extend a video)")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--image", metavar="PATH", help="start the video from this image (PNG, JPEG, ...): it is the "
                   "first frame and the attention sink; the video size is the image's")
    x.add_argument("--video", metavar="PATH", help="continue this video (any format PyAV reads): its last frames "
                   "are encoded into the KV cache and -o holds the whole video followed by the continuation")


MAX_INPUT_PIXELS = 4096 * 4096  # per frame: 4K video fits; the models run at ~0.4 MP (Wan 832x480)


def _too_big(w: int, h: int, path) -> None:
    if w * h > MAX_INPUT_PIXELS:
        f = (MAX_INPUT_PIXELS / (w * h)) ** 0.5
        raise ConfigError(f"{path} is {w}x{h} pixels ({w * h / 1e6:.0f} MP), more than this run reads "
                          f"({MAX_INPUT_PIXELS / 1e6:.1f} MP per frame); resize it first, e.g. to "
                          f"{int(w * f) // 16 * 16}x{int(h * f) // 16 * 16} (the video's size is the input's)")


def check_input_size(path: str | Path) -> None:
    """Refuse an image larger than a run could use from its header alone, before any pixel is decoded (an 8192²
    PNG decoded into float frames took 2 GB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # lazy: reads the header only
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError):
        return  # not an image Pillow knows (a video): PyAV's stream header is checked when it is opened
    except Image.DecompressionBombError as exc:
        raise ConfigError(f"{path}: {exc}; resize it first") from None
    _too_big(w, h, path)


def check_given(args) -> None:
    """The sizes of --image / --video from their headers, before anything is loaded (generate and live)."""
    for path in (getattr(args, "image", None), getattr(args, "video", None)):
        if path:
            check_input_size(path)


def last_frames(path: str | Path, count: int) -> np.ndarray:
    """The last `count` frames of an image or video file as uint8 [T, H, W, 3] (streamed: bounded memory)."""
    from ..video import _av

    av = _av()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such file")
    check_input_size(p)
    keep: collections.deque = collections.deque(maxlen=max(1, int(count)))
    try:
        with av.open(str(p)) as c:
            stream = c.streams.video[0]
            _too_big(stream.codec_context.width, stream.codec_context.height, path)
            for f in c.decode(video=0):
                keep.append(f.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, ValueError, IndexError) as exc:  # type: ignore[attr-defined]
        raise ConfigError(f"{path} is not an image or video PyAV can read: {exc}") from exc
    if not keep:
        raise ConfigError(f"{path} holds no video frames")
    return np.stack(keep)


def _encode(frames: np.ndarray, bundle: Bundle, device: torch.device) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> model-space latents [1, C, K, h, w] with the bundle's encoder."""
    x = torch.from_numpy(frames).to(torch.float32).permute(3, 0, 1, 2).unsqueeze(0) / 127.5 - 1  # [1, 3, T, H, W]
    dec = bundle.decoder
    if dec is None:
        raise ConfigError("--image / --video need an encoder: pass --vae with the full Wan2.1 VAE")
    if bundle.name == "toy":
        from ..toy.codec import ToyDecoder
        from ..toy.spec import WORLD

        h, w = x.shape[-2:]
        if h % WORLD.height or w % WORLD.width or h // WORLD.height != w // WORLD.width:
            raise ConfigError(f"toy frames are {WORLD.width}x{WORLD.height} pixels (or a whole multiple), got {w}x{h}")
        f = h // WORLD.height
        if f > 1:
            x = F.avg_pool3d(x, (1, f, f))
        return ToyDecoder(upscale=1).encode(x)
    if not getattr(dec, "has_encoder", False):
        raise ConfigError("--image / --video need the VAE's encoder: pass the full Wan2.1 VAE (Wan2.1_VAE.pth or "
                          "wan_2.1_vae.safetensors), not TAEHV or a decoder-only file")
    h, w = x.shape[-2:]
    s = 2 * bundle.spatial_scale
    if h % s or w % s:
        raise ConfigError(f"frames of {w}x{h} pixels: the size must be a multiple of {s}; resize to "
                          f"{max(s, w // s * s)}x{max(s, h // s * s)}")
    with torch.no_grad():
        return dec.encode(x.to(device=dec.device, dtype=dec.dtype)).to(device)


def start_session(args, bundle: Bundle, model, prompts, settings: SamplingSettings, dtype: torch.dtype,
                  device: torch.device) -> tuple[Session, torch.Tensor | None]:
    """A session that starts from --image (returns its decoded frame) or continues --video (returns None)."""
    settings = frames_settings(settings)
    ts = bundle.temporal_scale
    if args.image:
        frames = last_frames(args.image, 1)[:1]
    else:
        k = usable_frames(settings.causal, 10 ** 9)  # the most that fit: read only as many video frames
        frames = last_frames(args.video, 1 + ts * (k - 1) if ts > 1 else k)
        available = 1 + (len(frames) - 1) // ts if ts > 1 else len(frames)
        k = usable_frames(settings.causal, available)
        frames = frames[len(frames) - (1 + ts * (k - 1) if ts > 1 else k):]
    z = _encode(frames, bundle, device)
    session = new_session(model, prompts, latent_hw=tuple(z.shape[-2:]), seed=args.seed, settings=settings,
                          dtype=dtype, device=device)
    first = commit_frames(model, session, z, decoder=bundle.decoder, emit=bool(args.image))
    return session, first


__all__ = ["add_arguments", "start_session", "last_frames", "check_given"]
