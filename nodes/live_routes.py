"""The live streams running in this server and the HTTP routes that steer them.

    POST /selfforcing/live/control  {"stream": id, "action": "prompt"|"pause"|"resume"|"stop"|"reset",
                                     "text": "...", "blend_chunks": 0}
      200 {"stream", "state", "chunk", "prompt", "paused", "pending", "applied": true, "action"}  applied
      202 {..., "applied": false}     queued, not yet applied after WAIT_S (e.g. a slow chunk): it will be
      400 {"error": "..."}            bad request (bad JSON, unknown action, empty text, bad blend_chunks, a prompt
                                      that encodes to NaN/inf, a text encoder failure); the stream goes on
      404 {"error": "..."}            unknown stream, or one that has ended
    GET /selfforcing/live/streams   200 {"streams": [{"stream", "node", "state", "chunk", "prompt", ...}]}

The live node registers its run here while it runs (`open_stream` / `close_stream`); a control is validated at
once and applied by the run at its next chunk boundary, and the handler waits (without blocking the server) for
that to answer with the state after it. The routes are added once, when ComfyUI loads the pack's nodes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import Future
from typing import Any

from sf_core.sampling.live import LiveControlError, LiveRun, parse_control

log = logging.getLogger("selfforcing.nodes")

CONTROL_PATH = "/selfforcing/live/control"
STREAMS_PATH = "/selfforcing/live/streams"
WAIT_S = 20.0

_lock = threading.Lock()
_streams: dict[str, tuple[LiveRun, str | None]] = {}
_registered = False


def open_stream(stream: str, run: LiveRun, node_id: str | None) -> None:
    with _lock:
        _streams[stream] = (run, node_id)


def close_stream(stream: str) -> None:
    with _lock:
        _streams.pop(stream, None)


def list_streams() -> list[dict[str, Any]]:
    with _lock:
        items = list(_streams.items())
    return [{"stream": sid, "node": node, **run.snapshot()} for sid, (run, node) in items]


def submit(payload: Any) -> tuple[int, dict[str, Any], Future | None]:
    """Validate a control request and queue it: (HTTP status, body, future of its application or None)."""
    if not isinstance(payload, dict):
        return 400, {"error": f"expected a JSON object {{\"stream\", \"action\", ...}}, got {type(payload).__name__}"}, None
    sid = payload.get("stream")
    if not isinstance(sid, str) or not sid:
        return 400, {"error": "missing 'stream': the id sent in the selfforcing.stream_start event "
                              f"(or listed by GET {STREAMS_PATH})"}, None
    with _lock:
        entry = _streams.get(sid)
    if entry is None:
        return 404, {"error": f"no live stream {sid!r} is running (it ended, or the id is wrong); running: "
                              f"{[s['stream'] for s in list_streams()]}"}, None
    run, _ = entry
    try:
        control = parse_control(payload)
        fut = run.submit(control)
    except LiveControlError as exc:
        code = 404 if "ended" in str(exc) else 400
        return code, {"stream": sid, "error": str(exc)}, None
    return 202, {"stream": sid, **run.snapshot(), "applied": False, "action": control.action}, fut


async def answer(payload: Any, wait_s: float = WAIT_S) -> tuple[int, dict[str, Any]]:
    """`submit`, then wait (asynchronously) for the run to apply the control."""
    code, body, fut = submit(payload)
    if fut is None:
        return code, body
    try:
        state = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=wait_s)
    except asyncio.TimeoutError:
        return 202, body
    except LiveControlError as exc:
        return (404 if "ended" in str(exc) else 400), {"stream": body["stream"], "error": str(exc)}
    return 200, {"stream": body["stream"], **state}


def register(server=None) -> bool:
    """Add the routes to ComfyUI's server (once). Returns False outside a server (scripts, tests)."""
    global _registered
    if _registered:
        return True
    if server is None:
        try:
            from server import PromptServer
        except ImportError:
            return False
        server = getattr(PromptServer, "instance", None)
    routes = getattr(server, "routes", None)
    if routes is None:
        return False
    from aiohttp import web

    @routes.post(CONTROL_PATH)
    async def control(request):
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            return web.json_response({"error": "the request body is not valid JSON"}, status=400)
        code, body = await answer(payload)
        return web.json_response(body, status=code)

    @routes.get(STREAMS_PATH)
    async def streams(_request):
        return web.json_response({"streams": list_streams()})

    _registered = True
    return True


__all__ = ["open_stream", "close_stream", "list_streams", "submit", "answer", "register", "CONTROL_PATH",
           "STREAMS_PATH"]
