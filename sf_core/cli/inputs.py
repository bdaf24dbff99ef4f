"""What the generate command reads: the model bundle, prompt conditionings, the video length in latent frames."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from ..config import CausalConfig, ConfigError
from ..pipeline import Bundle, as_bundle
from ..prompts import PromptEntry, PromptError, PromptSchedule, PromptSpec, parse_prompt, resolve_starts
from ..session import SamplingSettings, default_causal

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


# --------------------------------------------------------------------------------------------- bundle
def load_bundle(args, device: torch.device, dtype: torch.dtype) -> Bundle:
    """The toy bundle (`--model toy`) or a Wan2.1 bundle from files (--model, --vae, --text-encoder)."""
    if args.model == "toy":
        try:
            from ..toy import load_toy_bundle  # noqa: PLC0415 - the toy model is optional
        except ImportError as exc:
            raise ConfigError(f"the toy model is not available in this install ({exc})") from exc
        bundle = as_bundle(load_toy_bundle())
        bundle.transformer.to(device=device, dtype=dtype)
        return bundle
    from ..checkpoints import cast_for_storage, load_checkpoint  # noqa: PLC0415 - heavy, only when needed
    from ..model import WanTransformer  # noqa: PLC0415

    ck = load_checkpoint(args.model, which=args.which)
    with torch.device("meta"):
        model = WanTransformer(ck.config)
    model.load_state_dict(cast_for_storage(ck.state_dict, dtype), strict=True, assign=True)
    model = model.to(device).eval().requires_grad_(False)
    causal = ck.causal or CausalConfig()
    decoder = None
    if args.vae:
        from ..vae import load_decoder  # noqa: PLC0415

        decoder = load_decoder(args.vae, kind="auto", dtype=dtype, device=device)
    encoder = None
    if args.text_encoder:
        from ..text import load_umt5  # noqa: PLC0415

        encoder = load_umt5(args.text_encoder, tokenizer=args.tokenizer, device=device, dtype=dtype)
    return Bundle(transformer=model, text_encoder=encoder, decoder=decoder,
                  settings=SamplingSettings(causal=default_causal(causal.chunk_frames,
                                                                  causal.independent_first_frame)),
                  name=Path(args.model).name)


def settings_from_args(args, base: SamplingSettings) -> SamplingSettings:
    """The bundle's default settings with the command-line overrides applied."""
    c = base.causal
    chunk = args.chunk_frames or c.chunk_frames
    first = c.independent_first_frame if args.independent_first_frame is None else args.independent_first_frame
    if args.window is None and args.sink is None and (chunk, first) == (c.chunk_frames, c.independent_first_frame):
        causal = c
    else:
        d = default_causal(chunk, first)
        window = d.window_frames if args.window is None else args.window
        if str(window).lower() in ("0", "global", "none"):
            window, sink = None, 0
        else:
            window = int(window)
            sink = d.sink_frames if args.sink is None else args.sink
        causal = CausalConfig(chunk_frames=chunk, independent_first_frame=first, window_frames=window,
                              sink_frames=sink)
    kw = {"causal": causal}
    if args.steps:
        kw["steps"] = tuple(int(s) for s in str(args.steps).replace(" ", "").split(",") if s)
    if args.shift is not None:
        kw["shift"] = args.shift
    if args.context_t is not None:
        kw["context_t"] = args.context_t
    return replace(base, **kw)


# --------------------------------------------------------------------------------------------- prompts
def prompt_specs(args) -> list[PromptSpec]:
    """--prompt START:TEXT entries plus those of --prompts FILE (JSON list of {start | seconds, prompt})."""
    specs = [parse_prompt(p) for p in args.prompt or []]
    if args.prompts:
        try:
            items = json.loads(Path(args.prompts).read_text())
        except (OSError, ValueError) as exc:
            raise PromptError(f"cannot read the prompt schedule {args.prompts}: {exc}") from exc
        if not isinstance(items, list):
            raise PromptError(f"{args.prompts}: expected a JSON list like "
                              f'[{{"start": 0, "prompt": "a cat"}}, {{"seconds": 4, "prompt": "a dog"}}]')
        for i, it in enumerate(items):
            if not isinstance(it, dict) or "prompt" not in it:
                raise PromptError(f"{args.prompts} item {i}: expected an object with 'prompt' and 'start' (chunk) "
                                  f"or 'seconds', got {it!r}")
            if "seconds" in it:
                specs.append(PromptSpec(float(it["seconds"]), "s", str(it["prompt"])))
            else:
                specs.append(PromptSpec(float(int(it.get("start", 0))), "chunk", str(it["prompt"])))
    return specs


