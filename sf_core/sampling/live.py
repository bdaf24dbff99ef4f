"""Live runs: chunk after chunk until the user stops, steered between chunks.

    run = LiveRun(model, session, encode=text_encoder, prompt="a red square moving right")
    threading.Thread(target=lambda: run.controls.submit(parse_line("prompt a blue circle moving up"))).start()
    summary = run.run(on_chunk=show)          # returns after a "stop" control (or a limit)

`LiveRun.run` is a loop over the session's one chunk step (`pipeline.SessionStepper.step`). Controls arrive
from any thread (an HTTP handler, a stdin reader) through `LiveRun.controls` and are applied at the next chunk
boundary, in order:
- prompt (text, blend_chunks=0): encode the text; from the next chunk on generate under it. blend_chunks 0 =
  switch at once with a KV re-cache of the window (LongLive); k > 0 = blend the conditioning over k chunks and
  keep the cache (smoother, slower to react);
- pause / resume: stop generating and wait for controls / go on;
- reset: forget the cached frames and start a new shot (the video file goes on);
- stop: end the run cleanly after the current chunk.
Each control's `result` (a concurrent Future) gets the run's state once applied, or the error that refused it
(an empty text, a text that encodes to NaN/inf): a bad control never stops the run. The live loop keeps no
frames: memory is the session (fixed by its rolling window) plus what `on_chunk` keeps; with relative/auto
positions there is no length limit.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .pipeline import ChunkResult, SessionStepper, set_prompt
from .prompts import PromptEntry
from .session import Session

log = logging.getLogger(__name__)

ACTIONS = ("prompt", "pause", "resume", "stop", "reset")
MAX_PROMPT_CHARS = 4000
MAX_BLEND_CHUNKS = 64


class LiveControlError(ValueError):
    """A control request that cannot be applied (bad action, empty text, ...); the run goes on."""


@dataclass
class Control:
    action: str
    text: str | None = None
    blend_chunks: int = 0
    submitted: float = field(default_factory=time.perf_counter)
    result: Future = field(default_factory=Future, repr=False)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"action": self.action}
        if self.action == "prompt":
            d.update(text=self.text, blend_chunks=self.blend_chunks)
        return d


def make_control(action: Any, text: Any = None, blend_chunks: Any = 0) -> Control:
    """A validated control; LiveControlError names what is wrong and what is allowed."""
    if not isinstance(action, str) or action.strip().lower() not in ACTIONS:
        raise LiveControlError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    action = action.strip().lower()
    if action != "prompt":
        return Control(action)
    if not isinstance(text, str) or not text.strip():
        raise LiveControlError("action 'prompt' needs a non-empty 'text' (the new prompt)")
    if len(text) > MAX_PROMPT_CHARS:
        raise LiveControlError(f"prompt text has {len(text)} characters; at most {MAX_PROMPT_CHARS} are accepted")
    if isinstance(blend_chunks, bool) or blend_chunks is None:
        blend_chunks = 0 if blend_chunks is None else blend_chunks
    try:
        k = float(blend_chunks)
    except (TypeError, ValueError):
        raise LiveControlError(f"blend_chunks must be a whole number 0..{MAX_BLEND_CHUNKS}, "
                               f"got {blend_chunks!r}") from None
    if not math.isfinite(k) or k != int(k) or not 0 <= k <= MAX_BLEND_CHUNKS:
        raise LiveControlError(f"blend_chunks must be a whole number 0..{MAX_BLEND_CHUNKS} (0 = switch at once with "
                               f"a KV re-cache), got {blend_chunks!r}")
    return Control("prompt", text.strip(), int(k))


def parse_control(obj: Any) -> Control:
    """A control from a JSON object {"action", "text", "blend_chunks"} (the HTTP contract)."""
    if not isinstance(obj, Mapping):
        raise LiveControlError(f"expected a JSON object with 'action', got {type(obj).__name__}")
    return make_control(obj.get("action"), obj.get("text"), obj.get("blend_chunks", 0))


def parse_line(line: str) -> Control | None:
    """A control from a command line: `prompt TEXT`, `blend K TEXT`, `pause`, `resume`, `reset`, `stop`.

    Empty lines and lines starting with '#' give None. A line that is not a command is refused (no guessing)."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    word, _, rest = line.partition(" ")
    word = word.lower()
    if word == "blend":
        k, _, text = rest.strip().partition(" ")
        if not k.isdigit():
            raise LiveControlError(f"'blend' needs a chunk count and a prompt: 'blend 3 a blue circle moving up', "
                                   f"got {line!r}")
        return make_control("prompt", text, int(k))
    if word == "prompt":
        return make_control("prompt", rest)
    if word in ACTIONS:
        if rest.strip():
            raise LiveControlError(f"'{word}' takes no argument, got {line!r}")
        return make_control(word)
    raise LiveControlError(f"unknown command {word!r}; use: prompt TEXT | blend K TEXT | pause | resume | reset | stop")


