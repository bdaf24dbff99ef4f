"""Sizes and defaults shared by the toy model's training, evaluation and bundle.

The toy transformer is a real `WanTransformer` (Wan2.1 key names and forward) with a tiny `WanConfig`:
12 latent channels (the codec's), a 32-d text embedding (the toy text encoder's), head_dim 32. One latent
frame is one 16x16 video frame (8x8 latent, 2x2 patches = 16 tokens per frame). Videos are trained on
TRAIN_FRAMES = 12 frames = 4 chunks of 3, and sampled with the 4 Self Forcing steps at shift 5.
"""
from __future__ import annotations

from ..config import CausalConfig, WanConfig
from .codec import BLOCK, CHANNELS
from .world import WorldSpec

WORLD = WorldSpec()
TRAIN_FRAMES = 12  # latent frames (= video frames) per training video: 4 chunks of 3
CHUNK_FRAMES = 3
LATENT_HW = (WORLD.height // BLOCK, WORLD.width // BLOCK)
STEPS = (1000, 750, 500, 250)
SHIFT = 5.0
# the teacher's classifier-free guidance, x0_c + TEACHER_CFG (x0_c - x0_u), wherever it serves as a reference:
# the DMD real score, the ODE pairs, the teacher row of the evaluation
TEACHER_CFG = 1.0
# Long videos: a rolling window of the training length, so every query sees at most what it saw in training
# (RoPE makes attention depend on frame *distances* only; absolute positions past 12 are never a problem).
WINDOW_FRAMES = TRAIN_FRAMES
SINK_FRAMES = 0
FPS = 8
UPSCALE = 8  # the bundle's decoder shows 16x16 frames at 128x128 (nearest)


def toy_wan_config() -> WanConfig:
    """The toy transformer: 4 layers, dim 128, 4 heads of 32, ffn 256 (~1 M parameters)."""
    return WanConfig(dim=128, ffn_dim=256, num_heads=4, num_layers=4, in_dim=CHANNELS, out_dim=CHANNELS,
                     text_dim=32, text_len=8, freq_dim=64)


def toy_causal(rolling: bool = True) -> CausalConfig:
    """Chunk-wise causal config; rolling=False is the global cache (videos of <= TRAIN_FRAMES frames)."""
    if not rolling:
        return CausalConfig(chunk_frames=CHUNK_FRAMES)
    return CausalConfig(chunk_frames=CHUNK_FRAMES, window_frames=WINDOW_FRAMES, sink_frames=SINK_FRAMES)
