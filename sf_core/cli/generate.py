"""`python -m sf_core generate`: prompts -> causal sampler -> streaming decode -> mp4, without ComfyUI.

    python -m sf_core generate --model toy --prompt "a red square moving left fast" -o out.mp4
    python -m sf_core generate --model self_forcing_dmd.pt --vae Wan2.1_VAE.pth \\
        --text-encoder models_t5_umt5-xxl-enc-bf16.pth --tokenizer google/umt5-xxl \\
        --prompt "0:a fox in the snow" --prompt "5s:the fox starts running" --seconds 20 -o fox.mp4
    python -m sf_core generate --model ... --resume fox.session.safetensors --prompt "0:it jumps" --seconds 5

Frames are decoded and written chunk by chunk while the video is generated; the progress bar shows chunks
and frames per second. Inputs and output paths are checked before anything is loaded; every file appears
complete or not at all (written beside it and renamed). Exit codes: 0 done, 1 an output could not be written
(the message names it; the others are kept), 2 bad input (the message says what to change), 130 interrupted
(the video and, with --save-session, the session are kept and agree, so the video can be continued).
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time

import torch

from ..config import ROPE_MAX_POSITIONS, ConfigError
from ..checkpoints.families import NAMES
from ..cache.kv_quant import KV_DTYPES
from ..sampling.pipeline import Bundle, ChunkResult, generate
from ..sampling.prompts import SWITCH_POLICIES, PromptError, PromptSchedule
from ..sampling.sampler import NonFiniteError
from ..sampling.session import SessionError, new_session
from . import frames_in, inputs, outputs, plan

log = logging.getLogger("sf_core.generate")


class _DefaultOnce(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help only when it has a default and the help does not state it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return f"{text} (default: %(default)s)".lstrip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sf_core generate", description=__doc__.split("\n\n")[0],
                                formatter_class=_DefaultOnce)
    m = p.add_argument_group("model")
    m.add_argument("--model", default="toy", help="'toy' (the embedded toy model) or a Self Forcing / Wan2.1 T2V "
                   "transformer file or folder (.pt, .safetensors, sharded)")
    m.add_argument("--which", default="auto", choices=("auto", "generator", "generator_ema"),
                   help="which weights of a Self Forcing training checkpoint (auto: the ones its family's authors use)")
    m.add_argument("--family", default="auto", choices=("auto", *NAMES),
                   help="checkpoint family whose sampling defaults to use (steps, shift, chunk, window, sink, sampler; "
                        "options given here still win); auto: from the file, else self_forcing")
    m.add_argument("--lora", help="LoRA file merged into the transformer (LongLive: models/lora.pt)")
    m.add_argument("--vae", help="decoder weights: Wan2.1 VAE (Wan2.1_VAE.pth, wan_2.1_vae.safetensors) or TAEHV "
                   "(taew2_1.pth); without it only latents are written (--latents-out)")
    m.add_argument("--text-encoder", help="umT5-XXL encoder: HF folder, HF-named single file or Wan's .pth")
    m.add_argument("--tokenizer", help="umT5 tokenizer folder (needed with a single text-encoder file)")
    m.add_argument("--embeddings", help="safetensors of precomputed prompt embeddings [L, D]; prompts name tensors")
    pr = p.add_argument_group("prompts")
    pr.add_argument("--prompt", action="append", help="'TEXT', 'CHUNK:TEXT' or 'SECONDSs:TEXT' (repeatable): the "
                    "prompt from that chunk / time on")
    pr.add_argument("--prompts", metavar="FILE", help='a JSON file holding a prompt schedule, e.g. [{"start": 0, '
                    '"prompt": "..."}, {"seconds": 4, "prompt": "..."}] (start: chunk index; seconds: time)')
    pr.add_argument("--switch", default="recache", choices=SWITCH_POLICIES, help="what a prompt change does to "
                    "the KV cache: recompute it under the new prompt, or keep it")
    pr.add_argument("--transition", type=int, default=0, help="blend old -> new prompt over this many chunks")
    ln = p.add_argument_group("length and size (default 5 s)")
    g = ln.add_mutually_exclusive_group()
    g.add_argument("--seconds", type=float, help="video length, rounded up to whole chunks")
    g.add_argument("--frames", type=int, help="video frames (must fit the chunking: 81, 93, ... for Wan)")
    g.add_argument("--latent-frames", type=int, help="latent frames (21 = Self Forcing's training length)")
    ln.add_argument("--fps", type=float, help="frame rate of the mp4 (default: the model's, 16 for Wan)")
    ln.add_argument("--width", type=int, help="width in pixels (default 832 for Wan)")
    ln.add_argument("--height", type=int, help="height in pixels (default 480 for Wan)")
    sm = p.add_argument_group("sampling")
    sm.add_argument("--seed", type=int, default=0, help="noise seed (same seed and settings: same video)")
    sm.add_argument("--steps", help="denoising steps, e.g. 1000,750,500,250 (the default)")
    sm.add_argument("--shift", type=float, help="timestep shift (default 5)")
    sm.add_argument("--chunk-frames", type=int, help="latent frames per chunk (default: the model's, 3)")
    sm.add_argument("--independent-first-frame", action="store_true", default=None)
    sm.add_argument("--window", help="KV-cache window in latent frames (default 21) or 'global'")
    sm.add_argument("--sink", type=int, help="sink frames kept at the start of the window (default: first chunk)")
    sm.add_argument("--context-t", type=float, help="timestep of the context pass (default 0 = clean)")
    sm.add_argument("--positions", choices=("auto", "absolute", "relative"),
                    help="RoPE frame positions of the rolling cache: auto (default: absolute as the official code "
                         "up to 1024 latent frames, then relative: no length limit), absolute (stops at 1024), "
                         "relative (from the start)")
    rt = p.add_argument_group("runtime")
    rt.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    rt.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                    help="compute dtype (auto: bf16 on CUDA, fp32 on CPU)")
    rt.add_argument("--kv-dtype", choices=KV_DTYPES, help="KV-cache storage: auto (the compute dtype), fp32, bf16, "
                    "fp16, or int8 / fp8 (8-bit, about half the memory of bf16; small error)")
    rt.add_argument("--merge-commit", action="store_true",
                    help="commit each chunk inside the next chunk's first call (one forward over both: 4 calls per "
                         "chunk instead of 5 at 4 steps; same video within float rounding, or within the KV "
                         "storage's error with --kv-dtype; chunk sampler only)")
    rt.add_argument("--overlap-decode", action="store_true",
                    help="decode chunk k while chunk k+1 is sampled (a worker thread; its own CUDA stream on GPU): "
                         "higher throughput, each chunk shown one chunk later; the same frames (generate only)")
    rt.add_argument("--attention", default="sdpa", choices=("sdpa", "sage", "auto"))
    rt.add_argument("--threads", type=int, help="torch CPU threads")
    rt.add_argument("--plan", action="store_true", help="print the predicted peak memory (weights, KV cache, "
                    "activations, decoder) and exit; every run is checked against the free memory first")
    rt.add_argument("--no-memory-check", action="store_true", help="run even when the memory plan says it will not "
                    "fit (the plan is an estimate)")
    frames_in.add_arguments(p)
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", default="video.mp4", help="mp4 to write ('' = none)")
    out.add_argument("--crf", type=int, default=18, help="H.264 quality (lower = better, 0 = lossless)")
    out.add_argument("--latents-out", help="also save the generated latents (safetensors, key 'latents')")
    out.add_argument("--save-session", help="save the session here at the end (continue it with --resume)")
    out.add_argument("--compact-session", action="store_true", help="save the session without its KV cache "
                     "(small file; the cache is recomputed on resume)")
    out.add_argument("--resume", help="continue a saved session (its sampling settings are kept)")
    out.add_argument("--append", action="store_true", help="with --resume: add the new frames to the session's "
                     "existing video at -o (rewritten as one file), instead of writing the continuation alone")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    out.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None, bundle: Bundle | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if not args.quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args, bundle)
    except (ConfigError, PromptError, SessionError, NonFiniteError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while loading, before any chunk (during generation run() handles it)
        print("\ninterrupted before generating: nothing was written", file=sys.stderr)
        return 130


def run(args, bundle: Bundle | None = None) -> int:
    """Do the generation described by parsed `args`; `bundle` replaces loading one from the arguments."""
    from ..sampling.session_io import load_session  # noqa: PLC0415
    from ..video import VideoWriter  # noqa: PLC0415

    inputs.check_ranges(args)
    frames_in.check_given(args)  # --image / --video sizes from their headers
    specs = inputs.prompt_specs(args)  # a typo in the schedule is refused before anything is loaded
    outputs.check_outputs(args, bundle)  # every output path, before anything is loaded or generated
    if args.threads:
        torch.set_num_threads(args.threads)
    device = inputs.pick_device(args.device)
    dtype = inputs.pick_dtype(args.dtype, device)
    t_load = time.perf_counter()
    if bundle is None and args.model == "toy":
        bundle = inputs.load_bundle(args, device, dtype)  # tiny: its frame rate and frame arithmetic come with it
    inputs.check_requested(args, fps=args.fps or (bundle or Bundle).fps,
                           temporal_scale=(bundle or Bundle).temporal_scale)  # before a big model is loaded
    bundle = bundle or inputs.load_bundle(args, device, dtype)
    if (code := plan.check_run(args, bundle, device, dtype)) is not None:  # --plan; a run that cannot fit
        return code
    model = bundle.transformer
    ts = bundle.temporal_scale
    fps = args.fps or bundle.fps
    cond = inputs.conditioner(args, bundle)
    if args.resume:
        session = load_session(args.resume, model, device=device)
        st = session.settings
        if specs:
            entries = inputs.build_entries(specs, cond, fps=fps, causal=st.causal, temporal_scale=ts,
                                           offset_chunk=session.chunk_index)
            kept = tuple(e for e in session.prompts.entries if e.start_chunk < entries[0].start_chunk)
            session.prompts = PromptSchedule(kept + tuple(entries), policy=args.switch,
                                             transition_chunks=args.transition)
    else:
        st = inputs.settings_from_args(args, bundle.settings)
        entries = inputs.build_entries(specs, cond, fps=fps, causal=st.causal, temporal_scale=ts)
        schedule = inputs.new_schedule(entries, args.switch, args.transition)
        if getattr(args, "image", None) or getattr(args, "video", None):
            session, given = frames_in.start_session(args, bundle, model, schedule, st, dtype, device)
            st = session.settings
        else:
            session = new_session(model, schedule, latent_hw=inputs.latent_size(args, bundle), seed=args.seed,
                                  settings=st, dtype=dtype, device=device)
    start = session.next_frame
    fresh = start == 0
    n_latent = inputs.latent_length(args, st.causal, fps=fps, temporal_scale=ts, fresh=fresh)
    limit = inputs.MAX_LATENT_FRAMES if getattr(session.cache, "unbounded", False) else ROPE_MAX_POSITIONS
    inputs.check_room(start, n_latent, limit, st.causal, fps=fps, temporal_scale=ts)
    n_chunks = inputs.chunk_count(n_latent, st.causal, fresh)
    inputs.warn_unused(session.prompts, session.chunk_index + n_chunks, saved=bool(args.save_session))
    decoder = bundle.decoder
    if args.output and decoder is None:
        raise ConfigError("writing an mp4 needs a decoder: pass --vae (Wan VAE or TAEHV weights), or -o '' with "
                          "--latents-out to keep only the latents")
    outputs.check_space(args, session, n_latent)
    log.info("loaded %s in %.1f s; generating %d latent frames (%d chunks) at latent size %dx%d on %s (%s)",
             bundle.name, time.perf_counter() - t_load, n_latent, n_chunks, *session.latent_hw, device,
             str(dtype).removeprefix("torch."))

    writer = VideoWriter(args.output, fps, crf=args.crf) if args.output else None
    try:
        if writer is not None and getattr(args, "image", None) and given is not None:
            writer.write(given[0])  # the video starts with the image
        elif writer is not None and getattr(args, "video", None):
            writer.copy_from(args.video)  # the given video, then its continuation
        have = writer.copy_from(args.output) if args.append else None
    except BaseException:
        if writer is not None:
            writer.abort()  # no hidden temp file left beside the output
        raise
    if args.append:
        want = inputs.video_frames(start, True, ts)
        if have != want:
            writer.abort()
            raise ConfigError(f"--append: {args.output} has {have} frames, but this session continues a video of "
                              f"{want} frames ({start} latent frames): it is not this session's video (or not all "
                              f"of it); write the continuation to another file")
    stats = {"frames": 0, "first": None, "chunk_s": [], "written_end": start, "latents": []}
    bar = None if args.quiet else _progress(n_chunks)
    t0 = time.perf_counter()

    def on_chunk(r: ChunkResult) -> None:
        if r.frames is not None:
            if writer is not None:
                writer.write(r.frames[0])
            stats["frames"] += r.frames.shape[2]
        stats["written_end"] = r.start_frame + r.latents.shape[2]  # the video holds this chunk (item 9)
        if args.latents_out:
            stats["latents"].append(r.latents)
        if stats["first"] is None:
            stats["first"] = time.perf_counter() - t0
        stats["chunk_s"].append(r.seconds)
        if bar is not None:
            el = time.perf_counter() - t0
            bar.set_postfix_str(f"{stats['frames'] / el:.1f} fps, {1000 * r.seconds:.0f} ms/chunk"
                                + (" (prompt switch)" if r.switched else ""))
            bar.update(1)
        stop.check()  # a Ctrl-C during the chunk stops here: the chunk is in the session and in the video

    status = 0
    with _CtrlC() as stop:
        try:
            generate(model, session, num_frames=n_latent, decoder=decoder, on_chunk=on_chunk,
                     on_step=lambda _info: stop.check(), backend=args.attention, keep_latents=False,
                     overlap_decode=args.overlap_decode)
        except KeyboardInterrupt:
            print(f"\ninterrupted after {session.chunk_index} chunks", file=sys.stderr)
            status = 130
        except OSError as exc:
            if writer is None:
                raise
            writer.abort()  # no broken video under the output name
            print(f"error: writing the video {args.output} failed ({exc}); nothing was kept", file=sys.stderr)
            return 1
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
    elapsed = time.perf_counter() - t0
    failed = outputs.write_outputs(args, session, writer, stats)
    total = writer.frames_written if writer is not None else None
    summary = {"latent_frames": session.next_frame - start, "video_frames": stats["frames"],
               "total_latent_frames": session.next_frame, "output_frames": total, "seconds": round(elapsed, 3),
               "fps": round(stats["frames"] / elapsed, 2) if elapsed > 0 else None,
               "first_chunk_s": None if stats["first"] is None else round(stats["first"], 3),
               "mean_chunk_s": round(sum(stats["chunk_s"]) / max(len(stats["chunk_s"]), 1), 4),
               "output": args.output or None, "session": args.save_session if "session" not in failed else None,
               "latents": args.latents_out if stats["latents"] and "latents" not in failed else None}
    print(json.dumps(summary))
    return 1 if failed else status


class _CtrlC:
    """Ctrl-C while generating stops at the next safe point (a denoising step: that chunk is rolled back; or the
    end of a chunk, once it is in the video) instead of wherever it lands, so session and video always agree.
    A second Ctrl-C stops at once (the session is then saved only if it still agrees with the video)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self) -> "_CtrlC":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, _signum, _frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after a consistent point (Ctrl-C again to stop at once)", file=sys.stderr)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _progress(total: int):
    try:
        from tqdm import tqdm  # noqa: PLC0415
    except ImportError:
        return None
    return tqdm(total=total, unit="chunk", desc="generating", file=sys.stderr, dynamic_ncols=True)


if __name__ == "__main__":
    raise SystemExit(main())
