"""A deterministic text encoder for the toy world's vocabulary (the toy's stand-in for umT5).

Each concept word (a shape, colour, direction or speed, plus a few synonyms) has a fixed embedding row drawn
from a seeded generator; a prompt becomes the rows of its known words in order, zero-padded to `text_len`
rows, like umT5's output with padding rows zeroed. Words outside the vocabulary carry no meaning in this
world and are dropped; the empty prompt (all-zero rows) is the unconditional / negative prompt.

No weights file: the table is a pure function of (seed, text_dim), so every machine builds the same encoder.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch

from ..sampling.prompts import shorten
from .world import COLOURS, DIRECTIONS, SHAPES, SPEEDS

log = logging.getLogger(__name__)

VOCAB: tuple[str, ...] = (*SHAPES, *COLOURS, *DIRECTIONS, *SPEEDS)
SYNONYMS: dict[str, str] = {
    "box": "square", "ball": "circle", "disc": "circle", "disk": "circle", "dot": "circle",
    "purple": "magenta", "pink": "magenta", "teal": "cyan", "aqua": "cyan",
    "leftward": "left", "leftwards": "left", "rightward": "right", "rightwards": "right",
    "upward": "up", "upwards": "up", "downward": "down", "downwards": "down",
    "slowly": "slow", "quickly": "fast", "quick": "fast", "rapidly": "fast",
    "colour": "", "color": "",
}
_CATEGORIES = {"shape": SHAPES, "colour": tuple(COLOURS), "direction": tuple(DIRECTIONS), "speed": tuple(SPEEDS)}
# words of ordinary prompts that carry nothing in this world: dropped without a warning
FILLER = frozenset("a an the one is it its moving moves move going goes travelling traveling to towards toward "
                   "and with of in on at from very shape object thing coloured colored".split())


def tokenize(prompt: str) -> list[str]:
    """Known concept words of a prompt, in order (synonyms mapped, everything else dropped)."""
    words = re.findall(r"[a-z]+", str(prompt).lower())
    out = []
    for w in words:
        w = SYNONYMS.get(w, w)
        if w in VOCAB:
            out.append(w)
    return out


def unknown_words(prompt: str) -> list[str]:
    """Words of a prompt the toy world does not know (neither concept, synonym nor filler), each once, in order."""
    out: list[str] = []
    for w in re.findall(r"[a-z]+", str(prompt).lower()):
        if w not in VOCAB and w not in SYNONYMS and w not in FILLER and w not in out:
            out.append(w)
    return out


def parse_prompt(prompt: str) -> dict[str, str | None]:
    """{"shape", "colour", "direction", "speed"} named by a prompt (the first mention wins; None if absent)."""
    words = tokenize(prompt)
    return {cat: next((w for w in words if w in allowed), None) for cat, allowed in _CATEGORIES.items()}


@dataclass(frozen=True)
class ToyTextEncoder:
    """`encode(list[str]) -> [B, text_len, text_dim]` float32 embeddings; `negative_prompt` is the empty prompt."""

    text_dim: int = 32
    text_len: int = 8
    seed: int = 0
    negative_prompt: str = ""

    def __post_init__(self) -> None:
        if self.text_dim < 1 or self.text_len < 1:
            raise ValueError(f"text_dim and text_len must be positive, got {self.text_dim}, {self.text_len}")

    def table(self) -> torch.Tensor:
        """[len(VOCAB), text_dim] rows of norm sqrt(text_dim) (unit-variance entries), fixed by the seed."""
        g = torch.Generator().manual_seed(self.seed)
        t = torch.randn(len(VOCAB), self.text_dim, generator=g, dtype=torch.float64)
        t = t / t.norm(dim=1, keepdim=True) * self.text_dim ** 0.5
        return t.float()

    def encode(self, prompts: list[str] | str) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        table = self.table()
        out = torch.zeros(len(prompts), self.text_len, self.text_dim)
        for i, p in enumerate(prompts):
            words = tokenize(p)
            unknown = unknown_words(p)
            if str(p).strip() and not words:
                log.warning("toy prompt %r names nothing the toy world knows (it knows shapes %s, colours %s, "
                            "directions %s, speeds %s); generating unconditionally", shorten(p), list(SHAPES),
                            list(COLOURS), list(DIRECTIONS), list(SPEEDS))
            elif unknown:
                log.warning("toy prompt %r: unknown word%s %s ignored (typo? the toy world knows shapes %s, colours "
                            "%s, directions %s, speeds %s)", shorten(p), "s" if len(unknown) > 1 else "",
                            ", ".join(repr(w) for w in unknown[:10]) + (" …" if len(unknown) > 10 else ""),
                            list(SHAPES), list(COLOURS), list(DIRECTIONS), list(SPEEDS))
            if len(words) > self.text_len:
                log.warning("toy prompt %r has %d concept words; only the first %d are used", shorten(p), len(words),
                            self.text_len)
                words = words[:self.text_len]
            for j, w in enumerate(words):
                out[i, j] = table[VOCAB.index(w)]
        return out

    __call__ = encode
