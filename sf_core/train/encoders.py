"""Text encoders for `encode-prompts`, chosen by a spec string. Any `encode(list[str]) -> [B, L, D]` works:

- "toy" / "toy:TEXT_DIM": the toy world's deterministic encoder (`sf_core.toy.text`), empty negative prompt;
- "umt5:PATH[,TOKENIZER_DIR]": Wan's umT5-xxl encoder from local files through `sf_core.text.load_umt5`
  (the official recipe's negative prompt is Wan's default negative prompt: pass it with --negative);
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
        path, _, tokenizer = rest.partition(",")
        if not path:
            raise ConfigError("--encoder umt5:PATH[,TOKENIZER_DIR] needs the path of the umT5-xxl encoder weights")
        from ..text import load_umt5  # the optional standalone loader (transformers, local files only)

        device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            enc = load_umt5(path, tokenizer or None, device=device)
        except (ValueError, ImportError) as exc:  # TextEncoderError names the file and the fix
            raise ConfigError(f"--encoder {spec!r}: {exc}") from None
        return enc.encode, ""
    if sep:
        enc = load_factory(spec, "encoder")
        fn = getattr(enc, "encode", enc)
        if not callable(fn):
            raise ConfigError(f"--encoder {spec!r} returned {type(enc).__name__}, which is not callable and has no "
                              f"encode(list[str])")
        return fn, str(getattr(enc, "negative_prompt", ""))
    raise ConfigError(f"--encoder {spec!r}: use toy, toy:TEXT_DIM, umt5:PATH or package.module:factory")
