"""The Wan2.1 text-to-video transformer as a plain `nn.Module` with Wan2.1 state-dict names.

This file only declares parameters; the computation lives in `forward.py` as functions over a module
tree of this shape, so that the same causal forward also runs on ComfyUI's `comfy.ldm.wan.model.WanModel`
(same submodule names). One definition serves the 1.3B and 14B models and any tiny config, as a causal
generator (KV cache or block-causal mask) or as a bidirectional teacher / critic (no mask).

Weights may be stored in a lower precision than the compute dtype (fp8 e4m3fn, fp16, bf16): every layer
casts its weights to the dtype of its input, one layer at a time.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import WanConfig


class CastLinear(nn.Linear):
    """nn.Linear that casts its (possibly fp8-stored) weight and bias to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        b = self.bias if self.bias is None or self.bias.dtype == x.dtype else self.bias.to(x.dtype)
        return F.linear(x, w, b)


class CastConv3d(nn.Conv3d):
    """nn.Conv3d that casts its weight and bias to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, w, b)


class RMSNorm(nn.Module):
    """RMS norm over the full feature dim, computed in float32 (Wan's `WanRMSNorm`)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).type_as(x)
        return y * self.weight.to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32, returned in the input dtype (affine or not)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


class Attention(nn.Module):
    """q, k, v, o projections with RMS-normed q and k (self- and cross-attention share this layout)."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = CastLinear(dim, dim)
        self.k = CastLinear(dim, dim)
        self.v = CastLinear(dim, dim)
        self.o = CastLinear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)


class Block(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.self_attn = Attention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm3 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True)
        self.cross_attn = Attention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm2 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(CastLinear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 CastLinear(cfg.ffn_dim, cfg.dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, cfg.dim))

    def forward(self, *args, **kwargs):
        """`forward.block_forward` on this block. `wan_forward` calls the module (not the function) for our
        blocks so that module hooks see each block -- FSDP2 unshards a sharded block in its forward hook."""
        from .forward import block_forward  # local import keeps the module graph acyclic

        return block_forward(self, *args, **kwargs)


class Head(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = CastLinear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))


class WanTransformer(nn.Module):
    """Wan2.1 T2V transformer. `forward` is the bidirectional / masked / cached forward of `forward.py`."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.config = cfg
        # Attribute names shared with ComfyUI's WanModel, read by forward.py.
        self.dim, self.num_heads, self.freq_dim = cfg.dim, cfg.num_heads, cfg.freq_dim
        self.text_len, self.out_dim, self.patch_size = cfg.text_len, cfg.out_dim, cfg.patch_size
        self.patch_embedding = CastConv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(CastLinear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"),
                                            CastLinear(cfg.dim, cfg.dim))
        self.time_embedding = nn.Sequential(CastLinear(cfg.freq_dim, cfg.dim), nn.SiLU(),
                                            CastLinear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), CastLinear(cfg.dim, 6 * cfg.dim))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])
        self.head = Head(cfg)
        self.gradient_checkpointing = False

    def init_weights(self) -> "WanTransformer":
        """Wan's initialisation: xavier-uniform matrices, zero biases, N(0, 0.02) embeddings, zero head."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.patch_embedding.bias)
        for seq in (self.text_embedding, self.time_embedding):
            for m in seq.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
        for blk in self.blocks:
            nn.init.normal_(blk.modulation, std=self.dim ** -0.5)
        nn.init.normal_(self.head.modulation, std=self.dim ** -0.5)
        nn.init.zeros_(self.head.head.weight)
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, **kw) -> torch.Tensor:
        from .forward import wan_forward  # local import keeps the module graph acyclic

        kw.setdefault("checkpoint", self.gradient_checkpointing)
        return wan_forward(self, x, t, context, **kw)


def expected_shapes(cfg: WanConfig) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of a model of this config, without building it."""
    with torch.device("meta"):
        m = WanTransformer(cfg)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def randomize_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter with seeded non-trivial values (tests and benchmarks).

    Wan zero-initialises its output head, so a stock model outputs a constant and any parity test against
    it passes vacuously. Scheme (as the reference fixtures): norm weights 1 + 0.1 N, 1-D biases 0.05 N,
    modulations 0.2 N, matrices N / sqrt(fan_in).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("modulation"):
                val = 0.2 * r
            elif p.ndim == 1 and ("norm" in name) and name.endswith("weight"):
                val = 1 + 0.1 * r
            elif p.ndim == 1:
                val = 0.05 * r
            else:
                val = r / math.sqrt(p[0].numel())
            p.copy_(val.to(p.dtype))
    return model
