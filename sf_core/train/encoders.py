"""Text encoders for `encode-prompts`, chosen by a spec string. Any `encode(list[str]) -> [B, L, D]` works:

- "toy" / "toy:TEXT_DIM": the toy world's deterministic encoder (`sf_core.toy.text`), empty negative prompt;
- "umt5:PATH": Wan's umT5-xxl encoder from a local file, through `sf_core.text` (the CLI/session part);
  the negative prompt defaults to Wan's default negative prompt there;
- "package.module:factory": factory() returns an object with `.encode(list[str])` (or a callable).

Inside ComfyUI the stock CLIP encodes instead (nodes/training.py), so workers never load the encoder.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..config import ConfigError
from .reward import load_factory

Encoder = Callable[[list[str]], torch.Tensor]


def resolve_encoder(spec: str) -> tuple[Encoder, str]:
    """(encode function, default negative prompt) for a spec."""
    kind, sep, rest = spec.partition(":")
    if kind == "toy":
        from ..toy.text import ToyTextEncoder

        enc = ToyTextEncoder(text_dim=int(rest)) if rest else ToyTextEncoder()
        return enc.encode, enc.negative_prompt
    if kind == "umt5":
        if not rest:
            raise ConfigError("--encoder umt5:PATH needs the path of the umT5-xxl encoder weights")
        try:
            from .. import text  # provided by the sessions / CLI part
        except ImportError:
            raise ConfigError("the umT5 loader (sf_core.text) is not available in this install; encode the prompts "
                              "inside ComfyUI with the training node, or pass --encoder package.module:factory") from None
        loader = getattr(text, "load_text_encoder", None) or getattr(text, "load_umt5", None)
        if loader is None:
            raise ConfigError("sf_core.text has no load_text_encoder(path); update the pack")
        enc = loader(rest)
        fn = getattr(enc, "encode", enc)
        return fn, str(getattr(enc, "negative_prompt", getattr(text, "WAN_NEGATIVE_PROMPT", "")))
    if sep:
        enc = load_factory(spec, "encoder")
        fn = getattr(enc, "encode", enc)
        if not callable(fn):
            raise ConfigError(f"--encoder {spec!r} returned {type(enc).__name__}, which is not callable and has no "
                              f"encode(list[str])")
        return fn, str(getattr(enc, "negative_prompt", ""))
    raise ConfigError(f"--encoder {spec!r}: use toy, toy:TEXT_DIM, umt5:PATH or package.module:factory")
