"""The Wan2.1 causal 3-D VAE (encoder + decoder) as a chunk decoder with an explicit stream state.

Shapes: video [B, 3, T, H, W] in [-1, 1] with T = 1 + 4k; latents [B, 16, 1 + k, H/8, W/8]. The encoder
reads frames in groups of 1, 4, 4, ...; the decoder reads one latent frame at a time and emits 1 frame for
latent frame 0 and 4 for every later one. Both carry 2-frame causal caches between groups.

`WanVAE.decode_chunk(z, state)` runs that per-frame loop over a chunk, starting from `state` and
returning the next one (`WanDecoderState`), so streamed chunks concatenate to exactly `decode(z)`; the
state holds only the 2-frame caches, a fixed amount of memory for any video length.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .latent import LATENT_CHANNELS, denormalize, normalize
from .protocol import (VAEError, check_chunk, check_continues, frames_out, slots_from_tensors, slots_on,
                       slots_to_tensors, state_nbytes)
from .wan_layers import AttentionBlock, CacheCursor, CausalConv3d, Resample, ResidualBlock, head, run_cached


@dataclass(frozen=True)
class WanVAEConfig:
    """Shape of a Wan2.1-style VAE. Defaults = the real Wan2.1 VAE (`Wan2.1_VAE.pth`, 127 M parameters)."""

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        object.__setattr__(self, "temporal_downsample", tuple(bool(t) for t in self.temporal_downsample))
        if self.dim < 2 or self.dim % 2:
            raise VAEError(f"WanVAEConfig.dim must be even and >= 2, got {self.dim}")
        if self.z_dim != LATENT_CHANNELS:
            raise VAEError(f"WanVAEConfig.z_dim must be {LATENT_CHANNELS} (Wan2.1 latents), got {self.z_dim}")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise VAEError(f"temporal_downsample needs {len(self.dim_mult) - 1} entries (one per downsampling), "
                           f"got {self.temporal_downsample}")
        if sum(self.temporal_downsample) != 2 or len(self.dim_mult) != 4:
            raise VAEError("only the Wan2.1 layout (4 levels, 8x spatial and 4x temporal compression) is "
                           f"supported, got dim_mult={self.dim_mult}, temporal_downsample={self.temporal_downsample}")
        if self.num_res_blocks < 1:
            raise VAEError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")

    @classmethod
    def tiny(cls) -> "WanVAEConfig":
        """Every layer of the real VAE at 1/12 of its width (dim 8): fast tests with the real key names."""
        return cls(dim=8)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dim_mult"], d["temporal_downsample"] = list(self.dim_mult), list(self.temporal_downsample)
        return d


class Encoder3d(nn.Module):
    """Video -> 2·z_dim channels (mean and log-variance) at 1/8 size and 1/4 frame rate."""

    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        dims = [cfg.dim * m for m in (1,) + cfg.dim_mult]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(d_in, d_out))
                d_in = d_out
            if i < len(cfg.dim_mult) - 1:
                layers.append(Resample(d_out, "downsample3d" if cfg.temporal_downsample[i] else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        self.middle = nn.Sequential(ResidualBlock(dims[-1], dims[-1]), AttentionBlock(dims[-1]),
                                    ResidualBlock(dims[-1], dims[-1]))
        self.head = head(dims[-1], cfg.z_dim * 2)

    def forward(self, x: torch.Tensor, cur: CacheCursor) -> torch.Tensor:
        x = run_cached([self.conv1], x, cur)
        x = run_cached(self.downsamples, x, cur)
        x = run_cached(self.middle, x, cur)
        return run_cached(self.head, x, cur)


class Decoder3d(nn.Module):
    """z_dim channels -> RGB at 8x size; 4x frames from the second latent frame on."""

    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        mults = cfg.dim_mult
        dims = [cfg.dim * m for m in (mults[-1],) + mults[::-1]]
        temporal_up = cfg.temporal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                    ResidualBlock(dims[0], dims[0]))
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                d_in //= 2  # the previous Resample's 2-D conv halves the channels
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResidualBlock(d_in, d_out))
                d_in = d_out
            if i < len(mults) - 1:
                layers.append(Resample(d_out, "upsample3d" if temporal_up[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)
        self.head = head(dims[-1], 3)

    def forward(self, x: torch.Tensor, cur: CacheCursor) -> torch.Tensor:
        x = run_cached([self.conv1], x, cur)
        x = run_cached(self.middle, x, cur)
        x = run_cached(self.upsamples, x, cur)
        return run_cached(self.head, x, cur)


@dataclass(frozen=True)
class WanDecoderState:
    """Where a Wan VAE decode stream stands: the decoder's causal caches after `latent_frames` frames.

    `caches` has one slot per cached convolution (a [B, C, <=2, h', w'] tensor, or FIRST_FRAME_DONE for a
    temporal upsampler that has seen only the first frame). Immutable: decoding returns a new state."""

    caches: tuple[Any, ...]
    latent_frames: int
    batch: int
    hw: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return state_nbytes(self.caches)

    def detach(self) -> "WanDecoderState":
        """The same state cut from the autograd graph (decode earlier chunks with grad, then continue)."""
        return dataclasses.replace(self, caches=tuple(c.detach() if isinstance(c, torch.Tensor) else c
                                                      for c in self.caches))

    def to_tensors(self, prefix: str = "vae.") -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors file (see `from_tensors`)."""
        d = slots_to_tensors(self.caches, prefix + "cache.")
        d[prefix + "meta"] = torch.tensor([self.latent_frames, self.batch, *self.hw], dtype=torch.int64)
        return d

    @classmethod
    def from_tensors(cls, d: dict[str, torch.Tensor], prefix: str = "vae.") -> "WanDecoderState":
        if prefix + "meta" not in d:
            raise VAEError(f"no Wan VAE decoder state under '{prefix}' (key '{prefix}meta' missing)")
        frames, batch, h, w = (int(v) for v in d[prefix + "meta"].tolist())
        return cls(tuple(slots_from_tensors(d, prefix + "cache.")), frames, batch, (h, w))


