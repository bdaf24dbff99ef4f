"""SF Image to Video and SF Extend Video: start from an image, or continue any video (an IMAGE batch).

The frames are encoded by the connected VAE's own encode (or the toy model's codec), committed clean into the KV
cache (`sf_core.sampling.context_frames`: the first frame is a chunk of its own and the attention sink) and the causal
sampler goes on from there. Image to video returns a video that starts with the image; Extend Video returns the
given frames followed by the new ones, decoded with the decoder's causal state primed on the given frames (no
seam). Both return the session, so SF Continue Session / SF Live Stream can go on.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from comfy_api.latest import io

from sf_core.sampling.context_frames import commit_frames, frames_settings, usable_frames
from sf_core.sampling.session import SamplingSettings, new_session

from . import host, types
from .decoders import pick_decoder
from .inputs import batch_context, causal_config, conditioning_tensor, parse_timesteps, resolve_shift
from .sampler import common_inputs, run_node, sampling_inputs, text_dim_of
from .streaming import frames_to_image

log = logging.getLogger("selfforcing.nodes")


def rgb_frames(images) -> torch.Tensor:
    """IMAGE [N, H, W, C] in [0, 1] -> [N, H, W, 3]: grey repeated, alpha dropped; anything else refused."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1:
        raise host.NodeInputError(f"expected an IMAGE batch [frames, height, width, channels], got "
                                  f"{tuple(getattr(images, 'shape', ()))}")
    c = images.shape[-1]
    if c == 1:
        images = images.expand(-1, -1, -1, 3)
    elif c == 4:
        images = images[..., :3]
    elif c != 3:
        raise host.NodeInputError(f"images have {c} channels; use RGB (3), RGBA (4) or grey (1)")
    if not torch.isfinite(images).all():
        raise host.NodeInputError("the images contain NaN/inf values")
    return images.float().clamp(0, 1)


def encode_frames(images: torch.Tensor, vae=None, decoder=None, temporal_scale: int = 4) -> torch.Tensor:
    """RGB frames [N, H, W, 3] in [0, 1] -> model-space latents [1, C, K, h, w] with the VAE's own encode, or the
    toy codec behind a pack decoder. Sizes that the encoder cannot take are refused with the nearest valid one."""
    h, w = images.shape[1:3]
    if vae is not None:
        if h % 16 or w % 16:
            raise host.NodeInputError(f"image size {w}x{h} must be a multiple of 16 for the Wan2.1 VAE; resize it "
                                      f"(e.g. ImageScale) to {w // 16 * 16 or 16}x{h // 16 * 16 or 16}")
        from sf_core.vae.latent import normalize

        host.load_vae(vae)
        raw = vae.encode(images)
        if raw.ndim == 4:
            raw = raw.unsqueeze(0)
        return normalize(raw.float())
    enc = getattr(getattr(decoder, "decoder", None), "encode", None)
    if enc is None:
        raise host.NodeInputError("connect the VAE: the frames must be encoded, and this decoder is decode-only "
                                  "(TAEHV); the toy model's decoder can encode")
    from sf_core.toy.codec import ToyDecoder
    from sf_core.toy.spec import WORLD

    if h % WORLD.height or w % WORLD.width or h // WORLD.height != w // WORLD.width:
        raise host.NodeInputError(f"toy frames are {WORLD.width}x{WORLD.height} (or a whole multiple); got {w}x{h}")
    f = h // WORLD.height
    x = images.permute(3, 0, 1, 2)  # [3, N, H, W]
    if f > 1:
        x = F.avg_pool2d(x, f)
    return ToyDecoder(upscale=1).encode(x.unsqueeze(0) * 2 - 1)


