"""The denoiser wrapper: owns the parameterisation (velocity -> x0, timestep -> sigma, CFG).

The same object serves the causal sampler (with a KV cache) and the DMD / critic losses (bidirectional
score networks, no cache). Latents are [B, C, F, H, W] in the normalised latent space; timesteps are per
frame [B, F] (or a scalar / [B]) on the 0..1000 scale.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..model.attention import BlockCausalMask
from ..model.forward import flow_to_x0, model_dims, wan_forward, wan_forward_merged
from ..cache.kv_cache import KVCache
from .schedule import FlowSchedule


def frame_timesteps(t, batch: int, frames: int, device, dtype=torch.float32) -> torch.Tensor:
    """Broadcast a scalar / [B] / [B, F] timestep to [B, F]."""
    t = torch.as_tensor(t, dtype=dtype, device=device)
    if t.ndim == 0:
        return t.expand(batch, frames)
    if t.ndim == 1:
        return t[:, None].expand(batch, frames)
    return t


@dataclass
class Denoiser:
    """x0 prediction of a Wan transformer.

    model: a Wan module tree (ours or ComfyUI's). schedule: the grid used to turn t into sigma (shift 5
    for a Self Forcing generator; the official score wrappers use 8). context / negative: text embeddings
    [B, L, text_dim]; guidance > 0 applies CFG in x0 space: x0_c + guidance * (x0_c - x0_u).

    partial / partial_guidance: a second contrast, against the prompt with the words to amplify left out
    ("a red square" for "a red square moving left fast"): x0 + partial_guidance * (x0_c - x0_partial) is added
    on top of CFG, so only what those words change is pushed further (one more forward when nonzero).
    """

    model: object
    schedule: FlowSchedule
    context: torch.Tensor
    negative: torch.Tensor | None = None
    guidance: float = 0.0
    dtype: torch.dtype | None = None
    partial: torch.Tensor | None = None
    partial_guidance: float = 0.0
    backend: str = "sdpa"
    checkpoint: bool = False
    extra: dict = field(default_factory=dict)

    def flow(self, x: torch.Tensor, t: torch.Tensor, *, context: torch.Tensor | None = None,
             cache: KVCache | None = None, start_frame: int = 0, mask: BlockCausalMask | None = None,
             need_output: bool = True) -> torch.Tensor | None:
        ctx = self.context if context is None else context
        return wan_forward(self.model, x, t, ctx, cache=cache, start_frame=start_frame, mask=mask,
                           backend=self.backend, checkpoint=self.checkpoint, dtype=self.dtype,
                           need_output=need_output)

    def __call__(self, x: torch.Tensor, t, *, cache: KVCache | None = None, start_frame: int = 0,
                 mask: BlockCausalMask | None = None) -> torch.Tensor:
        """x0 of latents x [B, C, F, H, W] at timesteps t."""
        b, _, f = x.shape[:3]
        t = frame_timesteps(t, b, f, x.device)
        sigma = self.schedule.sigma(t)
        x0 = xc = flow_to_x0(x, self.flow(x, t, cache=cache, start_frame=start_frame, mask=mask), sigma)
        for w, other, what in ((self.guidance, self.negative, "negative (unconditional)"),
                               (self.partial_guidance, self.partial, "partial-prompt")):
            if not w:
                continue
            if other is None:
                raise ValueError(f"a guidance weight > 0 needs {what} text embeddings")
            if cache is not None:
                raise ValueError("guidance with a KV cache is not supported: the cache holds one condition")
            x0 = x0 + w * (xc - flow_to_x0(x, self.flow(x, t, context=other, mask=mask), sigma))
        return x0

    def can_merge(self, cache: KVCache, prev_start: int, prev_frames: int, start_frame: int, frames: int) -> bool:
        """Whether `merged` can commit the finished chunk at `prev_start` inside the next chunk's first call."""
        return (not self.guidance and not self.partial_guidance and model_dims(self.model)[3][0] == 1
                and start_frame == prev_start + prev_frames
                and cache.mergeable(prev_start, prev_frames, frames))

    def merged(self, x_prev: torch.Tensor, prev_start: int, x: torch.Tensor, t, *, cache: KVCache, start_frame: int,
               t_prev=0.0) -> torch.Tensor:
        """Commit the finished chunk x_prev (at `prev_start`, timestep t_prev) and return x0 of the next chunk x at
        t, in one forward (`sf_core.cache.kv_merge`; check `can_merge` first)."""
        n, m = x_prev.shape[2], x.shape[2]
        if not self.can_merge(cache, prev_start, n, start_frame, m):
            raise ValueError(f"the chunk at frame {prev_start} cannot be committed by a merged call here "
                             f"(check Denoiser.can_merge first)")
        b = x.shape[0]
        tn = frame_timesteps(t, b, m, x.device)
        tt = torch.cat([frame_timesteps(t_prev, b, n, x.device), tn], dim=1)
        flow = wan_forward_merged(self.model, torch.cat([x_prev.to(x.dtype), x], dim=2), tt, self.context,
                                  cache=cache, start_frame=prev_start, commit_frames=n, backend=self.backend,
                                  dtype=self.dtype)
        return flow_to_x0(x, flow, self.schedule.sigma(tn))

    def commit(self, x0: torch.Tensor, cache: KVCache, start_frame: int, t=0.0) -> None:
        """The context pass: run the finished chunk at timestep t (0 = clean) to write its K/V to the cache.

        Its output is not needed, so the last block's FFN and the head are skipped.
        """
        b, _, f = x0.shape[:3]
        self.flow(x0, frame_timesteps(t, b, f, x0.device), cache=cache, start_frame=start_frame,
                  need_output=False)
