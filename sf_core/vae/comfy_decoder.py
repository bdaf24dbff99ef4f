"""Chunk decoder over ComfyUI's loaded Wan2.1 VAE (`comfy.sd.VAE`), duck-typed: no ComfyUI import.

ComfyUI's `WanVAE.decode` keeps its causal feature cache in a list local to one call. Streaming keeps our
own list across chunks and drives the decoder the same way (comfy_host.md §2.5):

    x = m.conv2(z_raw);  for j: m.decoder(x[:, :, j:j+1], feat_cache=feat, feat_idx=[0])

The decoder assigns into `feat` (never changes a cached tensor in place), so copying the list before each
chunk keeps a state immutable like the other decoders' states. Latents arrive in model space and are
denormalised here (ComfyUI's VAE works on raw latents).

Two host behaviours are handled by one code path:
- ComfyUI <= ~0.3.x: `Decoder3d` returns a tensor, and each causal conv pads a one-frame cache with the last
  frame of the cache before it, so a cache always holds the last two frames (`CACHE_T`).
- ComfyUI >= ~0.2x (checked on 0.27): `Decoder3d` returns a list of frame pieces, and a cache keeps only the
  frames of the last call (its own `decode` feeds frame 0, then pairs, so its caches hold two frames). Fed one
  frame at a time, a cache would hold one frame and the next call would pad a zero where the previous frame
  belongs. `_carry_history` restores the missing frame after every call, as the old host did inline, so a
  stream matches the host's own full decode whatever the chunk sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .latent import LATENT_CHANNELS, denormalize
from .protocol import (VAEError, check_chunk, check_continues, frames_out, slots_from_tensors, slots_on,
                       slots_to_tensors, state_nbytes)

COMFY_FIRST_FRAME = "Rep"  # ComfyUI's marker for a temporal upsampler that has passed frame 0


@dataclass(frozen=True)
class ComfyDecoderState:
    """ComfyUI's `feat_cache` list after `latent_frames` frames (tensors, None, or the marker "Rep")."""

    feat: tuple[Any, ...]
    latent_frames: int
    batch: int
    hw: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return state_nbytes(self.feat)

    def to_tensors(self, prefix: str = "comfy_vae.") -> dict[str, torch.Tensor]:
        d = slots_to_tensors(self.feat, prefix + "feat.", marker=COMFY_FIRST_FRAME)
        d[prefix + "meta"] = torch.tensor([self.latent_frames, self.batch, *self.hw], dtype=torch.int64)
        return d

    @classmethod
    def from_tensors(cls, d: dict[str, torch.Tensor], prefix: str = "comfy_vae.") -> "ComfyDecoderState":
        if prefix + "meta" not in d:
            raise VAEError(f"no ComfyUI VAE decoder state under '{prefix}' (key '{prefix}meta' missing)")
        frames, batch, h, w = (int(v) for v in d[prefix + "meta"].tolist())
        return cls(tuple(slots_from_tensors(d, prefix + "feat.", marker=COMFY_FIRST_FRAME)), frames, batch, (h, w))


CACHE_T = 2  # frames of history a causal conv of kernel 3 needs


def _cache_slot_count(module: torch.nn.Module) -> int:
    # ComfyUI sizes the cache list by counting its CausalConv3d modules (newer hosts also count temporal
    # downsamplers, which only the encoder has); we count them by class name.
    return sum(type(m).__name__ == "CausalConv3d"
               or (type(m).__name__ == "Resample" and getattr(m, "mode", None) == "downsample3d")
               for m in module.modules())


