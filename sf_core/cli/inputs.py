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
from ..sampling.pipeline import Bundle, as_bundle
from ..sampling.prompts import (PromptEntry, PromptError, PromptSchedule, PromptSpec, parse_prompt, resolve_starts,
                       shorten)
from ..sampling.schedule import parse_steps
from ..sampling.session import SamplingSettings, default_causal

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N (e.g. cuda:0)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ConfigError(f"--device {name}: use auto, cpu or cuda[:N]")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


# --------------------------------------------------------------------------------------------- ranges
MAX_SEED = 2**63 - 1
MAX_PIXELS = 16384  # per side; the RoPE grid allows 1024 patches of 2 latent pixels (Wan: 16384 px)


def _num(x) -> str:
    return f"{int(x):,}" if math.isfinite(x) and x == int(x) else f"{x:g}"


def _bounded(value, name: str, lo, hi=None, *, low_open: bool = False, unit: str = "") -> None:
    """ConfigError unless value is finite, lo <= value (lo < value with low_open) and value <= hi (if given);
    the message gives the range."""
    if value is None:
        return
    ok = math.isfinite(value) and (lo < value if low_open else lo <= value) and (hi is None or value <= hi)
    if not ok:
        rng = f"{'>' if low_open else '>='} {_num(lo)}" + ("" if hi is None else f" and <= {_num(hi)}")
        raise ConfigError(f"--{name} must be a finite number {rng}{unit}, got {_num(value)}")


def check_ranges(args) -> None:
    """Check every number of the command line before anything is loaded or planned (message names the range)."""
    _bounded(args.latent_frames, "latent-frames", 1, MAX_LATENT_FRAMES)
    _bounded(args.frames, "frames", 1, 4 * MAX_LATENT_FRAMES)
    _bounded(args.seconds, "seconds", 0, low_open=True)  # the frame count it gives is bounded next
    _bounded(args.fps, "fps", 0.1, 1000)
    _bounded(args.width, "width", 1, MAX_PIXELS, unit=" pixels")
    _bounded(args.height, "height", 1, MAX_PIXELS, unit=" pixels")
    _bounded(args.seed, "seed", 0, MAX_SEED)
    _bounded(args.shift, "shift", 0, 100, low_open=True)
    _bounded(args.chunk_frames, "chunk-frames", 1, 64)
    _bounded(args.sink, "sink", 0, 1024)
    _bounded(args.context_t, "context-t", 0, 1000)
    _bounded(args.transition, "transition", 0, 1024)
    _bounded(args.crf, "crf", 0, 51)
    _bounded(args.threads, "threads", 1, 1024)
    if args.window is not None and str(args.window).lower() not in ("global", "none"):
        try:
            window = int(args.window)
        except ValueError:
            raise ConfigError(f"--window must be a number of latent frames (0..{MAX_LATENT_FRAMES:,}) or 'global', "
                              f"got {args.window!r}") from None
        _bounded(window, "window", 0, MAX_LATENT_FRAMES)
    if args.steps:
        try:
            parse_steps(args.steps)
        except ValueError as exc:
            raise ConfigError(f"--steps: {exc}") from None


