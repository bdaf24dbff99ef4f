"""The embedded toy model in ComfyUI: a demo that runs anywhere (CPU, seconds, no downloads).

The toy model (sf_core.toy) is a real Wan-structured transformer with its own latent codec (one small video
frame per latent frame) and text encoder (the toy world's vocabulary). SF Load Toy Model wraps it in a
host ModelPatcher, so the same SF Causal Sampler, sessions and SF Streaming VAE Decode run it exactly as
they run Wan2.1; the toy's LATENTs hold its model-space latents directly (no VAE normalisation).
"""
from __future__ import annotations

import torch
from comfy_api.latest import io

from . import host, types
from .decoders import HostDecoder


class ToyBase(torch.nn.Module):
    """What the sampler reads from a MODEL's `.model`, for the toy transformer (identity latent format)."""

    def __init__(self, transformer: torch.nn.Module):
        super().__init__()
        self.diffusion_model = transformer
        self.manual_cast_dtype = None
        self.sf_latent_channels = int(transformer.patch_embedding.weight.shape[1])
        self.sf_temporal_scale = 1  # one latent frame is one video frame (the toy codec), not Wan's 4

    def get_dtype(self) -> torch.dtype:
        return self.diffusion_model.patch_embedding.weight.dtype

    def process_latent_in(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def process_latent_out(self, z: torch.Tensor) -> torch.Tensor:
        return z


def _identity(z: torch.Tensor) -> torch.Tensor:
    return z


class ToyClip:
    """The toy text encoder behind ComfyUI's CLIP interface (tokenize / encode_from_tokens_scheduled), so
    the stock CLIPTextEncode and SF Live Stream (which encodes prompts typed while it runs) accept it."""

    def __init__(self):
        from sf_core.toy.spec import toy_wan_config
        from sf_core.toy.text import ToyTextEncoder

        cfg = toy_wan_config()
        self.encoder = ToyTextEncoder(text_dim=cfg.text_dim, text_len=cfg.text_len)

    def tokenize(self, text: str, **_kw) -> dict:
        return {"toy": [str(text)]}

    def encode_from_tokens_scheduled(self, tokens: dict, **_kw) -> list:
        return [[self.encoder.encode(list(tokens["toy"])), {"pooled_output": None}]]

    def encode_from_tokens(self, tokens: dict, return_pooled: bool = False, **_kw):
        cond = self.encoder.encode(list(tokens["toy"]))
        return (cond, None) if return_pooled else cond


class LoadToyModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_LoadToyModel",
            display_name="SF Load Toy Model (runs anywhere)",
            category=f"{types.CATEGORY}/toy",
            description="The pack's embedded toy model: coloured shapes moving on small frames, trained with Self "
                        "Forcing by this project. Use it with SF Toy Text Encode, SF Empty Toy Latent and the "
                        "normal causal sampler to try the pack without downloading Wan2.1.",
            inputs=[io.Int.Input("upscale", default=4, min=1, max=16,
                                 tooltip="Enlarge the decoded frames (nearest neighbour) for viewing.")],
            outputs=[io.Model.Output(display_name="model"),
                     types.Decoder.Output(display_name="decoder", tooltip="The toy latent decoder (for SF "
                                          "Streaming VAE Decode / the sampler's preview_decoder)."),
                     io.Clip.Output(display_name="clip", tooltip="The toy text encoder as a CLIP: for "
                                    "CLIPTextEncode and SF Live Stream (prompts typed while it runs).")],
        )

    @classmethod
    def execute(cls, upscale) -> io.NodeOutput:
        from sf_core.toy.bundle import ToyModelError, load_toy_transformer
        from sf_core.toy.codec import ToyDecoder

        try:
            model = load_toy_transformer()
        except ToyModelError as e:
            raise host.NodeInputError(str(e)) from None
        patcher = host.module_as_model(ToyBase(model))
        return io.NodeOutput(patcher, HostDecoder(ToyDecoder(upscale=int(upscale)), name="toy",
                                                  latent_in=_identity), ToyClip())


class ToyTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_ToyTextEncode",
            display_name="SF Toy Text Encode",
            category=f"{types.CATEGORY}/toy",
            description="Prompt for the toy model: a shape (square, circle, triangle), a colour (red, green, blue, "
                        "yellow, cyan, magenta), a direction (left, right, up, down) and a speed (slow, fast).",
            inputs=[io.String.Input("text", default="a red square moving right fast", multiline=False,
                                    tooltip="E.g. 'a blue circle moving up slow'; other words are ignored.")],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, text) -> io.NodeOutput:
        from sf_core.toy.spec import toy_wan_config
        from sf_core.toy.text import ToyTextEncoder

        cfg = toy_wan_config()
        ctx = ToyTextEncoder(text_dim=cfg.text_dim, text_len=cfg.text_len).encode([text])
        return io.NodeOutput([[ctx, {"pooled_output": None}]])


class EmptyToyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_EmptyToyLatent",
            display_name="SF Empty Toy Latent",
            category=f"{types.CATEGORY}/toy",
            description="Size and length of a toy video (one latent frame = one video frame) for the causal "
                        "sampler's latent input.",
            inputs=[io.Int.Input("frames", default=24, min=3, max=1020, step=3,
                                 tooltip="Video frames (a multiple of 3: the toy model makes 3 frames per chunk; "
                                         "it was trained on 12, longer videos use the rolling window)."),
                    io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Videos generated together.")],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, frames, batch_size) -> io.NodeOutput:
        from sf_core.toy.codec import CHANNELS
        from sf_core.toy.spec import LATENT_HW

        z = torch.zeros(int(batch_size), CHANNELS, int(frames), *LATENT_HW, device=host.intermediate_device())
        return io.NodeOutput({"samples": z})