def _frames(out: Any) -> torch.Tensor:
    """A decoder call's output: a tensor (older hosts) or a list of frame pieces (newer hosts)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return torch.cat(list(out), dim=2)
    raise VAEError(f"ComfyUI's Wan VAE decoder returned {type(out).__name__} "
                   f"{'(empty)' if isinstance(out, (list, tuple)) and not out else ''}; expected a tensor or a "
                   "list of tensors (an unsupported ComfyUI version? please report it with your ComfyUI version)")


def _carry_history(before: list[Any], after: list[Any]) -> None:
    """After one decoder call: give each cache slot that kept fewer than CACHE_T frames the frames before it
    from the slot's previous tensor, and own every slot's memory (newer hosts cache views of activations)."""
    for i, (old, new) in enumerate(zip(before, after)):
        if not isinstance(new, torch.Tensor):
            continue
        if new.shape[2] < CACHE_T and isinstance(old, torch.Tensor) and old is not new:
            need = CACHE_T - new.shape[2]
            new = torch.cat([old[:, :, -need:].to(new.device, new.dtype), new], dim=2)
        elif new._base is not None or not new.is_contiguous():
            new = new.clone()
        after[i] = new


class ComfyWanDecoder:
    """Wraps a `comfy.sd.VAE` holding a Wan2.1 VAE (or its `first_stage_model`) as a chunk decoder.

    `prepare` is called before each decode, e.g. `lambda: comfy.model_management.load_models_gpu(
    [vae.patcher])` so ComfyUI moves the weights to the GPU first; without it the weights are used
    wherever they are. Frames come back fp32 in [-1, 1] on the VAE's device."""

    def __init__(self, vae: Any, prepare: Callable[[], Any] | None = None):
        model = getattr(vae, "first_stage_model", vae)
        if model is None or not (hasattr(model, "decoder") and hasattr(model, "conv2")):
            raise VAEError(f"expected ComfyUI's Wan2.1 VAE (comfy.sd.VAE with a first_stage_model that has "
                           f"'decoder' and 'conv2'), got {type(model).__name__}; load wan_2.1_vae.safetensors "
                           "with the VAELoader node")
        z_dim = model.conv2.weight.shape[0]
        if z_dim != LATENT_CHANNELS:
            raise VAEError(f"this VAE has {z_dim} latent channels; Self Forcing needs the Wan2.1 VAE (16), "
                           f"e.g. wan_2.1_vae.safetensors (48 channels = the Wan2.2 VAE)")
        self.vae, self.model, self.prepare = vae, model, prepare
        self.num_slots = _cache_slot_count(model.decoder)
        weight = model.conv2.weight
        self.dtype = getattr(vae, "vae_dtype", None) or weight.dtype
        self.device = torch.device(getattr(vae, "device", None) or weight.device)

    def decode_chunk(self, z: torch.Tensor, state: ComfyDecoderState | None = None
                     ) -> tuple[torch.Tensor, ComfyDecoderState]:
        """Model-space latents [B, 16, n, h, w] -> (frames [B, 3, 4n-3 or 4n, 8h, 8w] fp32 in [-1, 1], state)."""
        z = check_chunk(z)
        if state is not None:
            if not isinstance(state, ComfyDecoderState):
                raise VAEError(f"ComfyWanDecoder.decode_chunk: state must be a ComfyDecoderState or None, got "
                               f"{type(state).__name__} (a state from another decoder type?)")
            check_continues(z, state.batch, state.hw, "ComfyWanDecoder")
        if self.prepare is not None:
            self.prepare()
        device = self.model.conv2.weight.device  # where ComfyUI put the weights (after prepare)
        z = z.to(torch.promote_types(z.dtype, torch.float32))  # denormalise in >= fp32, then cast
        x = self.model.conv2(denormalize(z).to(device=device, dtype=self.dtype))
        feat = [None] * self.num_slots if state is None else list(slots_on(state.feat, device))
        outs = []
        for j in range(x.shape[2]):
            before = list(feat)
            outs.append(_frames(self.model.decoder(x[:, :, j:j + 1], feat_cache=feat, feat_idx=[0])))
            _carry_history(before, feat)
        frames = torch.cat(outs, dim=2).float().clamp(-1.0, 1.0)
        assert frames.shape[2] == frames_out(x.shape[2], state is None)
        done = 0 if state is None else state.latent_frames
        return frames, ComfyDecoderState(tuple(feat), done + x.shape[2], x.shape[0], (x.shape[3], x.shape[4]))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Full decode through ComfyUI's own `WanVAE.decode` (model-space latents in)."""
        z = check_chunk(z)
        if self.prepare is not None:
            self.prepare()
        device = self.model.conv2.weight.device
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        return self.model.decode(denormalize(z).to(device=device, dtype=self.dtype)).float().clamp(-1.0, 1.0)
