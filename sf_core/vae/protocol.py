"""The chunk-decoder protocol every decoder of the pack follows, and helpers shared by the implementations.

A *chunk decoder* turns model-space (normalised) Wan2.1 latents into frames, a chunk at a time:

    frames, state = decoder.decode_chunk(z, state)   # z [B, 16, n, h, w]; state=None starts a stream
    frames = decoder.decode(z)                       # the whole video at once

`frames` is `[B, 3, T, 8h, 8w]` float32 in [-1, 1] on the decoder's device. The first chunk of a stream
gives `4n - 3` frames (latent frame 0 decodes to one frame), every later chunk `4n`: chunks of 3 latent
frames give 9, 12, 12, ...; frame-wise chunks give 1, 4, 4, .... Concatenating a stream's frames along
T equals `decode` of the concatenated latents. A state is an immutable value: decoding from it never
changes it, so two streams can share one decoder and a chunk can be decoded again from the same state.
States hold a bounded number of frames per layer, so memory does not grow with the video.

Implementations: `WanVAE` (our Wan2.1 VAE), `ComfyWanDecoder` (ComfyUI's loaded VAE), `TAEHV`.
"""
from __future__ import annotations

from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import torch

from .latent import LATENT_CHANNELS

TIME_UPSCALE = 4  # every Wan2.1 decoder here turns one latent frame into 4 frames (the first into 1)
SPACE_UPSCALE = 8


class VAEError(ValueError):
    """Bad input at the VAE boundary: a wrong file, latent shape or stream state. The message names the
    bad value, what is allowed and how to fix it."""


@runtime_checkable
class ChunkDecoder(Protocol):
    def decode_chunk(self, z: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


def frames_out(latent_frames: int, first: bool) -> int:
    """Frames a chunk of `latent_frames` decodes to: 4n - 3 for the first chunk of a stream, else 4n."""
    return TIME_UPSCALE * latent_frames - (TIME_UPSCALE - 1 if first else 0)


def check_chunk(z: Any, what: str = "latent chunk") -> torch.Tensor:
    """Validate a model-space latent chunk `[B, 16, n, h, w]` and return it."""
    if not isinstance(z, torch.Tensor):
        raise VAEError(f"{what} must be a torch.Tensor [B, 16, n, h, w], got {type(z).__name__}")
    if z.ndim != 5:
        raise VAEError(f"{what} must be 5-D [B, 16, n, h, w] (channels before frames), got shape "
                       f"{tuple(z.shape)}; a 4-D image latent needs a frame axis: z.unsqueeze(2)")
    if z.shape[1] != LATENT_CHANNELS:
        hint = (" ([B, n, 16, h, w] given? permute to channels-first: z.permute(0, 2, 1, 3, 4))"
                if z.shape[2] == LATENT_CHANNELS else
                " (48 channels are Wan2.2-TI2V-5B latents, which need the Wan2.2 VAE)" if z.shape[1] == 48 else "")
        raise VAEError(f"{what} has {z.shape[1]} channels on dim 1; Wan2.1 latents have {LATENT_CHANNELS}{hint}")
    if min(z.shape) < 1:
        raise VAEError(f"{what} is empty: shape {tuple(z.shape)}; every dim must be >= 1")
    if not z.is_floating_point():
        raise VAEError(f"{what} must be a floating-point tensor, got {z.dtype}")
    return z


def check_continues(z: torch.Tensor, batch: int, hw: tuple[int, int], decoder: str) -> None:
    """A later chunk must have the batch size and spatial size the stream started with."""
    if z.shape[0] != batch or tuple(z.shape[3:]) != tuple(hw):
        raise VAEError(f"{decoder}: this chunk is [B={z.shape[0]}, h={z.shape[3]}, w={z.shape[4]}] but the stream "
                       f"state was started with [B={batch}, h={hw[0]}, w={hw[1]}]; continue a stream with chunks "
                       "of the same batch and size, or pass state=None to start a new one")


def decode_stream(decoder: ChunkDecoder, z: torch.Tensor, chunk_sizes: Sequence[int] | int,
                  state: Any = None) -> tuple[list[torch.Tensor], Any]:
    """Decode `z` [B, 16, T, h, w] chunk by chunk; `chunk_sizes` is a list of sizes summing to T, or one
    size (the last chunk takes the remainder). Returns (per-chunk frames, final state)."""
    total = z.shape[2]
    if isinstance(chunk_sizes, int):
        if chunk_sizes < 1:
            raise VAEError(f"chunk size must be >= 1, got {chunk_sizes}")
        chunk_sizes = [min(chunk_sizes, total - s) for s in range(0, total, chunk_sizes)]
    if sum(chunk_sizes) != total or min(chunk_sizes) < 1:
        raise VAEError(f"chunk sizes {list(chunk_sizes)} must be >= 1 and sum to the {total} latent frames")
    out, start = [], 0
    for n in chunk_sizes:
        frames, state = decoder.decode_chunk(z[:, :, start:start + n], state)
        out.append(frames)
        start += n
    return out, state


# -- state serialisation (sessions store decoder states in safetensors files) ---------------------------
# A state is a list of slots; each slot is None (unused yet), a tensor, or the marker FIRST_FRAME_DONE
# (a temporal upsampler that has passed the first frame, which it does not upsample in time).

class _FirstFrameDone:
    def __repr__(self) -> str:
        return "FIRST_FRAME_DONE"


FIRST_FRAME_DONE = _FirstFrameDone()


def slots_to_tensors(slots: Iterable[Any], prefix: str, marker: Any = FIRST_FRAME_DONE) -> dict[str, torch.Tensor]:
    """Flatten state slots to `{f"{prefix}{i}": tensor}`; `marker` slots become a 0-element int8 tensor,
    None slots are left out, `f"{prefix}n"` records the slot count."""
    slots = list(slots)
    out = {f"{prefix}n": torch.tensor(len(slots), dtype=torch.int64)}
    for i, s in enumerate(slots):
        if s is None:
            continue
        if s is marker or (isinstance(s, str) and s == marker):
            out[f"{prefix}{i}"] = torch.zeros(0, dtype=torch.int8)
        elif isinstance(s, torch.Tensor):
            out[f"{prefix}{i}"] = s.detach().contiguous()
        else:
            raise VAEError(f"state slot {i} holds a {type(s).__name__}; only tensors and the marker serialise")
    return out


def slots_from_tensors(d: dict[str, torch.Tensor], prefix: str, marker: Any = FIRST_FRAME_DONE) -> list[Any]:
    """Inverse of `slots_to_tensors`."""
    if f"{prefix}n" not in d:
        raise VAEError(f"no decoder state under '{prefix}' (key '{prefix}n' missing); keys start with "
                       f"{sorted({k.split('.')[0] for k in d})[:8]}")
    slots: list[Any] = [None] * int(d[f"{prefix}n"])
    for i in range(len(slots)):
        t = d.get(f"{prefix}{i}")
        if t is not None:
            slots[i] = marker if (t.numel() == 0 and t.dtype == torch.int8) else t
    return slots


def slots_on(slots: tuple[Any, ...], device: torch.device) -> tuple[Any, ...]:
    """The slots with every tensor on `device` (the same tuple when they already are: no copies)."""
    if all(not isinstance(s, torch.Tensor) or s.device == device for s in slots):
        return slots
    return tuple(s.to(device) if isinstance(s, torch.Tensor) else s for s in slots)


def state_nbytes(slots: Iterable[Any]) -> int:
    """Bytes held by the tensors of a state (the memory a stream carries between chunks)."""
    return sum(s.numel() * s.element_size() for s in slots if isinstance(s, torch.Tensor))