class ControlInbox:
    """Thread-safe queue of controls for one run; closed once the run has ended."""

    def __init__(self) -> None:
        self._q: queue.Queue[Control] = queue.Queue()
        self._closed = threading.Event()

    def submit(self, control: Control) -> Future:
        if self._closed.is_set():
            raise LiveControlError("this live stream has ended; start a new one")
        self._q.put(control)
        return control.result

    def drain(self) -> list[Control]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float) -> Control | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def pending(self) -> int:
        return self._q.qsize()

    def close(self, reason: str = "the live stream has ended") -> None:
        self._closed.set()
        for c in self.drain():
            if not c.result.done():
                c.result.set_exception(LiveControlError(reason))

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


@dataclass
class LiveChunk:
    """What `on_chunk` receives for each chunk of a live run."""

    result: ChunkResult  # latents, decoded frames (if a decoder), timing, session
    prompt: str  # the prompt text in effect for this chunk
    actions: list[dict]  # controls applied just before it: action, text, ok, error, latency_s (submit -> done)
    gen_fps: float  # generated latent frames per second of wall time over the recent chunks
    blend: float = 1.0  # weight of `prompt` in the conditioning (< 1 during a blend)


@dataclass
class LiveSummary:
    chunks: int
    latent_frames: int
    seconds: float
    status: str  # "stopped" | "limit"
    prompt: str
    actions: tuple = ()  # controls applied after the last chunk (e.g. a `reset` sent with `stop`): no chunk
                         # carries them, so the summary reports them


class WriteFailed(Exception):
    """The video writer failed at a chunk (a full disk): a front end raises it from its chunk callback so the run
    stops at that chunk instead of running on, and keeps the session."""

    def __init__(self, chunk: int, cause: OSError):
        super().__init__(f"writing the video failed at chunk {chunk} ({cause.strerror or cause})")
        self.chunk, self.cause = chunk, cause


