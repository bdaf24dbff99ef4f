"""Loader nodes: Self Forcing checkpoints as a stock MODEL, optional download, saved conditioning, TAEHV.

- SF Load Self Forcing Checkpoint: a `.pt` (generator / generator_ema) or `.safetensors` from the
  `diffusion_models` folder -> the same MODEL 'Load Diffusion Model' gives (LoRA and memory nodes work).
- SF Download Checkpoint: fetches a known checkpoint into `diffusion_models` -- only when this node runs.
- SF Load Conditioning: prompt embeddings from a safetensors file (API users, tests, machines without the
  5.7B-parameter umT5 text encoder).
- SF Load Preview Decoder: TAEHV from the `vae_approx` folder, a fast decoder for the live player.
"""
from __future__ import annotations

import logging
import os

import torch
from comfy_api.latest import io

from . import host, types

log = logging.getLogger("selfforcing.nodes")

WHICH = ["auto", "generator_ema", "generator"]
WEIGHT_DTYPES = {"default": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
                 "fp8_e4m3fn": torch.float8_e4m3fn}
CHECKPOINT_EXT = (".pt", ".pth", ".safetensors", ".sft", ".ckpt")
COMFY_TEXT_DIM = 4096  # ComfyUI builds every Wan2.1 model with umT5-XXL's width


def _checkpoint_files() -> list[str]:
    return sorted(f for f in host.model_files("diffusion_models") if f.lower().endswith(CHECKPOINT_EXT))


def _lora_files() -> list[str]:
    return ["none"] + sorted(f for f in host.model_files("loras") if f.lower().endswith(CHECKPOINT_EXT))


def family_options() -> list[str]:
    from sf_core.checkpoints.families import NAMES

    return ["auto", *NAMES]


def tag_family(model, family: str | None):
    """Record the checkpoint family on the MODEL (read by the sampler and live nodes' family 'auto')."""
    inner = getattr(model, "model", None)
    if inner is not None and family:
        inner.sf_family = family
    return model


def model_family(model) -> str | None:
    return getattr(getattr(model, "model", None), "sf_family", None)


class LoadCheckpoint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_LoadCheckpoint",
            display_name="SF Load Self Forcing Checkpoint",
            category=types.CATEGORY,
            description="Load a Self Forcing checkpoint (official .pt with generator / generator_ema, or a "
                        "converted .safetensors) from models/diffusion_models as a standard MODEL.",
            inputs=[
                io.Combo.Input("ckpt_name", options=_checkpoint_files(),
                               tooltip="File in models/diffusion_models (e.g. self_forcing_dmd.pt)."),
                io.Combo.Input("which", options=WHICH, default="auto",
                               tooltip="Weights inside a training checkpoint: generator_ema (smoother, used by "
                                       "the official demo), generator, or auto (EMA if present)."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default",
                               tooltip="Storage dtype of the weights (default: chosen by ComfyUI for your "
                                       "device; fp8 halves memory at a small quality cost)."),
                io.Combo.Input("family", options=family_options(), default="auto", optional=True,
                               tooltip="Checkpoint family (Self Forcing, Causal Forcing, Rolling Forcing, LongLive, "
                                       "CausVid): which weights to take and how the sampler runs it. auto: from "
                                       "the file; a file that looks like another family is refused or warned."),
                io.Combo.Input("lora", options=_lora_files(), default="none", optional=True,
                               tooltip="LoRA merged into the weights, from models/loras (LongLive: its lora.pt on "
                                       "top of longlive_base.pt)."),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, ckpt_name, which, weight_dtype, family="auto", lora="none") -> io.NodeOutput:
        from sf_core.checkpoints.files import CheckpointError
        from sf_core.config import ConfigError
        from sf_core.checkpoints.families import load_for_family

        path = host.model_path("diffusion_models", ckpt_name)
        lora_path = None if lora in (None, "", "none") else host.model_path("loras", lora)
        try:
            ck, fam = load_for_family(path, family=family, which=which, lora=lora_path)
        except (CheckpointError, ConfigError) as e:
            raise host.NodeInputError(str(e)) from None
        text_dim = getattr(ck.config, "text_dim", COMFY_TEXT_DIM)
        if text_dim != COMFY_TEXT_DIM:
            raise host.NodeInputError(
                f"{ckpt_name}: text_dim {text_dim}; ComfyUI's Wan models use umT5-XXL (4096). This looks like a "
                f"toy/test model: use it with the standalone CLI (python -m sf_core generate) instead")
        # the file's metadata goes to the host's model detection; its quantisation entries do not (the weights are
        # dequantised and renamed to Wan2.1's keys by now)
        metadata = {k: v for k, v in (ck.meta.get("metadata") or {}).items() if "quant" not in k.lower()}
        patcher = host.load_diffusion_state_dict(ck.state_dict, WEIGHT_DTYPES[weight_dtype], metadata=metadata)
        return io.NodeOutput(tag_family(patcher, fam))


