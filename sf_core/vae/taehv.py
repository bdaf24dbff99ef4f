"""TAEHV ("tiny autoencoder for Hunyuan Video", madebyollin/taehv, MIT): a fast preview decoder for Wan2.1.

Our own implementation of the decoder half of `taew2_1.pth` / `taew2_1.safetensors` (the weights are the
user's, e.g. from ComfyUI's `models/vae_approx`). Parameter names are the checkpoint's: `decoder.{i}.*`
with i the position in this layer list (16 latent channels, widths 256/128/64/64 in the real file):

    0 Clamp  1 conv 16->w0  2 ReLU  3-5 MemBlock(w0)  6 Upsample 2x  7 TGrow(w0, 1)  8 conv w0->w1
    9-11 MemBlock(w1)  12 Upsample 2x  13 TGrow(w1, 2)  14 conv w1->w2
    15-17 MemBlock(w2)  18 Upsample 2x  19 TGrow(w2, 2)  20 conv w2->w3  21 ReLU  22 conv w3->3

Every layer is per-frame except MemBlock (which also sees its own input one frame earlier, zeros before the
first frame) and TGrow (1x1 conv whose channel groups become `stride` consecutive frames). So the decoder
is causal with one frame of memory per MemBlock: `decode_chunk` carries exactly those frames in a
`TAEHVState`, and streamed chunks equal a full decode. TAEHV decodes model-space latents directly (it was
trained on the normalised latents the diffusion model uses) and gives 4 frames per latent frame; the
first 3 frames of a stream are dropped, as in TAEHV's own `decode_video`, to line up with the Wan VAE
(first chunk 4n-3 frames, later chunks 4n). Output in TAEHV's [0, 1] range is mapped to [-1, 1].
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .latent import LATENT_CHANNELS
from .protocol import (TIME_UPSCALE, VAEError, check_chunk, check_continues, frames_out, slots_from_tensors,
                       slots_on, slots_to_tensors, state_nbytes)

WIDTHS = (256, 128, 64, 64)  # the real taew2_1 decoder
TIME_STRIDES = (1, 2, 2)


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the input latents to (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """relu(convs(cat(x_t, x_{t-1})) + skip(x_t)); keys conv.0/.2/.4 (+ skip when widths differ)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in * 2, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(),
                                  _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(torch.cat([x, past], dim=1)) + self.skip(x))


