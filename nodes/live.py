"""SF Live Stream: a video that goes on until the user stops it, steered from the player while it plays.

The node runs `sf_core.sampling.live.LiveRun` on the stock MODEL (or the toy model): chunk after chunk with a rolling KV
cache (relative positions: no length limit), each chunk decoded, shown in the player and appended to an mp4 in
the output folder; nothing else is kept (the IMAGE output holds at most the last `keep_last_frames` frames).
Controls (new prompt, pause/resume, reset, stop) come over HTTP (`nodes/live_routes.py`), sent by the player's
control bar or by any API client, and apply at the next chunk boundary. The CLIP encodes each new prompt.
Cancel (ComfyUI's interrupt) ends the run too: the mp4 is finished and playable either way.
"""
from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import deque

import torch
from comfy_api.latest import io

from sf_core.sampling.live import LiveChunk, LiveControlError, LiveRun, WriteFailed
from sf_core.sampling.pipeline import set_prompt
from sf_core.sampling.session import SamplingSettings, new_session
from sf_core.video import VideoWriter

from . import host, live_routes, types
from .decoders import pick_decoder
from .inputs import causal_config, latent_shape, parse_timesteps, resolve_shift
from .runner import session_to
from .sampler import (family_input, family_settings, kv_dtype_input, merge_commit_input, sampling_inputs,
                      text_dim_of)
from .streaming import LiveStream, frames_to_image

log = logging.getLogger("selfforcing.nodes")


def rescue_session(sess) -> str | None:
    """Save the session of a stream whose video was lost into the output folder (it may be on another disk, or
    a session is far smaller than the video); returns its name relative to the output folder, or None."""
    from sf_core.sampling.session_io import save_session

    try:
        path, name, sub = host.new_output_file("selfforcing/sessions/live_rescued", "safetensors")
        save_session(session_to(sess, host.intermediate_device()), path)
    except (OSError, host.NodeInputError) as exc:
        log.warning("could not save the session of the failed live stream either: %s", exc)
        return None
    return f"{sub}/{name}" if sub else name


POSITIONS = ["relative", "auto", "absolute"]


def _blocked_frames():
    from comfy_execution.graph_utils import ExecutionBlocker

    return ExecutionBlocker("the 'frames' output of SF Live Stream is empty: set keep_last_frames > 0 (the last N "
                            "frames), or use its 'video' output")


class LiveStreamNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_LiveStream",
            display_name="SF Live Stream (steer while it plays)",
            category=types.CATEGORY,
            description="Generate a video that goes on until you press Stop in the player (or a limit): type a new "
                        "prompt in the player and the next chunk follows it; pause, reset (new shot), stop. "
                        "Chunks are written to an mp4 in the output folder as they are made.",
            inputs=[
                io.Model.Input("model", tooltip="A Self Forcing Wan2.1 T2V MODEL, or the toy model (SF Load Toy "
                                                "Model)."),
                io.Clip.Input("clip", tooltip="Text encoder for the prompts typed while it runs: CLIPLoader type "
                                              "'wan' (umT5-XXL), or the toy model's clip output."),
                io.String.Input("prompt", default="a red square moving right slow", multiline=True,
                                tooltip="The opening prompt; change it from the player while the video plays."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional empty video latent giving the size (its length is ignored): "
                                        "EmptyHunyuanLatentVideo for Wan2.1, SF Empty Toy Latent for the toy."),
                io.Int.Input("width", default=832, min=16, max=4096, step=16,
                             tooltip="Width in pixels when no latent is connected (Wan2.1)."),
                io.Int.Input("height", default=480, min=16, max=4096, step=16,
                             tooltip="Height in pixels when no latent is connected (Wan2.1)."),
                *sampling_inputs(window_min=3),
                io.Combo.Input("positions", options=POSITIONS, default="relative",
                               tooltip="RoPE frame positions: relative (re-based inside the window: no length "
                                       "limit), auto (official absolute positions up to 1024 latent frames, then "
                                       "relative), absolute (stops at 1024 latent frames, ~4 min at 16 fps)."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Wan2.1 VAE: full-quality frames for the player and the mp4."),
                types.Decoder.Input("preview_decoder", optional=True,
                                    tooltip="Fast decoder (TAEHV, or the toy decoder): used for the player and the "
                                            "mp4 when no VAE is connected, for the player only otherwise."),
                io.Float.Input("fps", default=16.0, min=1.0, max=60.0, step=1.0,
                               tooltip="Frame rate of the mp4 and of the player (Wan2.1: 16; the toy: 8)."),
                io.Int.Input("max_chunks", default=0, min=0, max=10_000_000,
                             tooltip="Stop after this many chunks (0 = until you press Stop)."),
                io.Float.Input("max_minutes", default=0.0, min=0.0, max=7 * 24 * 60.0, step=1.0,
                               tooltip="Stop after this many minutes of wall time (0 = no limit)."),
                io.Int.Input("keep_last_frames", default=0, min=0, max=4096,
                             tooltip="Frames returned on the 'frames' output: the last N (0 = none; the video "
                                     "itself is on disk, never held in memory)."),
                io.String.Input("filename_prefix", default="selfforcing/live",
                                tooltip="Where the mp4 goes, relative to the output folder."),
                io.Image.Input("start_image", optional=True,
                               tooltip="Start the stream from this image (its first frame; encoded by the VAE, or "
                                       "the toy decoder): the video begins with it and goes on from it."),
                types.Session.Input("session", optional=True,
                                    tooltip="Continue this session's video live (from SF Causal Sampler, SF Load "
                                            "Session, or an earlier live run)."),
                kv_dtype_input(),
                family_input(),
                merge_commit_input(),
            ],
            outputs=[
                io.Video.Output(display_name="video", tooltip="The finished mp4 (also saved in the output folder)."),
                types.Session.Output(display_name="session", tooltip="The final state: continue it later."),
                io.Image.Output(display_name="frames", tooltip="The last keep_last_frames frames."),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **_kw):
        """A live run is never a cached result: queueing it again starts a new stream."""
        return uuid.uuid4().hex

    @classmethod
    def execute(cls, model, clip, prompt, width, height, seed, timesteps, warp_timesteps, shift, chunk_frames,
                window_frames, sink_frames, positions, fps, max_chunks, max_minutes, keep_last_frames,
                filename_prefix, latent=None, vae=None, preview_decoder=None, session=None,
                kv_cache_dtype="auto", family="auto", start_image=None, merge_commit=False) -> io.NodeOutput:
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        start_frames = None
        text = (prompt or "").strip()
        if not text:
            raise host.NodeInputError("prompt is empty: type the opening prompt (e.g. 'a red fox in the snow')")
        vae_dec, prev_dec = pick_decoder(vae=vae), pick_decoder(decoder=preview_decoder)
        file_dec = vae_dec or prev_dec
        if file_dec is None:
            raise host.NodeInputError("connect a VAE (Wan2.1) or a preview decoder (TAEHV / the toy decoder): the "
                                      "live stream needs frames to show and to write")
        dm = host.wan_module_of(model)
        tdim = text_dim_of(dm)

        def encode(t: str) -> torch.Tensor:
            ctx = host.encode_text(clip, t)
            if ctx.shape[-1] != tdim:
                raise LiveControlError(f"the CLIP gives embeddings of width {ctx.shape[-1]}, the model expects "
                                       f"{tdim}; use the text encoder that matches the model")
            return ctx.detach().float().cpu()

        try:
            ctx0 = encode(text)
        except LiveControlError as e:
            raise host.NodeInputError(str(e)) from None
        loaded = host.load_wan(model)
        if session is not None:
            sess = session_to(session, loaded.device, loaded.dtype)
            set_prompt(sess, ctx0, text)
        else:
            causal = causal_config(chunk_frames, window_frames, sink_frames)
            settings = SamplingSettings(steps=parse_timesteps(timesteps), warp=bool(warp_timesteps),
                                        shift=resolve_shift(shift, host.model_shift(model)), causal=causal,
                                        positions=positions, kv_dtype=kv_cache_dtype or "auto",
                                        merge_commit=bool(merge_commit))
            settings = dataclasses.replace(family_settings(family, model, settings, shift_widget=shift,
                                                           chunk_frames=chunk_frames, window_frames=window_frames,
                                                           sink_frames=sink_frames), positions=positions)
            if start_image is None:
                _, _, _, h, w = latent_shape(latent, width, height, 1, 1, int(dm.patch_embedding.weight.shape[1]))
                sess = new_session(loaded.module, ctx0, latent_hw=(h, w), seed=int(seed), settings=settings,
                                   dtype=loaded.dtype, device=loaded.device)
            else:  # the image is the first frame (committed into the cache, the attention sink)
                from sf_core.sampling.context_frames import commit_frames, frames_settings

                from .context import encode_frames, rgb_frames

                z = encode_frames(rgb_frames(start_image)[:1], vae=vae, decoder=None if vae else preview_decoder)
                sess = new_session(loaded.module, ctx0, latent_hw=tuple(z.shape[-2:]), seed=int(seed),
                                   settings=frames_settings(settings), dtype=loaded.dtype, device=loaded.device)
                start_frames = commit_frames(loaded.module, sess, z.to(loaded.device), decoder=file_dec)
        for d in (vae_dec, prev_dec):
            if d is not None:
                d.prepare()
        path, name, sub = host.new_output_file(filename_prefix, "mp4")
        run = LiveRun(loaded.module, sess, encode=encode, prompt=text, decoder=file_dec,
                      max_chunks=int(max_chunks) or None, max_seconds=float(max_minutes) * 60 or None)
        stream = LiveStream(node_id, "live", fps, None, start_extra={
            "live": True, "prompt": text, "controls_url": live_routes.CONTROL_PATH})
        live_routes.register()
        live_routes.open_stream(stream.stream, run, node_id)
        last: deque[torch.Tensor] = deque(maxlen=int(keep_last_frames) or 1)
        state = {"preview": None}
        status, file_info = "error", None

        def on_chunk(c: LiveChunk) -> None:
            r = c.result
            img = frames_to_image(r.frames).cpu()  # [B, T, H, W, 3]
            try:
                writer.write(r.frames[0])
            except OSError as exc:  # e.g. no space left: stop at this chunk, not after the whole run
                raise WriteFailed(r.index, exc) from exc
            shown = img
            if prev_dec is not None and vae_dec is not None:
                with torch.no_grad():
                    px, state["preview"] = prev_dec.decode_chunk(r.latents, state["preview"])
                shown = frames_to_image(px).cpu()
            if keep_last_frames:
                last.extend(img[0])
            stream.push(shown[0], r.index, r.start_frame, extra={
                "live": True, "prompt": c.prompt, "actions": c.actions, "gen_fps": c.gen_fps,
                "chunk_s": round(r.seconds, 4), "blend": round(c.blend, 3)})

        def on_state(snap: dict) -> None:
            stream.state(snap)

        err: BaseException | None = None
        summary = None
        try:
            writer = VideoWriter(path, fps)  # a temp file beside `path` until close(): complete, or not there
            try:
                if start_frames is not None:  # the video starts with the image
                    writer.write(start_frames[0])
                    stream.push(frames_to_image(start_frames)[0].cpu(), 0, 0,
                                extra={"live": True, "prompt": text, "actions": [], "gen_fps": 0.0})
                summary = run.run(on_chunk=on_chunk, on_state=on_state, check_interrupt=host.check_interrupt)
            except BaseException as e:  # noqa: BLE001 - finish the file first (Cancel keeps it), re-raised below
                err = e
            if isinstance(err, WriteFailed):
                writer.abort()  # an mp4 cannot be finished on a full disk: no half-written file stays
                kept = rescue_session(sess)
                raise host.NodeInputError(
                    f"{err}; the video {name} was lost (an mp4 cannot be finished on a full disk). "
                    + (f"The session ({sess.chunk_index} chunks) was saved to {kept} in the output folder: continue "
                       f"it with SF Load Session." if kept else "The session could not be saved either.")
                    + " Free some space and run again.") from None
            writer.close()
            if writer.frames_written:
                file_info = {"filename": name, "subfolder": sub, "type": "output"}
            if err is not None:
                raise err
            status = summary.status
        except BaseException as e:
            status = "interrupted" if type(e).__name__ == "InterruptProcessingException" else "error"
            raise
        finally:
            live_routes.close_stream(stream.stream)
            stream.end(status, extra={"live": True, "file": file_info, "prompt": run.prompt})
            if status not in ("stopped", "limit"):
                sess.cache = None
                host.free_memory()
        if file_info is None:
            raise host.NodeInputError("the live stream ended before its first chunk: nothing was written")
        cpu = host.intermediate_device()
        out_session = session_to(sess, cpu)
        sess.cache = None
        frames = torch.stack(list(last)) if keep_last_frames and last else _blocked_frames()
        log.info("live stream %s: %d chunks, %s", stream.stream, run.chunks, path)
        return io.NodeOutput(host.video_output(path), out_session, frames, ui=host.saved_video_ui(name, sub))