class DownloadCheckpoint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from sf_core.checkpoints.hub import KNOWN

        return io.Schema(
            node_id="SF_DownloadCheckpoint",
            display_name="SF Download Self Forcing Checkpoint",
            category=types.CATEGORY,
            description="Download a known Self Forcing checkpoint from the Hugging Face Hub into "
                        "models/diffusion_models (only when this node runs; skipped if the file is there) and "
                        "load it as a MODEL.",
            inputs=[
                io.Combo.Input("checkpoint", options=sorted(k for k, v in KNOWN.items() if v.kind == "transformer"),
                               tooltip="Known checkpoint to fetch (needs internet access once)."),
                io.Combo.Input("which", options=WHICH, default="auto",
                               tooltip="generator_ema, generator, or auto (the weights the family's authors use)."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default",
                               tooltip="Storage dtype of the weights."),
            ],
            outputs=[io.Model.Output(display_name="model"),
                     io.String.Output(display_name="ckpt_name", tooltip="File name in diffusion_models.")],
        )

    @classmethod
    def execute(cls, checkpoint, which, weight_dtype) -> io.NodeOutput:
        from sf_core.checkpoints.hub import COMPANION_LORA, HubError, download

        folder = host.model_folder("diffusion_models")
        try:
            path = download(checkpoint, folder)
        except HubError as e:
            raise host.NodeInputError(str(e)) from None
        name = os.path.relpath(path, folder)
        lora = "none"
        if checkpoint in COMPANION_LORA:  # LongLive: the base generator and its LoRA, merged at load
            lfolder = host.model_folder("loras")
            try:
                lora = os.path.relpath(download(COMPANION_LORA[checkpoint], lfolder), lfolder)
            except HubError as e:
                raise host.NodeInputError(str(e)) from None
        model = LoadCheckpoint.execute(name, which, weight_dtype, lora=lora)[0]
        return io.NodeOutput(model, name)


# ---------------------------------------------------------------------------------------------- conditioning
def _input_safetensors() -> list[str]:
    root = host.input_directory()
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".safetensors"):
                out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out)


def read_conditioning(path: str, key: str = "") -> torch.Tensor:
    """Prompt embeddings [B, L, D] from a safetensors file: tensor `key`, else 'context', else the only one."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise host.NodeInputError(f"conditioning file {path} does not exist; put it in ComfyUI's input folder")
    try:
        with safe_open(path, "pt") as f:
            names = list(f.keys())
            pick = key or ("context" if "context" in names else (names[0] if len(names) == 1 else None))
            if pick is None or pick not in names:
                raise host.NodeInputError(
                    f"{os.path.basename(path)}: no tensor {key or 'context'!r}; it holds {names}. Set 'key' to one "
                    f"of them")
            t = f.get_tensor(pick)
    except host.NodeInputError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file must not crash the host
        raise host.NodeInputError(f"{os.path.basename(path)} is not a readable safetensors file: {e}") from None
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3 or not t.is_floating_point():
        raise host.NodeInputError(f"{os.path.basename(path)}[{pick}]: expected float embeddings [tokens, dim] or "
                                  f"[batch, tokens, dim], got {tuple(t.shape)} {t.dtype}")
    return t.float()


class LoadConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_LoadConditioning",
            display_name="SF Load Conditioning (embeddings file)",
            category=types.CATEGORY,
            description="Prompt embeddings saved in a safetensors file (tensor 'context' [tokens, 4096] or "
                        "[batch, tokens, 4096]) as a CONDITIONING, instead of running the umT5 text encoder.",
            inputs=[
                io.Combo.Input("file", options=_input_safetensors(),
                               tooltip="A .safetensors file in ComfyUI's input folder."),
                io.String.Input("key", default="",
                                tooltip="Tensor name in the file (empty: 'context', or the only tensor)."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, file, key) -> io.NodeOutput:
        path = host.inside(file, {"input": host.input_directory()}, "conditioning file", "prompt.safetensors")
        return io.NodeOutput([[read_conditioning(path, key.strip()), {"pooled_output": None}]])


# ---------------------------------------------------------------------------------------------- TAEHV
class LoadPreviewDecoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_LoadPreviewDecoder",
            display_name="SF Load Preview Decoder (TAEHV)",
            category=types.CATEGORY,
            description="TAEHV, a tiny decoder for Wan2.1 latents (e.g. taew2_1.pth in models/vae_approx): "
                        "much faster than the VAE, for the live player.",
            inputs=[io.Combo.Input("decoder_name", options=sorted(host.model_files("vae_approx")),
                                   tooltip="TAEHV weights in models/vae_approx (taew2_1.pth / .safetensors).")],
            outputs=[types.Decoder.Output(display_name="decoder")],
        )

    @classmethod
    def execute(cls, decoder_name) -> io.NodeOutput:
        from sf_core.vae.loader import load_taehv

        from .decoders import HostDecoder

        dev = host.torch_device()
        dec = load_taehv(host.model_path("vae_approx", decoder_name), device=dev)
        return io.NodeOutput(HostDecoder(dec, name="taehv"))
