"""Helpers shared by the session / prompt / sampler / CLI tests: tiny models, conditionings, a test decoder."""
from __future__ import annotations

import torch

from sf_core.config import WanConfig
from sf_core.model.transformer import WanTransformer, randomize_weights

HW = (4, 6)  # latent size: 2x3 tokens per frame, H != W




def tiny_model(seed: int = 0, **overrides) -> WanTransformer:
    cfg = WanConfig(**{**WanConfig.tiny().to_dict(), **overrides})
    return randomize_weights(WanTransformer(cfg), seed).eval()


def conditioning(seed: int, length: int = 5, width: int = 32, batch: int = 1) -> torch.Tensor:
    """Text-embedding-like conditioning [batch, length, width]; scaled so prompts clearly matter."""
    g = torch.Generator().manual_seed(1000 + seed)
    return 3 * torch.randn(batch, length, width, generator=g)


class StubDecoder:
    """A random-weight causal chunk decoder following the chunk-decoder protocol (Wan-like in time).

    Latent frame 0 -> 1 video frame, every later latent frame -> 4; each output frame mixes its latent
    frame with the previous one, so the stream needs its state (the last latent frame) to match `decode`.
    Spatial upsampling x2. Frames are in [-1, 1].
    """

    def __init__(self, channels: int = 16, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.w_cur = torch.randn(3, channels, generator=g) / channels ** 0.5
        self.w_prev = torch.randn(3, channels, generator=g) / channels ** 0.5
        self.phase = torch.linspace(-0.5, 0.5, 4)

    def _frames(self, z: torch.Tensor, prev: torch.Tensor | None, first: bool) -> torch.Tensor:
        out = []
        for j in range(z.shape[2]):
            cur = torch.einsum("oc,bchw->bohw", self.w_cur, z[:, :, j].float())
            p = prev if prev is not None else torch.zeros_like(z[:, :, j])
            mix = cur + torch.einsum("oc,bchw->bohw", self.w_prev, p.float())
            reps = 1 if (first and j == 0) else 4
            for r in range(reps):
                out.append(torch.tanh(mix + self.phase[r] if reps == 4 else mix))
            prev = z[:, :, j]
        video = torch.stack(out, dim=2)
        return video.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)

    def decode_chunk(self, z: torch.Tensor, state=None):
        first = state is None
        prev = None if first else state["prev"]
        frames = self._frames(z, prev, first)
        return frames, {"prev": z[:, :, -1].clone(), "count": (0 if first else state["count"]) + z.shape[2]}

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._frames(z, None, True)