def _settings(model, timesteps, warp_timesteps, shift, chunk_frames, window_frames) -> SamplingSettings:
    n = int(chunk_frames)
    window = 1 + n * max(1, (int(window_frames) - 1) // n)
    causal = causal_config(n, window, 1)
    return frames_settings(SamplingSettings(steps=parse_timesteps(timesteps), warp=bool(warp_timesteps),
                                            shift=resolve_shift(shift, host.model_shift(model)), causal=causal))


def _prepare(model, images, vae, preview_decoder, timesteps, warp_timesteps, shift, chunk_frames, window_frames):
    """(settings, RGB frames, video frames per latent frame), checked before any work."""
    if vae is None and preview_decoder is None:
        raise host.NodeInputError("connect the VAE: it encodes the given frames and decodes the new ones")
    settings = _settings(model, timesteps, warp_timesteps, shift, chunk_frames, window_frames)
    return settings, rgb_frames(images), int(getattr(getattr(model, "model", None), "sf_temporal_scale", 4))


def _start(model, positive, images, vae, preview_decoder, settings, seed, emit: bool):
    """(loaded model, session after committing the frames, decoded given frames or None, given latents)."""
    dm = host.wan_module_of(model)
    scale = int(getattr(getattr(model, "model", None), "sf_temporal_scale", 4))
    ctx = batch_context(conditioning_tensor(positive, text_dim_of(dm)), 1).detach()
    z = encode_frames(images, vae=vae, decoder=preview_decoder if vae is None else None, temporal_scale=scale)
    loaded = host.load_wan(model)
    if z.shape[1] != int(dm.patch_embedding.weight.shape[1]):
        raise host.NodeInputError(f"the encoder gives {z.shape[1]} latent channels, the MODEL expects "
                                  f"{int(dm.patch_embedding.weight.shape[1])}: use the model's own VAE")
    session = new_session(loaded.module, ctx, latent_hw=tuple(z.shape[-2:]), seed=int(seed), settings=settings,
                          dtype=loaded.dtype, device=loaded.device)
    dec = pick_decoder(vae=vae, decoder=preview_decoder if vae is None else None)
    given = commit_frames(loaded.module, session, z.to(loaded.device), decoder=dec, emit=emit)
    return loaded, session, given, z


def _join(first_latents: dict, raw_first: torch.Tensor, images, given_images):
    latent = {"samples": torch.cat([raw_first.to(first_latents["samples"].device), first_latents["samples"]], 2)}
    if isinstance(images, torch.Tensor):
        images = torch.cat([given_images.to(images.device), images], 0)
    return latent, images


class ImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_ImageToVideo",
            display_name="SF Image to Video (Self Forcing)",
            category=types.CATEGORY,
            description="Start the video from an image: the image is encoded, put into the KV cache as the first "
                        "frame, and the causal sampler generates the rest conditioned on it. The video starts with "
                        "the image.",
            inputs=[io.Model.Input("model", tooltip="A Self Forcing Wan2.1 T2V MODEL (or the toy model)."),
                    io.Conditioning.Input("positive", tooltip="The prompt (what happens next)."),
                    io.Image.Input("image", tooltip="The start image (the first of a batch); its size is the video's "
                                                    "(a multiple of 16 for Wan2.1)."),
                    io.Int.Input("length", default=73, min=5, max=16381, step=4,
                                 tooltip="Video frames including the image: 1 + 4 x (1 + 3k) for Wan2.1 (73 = 19 "
                                         "latent frames); wrong lengths name the nearest valid ones."),
                    *sampling_inputs(window_default=19, window_min=2, sink=False), *common_inputs()],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Raw latent of the whole video (the image's "
                                                                     "frame first)."),
                     types.Session.Output(display_name="session", tooltip="Continue this video later."),
                     io.Image.Output(display_name="frames", tooltip="The decoded video, starting with the image.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive, image, length, seed, timesteps, warp_timesteps, shift, chunk_frames,
                window_frames, fps, live_preview, vae=None, preview_decoder=None) -> io.NodeOutput:
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        settings, frames, scale = _prepare(model, image, vae, preview_decoder, timesteps, warp_timesteps, shift,
                                           chunk_frames, window_frames)
        frames = frames[:1]
        latent_frames = 1 + (int(length) - 1) // scale if scale > 1 else int(length)
        n = settings.causal.chunk_frames
        if latent_frames < 1 + n or (latent_frames - 1) % n:
            lo = 1 + n * max(1, (latent_frames - 1) // n)
            vf = (lambda k: 1 + scale * (k - 1)) if scale > 1 else (lambda k: k)
            raise host.NodeInputError(f"length {length}: the image plus whole chunks of {n} latent frames; nearest "
                                      f"valid lengths {vf(lo)} or {vf(lo + n)} frames")
        loaded, session, given, z = _start(model, positive, frames, vae, preview_decoder, settings, seed, emit=True)
        full, prev = (vae, preview_decoder) if vae is not None else (preview_decoder, None)
        latent, kept, images = run_node(loaded, session, node_id, "image_to_video", (latent_frames - 1) // n, full,
                                        prev, fps, live_preview)
        given_img = frames_to_image(given)[0].cpu() if given is not None else None
        latent, images = _join(latent, host.latent_out(loaded.base, z).cpu(), images, given_img)
        return io.NodeOutput(latent, kept, images)


class ExtendVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_ExtendVideo",
            display_name="SF Extend Video (Self Forcing)",
            category=types.CATEGORY,
            description="Continue any video (an IMAGE batch, e.g. from Load Video): its last frames are encoded "
                        "into the KV cache and the causal sampler goes on from them. Returns the given frames "
                        "followed by the new ones, and a session to continue further.",
            inputs=[io.Model.Input("model", tooltip="A Self Forcing Wan2.1 T2V MODEL (or the toy model)."),
                    io.Conditioning.Input("positive", tooltip="The prompt for the continuation."),
                    io.Image.Input("video", tooltip="The frames to continue (only the last ones that fit the window "
                                                    "are encoded)."),
                    io.Int.Input("chunks", default=7, min=1, max=100000,
                                 tooltip="Chunks to add (7 chunks of 3 latent frames = 84 Wan2.1 frames)."),
                    *sampling_inputs(window_default=19, window_min=2, sink=False), *common_inputs()],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Raw latent of the new frames."),
                     types.Session.Output(display_name="session", tooltip="Continue this video later."),
                     io.Image.Output(display_name="frames", tooltip="The given frames followed by the new ones.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive, video, chunks, seed, timesteps, warp_timesteps, shift, chunk_frames,
                window_frames, fps, live_preview, vae=None, preview_decoder=None) -> io.NodeOutput:
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        settings, frames, scale = _prepare(model, video, vae, preview_decoder, timesteps, warp_timesteps, shift,
                                           chunk_frames, window_frames)
        available = 1 + (frames.shape[0] - 1) // scale if scale > 1 else frames.shape[0]
        k = usable_frames(settings.causal, available)
        take = 1 + scale * (k - 1) if scale > 1 else k
        loaded, session, _, _ = _start(model, positive, frames[-take:], vae, preview_decoder, settings, seed,
                                       emit=False)
        full, prev = (vae, preview_decoder) if vae is not None else (preview_decoder, None)
        latent, kept, images = run_node(loaded, session, node_id, "extend", int(chunks), full, prev, fps,
                                        live_preview)
        if isinstance(images, torch.Tensor):
            given = frames.to(images.device)
            if given.shape[1:3] != images.shape[1:3]:  # the decoder's size (the toy decoder enlarges frames)
                given = F.interpolate(given.permute(0, 3, 1, 2), size=tuple(images.shape[1:3]),
                                      mode="nearest").permute(0, 2, 3, 1)
            images = torch.cat([given, images], 0)
        log.info("extended %d frames (the last %d encoded) by %d chunks", video.shape[0], take, int(chunks))
        return io.NodeOutput(latent, kept, images)
