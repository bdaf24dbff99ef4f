"""`python -m sf_core encode`: prompts -> an embeddings file (safetensors), so generation needs no text encoder.

    python -m sf_core encode --text-encoder models_t5_umt5-xxl-enc-bf16.pth --tokenizer google/umt5-xxl \\
        --prompt "a fox in the snow" --prompt "the fox starts running" -o prompts.safetensors
    python -m sf_core generate --model ... --embeddings prompts.safetensors \\
        --prompt "0:a fox in the snow" --prompt "5s:the fox starts running"

One tensor [L, D] per prompt (its real tokens only), named by the prompt text; the first prompt is also
stored as "context", the name ComfyUI's "SF Load Conditioning" node and `generate` look for by default.
"""
from __future__ import annotations

import argparse
import logging
import sys

import torch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sf_core encode", description=__doc__.split("\n\n")[0])
    p.add_argument("--text-encoder", required=True, help="umT5-XXL: HF folder, HF-named single file or Wan's .pth")
    p.add_argument("--tokenizer", help="umT5 tokenizer folder (needed with a single weights file)")
    p.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
    p.add_argument("-o", "--output", required=True, help="safetensors file to write")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp32", "fp16"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from safetensors.torch import save_file  # noqa: PLC0415

    from ..text import TextEncoderError, load_umt5  # noqa: PLC0415

    from ..config import ConfigError  # noqa: PLC0415
    from .inputs import pick_device  # noqa: PLC0415

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    try:
        device = pick_device(args.device)
        enc = load_umt5(args.text_encoder, tokenizer=args.tokenizer, device=device, dtype=dtype)
        out = {}
        for text in args.prompt:  # one prompt at a time: no padding rows
            out[text] = enc.encode([text])[0].cpu().contiguous()
        out["context"] = out[args.prompt[0]].clone()
        save_file(out, args.output, metadata={"format": "sf_core.embeddings"})
    except (TextEncoderError, ConfigError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(args.prompt)} prompt embeddings to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
