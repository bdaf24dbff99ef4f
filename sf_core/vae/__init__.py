"""Wan2.1 latents to frames: our Wan2.1 causal VAE, ComfyUI's loaded VAE and TAEHV behind one streaming
chunk-decoder protocol (`protocol`): `frames, state = decoder.decode_chunk(z, state)`.

Nothing here imports ComfyUI; importing has no side effects.
"""
from .comfy_decoder import ComfyDecoderState, ComfyWanDecoder
from .latent import LATENT_CHANNELS, WAN21_MEAN, WAN21_STD, denormalize, normalize
from .loader import detect_format, load_decoder, load_taehv, load_wan_vae, read_state_dict, save_wan_vae
from .protocol import ChunkDecoder, VAEError, decode_stream, frames_out
from .taehv import TAEHV, TAEHVState
from .wan_vae import WanDecoderState, WanVAE, WanVAEConfig

__all__ = [
    "ChunkDecoder", "ComfyDecoderState", "ComfyWanDecoder", "LATENT_CHANNELS", "TAEHV", "TAEHVState", "VAEError",
    "WAN21_MEAN", "WAN21_STD", "WanDecoderState", "WanVAE", "WanVAEConfig", "decode_stream", "denormalize",
    "detect_format", "frames_out", "load_decoder", "load_taehv", "load_wan_vae", "normalize", "read_state_dict",
    "save_wan_vae",
]
