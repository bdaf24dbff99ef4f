"""Validation and translation of node inputs (host types -> tensors and sf_core settings).

Pure functions (no host import): every error names the bad value, the allowed range and the fix.
"""
from __future__ import annotations

import torch

from sf_core.config import CausalConfig, ConfigError, valid_length_message
from sf_core.schedule import parse_steps

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


def check_length(frames: int, causal: CausalConfig) -> None:
    """The latent length must split into whole chunks; the error names the nearest valid lengths."""
    try:
        causal.chunk_bounds(frames)
    except ConfigError:
        raise NodeInputError(f"length: {valid_length_message(frames, causal)}") from None