def conditioner(args, bundle: Bundle) -> Callable[[str | None], torch.Tensor]:
    """text -> conditioning [1, L, D]: through the text encoder, or a tensor of the --embeddings file."""
    if args.embeddings:
        from safetensors import SafetensorError, safe_open  # noqa: PLC0415

        try:
            with safe_open(args.embeddings, "pt") as f:
                table = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as exc:
            raise PromptError(f"cannot read embeddings file {args.embeddings}: {exc}") from exc

        def lookup(text: str | None) -> torch.Tensor:
            key = text
            if key is None:
                key = "context" if "context" in table else (next(iter(table)) if len(table) == 1 else None)
            if key not in table:
                raise PromptError(f"{args.embeddings} has no tensor {key!r}; it holds {sorted(table)[:10]}. With "
                                  f"--embeddings, a prompt names a tensor of the file (--prompt '0:{next(iter(table))}')")
            t = table[key]
            return t.unsqueeze(0) if t.ndim == 2 else t
        return lookup
    if bundle.text_encoder is None:
        raise PromptError("no way to turn prompts into conditioning: pass --text-encoder PATH (umT5) or "
                          "--embeddings FILE (precomputed, e.g. from `python -m sf_core encode`)")
    memo: dict[str, torch.Tensor] = {}

    def encode(text: str | None) -> torch.Tensor:
        if text is None:
            raise PromptError("give a prompt: --prompt 'a red fox running through snow'")
        if text not in memo:
            memo[text] = bundle.text_encoder.encode([text]).float().cpu()
        return memo[text]
    return encode


def build_entries(specs: list[PromptSpec], cond, *, fps: float, causal: CausalConfig, temporal_scale: int,
                  offset_chunk: int = 0) -> list[PromptEntry]:
    """Schedule entries from parsed prompts (seconds counted from the start of this run)."""
    if not specs:
        return [PromptEntry(offset_chunk, cond(None), None)]
    starts = resolve_starts(specs, fps=fps, chunk_frames=causal.chunk_frames,
                            independent_first_frame=causal.independent_first_frame and offset_chunk == 0,
                            temporal_scale=temporal_scale, offset_chunk=offset_chunk)
    return [PromptEntry(c, cond(text), text) for c, text in starts]


def new_schedule(entries: list[PromptEntry], policy: str, transition: int) -> PromptSchedule:
    if entries[0].start_chunk != 0:
        raise PromptError(f"the first prompt starts at chunk {entries[0].start_chunk}: add one for the start of "
                          f"the video (e.g. --prompt '0:...')")
    return PromptSchedule(tuple(entries), policy=policy, transition_chunks=transition)


# --------------------------------------------------------------------------------------------- length
def video_frames(latent: int, fresh: bool, temporal_scale: int) -> int:
    """Video frames of `latent` latent frames (the first latent frame of a video decodes to one frame)."""
    return 1 + temporal_scale * (latent - 1) if fresh else temporal_scale * latent


def latent_length(args, causal: CausalConfig, *, fps: float, temporal_scale: int, fresh: bool) -> int:
    """Latent frames to generate from --latent-frames / --frames (video frames) / --seconds (rounded up)."""
    first = 1 if (fresh and causal.independent_first_frame) else 0
    n = causal.chunk_frames
    valid = lambda k: first + k * n  # noqa: E731 - k >= 1 chunks after the optional first frame
    if args.latent_frames is not None:
        return int(args.latent_frames)  # checked (with the nearest valid lengths) by plan_chunks
    if args.frames is not None:
        for k in range(1, 100000):
            v = video_frames(valid(k), fresh, temporal_scale)
            if v == args.frames:
                return valid(k)
            if v > args.frames:
                lo = video_frames(valid(max(k - 1, 1)), fresh, temporal_scale)
                raise ConfigError(f"--frames {args.frames} does not fit chunks of {n} latent frames; nearest valid "
                                  f"video lengths: {lo} or {v} frames")
    seconds = 5.0 if args.seconds is None else float(args.seconds)
    if seconds <= 0:
        raise ConfigError(f"--seconds must be > 0, got {seconds}")
    want = max(1, round(seconds * fps))
    k = 1
    while video_frames(valid(k), fresh, temporal_scale) < want:
        k += 1
    return valid(k)


def latent_size(args, bundle: Bundle) -> tuple[int, int]:
    """Latent (h, w) from --width/--height in pixels, else the bundle's default size."""
    if args.width is None and args.height is None:
        return tuple(bundle.latent_hw)
    s = bundle.spatial_scale
    h = args.height if args.height is not None else bundle.latent_hw[0] * s
    w = args.width if args.width is not None else bundle.latent_hw[1] * s
    step = 2 * s
    if h % step or w % step or h < step or w < step:
        near = lambda x: f"{max(step, x // step * step)} or {max(step, x // step * step) + step}"  # noqa: E731
        raise ConfigError(f"video size {w}x{h} must be a multiple of {step} pixels in each direction "
                          f"(latent = pixels / {s}, patch 2); nearest widths {near(w)}, heights {near(h)}")
    return h // s, w // s


def seconds_of(frames: int, fps: float) -> float:
    return frames / fps if fps > 0 else math.nan
