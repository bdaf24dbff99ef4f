"""Frozen, validated configuration for the causal Wan2.1 transformer.

`WanConfig` describes the weights (it is what a checkpoint stores). `CausalConfig` describes how the
causal model is *run* (chunking, attention window, sink) and is independent of the weights: the same
1.3B file can run chunk-wise, frame-wise, with a global or a rolling cache.

Both serialise to a flat JSON string stored in the metadata of every file we write.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping

ROPE_MAX_POSITIONS = 1024  # Wan builds its RoPE tables for 1024 positions per axis.


class ConfigError(ValueError):
    """A configuration value is out of range or contradicts the weights."""


@dataclass(frozen=True)
class WanConfig:
    """Shape of a Wan2.1 text-to-video transformer (Wan2.1 names, Wan2.1 defaults of the 1.3B model)."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        for name in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim",
                     "text_len", "freq_dim"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"WanConfig.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.num_heads:
            raise ConfigError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ConfigError(f"head_dim={self.head_dim} must be even and >= 6 for 3-D RoPE")
        if self.freq_dim % 2:
            raise ConfigError(f"freq_dim={self.freq_dim} must be even")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ConfigError(f"patch_size must be 3 positive ints, got {self.patch_size}")
        if not (self.qk_norm and self.cross_attn_norm):
            raise ConfigError("only qk_norm=True and cross_attn_norm=True (as in every Wan2.1 T2V model) "
                              "are supported")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Complex pairs given to the (time, height, width) axes of RoPE: [c-2(c//3) | c//3 | c//3]."""
        c = self.head_dim // 2
        return (c - 2 * (c // 3), c // 3, c // 3)

    def tokens_per_frame(self, height: int, width: int) -> int:
        """Tokens of one latent frame of size (height, width)."""
        _, ph, pw = self.patch_size
        if height % ph or width % pw:
            raise ConfigError(f"latent size {height}x{width} is not divisible by the patch {ph}x{pw}")
        return (height // ph) * (width // pw)

    # -- presets --------------------------------------------------------------------------------
    @classmethod
    def wan_1_3b(cls) -> "WanConfig":
        return cls()

    @classmethod
    def wan_14b(cls) -> "WanConfig":
        return cls(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)

    @classmethod
    def tiny(cls) -> "WanConfig":
        """The size of the official tiny fixture: 2 layers, dim 64, 2 heads, text_dim 32."""
        return cls(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=16)

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WanConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - _IGNORED_KEYS)
        if unknown:
            raise ConfigError(f"unknown WanConfig fields {unknown}; known fields are {sorted(known)}")
        kw = {k: v for k, v in d.items() if k in known}
        if "patch_size" in kw:
            kw["patch_size"] = tuple(kw["patch_size"])
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "WanConfig":
        return cls.from_dict(json.loads(s))


# Keys that appear in the reference `tiny_config` / Wan config.json but carry no shape information.
_IGNORED_KEYS = {"model_type", "window_size", "_class_name", "_diffusers_version", "local_attn_size",
                 "sink_size"}


@dataclass(frozen=True)
class CausalConfig:
    """How the causal model is run. Sizes are in latent frames.

    chunk_frames: frames denoised together (3 = chunk-wise Self Forcing, 1 = frame-wise).
    independent_first_frame: the first chunk is a single frame (image-conditioned variants).
    window_frames: frames the rolling KV cache keeps, sink included; None = global (no eviction).
    sink_frames: first frames that are never evicted (attention sink).
    """

    chunk_frames: int = 3
    independent_first_frame: bool = False
    window_frames: int | None = None
    sink_frames: int = 0

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise ConfigError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        if self.sink_frames < 0:
            raise ConfigError(f"sink_frames must be >= 0, got {self.sink_frames}")
        if self.window_frames is not None:
            need = self.chunk_frames + self.sink_frames
            if self.window_frames < need:
                raise ConfigError(
                    f"window_frames={self.window_frames} is smaller than chunk_frames + sink_frames = {need}: "
                    f"the window must hold the chunk being generated plus the sink; use window_frames >= {need} "
                    f"(or window_frames=None for a global cache)")
        elif self.sink_frames:
            raise ConfigError("sink_frames only makes sense with a rolling window: set window_frames too")

    @property
    def rolling(self) -> bool:
        return self.window_frames is not None

    def chunk_bounds(self, num_frames: int) -> list[tuple[int, int]]:
        """[(start, end)] frame ranges of the chunks of a video of `num_frames` latent frames."""
        return plan_chunks(self, 0, num_frames=num_frames)

    def chunk_size(self, start_frame: int) -> int:
        """Latent frames of the chunk that starts at `start_frame`."""
        return 1 if (self.independent_first_frame and start_frame == 0) else self.chunk_frames

    def on_boundary(self, frame: int) -> bool:
        """Whether a chunk can start at latent frame `frame`."""
        first = 1 if self.independent_first_frame else 0
        return frame == 0 or (frame >= first and (frame - first) % self.chunk_frames == 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CausalConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def plan_chunks(causal: CausalConfig, start_frame: int = 0, num_frames: int | None = None,
                num_chunks: int | None = None) -> list[tuple[int, int]]:
    """The one chunk planner: [(start, end)] latent-frame ranges of the next chunks from `start_frame`.

    Give exactly one of `num_frames` (must split into whole chunks) or `num_chunks`. `start_frame` must be a
    chunk boundary (0, or after the independent first frame, a multiple of chunk_frames past it).
    """
    if (num_frames is None) == (num_chunks is None):
        raise ConfigError("give exactly one of num_frames (latent frames) or num_chunks")
    if start_frame < 0 or not causal.on_boundary(start_frame):
        raise ConfigError(f"latent frame {start_frame} is not a chunk boundary for chunks of {causal.chunk_frames}"
                          f"{' after an independent first frame' if causal.independent_first_frame else ''}")
    if num_chunks is not None:
        if num_chunks < 1:
            raise ConfigError(f"num_chunks must be >= 1, got {num_chunks}")
        count = int(num_chunks)
    else:
        if num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1 latent frame, got {num_frames}")
        first = causal.chunk_size(start_frame) if start_frame == 0 else causal.chunk_frames
        rest = int(num_frames) - first
        if rest < 0 or rest % causal.chunk_frames:
            if start_frame == 0:
                raise ConfigError(valid_length_message(int(num_frames), causal))
            n = causal.chunk_frames
            lo, hi = max(n, num_frames // n * n), (num_frames // n + 1) * n
            raise ConfigError(f"a continuation of {num_frames} latent frames cannot be split into chunks of {n}; "
                              f"nearest valid lengths: {lo} or {hi} latent frames")
        count = 1 + rest // causal.chunk_frames
    bounds, s = [], int(start_frame)
    for _ in range(count):
        n = causal.chunk_size(s)
        bounds.append((s, s + n))
        s += n
    return bounds


def valid_length_message(num_frames: int, causal: CausalConfig) -> str:
    """Error text for a latent length that the chunking cannot split, naming the nearest valid lengths."""
    first = 1 if causal.independent_first_frame else 0
    n = causal.chunk_frames
    lo = first + max(0, (num_frames - first) // n) * n
    hi = lo + n
    lo = max(lo, first + n)
    frames = lambda f: 4 * f - 3  # noqa: E731 - pixel frames of the Wan VAE
    return (f"{num_frames} latent frames cannot be split into chunks of {n}"
            f"{' after an independent first frame' if first else ''}; nearest valid lengths: "
            f"{lo} latent frames ({frames(lo)} video frames) or {hi} ({frames(hi)} video frames)")
