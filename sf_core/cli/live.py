"""`python -m sf_core live`: a never-ending video steered from standard input, written to mp4 as it goes.

    python -m sf_core live --model toy --prompt "a red square moving right" -o live.mp4
    > prompt a blue circle moving up          (switch at the next chunk, KV re-cache)
    > blend 3 a green triangle moving left    (blend over 3 chunks)
    > pause / resume / reset / stop

Control lines come from stdin (or --controls FILE); `@N COMMAND` holds a command until chunk N (scripts:
`printf '@10 prompt a blue circle moving up\\n@20 stop\\n' | python -m sf_core live ...`). Each chunk prints one
JSON line on stdout (chunk, seconds, prompt, actions applied before it with their latency, generation fps);
the last line is a summary. Ctrl-C, `stop`, --max-chunks, --max-wall-seconds or a length (--seconds/--frames)
end the run cleanly: the mp4 is complete and playable, and --save-session holds exactly the frames in it.
Nothing is kept in memory but the session's window: it runs for hours at flat memory and per-chunk time.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from typing import TextIO

from ..config import ConfigError
from ..fileio import check_writable
from ..sampling.live import LiveChunk, LiveControlError, LiveRun, WriteFailed, parse_line
from ..sampling.pipeline import Bundle
from ..sampling.prompts import PromptError
from ..sampling.sampler import NonFiniteError
from ..sampling.session import SessionError, new_session
from . import frames_in, inputs
from .generate import build_parser as generate_parser

log = logging.getLogger("sf_core.sampling.live")


class Interrupted(Exception):
    """Ctrl-C, raised at the next denoising step (the chunk is rolled back, mp4 and session stay in step)."""


def control_lines(src, name: str):
    """Control lines from a text or binary stream, one at a time: a line that is not UTF-8 is refused with its
    number (the others, `stop` included, still apply)."""
    for number, raw in enumerate(src, start=1):
        if isinstance(raw, str):
            yield raw
            continue
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            print(f"error: line {number} of {name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                  f"{exc.start + 1}): ignored; the other lines apply", file=sys.stderr, flush=True)

def build_parser():
    p = generate_parser()
    p.prog = "python -m sf_core live"
    p.description = __doc__.split("\n\n")[0]
    p.set_defaults(output="live.mp4")
    lv = p.add_argument_group("live")
    lv.add_argument("--controls", default="-", help="where control lines come from: '-' = stdin, a file path, "
                    "or 'none'")
    lv.add_argument("--max-chunks", type=int, help="stop after this many chunks (default: until 'stop' / Ctrl-C)")
    lv.add_argument("--max-wall-seconds", type=float, help="stop after this much wall time")
    return p


def main(argv: list[str] | None = None, bundle: Bundle | None = None, stdin: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.overlap_decode:
        parser.error("--overlap-decode is for generate: the live stream shows each chunk as soon as it is made")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if not args.quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return run(args, bundle, stdin)
    except (ConfigError, PromptError, SessionError, NonFiniteError, LiveControlError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _peak_rss_mb() -> float | None:
    try:
        import resource  # noqa: PLC0415 - POSIX only

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    except (ImportError, OSError):
        return None


def _encoder(args, bundle: Bundle):
    """text -> [1, L, D] without memoising (a live run may see any number of prompts)."""
    if args.embeddings or bundle.text_encoder is None:
        return inputs.conditioner(args, bundle)
    return lambda text: bundle.text_encoder.encode([text]).float().cpu()


def run(args, bundle: Bundle | None = None, stdin: TextIO | None = None) -> int:
    from ..sampling.session_io import load_session, save_session  # noqa: PLC0415
    from ..video import VideoWriter  # noqa: PLC0415

    inputs.check_ranges(args)
    frames_in.check_given(args)  # --image / --video sizes from their headers
    if args.max_chunks is not None and args.max_chunks < 1:
        raise ConfigError(f"--max-chunks must be >= 1, got {args.max_chunks}")
    if args.max_wall_seconds is not None and not (0 < args.max_wall_seconds < float("inf")):
        raise ConfigError(f"--max-wall-seconds must be a finite number > 0, got {args.max_wall_seconds}")
    if not args.output and not args.save_session:
        raise ConfigError("nothing would be kept: give -o FILE.mp4 and/or --save-session FILE")
    for path, what in ((args.output, "video"), (args.save_session, "session")):
        if path:
            check_writable(path, what=what)
    if args.resume and args.output and str(args.output) == str(args.resume):
        raise ConfigError("-o must not be the session file given to --resume")
    if args.threads:
        import torch  # noqa: PLC0415

        torch.set_num_threads(args.threads)
    device = inputs.pick_device(args.device)
    dtype = inputs.pick_dtype(args.dtype, device)
    bundle = bundle or inputs.load_bundle(args, device, dtype)
    model, fps = bundle.transformer, args.fps or bundle.fps
    encode = _encoder(args, bundle)
    specs = inputs.prompt_specs(args)
    if len(specs) > 1 or (specs and specs[0].start not in (None, 0)):
        raise ConfigError("a live run starts from one --prompt; change it while it runs (prompt TEXT on stdin)")
    text = specs[0].text if specs else None
    given = None  # the decoded start image (--image)
    if args.resume:
        session = load_session(args.resume, model, device=device)
        if text is not None:
            from ..sampling.pipeline import set_prompt  # noqa: PLC0415

            set_prompt(session, encode(text), text)
    else:
        if text is None:
            raise PromptError("give the opening prompt: --prompt 'a red square moving right'")
        st = inputs.settings_from_args(args, bundle.settings)
        if args.image or args.video:  # start from an image, or go on from the end of a video
            from ..sampling.prompts import PromptSchedule  # noqa: PLC0415

            session, given = frames_in.start_session(args, bundle, model, PromptSchedule.single(encode(text), text),
                                                     st, dtype, device)
        else:
            session = new_session(model, encode(text), latent_hw=inputs.latent_size(args, bundle), seed=args.seed,
                                  settings=st, dtype=dtype, device=device)
    st = session.settings
    max_chunks = args.max_chunks
    if any(getattr(args, k, None) is not None for k in ("seconds", "frames", "latent_frames")):
        n_latent = inputs.latent_length(args, st.causal, fps=fps, temporal_scale=bundle.temporal_scale,
                                        fresh=session.next_frame == 0)
        n = inputs.chunk_count(n_latent, st.causal, session.next_frame == 0)
        max_chunks = n if max_chunks is None else min(max_chunks, n)
    if args.output and bundle.decoder is None:
        raise ConfigError("writing an mp4 needs a decoder: pass --vae, or -o '' with --save-session")
    opening = text or (session.prompts.entries[-1].text or "")
    live = LiveRun(model, session, encode=encode, prompt=opening, decoder=bundle.decoder if args.output else None,
                   backend=args.attention, max_chunks=max_chunks, max_seconds=args.max_wall_seconds)

    held: list[tuple[int, str]] = []  # (chunk, line) of '@N' commands
    held_lock = threading.Lock()

    def submit_line(line: str) -> None:
        line = line.strip()
        if line.startswith("@"):
            at, _, rest = line[1:].partition(" ")
            if not at.isdigit():
                print(f"error: '@N COMMAND' needs a chunk number, got {line!r}", file=sys.stderr)
                return
            with held_lock:
                held.append((int(at), rest))
            return
        try:
            c = parse_line(line)
            if c is not None:
                live.submit(c)
        except LiveControlError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)

    src = stdin if stdin is not None else getattr(sys.stdin, "buffer", sys.stdin)
    name = "stdin"
    if args.controls not in ("-", "none"):
        src, name = open(args.controls, "rb"), args.controls  # noqa: SIM115 - read by the thread below
    if args.controls != "none":
        threading.Thread(target=lambda: [submit_line(ln) for ln in control_lines(src, name)],
                         name="sf-live-controls", daemon=True).start()

    interrupted = threading.Event()

    def check() -> None:
        if interrupted.is_set():
            raise Interrupted()

    old = signal.signal(signal.SIGINT, lambda *_: interrupted.set()) \
        if threading.current_thread() is threading.main_thread() else None
    stats = {"frames": 0, "cpu": time.process_time()}
    status = 0
    writer = VideoWriter(args.output, fps, crf=args.crf) if args.output else None  # appears complete at close()
    if writer is not None and args.image and given is not None:
        writer.write(given[0])
        stats["frames"] += given.shape[2]
    elif writer is not None and args.video:
        try:
            stats["frames"] += writer.copy_from(args.video)
        except BaseException:
            writer.abort()  # no hidden temp file left beside the output
            raise

    def on_chunk(c: LiveChunk) -> None:
        r = c.result
        if writer is not None and r.frames is not None:
            try:
                writer.write(r.frames[0])
            except OSError as exc:  # e.g. no space left: stop now, not after the whole run
                raise WriteFailed(r.index, exc) from exc
            stats["frames"] += r.frames.shape[2]
        cpu = time.process_time()
        line = {"chunk": r.index, "latent_start": r.start_frame, "seconds": round(r.seconds, 4),
                "cpu_s": round(cpu - stats["cpu"], 4), "prompt": c.prompt, "gen_fps": c.gen_fps,
                "video_frames": stats["frames"]}
        stats["cpu"] = cpu
        if c.blend < 1:
            line["blend"] = round(c.blend, 3)
        if c.actions:
            line["actions"] = c.actions
        print(json.dumps(line), flush=True)
        with held_lock:
            due = [ln for at, ln in held if at <= r.index + 1]
            held[:] = [(at, ln) for at, ln in held if at > r.index + 1]
        for ln in due:
            submit_line(ln)

    t0 = time.perf_counter()
    last_actions: list[dict] = []
    failed: WriteFailed | None = None
    try:
        try:
            summary = live.run(on_chunk=on_chunk, check_interrupt=check)
            end, last_actions = summary.status, list(summary.actions)
        except Interrupted:
            print(f"interrupted after {session.chunk_index} chunks", file=sys.stderr)
            end, status = "interrupted", 130
        except WriteFailed as exc:
            writer.abort()  # an mp4 cannot be finished on a full disk: its temp file goes, nothing half-written stays
            failed, end, status = exc, "write_failed", 1
        if writer is not None and failed is None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    saved = None
    if args.save_session:
        try:
            saved = save_session(session, args.save_session, include_cache=not args.compact_session)
        except OSError as exc:
            if failed is None:
                raise
            print(f"error: saving the session {args.save_session} failed too ({exc.strerror or exc})", file=sys.stderr)
    if failed is not None:
        kept = (f"the session ({session.chunk_index} chunks) was saved to {saved}: continue it with --resume {saved}"
                if saved else "nothing was kept (no --save-session, or it failed)")
        print(f"error: {failed}; the video {args.output} was lost (an mp4 cannot be finished on a full disk); "
              f"{kept}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t0
    print(json.dumps({"status": end, "chunks": live.chunks, "latent_frames": session.next_frame,
                      "video_frames": stats["frames"], "seconds": round(elapsed, 3),
                      "output": (args.output or None) if failed is None else None,
                      "session": str(saved) if saved else None, "prompt": live.prompt,
                      "actions": last_actions, "peak_rss_mb": _peak_rss_mb()}),
          flush=True)
    return status