# --------------------------------------------------------------------------------------------- bundle
def load_bundle(args, device: torch.device, dtype: torch.dtype) -> Bundle:
    """The toy bundle (`--model toy`) or a Wan2.1 bundle from files (--model, --vae, --text-encoder)."""
    if args.model == "toy":
        ignored = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in ("lora", "vae", "text_encoder", "tokenizer")
                   if getattr(args, k, None)]
        if ignored:  # the toy bundle carries its own decoder and text encoder and takes no LoRA
            raise ConfigError(f"{', '.join(ignored)}: not used with --model toy (the toy model has its own decoder "
                              f"and text encoder and takes no LoRA); drop {'them' if len(ignored) > 1 else 'it'}, or "
                              f"give --model a Wan2.1 / Self Forcing checkpoint")
        try:
            from ..toy import load_toy_bundle  # noqa: PLC0415 - the toy model is optional
        except ImportError as exc:
            raise ConfigError(f"the toy model is not available in this install ({exc})") from exc
        bundle = as_bundle(load_toy_bundle())
        bundle.transformer.to(device=device, dtype=dtype)
        if getattr(args, "family", "auto") not in (None, "auto"):  # a family's sampler on the toy model
            from ..checkpoints.families import settings_for  # noqa: PLC0415

            bundle.settings = settings_for(args.family)
        return bundle
    from ..checkpoints.weights import cast_for_storage  # noqa: PLC0415 - heavy, only when needed
    from ..checkpoints.families import load_for_family, settings_for  # noqa: PLC0415
    from ..model.transformer import WanTransformer  # noqa: PLC0415

    ck, family = load_for_family(args.model, family=getattr(args, "family", "auto"), which=args.which,
                                 lora=getattr(args, "lora", None))
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
    settings = settings_for(family) if family else SamplingSettings(
        causal=default_causal(causal.chunk_frames, causal.independent_first_frame))
    return Bundle(transformer=model, text_encoder=encoder, decoder=decoder, settings=settings,
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
    if getattr(args, "kv_dtype", None):
        kw["kv_dtype"] = args.kv_dtype
    if getattr(args, "merge_commit", False):
        kw["merge_commit"] = True
    if args.steps:
        kw["steps"] = tuple(parse_steps(args.steps))
    if args.shift is not None:
        kw["shift"] = args.shift
    if args.context_t is not None:
        kw["context_t"] = args.context_t
    positions = getattr(args, "positions", None)
    if positions is not None:
        kw["positions"] = positions
    elif causal.window_frames is None:
        kw["positions"] = "auto"  # a global cache keeps absolute positions whatever the mode says
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
                                  f"or 'seconds', got {str(it)[:200]}")
            specs.append(_json_spec(it, f"{args.prompts} item {i}"))
    return specs


def _json_spec(item: dict, where: str) -> PromptSpec:
    """A schedule entry of a --prompts file: {"start": CHUNK} (whole number >= 0) or {"seconds": S} (>= 0)."""
    if "seconds" in item and "start" in item:
        raise PromptError(f"{where}: give 'start' (chunk) or 'seconds', not both")
    key = "seconds" if "seconds" in item else "start"
    v = item.get(key, 0)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    if not ok or (key == "start" and v != int(v)):
        kind = "a whole chunk index >= 0" if key == "start" else "a number of seconds >= 0"
        raise PromptError(f"{where}: '{key}' must be {kind}, got {v!r}")
    return PromptSpec(float(v), "s" if key == "seconds" else "chunk", str(item["prompt"]))


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
                raise PromptError(f"{args.embeddings} has no tensor {shorten(str(key))!r}; it holds "
                                  f"{[shorten(k, 40) for k in sorted(table)[:10]]}. With --embeddings, a prompt "
                                  f"names a tensor of the file (--prompt '0:{shorten(next(iter(table)), 40)}')")
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


def warn_unused(schedule: PromptSchedule, end_chunk: int, *, saved: bool) -> list[PromptEntry]:
    """Log each scheduled prompt that starts at or after `end_chunk` (the video ends before it); returns them."""
    late = [e for e in schedule.entries if e.start_chunk >= end_chunk]
    for e in late:
        fate = ("it is kept in the saved session for a continuation" if saved
                else "it is not used (make the video longer or start the prompt earlier)")
        log.warning("prompt %r starts at chunk %d, but this video ends after chunk %d: %s",
                    shorten(e.text or "", 60), e.start_chunk, end_chunk - 1, fate)
    return late


# --------------------------------------------------------------------------------------------- length
# The longest video one `generate` run makes: a bound so that no request can build a huge chunk list or hold
# the run for days (~69 h of Wan video at 16 fps); the RoPE limit (ROPE_MAX_POSITIONS) is lower for a cache with
# absolute positions and is checked once the session is made.
MAX_LATENT_FRAMES = 1_000_000


def video_frames(latent: int, fresh: bool, temporal_scale: int) -> int:
    """Video frames of `latent` latent frames (the first latent frame of a video decodes to one frame)."""
    return 1 + temporal_scale * (latent - 1) if fresh else temporal_scale * latent