class WanVAE(nn.Module):
    """The Wan2.1 VAE with the original parameter names (`encoder.*`, `conv1.*`, `conv2.*`, `decoder.*`).

    Implements the chunk-decoder protocol (`sf_core.vae.protocol`) on model-space latents; `encode`
    returns model-space latents too. `*_raw` methods work on raw VAE latents (ComfyUI's LATENT space).
    `with_encoder=False` builds the decoder half only (decoder-only weight files).

    `frames_per_call` (a run-time setting, not part of the weights): latent frames the decoder takes per
    call after a stream's first frame. 1 is the reference's loop, bit-exact with ComfyUI's and the official
    decode; 3 decodes a whole 3-frame chunk per call, the same result up to float rounding (~1e-6), faster
    (~20% on CPU, fewer and larger kernels on GPU) at ~3x the peak activation memory.
    """

    def __init__(self, config: WanVAEConfig | None = None, with_encoder: bool = True, frames_per_call: int = 1):
        super().__init__()
        if int(frames_per_call) < 1:
            raise VAEError(f"frames_per_call must be >= 1 (1 = the reference per-frame loop), got {frames_per_call}")
        self.frames_per_call = int(frames_per_call)
        self.config = cfg = config or WanVAEConfig()
        if with_encoder:
            self.encoder = Encoder3d(cfg)
            self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)

    @property
    def has_encoder(self) -> bool:
        return hasattr(self, "encoder")

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    # -- decode --------------------------------------------------------------------------------------
    def decode_chunk(self, z: torch.Tensor, state: WanDecoderState | None = None
                     ) -> tuple[torch.Tensor, WanDecoderState]:
        """Model-space latents [B, 16, n, h, w] -> (frames [B, 3, 4n-3 or 4n, 8h, 8w] fp32 in [-1, 1], state)."""
        z = check_chunk(z)
        # denormalise in >= fp32 even for bf16 latents; the cast to the VAE's dtype comes after
        return self.decode_chunk_raw(denormalize(z.to(torch.promote_types(z.dtype, torch.float32))), state)

    def decode_chunk_raw(self, z_raw: torch.Tensor, state: WanDecoderState | None = None
                         ) -> tuple[torch.Tensor, WanDecoderState]:
        """As `decode_chunk`, on raw VAE latents."""
        z_raw = check_chunk(z_raw)
        if state is not None:
            if not isinstance(state, WanDecoderState):
                raise VAEError(f"WanVAE.decode_chunk: state must be a WanDecoderState from a previous call or None, "
                               f"got {type(state).__name__} (a state from another decoder type?)")
            check_continues(z_raw, state.batch, state.hw, "WanVAE")
        x = self.conv2(z_raw.to(device=self.device, dtype=self.dtype))
        caches = None if state is None else slots_on(state.caches, x.device)  # e.g. a session restored on CPU
        n, step = x.shape[2], self.frames_per_call
        # a stream's first latent frame always runs alone: it is the one not upsampled in time
        starts = ([0] if state is None else []) + list(range(0 if state is not None else 1, n, step))
        outs = []
        for s, e in zip(starts, starts[1:] + [n]):
            cur = CacheCursor(caches)
            outs.append(self.decoder(x[:, :, s:e], cur))
            caches = tuple(cur.new)
        frames = torch.cat(outs, dim=2).float().clamp(-1.0, 1.0)
        done = 0 if state is None else state.latent_frames
        assert frames.shape[2] == frames_out(x.shape[2], state is None)
        return frames, WanDecoderState(caches, done + x.shape[2], x.shape[0], (x.shape[3], x.shape[4]))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Full decode of model-space latents [B, 16, T, h, w] -> frames [B, 3, 4T-3, 8h, 8w] in [-1, 1]."""
        return self.decode_chunk(z)[0]

    def decode_raw(self, z_raw: torch.Tensor) -> torch.Tensor:
        return self.decode_chunk_raw(z_raw)[0]

    # -- encode --------------------------------------------------------------------------------------
    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, 1+4k, H, W] in [-1, 1] (H, W multiples of 8) -> raw latents (the mean) [B, 16, 1+k, H/8, W/8]."""
        if not self.has_encoder:
            raise VAEError("this WanVAE was loaded decoder-only (the file has no 'encoder.*' weights); "
                           "load the full Wan2.1_VAE.pth / wan_2.1_vae.safetensors to encode")
        if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise VAEError(f"video must be [B, 3, T, H, W] in [-1, 1], got {shape}")
        t, h, w = video.shape[2:]
        if (t - 1) % 4:
            lo = 1 + 4 * ((t - 1) // 4)
            raise VAEError(f"video has {t} frames; the Wan2.1 VAE encodes 1 + 4k frames: use {lo} or {lo + 4}")
        if h % 8 or w % 8:
            raise VAEError(f"video size {h}x{w} must be a multiple of 8 (e.g. {h - h % 8}x{w - w % 8})")
        x = video.to(device=self.device, dtype=self.dtype)
        caches, outs = None, []
        for s, e in [(0, 1)] + [(1 + 4 * i, 5 + 4 * i) for i in range((t - 1) // 4)]:
            cur = CacheCursor(caches)
            outs.append(self.encoder(x[:, :, s:e], cur))
            caches = tuple(cur.new)
        mu, _log_var = self.conv1(torch.cat(outs, dim=2)).chunk(2, dim=1)
        return mu

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, 1+4k, H, W] in [-1, 1] -> model-space latents [B, 16, 1+k, H/8, W/8] (fp32)."""
        return normalize(self.encode_raw(video).float())
