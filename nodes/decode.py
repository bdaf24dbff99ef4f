"""SF Streaming VAE Decode: LATENT + VAE -> IMAGE, chunk by chunk with the decoder's causal cache.

Memory is constant in the video's length (one chunk of latents is decoded at a time, the VAE's causal
convolution cache carries the past), each decoded chunk is sent to the live player as soon as it exists, and
the frames equal a full `VAEDecode` (same first-frame handling: T latent frames -> 4T-3 frames).
"""
from __future__ import annotations

import torch
from comfy_api.latest import io

from . import host, types
from .decoders import decode_stream, pick_decoder
from .streaming import LiveStream


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
            outputs=[io.Image.Output(display_name="images", tooltip="All frames [N, H, W, 3] (batch-major).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, samples, chunk_frames, fps, live_preview, vae=None, decoder=None) -> io.NodeOutput:
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        dec = pick_decoder(vae=vae, decoder=decoder)
        if dec is None:
            raise host.NodeInputError("SF Streaming VAE Decode needs a 'vae' (Load VAE) or a 'decoder' input")
        raw = samples.get("samples") if isinstance(samples, dict) else None
        if not isinstance(raw, torch.Tensor) or raw.ndim != 5:
            raise host.NodeInputError(f"samples: expected a video LATENT [B, C, T, h, w], got "
                                      f"{tuple(getattr(raw, 'shape', ()))}")
        z = dec.to_model_space(raw)
        n = -(-z.shape[2] // int(chunk_frames))
        live = LiveStream(node_id, "decode", fps, n, enabled=bool(live_preview))
        progress = host.Progress(n, node_id)

        def on_chunk(i: int, img: torch.Tensor) -> None:
            last = live.push(img[0], i, i * int(chunk_frames))
            progress.update(i + 1, last)

        status = "error"
        try:
            images = decode_stream(dec, latent_chunks(z, int(chunk_frames)), on_chunk, host.check_interrupt)
            status = "done"
        except BaseException as e:
            status = "interrupted" if type(e).__name__ == "InterruptProcessingException" else "error"
            raise
        finally:
            live.end(status)
            if status != "done":
                host.free_memory()
        return io.NodeOutput(images.reshape(-1, *images.shape[2:]))
