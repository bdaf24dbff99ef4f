"""SF Streaming VAE Decode: LATENT + VAE -> IMAGE, chunk by chunk with the decoder's causal cache.

Memory is constant in the video's length (one chunk of latents is decoded at a time, the VAE's causal
convolution cache carries the past), each decoded chunk is sent to the live player as soon as it exists, and
the frames equal a full `VAEDecode` (same first-frame handling: T latent frames -> 4T-3 frames).
"""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from sf_core.sampling.session import state_to
from sf_core.vae.protocol import VAEError

from . import host, types
from .decoders import HostDecoder, decode_stream, pick_decoder
from .runner import session_to
from .streaming import LiveStream

log = logging.getLogger("selfforcing.nodes")


def stream_start(session, dec: HostDecoder, frames: int):
    """(decoder state to start from, whether the session can carry the stream on) for latents of `frames` frames.

    The latents continue the session's decoded stream when they are its last `frames` frames and the session
    holds a state of this decoder (or they start the video); otherwise a new stream starts and the session's
    decoder state is left alone.
    """
    if session is None:
        return None, False
    if not hasattr(session, "next_frame"):
        raise host.NodeInputError(f"session: expected an SF_SESSION, got {type(session).__name__}")
    first = session.next_frame - frames
    if first == 0:
        return None, True
    if session.decoded_frames == first and session.decoder_state is not None:
        return session.decoder_state, True
    log.warning("SF Streaming VAE Decode: these %d latent frames do not continue the session's decoded stream "
                "(it has decoded %d of %d frames): decoding them as a new stream", frames, session.decoded_frames,
                session.next_frame)
    return None, False


def latent_chunks(z: torch.Tensor, chunk_frames: int):
    """Split [B, C, T, h, w] along T: the first chunk has chunk_frames frames, later ones too (last may be short)."""
    for s in range(0, z.shape[2], chunk_frames):
        yield z[:, :, s:s + chunk_frames]


class StreamingDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_StreamingDecode",
            display_name="SF Streaming VAE Decode",
            category=types.CATEGORY,
            description="Decode a video latent chunk by chunk with the Wan VAE's causal cache: constant memory, "
                        "identical to VAEDecode, each chunk shown in the live player as soon as it is decoded.",
            inputs=[
                io.Latent.Input("samples", tooltip="Video latent (from SF Causal Sampler or any Wan2.1 sampler)."),
                types.Session.Input("session", optional=True,
                                    tooltip="The session these latents belong to (SF Causal Sampler / SF Continue "
                                            "Session): the decode then continues its video seamlessly and the "
                                            "session output remembers the decoder state for the next "
                                            "continuation."),
                io.Vae.Input("vae", optional=True, tooltip="Wan2.1 VAE (Load VAE)."),
                types.Decoder.Input("decoder", optional=True,
                                    tooltip="A pack decoder instead of the VAE (TAEHV preview decoder, toy "
                                            "codec); used when connected."),
                io.Int.Input("chunk_frames", default=3, min=1, max=64,
                             tooltip="Latent frames decoded per step (3 -> 9 frames first, then 12)."),
                io.Float.Input("fps", default=16.0, min=1.0, max=60.0, step=1.0,
                               tooltip="Playback rate of the live player."),
                io.Boolean.Input("live_preview", default=True,
                                 tooltip="Send each decoded chunk to the browser while decoding."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="All frames [N, H, W, 3] (batch-major)."),
                     types.Session.Output(display_name="session",
                                          tooltip="The input session with this decode's stream state (empty if no "
                                                  "session was connected).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, samples, chunk_frames, fps, live_preview, vae=None, decoder=None,
                session=None) -> io.NodeOutput:
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        dec = pick_decoder(vae=vae, decoder=decoder)
        if dec is None:
            raise host.NodeInputError("SF Streaming VAE Decode needs a 'vae' (Load VAE) or a 'decoder' input")
        raw = samples.get("samples") if isinstance(samples, dict) else None
        if not isinstance(raw, torch.Tensor) or raw.ndim != 5:
            raise host.NodeInputError(f"samples: expected a video LATENT [B, C, T, h, w], got "
                                      f"{tuple(getattr(raw, 'shape', ()))}")
        z = dec.to_model_space(raw)
        state, carry = stream_start(session, dec, int(z.shape[2]))
        n = -(-z.shape[2] // int(chunk_frames))
        live = LiveStream(node_id, "decode", fps, n, enabled=bool(live_preview))
        progress = host.Progress(n, node_id)

        def on_chunk(i: int, img: torch.Tensor) -> None:
            last = live.push(img[0], i, i * int(chunk_frames))
            progress.update(i + 1, last)

        status = "error"
        try:
            try:
                images, state = decode_stream(dec, latent_chunks(z, int(chunk_frames)), on_chunk,
                                              host.check_interrupt, state)
            except VAEError:
                if state is None:
                    raise
                log.warning("SF Streaming VAE Decode: the session's decoder state belongs to another decoder; "
                            "decoding as a new stream")
                carry = False
                images, state = decode_stream(dec, latent_chunks(z, int(chunk_frames)), on_chunk,
                                              host.check_interrupt, None)
            status = "done"
        except BaseException as e:
            status = "interrupted" if type(e).__name__ == "InterruptProcessingException" else "error"
            raise
        finally:
            live.end(status)
            if status != "done":
                host.free_memory()
        out_session = session
        if carry:
            cpu = host.intermediate_device()
            out_session = session_to(session, cpu)
            out_session.decoder_state, out_session.decoded_frames = state_to(state, cpu), session.next_frame
        return io.NodeOutput(images.reshape(-1, *images.shape[2:]), out_session)
