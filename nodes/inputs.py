"""Validation and translation of node inputs (host types -> tensors and sf_core settings).

Pure functions (no host import): every error names the bad value, the allowed range and the fix.
"""
from __future__ import annotations

import torch

from sf_core.config import CausalConfig, ConfigError
from sf_core.sampling.schedule import parse_steps

from .host import NodeInputError

DEFAULT_TIMESTEPS = "1000,750,500,250"
DEFAULT_SHIFT = 5.0
LATENT_CHANNELS = 16


def parse_timesteps(text: str) -> tuple[int, ...]:
    try:
        return tuple(parse_steps(text))
    except ValueError as e:
        raise NodeInputError(f"timesteps: {e}") from None


def causal_config(chunk_frames: int, window_frames: int, sink_frames: int) -> CausalConfig:
    """window_frames 0 = global cache (every frame kept)."""
    try:
        return CausalConfig(chunk_frames=int(chunk_frames),
                            window_frames=None if int(window_frames) <= 0 else int(window_frames),
                            sink_frames=int(sink_frames) if int(window_frames) > 0 else 0)
    except ConfigError as e:
        raise NodeInputError(f"chunk/window/sink: {e}") from None


def resolve_shift(shift: float, model_shift: float | None) -> float:
    """shift 0 means 'take it from the MODEL' (e.g. a ModelSamplingSD3 node); else the widget's value."""
    if shift > 0:
        return float(shift)
    if model_shift is None or model_shift <= 0:
        raise NodeInputError("shift is 0 (= use the MODEL's shift) but the MODEL has no flow shift; set shift "
                             f"to a positive value (Self Forcing uses {DEFAULT_SHIFT})")
    return float(model_shift)


def conditioning_tensor(cond, text_dim: int | None, name: str = "positive") -> torch.Tensor:
    """The text embeddings [B, L, text_dim] of a CONDITIONING ([[tensor, dict], ...]; first entry)."""
    try:
        t = cond[0][0]
    except (TypeError, IndexError, KeyError):
        raise NodeInputError(f"{name}: expected a CONDITIONING (list of [tensor, dict]), got {type(cond).__name__}; "
                             f"connect CLIPTextEncode (CLIPLoader type 'wan') or SF Load Conditioning") from None
    if not isinstance(t, torch.Tensor) or t.ndim != 3:
        raise NodeInputError(f"{name}: conditioning tensor must be [B, tokens, {text_dim or 'text_dim'}], got "
                             f"{tuple(getattr(t, 'shape', ()))}")
    if text_dim is not None and t.shape[-1] != text_dim:
        raise NodeInputError(
            f"{name}: conditioning width {t.shape[-1]} does not match the model's text_dim {text_dim}. Wan2.1 "
            f"needs umT5-XXL embeddings: encode the prompt with CLIPLoader (type 'wan') + CLIPTextEncode")
    if len(cond) > 1:
        import logging
        logging.getLogger("selfforcing.nodes").warning(
            "%s: CONDITIONING has %d entries; the causal sampler uses the first (use SF Prompt Schedule to "
            "change prompts over time)", name, len(cond))
    return t


def batch_context(ctx: torch.Tensor, batch: int, name: str = "positive") -> torch.Tensor:
    if ctx.shape[0] == batch:
        return ctx
    if ctx.shape[0] == 1:
        return ctx.expand(batch, -1, -1)
    raise NodeInputError(f"{name}: conditioning batch {ctx.shape[0]} does not match the latent batch {batch}; "
                         f"use one prompt (batch 1) or the same batch size")


def latent_shape(latent, width: int, height: int, length: int, batch_size: int,
                 channels: int = LATENT_CHANNELS) -> tuple[int, int, int, int, int]:
    """[B, C, T, h, w] of the video to generate: from a LATENT if connected, else from width/height/length
    (Wan2.1 geometry: 8x spatial, 4x temporal compression).

    The LATENT's values are ignored (Self Forcing starts every chunk from noise); only its shape is used.
    """
    if latent is not None:
        s = latent.get("samples") if isinstance(latent, dict) else None
        if not isinstance(s, torch.Tensor):
            raise NodeInputError("latent: expected a LATENT dict with 'samples'")
        if s.ndim != 5 or s.shape[1] != channels:
            raise NodeInputError(
                f"latent: expected a video latent [B, {channels}, T, h, w] for this model (e.g. from "
                f"EmptyHunyuanLatentVideo for Wan2.1), got shape {tuple(s.shape)}")
        b, c, t, h, w = (int(x) for x in s.shape)
    else:
        if channels != LATENT_CHANNELS:
            raise NodeInputError(f"this model has {channels} latent channels (not a Wan2.1 VAE latent): connect "
                                 f"its empty latent node (e.g. SF Empty Toy Latent) to 'latent'")
        if width % 16 or height % 16:
            raise NodeInputError(f"width/height must be multiples of 16, got {width}x{height}")
        if (length - 1) % 4:
            raise NodeInputError(f"length must be 4k+1 video frames (1, 5, 9, ..., 81), got {length}")
        b, c, t, h, w = int(batch_size), LATENT_CHANNELS, (int(length) - 1) // 4 + 1, height // 8, width // 8
    if h % 2 or w % 2:
        raise NodeInputError(f"latent size {h}x{w} must be even (Wan patches 2x2 latent pixels): use a width and "
                             f"height that are multiples of 16")
    return b, c, t, h, w


def check_length(frames: int, causal: CausalConfig, temporal_scale: int = 4) -> None:
    """The latent length must split into whole chunks; the error names the nearest valid lengths in the model's
    frame arithmetic (`temporal_scale` video frames per latent frame after the first: 4 for Wan, 1 for the toy)."""
    first = 1 if causal.independent_first_frame else 0
    n = causal.chunk_frames
    if frames >= first + n and (frames - first) % n == 0:
        return
    lo = max(first + n, first + (frames - first) // n * n)
    video = lambda f: 1 + temporal_scale * (f - 1)  # noqa: E731 - the first latent frame is one video frame
    near = f"{lo} latent frames ({video(lo)} video frames)"
    if lo <= frames:
        near = f"nearest valid lengths: {near} or {lo + n} ({video(lo + n)} video frames)"
    else:
        near = f"the shortest valid length is {near}"
    after = " after an independent first frame" if first else ""
    raise NodeInputError(f"length: {frames} latent frames ({video(frames)} video frames) cannot be split into chunks "
                         f"of {n}{after}; {near}")
