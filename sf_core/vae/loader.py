"""Load VAE weight files: the Wan2.1 VAE (`Wan2.1_VAE.pth`, ComfyUI's `wan_2.1_vae.safetensors`) and TAEHV
(`taew2_1.pth` / `taew2_1.safetensors`), with errors that name the file, the problem and the fix.

Both Wan files use the original key names (`encoder.*`, `conv1.*`, `conv2.*`, `decoder.*`, no prefix);
keys under a known wrapper prefix (`first_stage_model.`, `vae.`, ...) are accepted too, as are decoder-only
files (`decoder.*` + `conv2.*`, as the Self Forcing demo extracts them). `.pth`/`.pt` files are read with
`torch.load(weights_only=True)`: no code in a weight file ever runs.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from .protocol import VAEError
from .taehv import TAEHV
from .wan_vae import WanVAE, WanVAEConfig

log = logging.getLogger(__name__)

WAN_PREFIXES = ("first_stage_model.", "vae.", "model.", "module.")
TAEHV_PREFIXES = {"taehv_decoder.": "decoder.", "taesd_decoder.": "decoder.", "first_stage_model.decoder.": "decoder."}
_ACCEPTED = "Wan2.1_VAE.pth (Wan-AI/Wan2.1-T2V-1.3B) or ComfyUI's wan_2.1_vae.safetensors (models/vae)"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .pth/.pt/.ckpt file (a nested `state_dict`/`model` dict is unwrapped)."""
    p = Path(path)
    if not p.is_file():
        raise VAEError(f"VAE file not found: {p}; give the path of an existing .safetensors or .pth file")
    if p.suffix != ".safetensors":  # weights-only unpickling; a refusal says what the pickle wanted to run
        from ..checkpoints.files import CheckpointError, read_pickle

        try:
            obj: Any = read_pickle(p)
        except CheckpointError as e:
            raise VAEError(str(e)) from None
    else:
        from safetensors.torch import load_file

        try:
            obj = load_file(str(p), device="cpu")
        except Exception as e:  # a truncated or foreign file: unreadable
            raise VAEError(f"{p}: cannot read it as a safetensors file ({type(e).__name__}: {str(e)[:200]}); is it "
                           f"complete and a VAE weight file?") from e
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VAEError(f"{p}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    return dict(obj)


def _strip(sd: dict[str, torch.Tensor], wanted: str, prefixes) -> dict[str, torch.Tensor]:
    """Remove the first wrapper prefix under which `wanted` keys appear (no-op when they already do)."""
    if any(k.startswith(wanted) for k in sd):
        return sd
    table = prefixes if isinstance(prefixes, Mapping) else {p: "" for p in prefixes}
    for old, new in table.items():
        if any(k.startswith(old + wanted[len(new):]) for k in sd):
            return {new + k[len(old):]: v for k, v in sd.items() if k.startswith(old)}
    return sd


def detect_format(sd: Mapping[str, torch.Tensor]) -> str:
    """'wan21', 'wan22', 'diffusers_wan', 'taehv', 'taehv_super' or 'unknown'."""
    keys = set(sd)
    if "decoder.upsamples.0.upsamples.0.residual.2.weight" in keys:
        return "wan22"
    if "decoder.middle.0.residual.0.gamma" in keys or ("conv2.weight" in keys and "decoder.conv1.weight" in keys):
        return "wan21"
    if "post_quant_conv.weight" in keys or any(".resnets." in k for k in keys):
        return "diffusers_wan"
    if "decoder.0.weight" in keys and "decoder.1.conv.0.weight" in keys:
        return "taehv_super"
    if "decoder.1.weight" in keys and "decoder.3.conv.0.weight" in keys:
        return "taehv"
    return "unknown"


def _format_error(path: Any, fmt: str, wanted: str) -> VAEError:
    why = {
        "wan22": "it is the Wan2.2 VAE (48 latent channels, 16x spatial); Self Forcing uses Wan2.1 latents",
        "diffusers_wan": "it uses diffusers' AutoencoderKLWan key names (post_quant_conv, resnets, ...)",
        "taehv": "it is a TAEHV tiny-autoencoder file", "taehv_super": "it is a TAEHV 'super' decoder (Wan2.2)",
        "wan21": "it is a full Wan2.1 VAE", "unknown": "its keys match no known VAE layout",
    }[fmt]
    fix = (f"use {_ACCEPTED}" if wanted == "wan21" else
           "use taew2_1.pth / taew2_1.safetensors from madebyollin/taehv (ComfyUI: models/vae_approx)")
    if fmt == "taehv" and wanted == "wan21":
        fix = "load it with load_taehv(...) / kind='taehv' as a preview decoder"
    if fmt == "wan21" and wanted == "taehv":
        fix = "load it with load_wan_vae(...) / kind='wan'"
    return VAEError(f"{path}: not a {'Wan2.1 VAE' if wanted == 'wan21' else 'Wan2.1 TAEHV'} weight file: {why}; {fix}")


def _infer_wan_config(sd: Mapping[str, torch.Tensor], path: Any) -> WanVAEConfig:
    try:
        dim = sd["decoder.head.2.weight"].shape[1]
        z_dim = sd["conv2.weight"].shape[0]
    except KeyError as e:
        raise VAEError(f"{path}: Wan VAE weights lack {e.args[0]}; the file is incomplete or not a Wan2.1 VAE; "
                       f"use {_ACCEPTED}") from None
    if z_dim != 16:
        raise VAEError(f"{path}: latent channels (conv2) = {z_dim}; the Wan2.1 VAE has 16; use {_ACCEPTED}")
    firsts = [int(m.group(1)) for k in sd if (m := re.fullmatch(r"decoder\.upsamples\.(\d+)\.resample\.1\.weight", k))]
    if not firsts:
        raise VAEError(f"{path}: no decoder upsampling layers (decoder.upsamples.*.resample.1.weight) found; "
                       f"use {_ACCEPTED}")
    return WanVAEConfig(dim=dim, z_dim=z_dim, num_res_blocks=min(firsts) - 1)


def _load_into(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], path: Any) -> None:
    want = model.state_dict()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    bad = sorted(k for k in set(want) & set(sd) if tuple(want[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if bad:
            parts.append(f"{len(bad)} with other shapes (e.g. {bad[0]}: file {tuple(sd[bad[0]].shape)} vs "
                         f"model {tuple(want[bad[0]].shape)})")
        raise VAEError(f"{path}: weights do not fit the model: {'; '.join(parts)}; the file is damaged or of "
                       "another model")
    model.load_state_dict(dict(sd), strict=True, assign=True)


def _source(path: Any) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(path, tuple):  # (state dict, file name) from load_decoder, which read the file already
        return dict(path[0]), path[1]
    if isinstance(path, Mapping):
        return dict(path), "<state dict>"
    return read_state_dict(path), str(path)


def load_wan_vae(path: str | os.PathLike | Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", frames_per_call: int = 1) -> WanVAE:
    """The Wan2.1 VAE from a file (or a state dict), in eval mode, without gradients on its weights.
    `frames_per_call`: see `WanVAE` (1 = exact reference loop, 3 = one decoder call per chunk)."""
    sd, where = _source(path)
    sd = _strip(sd, "decoder.", WAN_PREFIXES)
    fmt = detect_format(sd)
    if fmt != "wan21":
        raise _format_error(where, fmt, "wan21")
    with_encoder = any(k.startswith("encoder.") for k in sd)
    with torch.device("meta"):
        model = WanVAE(_infer_wan_config(sd, where), with_encoder=with_encoder, frames_per_call=frames_per_call)
    _load_into(model, sd, where)
    if not with_encoder:
        log.info("%s: decoder-only Wan VAE (no encoder weights)", where)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_taehv(path: str | os.PathLike | Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> TAEHV:
    """The TAEHV decoder from `taew2_1.pth` / `.safetensors` (encoder weights in the file are ignored)."""
    sd, where = _source(path)
    sd = _strip(sd, "decoder.", TAEHV_PREFIXES)
    fmt = detect_format(sd)
    if fmt != "taehv":
        raise _format_error(where, fmt, "taehv")
    if "taehv" in Path(where).name.lower() and "taew" not in Path(where).name.lower():
        log.warning("%s: the name suggests the Hunyuan Video TAE (taehv.pth); Wan2.1 needs taew2_1", where)
    sd = {k: v for k, v in sd.items() if k.startswith("decoder.")}
    try:
        latent_ch = sd["decoder.1.weight"].shape[1]
        widths = tuple(sd[f"decoder.{i}.weight"].shape[0] for i in (1, 8, 14, 20))
        strides = tuple(sd[f"decoder.{i}.conv.weight"].shape[0] // sd[f"decoder.{i}.conv.weight"].shape[1]
                        for i in (7, 13, 19))
        out_ch = sd["decoder.22.weight"].shape[0]
    except KeyError as e:
        raise VAEError(f"{where}: TAEHV decoder weights lack {e.args[0]}; the file is incomplete or another TAE "
                       "variant; use taew2_1.pth / taew2_1.safetensors") from None
    if latent_ch != 16 or out_ch != 3:
        raise VAEError(f"{where}: TAEHV decoder for {latent_ch} latent channels and {out_ch} outputs; Wan2.1 needs "
                       "16 -> 3 (taew2_1); 48 channels is taew2_2 for Wan2.2-TI2V-5B")
    with torch.device("meta"):
        model = TAEHV(widths=widths, time_strides=strides)
    _load_into(model, sd, where)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_decoder(path: str | os.PathLike, kind: str = "auto", dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> WanVAE | TAEHV:
    """A chunk decoder from a weight file: kind 'wan', 'taehv' or 'auto' (decided by the keys)."""
    if kind not in ("auto", "wan", "taehv"):
        raise VAEError(f"decoder kind {kind!r} not in ('auto', 'wan', 'taehv')")
    sd = read_state_dict(path)
    if kind == "auto":
        fmt = detect_format(_strip(_strip(sd, "decoder.", WAN_PREFIXES), "decoder.", TAEHV_PREFIXES))
        kind = "taehv" if fmt.startswith("taehv") else "wan"
    loader = load_taehv if kind == "taehv" else load_wan_vae
    return loader((sd, str(path)), dtype=dtype, device=device)


def save_wan_vae(path: str | os.PathLike, model: WanVAE) -> None:
    """Write a WanVAE's weights as safetensors with the original key names (loads in ComfyUI's VAELoader)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path),
              metadata={"format": "pt", "sf_core.vae": "wan2.1"})