def latent_of_video(frames: int, fresh: bool, temporal_scale: int) -> int:
    """The fewest latent frames that decode to at least `frames` video frames."""
    return 1 + -(-(frames - 1) // temporal_scale) if fresh else -(-frames // temporal_scale)


def _count(args) -> tuple[str, float]:
    """The length option given (name, value); --seconds 5 when none is."""
    for name in ("latent_frames", "frames", "seconds"):
        v = getattr(args, name, None)
        if v is not None:
            return name, v
    return "seconds", 5.0


def requested_latent(args, *, fps: float, temporal_scale: int, fresh: bool = True) -> int:
    """Latent frames the length options ask for, before rounding to whole chunks (cheap: no model needed)."""
    name, v = _count(args)
    if name == "latent_frames":
        return int(v)
    frames = int(v) if name == "frames" else max(1, round(v * fps))
    return latent_of_video(frames, fresh, temporal_scale)


def check_requested(args, *, fps: float, temporal_scale: int) -> None:
    """Refuse a length past MAX_LATENT_FRAMES before the model is loaded."""
    n = requested_latent(args, fps=fps, temporal_scale=temporal_scale)
    if n > MAX_LATENT_FRAMES:
        name, v = _count(args)
        most = video_frames(MAX_LATENT_FRAMES, True, temporal_scale)
        raise ConfigError(f"--{name.replace('_', '-')} {_num(v)} asks for {n:,} latent frames; one run makes at "
                          f"most {MAX_LATENT_FRAMES:,} ({most:,} video frames, {most / fps:,.0f} s at {fps:g} fps)")


def _lengths(latent: int, fresh: bool, temporal_scale: int, fps: float) -> str:
    v = video_frames(latent, fresh, temporal_scale)
    return f"{latent} latent frames ({v} video frames, {v / fps:.2f} s)"


def latent_length(args, causal: CausalConfig, *, fps: float, temporal_scale: int, fresh: bool) -> int:
    """Latent frames to generate from --latent-frames / --frames (video frames) / --seconds (rounded up to whole
    chunks). Errors name the nearest valid lengths in this model's frame arithmetic (`temporal_scale`)."""
    first = 1 if (fresh and causal.independent_first_frame) else 0
    n = causal.chunk_frames
    shortest = first + n
    name, v = _count(args)
    if name == "latent_frames":
        latent = int(v)
        if latent < shortest or (latent - first) % n:
            lo = max(shortest, first + (latent - first) // n * n)
            hi = lo + n if lo <= latent else lo
            after = f" after an independent first frame" if first else ""
            near = (f"the shortest is {_lengths(lo, fresh, temporal_scale, fps)}" if hi == lo else
                    f"nearest valid lengths: {_lengths(lo, fresh, temporal_scale, fps)} or "
                    f"{_lengths(hi, fresh, temporal_scale, fps)}")
            raise ConfigError(f"--latent-frames {latent} cannot be split into chunks of {n}{after}; {near}")
        return latent
    if name == "frames":
        want = int(v)
        latent = latent_of_video(want, fresh, temporal_scale)
        k = max(1, -(-(latent - first) // n))
        hi = first + k * n
        if video_frames(hi, fresh, temporal_scale) == want:
            return hi
        lo_v, hi_v = video_frames(hi - n, fresh, temporal_scale), video_frames(hi, fresh, temporal_scale)
        near = (f"nearest valid video lengths: {lo_v} or {hi_v} frames" if hi - n >= shortest else
                f"the shortest valid video is {hi_v} frames")
        raise ConfigError(f"--frames {want} does not fit chunks of {n} latent frames ({n * temporal_scale} video "
                          f"frames); {near}")
    latent = requested_latent(args, fps=fps, temporal_scale=temporal_scale, fresh=fresh)
    return first + max(1, -(-(latent - first) // n)) * n


def chunk_count(latent: int, causal: CausalConfig, fresh: bool) -> int:
    """Chunks of `latent` latent frames (a length latent_length accepted)."""
    first = 1 if (fresh and causal.independent_first_frame) else 0
    return first + (latent - first) // causal.chunk_frames


def check_room(start_frame: int, latent: int, limit: int, causal: CausalConfig, *, fps: float,
               temporal_scale: int) -> None:
    """Refuse a video that would end past latent frame `limit`; name the longest valid length that still fits."""
    if start_frame + latent <= limit:
        return
    fresh = start_frame == 0
    first = 1 if (fresh and causal.independent_first_frame) else 0
    room = limit - start_frame
    fit = first + (room - first) // causal.chunk_frames * causal.chunk_frames
    why = (f"the RoPE limit of {limit} latent frames per video (absolute positions)" if limit < MAX_LATENT_FRAMES
           else f"the limit of {limit} latent frames per run")
    have = f"this session is at latent frame {start_frame}; " if start_frame else ""
    can = (f"ask for at most {_lengths(fit, fresh, temporal_scale, fps)}" if fit >= first + causal.chunk_frames
           else "no whole chunk fits: start a new video")
    raise ConfigError(f"{_lengths(latent, fresh, temporal_scale, fps)} go past {why}; {have}{can}")


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
