"""Session nodes: continue a video for N more chunks (optionally with a new prompt), save and load sessions.

An SF_SESSION value is an `sf_core.sampling.session.Session` on the CPU. Continuing copies it to the model's device,
so the input session is never modified and re-running a graph from the host's cache gives the same result.
Session files are `sf_core.sampling.session_io` safetensors files in the output folder.
"""
from __future__ import annotations

import dataclasses
import os

from comfy_api.latest import io, ui

from sf_core.sampling.pipeline import set_prompt
from sf_core.sampling.prompts import SWITCH_POLICIES
from sf_core.sampling.session import Session, SessionError
from sf_core.sampling.session_io import load_session, save_session

from . import host, types
from .inputs import batch_context, conditioning_tensor
from .runner import session_to
from .sampler import common_inputs, run_node, text_dim_of

SESSION_DIR = "selfforcing"


def _session(value) -> Session:
    if not isinstance(value, Session):
        raise host.NodeInputError(f"session: expected an SF_SESSION (from SF Causal Sampler, SF Continue Session or "
                                  f"SF Load Session), got {type(value).__name__}")
    return value


class ContinueSession(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_ContinueSession",
            display_name="SF Continue Session",
            category=types.CATEGORY,
            description="Generate more chunks after the end of a session without recomputing the past (the KV "
                        "cache carries it), optionally under a new prompt. Same latents as one longer run.",
            inputs=[
                io.Model.Input("model", tooltip="The same MODEL that produced the session."),
                types.Session.Input("session", tooltip="From SF Causal Sampler, SF Continue Session or SF Load "
                                                       "Session."),
                io.Int.Input("chunks", default=7, min=1, max=1024,
                             tooltip="Chunks to add (3-frame chunks: 12 video frames each, 0.75 s at 16 fps)."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="New prompt from the first new chunk on; if not connected the "
                                              "session's prompt schedule continues."),
                io.Combo.Input("switch_policy", options=list(SWITCH_POLICIES), default="recache",
                               tooltip="With a new prompt: recache recomputes the cached frames under it (takes "
                                       "effect at once); keep changes only the text (cheaper, reacts slower)."),
                *common_inputs(),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="Raw latent of the new chunks only."),
                types.Session.Output(display_name="session", tooltip="The longer session."),
                io.Image.Output(display_name="frames",
                                tooltip="The new frames, decoded seamlessly after the session's earlier frames "
                                        "(needs 'vae'; the session remembers the VAE's stream)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, session, chunks, switch_policy, fps, live_preview, positive=None, vae=None,
                preview_decoder=None) -> io.NodeOutput:
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        src = _session(session)
        dm = host.wan_module_of(model)
        try:
            src.check_model(dm)
        except SessionError as e:
            raise host.NodeInputError(str(e)) from None
        ctx = None
        if positive is not None:
            ctx = batch_context(conditioning_tensor(positive, text_dim_of(dm)), src.batch).detach().cpu()
        loaded = host.load_wan(model)
        s = session_to(src, loaded.device, loaded.dtype)
        if ctx is not None:
            s.prompts = dataclasses.replace(s.prompts, policy=switch_policy, _memo={})
            set_prompt(s, ctx)
        latent, kept, images = run_node(loaded, s, node_id, "continue", int(chunks), vae, preview_decoder, fps,
                                        live_preview)
        return io.NodeOutput(latent, kept, images)


class SaveSession(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_SaveSession",
            display_name="SF Save Session",
            category=types.CATEGORY,
            description="Write a session to a safetensors file in the output folder, to continue the video in "
                        "another run (SF Load Session) or with `python -m sf_core generate --resume`.",
            inputs=[
                types.Session.Input("session", tooltip="The session to save."),
                io.String.Input("filename_prefix", default=f"{SESSION_DIR}/session",
                                tooltip="Path under the output folder; a counter and .safetensors are appended."),
                io.Boolean.Input("include_cache", default=True,
                                 tooltip="Store the KV cache (exact, larger). Without it the file is small and "
                                         "the cache is recomputed on load (needs the MODEL on SF Load Session)."),
            ],
            outputs=[io.String.Output(display_name="session_file",
                                      tooltip="Saved file, relative to the output folder.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, session, filename_prefix, include_cache) -> io.NodeOutput:
        s = _session(session)
        root = os.path.realpath(host.output_directory())
        prefix = host.inside(filename_prefix.strip() or f"{SESSION_DIR}/session", {"output": root},
                             "filename_prefix", f"{SESSION_DIR}/session")
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        i = 1
        while os.path.exists(f"{prefix}_{i:05d}.safetensors"):
            i += 1
        path = save_session(s, f"{prefix}_{i:05d}.safetensors", include_cache=bool(include_cache))
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        text = f"{rel}: {s.next_frame} latent frames, {s.chunk_index} chunks"
        return io.NodeOutput(rel, ui=ui.PreviewText(text))


def _session_files() -> list[str]:
    root = host.output_directory()
    base = os.path.join(root, SESSION_DIR)
    out = []
    for dirpath, _, files in os.walk(base):
        for f in files:
            if f.endswith(".safetensors"):
                out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out)


class LoadSession(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_LoadSession",
            display_name="SF Load Session",
            category=types.CATEGORY,
            description="Read a session file written by SF Save Session (or the CLI) to continue its video.",
            inputs=[
                io.String.Input("session_file", default=f"{SESSION_DIR}/session_00001.safetensors",
                                tooltip="Path relative to the output folder (where SF Save Session writes); an "
                                        "absolute path must lie inside ComfyUI's output or input folder."),
                io.Model.Input("model", optional=True,
                               tooltip="Needed only for files saved without their KV cache (it is recomputed); "
                                       "also checks the file belongs to this model."),
            ],
            outputs=[types.Session.Output(display_name="session")],
        )

    @classmethod
    def fingerprint_inputs(cls, session_file, model=None):
        try:
            path = cls._path(session_file)
        except host.NodeInputError:
            return float("nan")  # execute reports it
        return os.path.getmtime(path) if os.path.isfile(path) else float("nan")

    @staticmethod
    def _path(session_file: str) -> str:
        """The file inside the output or input folder (like SF Save Session, which writes only into output):
        a graph shared with a server must not read arbitrary files of that machine through this node."""
        return host.inside(session_file, {"output": host.output_directory(), "input": host.input_directory()},
                           "session_file", f"{SESSION_DIR}/session_00001.safetensors")

    @classmethod
    def execute(cls, session_file, model=None) -> io.NodeOutput:
        path = cls._path(session_file)
        try:
            if model is None:
                return io.NodeOutput(load_session(path, None, device=host.intermediate_device()))
            loaded = host.load_wan(model)  # a cacheless file is recomputed on the model's device
            s = load_session(path, loaded.module, device=loaded.device)
        except SessionError as e:
            raise host.NodeInputError(str(e)) from None
        return io.NodeOutput(session_to(s, host.intermediate_device()))
