"""`python -m sf_core.checkpoints.convert IN OUT.safetensors`: any supported Wan2.1 checkpoint -> one safetensors file.

Typical use: a Self Forcing training checkpoint (`self_forcing_dmd.pt`, a pickle with generator / EMA /
critic) becomes a flat file with Wan2.1 key names that ComfyUI's stock "Load Diffusion Model" (UNETLoader)
loads, detected as Wan2.1 T2V:

    python -m sf_core.checkpoints.convert checkpoints/self_forcing_dmd.pt \\
        ComfyUI/models/diffusion_models/self_forcing_dmd_bf16.safetensors --which generator_ema --dtype bf16

The output records the WanConfig, the causal config (chunk size), the source file and which model was taken
in its metadata. Prints a JSON summary; exit code 2 on a bad input (the message says why and how to fix it).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .weights import WHICH, CheckpointError, load_checkpoint, parse_dtype, save_model
from ..config import CausalConfig, ConfigError
from ..fileio import OutputPathError, check_writable


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sf_core.checkpoints.convert",
                                 description="Convert a Wan2.1 / Self Forcing checkpoint to a ComfyUI-loadable "
                                             "safetensors file with sf_core metadata.")
    ap.add_argument("input", help="checkpoint: .pt (Self Forcing), .safetensors, shard, index JSON or a folder")
    ap.add_argument("output", help="output .safetensors path")
    ap.add_argument("--which", default="auto", choices=WHICH,
                    help="model of a Self Forcing checkpoint (auto: generator_ema if present, else generator)")
    ap.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16", "fp8", "keep"],
                    help="storage dtype (fp8 = e4m3fn block Linear weights, the rest bf16); default bf16")
    ap.add_argument("--chunk-frames", type=int, default=None,
                    help="latent frames per chunk to record in the causal config (Self Forcing: 3 chunk-wise, "
                         "1 frame-wise); default: 3 for a Self Forcing generator, none otherwise")
    ap.add_argument("--num-heads", type=int, default=None,
                    help="attention heads, when the file records no config and dim is not a multiple of 128")
    ap.add_argument("--text-len", type=int, default=None, help="text tokens (default: recorded value or 512)")
    ap.add_argument("--family", default="auto", help="checkpoint family recorded in the output (sf_core.checkpoints.families; "
                    "auto: from the file). It picks the weights its authors sample with and their chunk size")
    ap.add_argument("--lora", help="LoRA merged into the weights (LongLive: models/lora.pt on longlive_base.pt)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing output file")
    return ap


def convert(input_path: str | Path, output_path: str | Path, which: str = "auto", dtype: str = "bf16",
            chunk_frames: int | None = None, num_heads: int | None = None, text_len: int | None = None,
            force: bool = False, family: str = "auto", lora: str | None = None) -> dict:
    """Convert and return a summary dict. Raises CheckpointError on bad input."""
    out = Path(output_path)
    if out.suffix != ".safetensors":
        raise CheckpointError(f"output {out} must end in .safetensors")
    if out.exists() and not force:
        raise CheckpointError(f"output {out} exists; pass --force to overwrite it")
    try:
        check_writable(out, what="output")  # before the (possibly minutes long) read of the input
    except OutputPathError as exc:
        raise CheckpointError(str(exc)) from None
    overrides = {k: v for k, v in (("num_heads", num_heads), ("text_len", text_len)) if v is not None}
    if overrides or family == "none":
        ck, fam = load_checkpoint(input_path, which, overrides or None, lora=lora), None
    else:
        from .families import FAMILIES, load_for_family  # noqa: PLC0415

        try:
            ck, fam = load_for_family(input_path, family=family, which=which, lora=lora)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        if fam and chunk_frames is None and ck.meta["which"] != "critic":
            chunk_frames = FAMILIES[fam].chunk_frames
    causal = ck.causal
    if chunk_frames is not None or (causal is None and ck.format == "self_forcing" and ck.meta["which"] != "critic"):
        try:
            causal = CausalConfig(chunk_frames=chunk_frames or 3)
        except ConfigError as exc:
            raise CheckpointError(f"--chunk-frames {chunk_frames}: {exc}") from exc
    parse_dtype(dtype)
    extra = {"family": fam} if fam else {}
    if lora:
        extra["lora"] = Path(lora).name
    save_model(out, ck.state_dict, ck.config, causal=causal, dtype=dtype, source=Path(input_path).name,
               which=ck.meta["which"], extra_meta=extra)
    return {"input": str(input_path), "output": str(out), "format": ck.format, "which": ck.meta["which"],
            "available": ck.meta["available"], "dtype": dtype, "config": ck.config.to_dict(),
            "config_source": ck.meta["config_source"], "causal": None if causal is None else causal.to_dict(),
            "family": fam, "lora": lora,
            "bytes": out.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        summary = convert(args.input, args.output, args.which, args.dtype, args.chunk_frames, args.num_heads,
                          args.text_len, args.force, args.family, args.lora)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