class LiveRun:
    """One live run over a session; see the module docstring. `encode(text) -> [1 or B, L, text_dim]`."""

    def __init__(self, model, session: Session, *, encode: Callable[[str], torch.Tensor], prompt: str,
                 decoder: Any | None = None, backend: str = "sdpa", max_chunks: int | None = None,
                 max_seconds: float | None = None):
        if max_chunks is not None and max_chunks < 1:
            raise LiveControlError(f"max_chunks must be >= 1 (or None for no limit), got {max_chunks}")
        if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
            raise LiveControlError(f"max_seconds must be a finite number > 0 (or None), got {max_seconds}")
        self.session, self.encode = session, encode
        self.stepper = SessionStepper(model, session, decoder=decoder, backend=backend)
        self.controls = ControlInbox()
        self.max_chunks, self.max_seconds = max_chunks, max_seconds
        self.state = "running"
        self.prompt = prompt
        self.chunks = 0
        self._stop = False
        self._times: deque[tuple[float, int]] = deque(maxlen=8)
        entry = session.prompts.entries[session.prompts.entry_index(session.chunk_index)]
        if entry.text is None:  # name the opening prompt in the schedule (it travels with saved sessions)
            session.prompts = dataclasses.replace(
                session.prompts, entries=tuple(dataclasses.replace(e, text=prompt) if e is entry else e
                                               for e in session.prompts.entries), _memo={})

    # ------------------------------------------------------------------ state
    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "chunk": self.session.chunk_index, "prompt": self.prompt,
                "paused": self.state == "paused", "pending": self.controls.pending(),
                "latent_frames": self.session.next_frame}

    def submit(self, control: Control) -> Future:
        return self.controls.submit(control)

    # ------------------------------------------------------------------ controls
    def _apply(self, c: Control) -> dict[str, Any]:
        rec = c.describe()
        try:
            if c.action == "prompt":
                self._switch(c.text, c.blend_chunks)
            elif c.action == "pause":
                self.state = "paused"
            elif c.action == "resume":
                self.state = "running"
            elif c.action == "reset":
                self.session.reset_shot()
            elif c.action == "stop":
                self._stop = True
                self.state = "stopping"
        except LiveControlError as exc:
            rec.update(ok=False, error=str(exc))
            c.result.set_exception(exc)
            log.warning("live control refused: %s", exc)
            return rec
        rec["ok"] = True
        c.result.set_result({**self.snapshot(), "applied": True, "action": c.action})
        return rec

    def _switch(self, text: str, blend: int) -> None:
        try:
            ctx = self.encode(text)
        except Exception as exc:  # noqa: BLE001 - any encoder failure refuses this prompt only
            raise LiveControlError(f"could not encode the prompt {text[:80]!r}: {exc}") from exc
        width = self.session.prompts.width
        if not isinstance(ctx, torch.Tensor) or ctx.ndim != 3 or ctx.shape[-1] != width:
            raise LiveControlError(f"the text encoder returned {tuple(getattr(ctx, 'shape', ()))}, expected "
                                   f"[B, L, {width}]; use the text encoder that matches the model")
        if not torch.isfinite(ctx).all():
            raise LiveControlError(f"the prompt {text[:80]!r} encodes to NaN/inf values; not switching (check the "
                                   f"text encoder's dtype or weights)")
        sched = self.session.prompts
        at = self.session.chunk_index
        keep = sched.entries[max(0, sched.entry_index(at - 1) - 1):] if at > 0 else sched.entries[:1]
        keep = tuple(e for e in keep if e.start_chunk < at)  # bounded: the blend source and the prompt in effect
        if keep:
            keep = (dataclasses.replace(keep[0], start_chunk=0),) + keep[1:]
        base = dataclasses.replace(sched, entries=keep or sched.entries[:1], _memo={},
                                   policy="keep" if blend > 0 else "recache", transition_chunks=blend)
        self.session.prompts = base
        set_prompt(self.session, ctx.detach().to("cpu"), text, at_chunk=at)
        self.prompt = text

    def _current_prompt(self) -> tuple[str, float]:
        sched, ci = self.session.prompts, self.session.chunk_index
        i = sched.entry_index(ci)
        e: PromptEntry = sched.entries[i]
        k = int(sched.transition_chunks)
        a = 1.0 if (i == 0 or k <= 1) else min(1.0, (ci - e.start_chunk + 1) / k)
        return e.text or "", a

    # ------------------------------------------------------------------ the loop
    def run(self, *, on_chunk: Callable[[LiveChunk], None] | None = None,
            on_state: Callable[[dict], None] | None = None,
            check_interrupt: Callable[[], None] | None = None, poll_s: float = 0.1) -> LiveSummary:
        """Generate until stopped (or a limit); raises what `check_interrupt` / `on_chunk` raise (the session
        stays consistent: an interrupted chunk is rolled back)."""
        t_start = time.perf_counter()
        status = "stopped"
        applied: list[tuple[Control, dict]] = []
        try:
            while True:
                if check_interrupt is not None:
                    check_interrupt()
                before = self.state
                for c in self.controls.drain():
                    applied.append((c, self._apply(c)))
                if on_state is not None and self.state != before:
                    on_state(self.snapshot())
                if self._stop:
                    break
                if self.state == "paused":
                    c = self.controls.wait(poll_s)
                    if c is not None:
                        applied.append((c, self._apply(c)))
                        if on_state is not None:
                            on_state(self.snapshot())
                    continue
                if self.max_chunks is not None and self.chunks >= self.max_chunks or \
                        self.max_seconds is not None and time.perf_counter() - t_start >= self.max_seconds:
                    status = "limit"
                    break
                prompt, blend = self._current_prompt()
                step_cb = None if check_interrupt is None else (lambda _info: check_interrupt())
                res = self.stepper.step(on_step=step_cb)
                done = time.perf_counter()
                self.chunks += 1
                self._times.append((done, res.latents.shape[2]))
                recs = []
                for c, rec in applied:
                    recs.append({**rec, "latency_s": round(done - c.submitted, 4)})
                applied = []
                if on_chunk is not None:
                    on_chunk(LiveChunk(res, prompt, recs, self._fps(), blend))
        finally:
            self.state = "stopped"
            self.controls.close()
        end = time.perf_counter()
        tail = tuple({**rec, "latency_s": round(end - c.submitted, 4)} for c, rec in applied)
        return LiveSummary(self.chunks, self.session.next_frame, end - t_start, status, self.prompt, tail)

    def _fps(self) -> float:
        if len(self._times) < 2:
            return 0.0
        dt = self._times[-1][0] - self._times[0][0]
        frames = sum(n for _, n in list(self._times)[1:])
        return round(frames / dt, 3) if dt > 0 else 0.0


__all__ = ["LiveRun", "LiveChunk", "LiveSummary", "WriteFailed", "Control", "ControlInbox", "LiveControlError", "make_control",
           "parse_control", "parse_line", "ACTIONS"]