class TGrow(nn.Module):
    """Temporal upsampling: a 1x1 conv to stride·C channels, group k becoming frame k of each input frame."""

    def __init__(self, n_f: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f, n_f * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        return self.conv(x).reshape(nt * self.stride, c, h, w)


@dataclass(frozen=True)
class TAEHVState:
    """A TAEHV decode stream: the last input frame of every MemBlock ([B, C, h', w'] each, in layer order)."""

    memory: tuple[torch.Tensor, ...]
    latent_frames: int
    batch: int
    hw: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return state_nbytes(self.memory)

    def detach(self) -> "TAEHVState":
        return dataclasses.replace(self, memory=tuple(m.detach() for m in self.memory))

    def to_tensors(self, prefix: str = "taehv.") -> dict[str, torch.Tensor]:
        d = slots_to_tensors(self.memory, prefix + "mem.")
        d[prefix + "meta"] = torch.tensor([self.latent_frames, self.batch, *self.hw], dtype=torch.int64)
        return d

    @classmethod
    def from_tensors(cls, d: dict[str, torch.Tensor], prefix: str = "taehv.") -> "TAEHVState":
        if prefix + "meta" not in d:
            raise VAEError(f"no TAEHV decoder state under '{prefix}' (key '{prefix}meta' missing)")
        frames, batch, h, w = (int(v) for v in d[prefix + "meta"].tolist())
        return cls(tuple(slots_from_tensors(d, prefix + "mem.")), frames, batch, (h, w))


class TAEHV(nn.Module):
    """TAEHV decoder for Wan2.1 latents; a chunk decoder (`sf_core.vae.protocol`)."""

    def __init__(self, widths: tuple[int, int, int, int] = WIDTHS, time_strides: tuple[int, int, int] = TIME_STRIDES,
                 latent_channels: int = LATENT_CHANNELS):
        super().__init__()
        if latent_channels != LATENT_CHANNELS:
            raise VAEError(f"TAEHV for Wan2.1 takes {LATENT_CHANNELS} latent channels, got {latent_channels}")
        up = 1
        for s in time_strides:
            up *= s
        if up != TIME_UPSCALE or len(time_strides) != 3:
            raise VAEError(f"TAEHV time strides {tuple(time_strides)} give {up}x frames; the Wan2.1 stream "
                           f"protocol needs {TIME_UPSCALE}x, e.g. (1, 2, 2) as in taew2_1")
        w0, w1, w2, w3 = widths
        s0, s1, s2 = time_strides
        self.widths, self.time_strides = tuple(widths), tuple(time_strides)
        self.decoder = nn.Sequential(
            Clamp(), _conv(latent_channels, w0), nn.ReLU(),
            MemBlock(w0, w0), MemBlock(w0, w0), MemBlock(w0, w0), nn.Upsample(scale_factor=2), TGrow(w0, s0),
            _conv(w0, w1, bias=False),
            MemBlock(w1, w1), MemBlock(w1, w1), MemBlock(w1, w1), nn.Upsample(scale_factor=2), TGrow(w1, s1),
            _conv(w1, w2, bias=False),
            MemBlock(w2, w2), MemBlock(w2, w2), MemBlock(w2, w2), nn.Upsample(scale_factor=2), TGrow(w2, s2),
            _conv(w2, w3, bias=False), nn.ReLU(), _conv(w3, 3))

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder[1].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder[1].weight.device

    def decode_chunk(self, z: torch.Tensor, state: TAEHVState | None = None) -> tuple[torch.Tensor, TAEHVState]:
        """Model-space latents [B, 16, n, h, w] -> (frames [B, 3, 4n-3 or 4n, 8h, 8w] fp32 in [-1, 1], state).

        All n frames go through each layer at once (time folded into the batch); a MemBlock's past is its
        input shifted by one frame, the first slot filled from `state` (zeros at stream start)."""
        z = check_chunk(z)
        if state is not None:
            if not isinstance(state, TAEHVState):
                raise VAEError(f"TAEHV.decode_chunk: state must be a TAEHVState from a previous call or None, "
                               f"got {type(state).__name__} (a state from another decoder type?)")
            check_continues(z, state.batch, state.hw, "TAEHV")
        b, _, n, h, w = z.shape
        x = z.to(device=self.device, dtype=self.dtype).permute(0, 2, 1, 3, 4).reshape(b * n, -1, h, w)
        memory = None if state is None else slots_on(state.memory, x.device)
        t, new_memory, k = n, [], 0
        for layer in self.decoder:
            if isinstance(layer, MemBlock):
                frames = x.reshape(b, t, *x.shape[1:])
                first = (torch.zeros_like(frames[:, :1]) if state is None
                         else memory[k].to(x.dtype).unsqueeze(1))
                past = torch.cat([first, frames[:, :-1]], dim=1).reshape(x.shape)
                new_memory.append(frames[:, -1].clone())
                x, k = layer(x, past), k + 1
            else:
                x = layer(x)
                if isinstance(layer, TGrow):
                    t *= layer.stride
        out = x.reshape(b, t, *x.shape[1:]).float().clamp(0.0, 1.0).mul(2.0).sub(1.0)
        if state is None:
            out = out[:, TIME_UPSCALE - 1:]
        out = out.permute(0, 2, 1, 3, 4)
        assert out.shape[2] == frames_out(n, state is None)
        done = 0 if state is None else state.latent_frames
        return out, TAEHVState(tuple(new_memory), done + n, b, (h, w))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Full decode of model-space latents [B, 16, T, h, w] -> [B, 3, 4T-3, 8h, 8w] in [-1, 1]."""
        return self.decode_chunk(z)[0]
