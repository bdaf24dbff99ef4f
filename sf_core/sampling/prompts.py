"""Prompt schedules: which text conditioning each chunk of a video is generated under.

A schedule is a list of entries (start chunk, conditioning [B, L, text_dim]); an entry holds from its start
chunk until the next entry starts. Chunk indices count the chunks of the whole video (0 = the first chunk).

What happens at a switch is the *policy* (applied by `sf_core.sampling.pipeline`):
- "recache" (default, as LongLive): the KV cache of the frames still in the window is recomputed under the
  new prompt from their clean latents, so the new prompt takes effect at once instead of being held back by
  keys and values computed under the old one;
- "keep": the old keys/values stay; only the cross-attention (the text) changes. Cheaper, slower to react.

`transition_chunks = k` blends the conditioning linearly over k chunks: chunk `start + j` (j < k) uses
`(1 - a) * previous + a * new` with `a = (j + 1) / k`, so the chunk before the switch is exactly the old
conditioning and chunk `start + k - 1` exactly the new one (k <= 1: a hard switch). The blend is done on the
text embeddings, zero-padded to a common length (the model zero-pads them to `text_len` anyway).
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field, replace

import torch

SWITCH_POLICIES = ("recache", "keep")


class PromptError(ValueError):
    """A prompt schedule or a conditioning tensor is malformed."""


@dataclass(frozen=True, eq=False)
class PromptEntry:
    """Conditioning `context` [B, L, text_dim] from chunk `start_chunk` on; `text` is informative only."""

    start_chunk: int
    context: torch.Tensor
    text: str | None = None


@dataclass(frozen=True, eq=False)
class PromptSchedule:
    entries: tuple[PromptEntry, ...]
    policy: str = "recache"
    transition_chunks: int = 0
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))
        if not self.entries:
            raise PromptError("a prompt schedule needs at least one entry (a conditioning from chunk 0)")
        starts = [int(e.start_chunk) for e in self.entries]
        if starts[0] != 0:
            raise PromptError(f"the first prompt must start at chunk 0, got {starts[0]}; "
                              f"add a prompt for the beginning of the video")
        if any(b <= a for a, b in zip(starts, starts[1:])):
            raise PromptError(f"prompt start chunks must strictly increase, got {starts}")
        if self.policy not in SWITCH_POLICIES:
            raise PromptError(f"unknown prompt switch policy {self.policy!r}; choose one of {SWITCH_POLICIES}")
        if int(self.transition_chunks) < 0:
            raise PromptError(f"transition_chunks must be >= 0, got {self.transition_chunks}")
        widths = set()
        for e in self.entries:
            c = e.context
            if not isinstance(c, torch.Tensor) or c.ndim != 3:
                shape = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
                raise PromptError(f"conditioning of the prompt at chunk {e.start_chunk} must be a tensor "
                                  f"[B, L, text_dim], got {shape}")
            if not c.is_floating_point():
                raise PromptError(f"conditioning of the prompt at chunk {e.start_chunk} must be floating point, "
                                  f"got {c.dtype}")
            widths.add(c.shape[-1])
        if len(widths) > 1:
            raise PromptError(f"all prompts of a schedule must have the same width, got {sorted(widths)}")
        batches = {e.context.shape[0] for e in self.entries} - {1}
        if len(batches) > 1:
            raise PromptError(f"prompt batch sizes differ: {sorted(batches)} (each must be the video batch or 1)")

    # ------------------------------------------------------------------ construction
    @classmethod
    def single(cls, context: torch.Tensor, text: str | None = None, **kw) -> "PromptSchedule":
        return cls((PromptEntry(0, context, text),), **kw)

    def with_prompt(self, start_chunk: int, context: torch.Tensor, text: str | None = None) -> "PromptSchedule":
        """A copy where `context` holds from `start_chunk` on (later entries are dropped)."""
        kept = tuple(e for e in self.entries if e.start_chunk < start_chunk)
        return replace(self, entries=kept + (PromptEntry(int(start_chunk), context, text),), _memo={})

    # ------------------------------------------------------------------ queries
    @property
    def width(self) -> int:
        return int(self.entries[0].context.shape[-1])

    def entry_index(self, chunk: int) -> int:
        """Index of the entry in effect at `chunk`."""
        idx = 0
        for i, e in enumerate(self.entries):
            if e.start_chunk <= chunk:
                idx = i
        return idx

    def context_at(self, chunk: int) -> torch.Tensor:
        """Conditioning [B, L, text_dim] of chunk `chunk` (the entry's own tensor outside transitions)."""
        i = self.entry_index(chunk)
        e = self.entries[i]
        k = int(self.transition_chunks)
        a = 1.0 if (i == 0 or k <= 1) else min(1.0, (chunk - e.start_chunk + 1) / k)
        if a >= 1.0:
            return e.context
        key = (i, chunk)
        if key not in self._memo:  # the same tensor object per chunk keeps the cross-attention cache valid
            prev = self.context_at(e.start_chunk - 1)
            self._memo[key] = interpolate(prev, e.context, a)
        return self._memo[key]

    def check(self, text_dim: int, batch: int) -> None:
        """Raise PromptError unless every conditioning fits a model of `text_dim` and a video of `batch`."""
        for e in self.entries:
            c = e.context
            if c.shape[-1] != text_dim:
                raise PromptError(
                    f"conditioning of the prompt at chunk {e.start_chunk} has width {c.shape[-1]}, the model "
                    f"expects text_dim={text_dim} (Wan2.1 uses umT5-XXL embeddings, width 4096); use the text "
                    f"encoder that matches the model")
            if c.shape[0] not in (1, batch):
                raise PromptError(f"conditioning of the prompt at chunk {e.start_chunk} has batch {c.shape[0]}, "
                                  f"the video has batch {batch}; give one per video or a single one")
            if not torch.isfinite(c).all():
                raise PromptError(f"conditioning of the prompt at chunk {e.start_chunk} contains NaN/inf values")


def interpolate(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) a + alpha b for conditionings [B, L, D] of possibly different L (zero-padded) and B (1 or B)."""
    length = max(a.shape[1], b.shape[1])
    a, b = _pad(a, length), _pad(b, length).to(device=a.device)
    out = (1.0 - alpha) * a.float() + alpha * b.float()
    return out.to(torch.promote_types(a.dtype, b.dtype))


def _pad(x: torch.Tensor, length: int) -> torch.Tensor:
    if x.shape[1] == length:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], length - x.shape[1], x.shape[2])], dim=1)


# ---------------------------------------------------------------------------------------------------------
# Text schedules ("0:a cat", "4.5s:a dog") as used by the CLI and the nodes

_START = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|chunk|c)?\s*:(.*)$", re.S)
_PREFIX = re.compile(r"^\s*([^\s:]{1,24})\s*:(.*)$", re.S)  # one word before a colon: meant as a start?
_NUMBERISH = re.compile(r"^[+-]|\d|^(nan|inf|infinity)(s|sec|c|chunk)?$", re.I)
_FORMS = "CHUNK:TEXT (e.g. '5:a dog'), SECONDSs:TEXT ('2.5s:a dog') or TEXT (from the start)"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptSpec:
    """One parsed schedule line: `start` in chunks (unit "chunk") or seconds (unit "s"), and the text."""

    start: float
    unit: str
    text: str


def parse_prompt(spec: str) -> PromptSpec:
    """Parse "START:TEXT": START is a chunk index ("5", "5c") or a time ("2.5s"); no START = chunk 0.

    Only a leading number followed by ':' is read as a start, so texts containing colons stay intact. A first
    word before a colon that looks like a mistyped start ("1m:", "-1:", "nans:", "5x:") is refused; any other
    single word before a colon ("xs:", "Style:") is taken as text from chunk 0 with a warning, unless the
    spec says so with an explicit start ("0:Style: ...").
    """
    m = _START.match(spec)
    if m is None:
        w = _PREFIX.match(spec)
        if w is not None and _NUMBERISH.search(w.group(1)):
            raise PromptError(f"prompt {shorten(spec)!r} starts with {w.group(1) + ':'!r}, which is not a start: "
                              f"write {_FORMS}; a chunk is a whole number >= 0, a time a number >= 0 with 's'")
        if w is not None:
            log.warning("prompt %r starts with %r, which is not a start (%s); it is used as text from the start "
                        "of the video. Write '0:%s' to say so (and silence this warning)", shorten(spec),
                        w.group(1) + ":", _FORMS, shorten(spec.strip(), 30))
        return PromptSpec(0.0, "chunk", spec.strip())
    start, unit, text = float(m.group(1)), m.group(2) or "chunk", m.group(3).strip()
    unit = "s" if unit in ("s", "sec") else "chunk"
    if unit == "chunk" and start != int(start):
        raise PromptError(f"prompt start {m.group(1)!r} in {shorten(spec)!r} is a fractional chunk; use an "
                          f"integer chunk index or seconds with an 's' suffix (e.g. '{m.group(1)}s:...')")
    if not text:
        raise PromptError(f"empty prompt text in {shorten(spec)!r}")
    return PromptSpec(start, unit, text)


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters for messages and logs (prompts can be pages long)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 1]}… ({len(text)} characters)"


def seconds_to_chunk(seconds: float, fps: float, chunk_frames: int, *, independent_first_frame: bool = False,
                     temporal_scale: int = 4) -> int:
    """The chunk boundary nearest to `seconds` into the video.

    A latent frame f >= 1 covers video frames (f-1)*s+1 .. f*s (s = temporal_scale, 4 for the Wan VAE;
    latent frame 0 is video frame 0), so video frame v is latent frame ceil(v / s).
    """
    if not (math.isfinite(seconds) and seconds >= 0 and math.isfinite(fps) and fps > 0):
        raise PromptError(f"prompt start {seconds}s / fps {fps} must be a finite number >= 0 / > 0")
    latent = math.ceil(round(seconds * fps, 6) / temporal_scale)
    first = 1 if independent_first_frame else 0
    if independent_first_frame and latent < 1:
        return 0
    return first + int(round((latent - first) / chunk_frames))


def resolve_starts(specs: list[PromptSpec], *, fps: float, chunk_frames: int, independent_first_frame: bool = False,
                   temporal_scale: int = 4, offset_chunk: int = 0) -> list[tuple[int, str]]:
    """[(start chunk, text)] sorted by start; seconds converted; `offset_chunk` added (continuations).

    Several prompts landing on the same chunk: the last one given wins (with a warning naming both).
    """
    out: dict[int, str] = {}
    for s in specs:
        if s.unit == "s":
            c = seconds_to_chunk(s.start, fps, chunk_frames, independent_first_frame=independent_first_frame,
                                 temporal_scale=temporal_scale)
        else:
            c = int(s.start)
        if c + offset_chunk in out:
            log.warning("prompts %r and %r both start at chunk %d; the later one is used",
                        shorten(out[c + offset_chunk], 60), shorten(s.text, 60), c + offset_chunk)
        out[c + offset_chunk] = s.text
    return sorted(out.items())


__all__ = ["PromptEntry", "PromptSchedule", "PromptError", "SWITCH_POLICIES", "interpolate", "parse_prompt",
           "PromptSpec", "seconds_to_chunk", "resolve_starts", "shorten"]
