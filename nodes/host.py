"""Every call this pack makes into the ComfyUI host, in one place.

Node files import ComfyUI only through this module (plus `comfy_api.latest` for schemas), so the host-free
tests replace exactly these few functions with stand-ins. Host modules are imported lazily inside the
functions: importing the pack has no side effects and never touches CUDA.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger("selfforcing.nodes")

EVENT_PREFIX = "selfforcing."


class NodeInputError(ValueError):
    """A node input the pack cannot use; the message names the value, the allowed range and the fix."""


# ---------------------------------------------------------------------------------------------- MODEL
@dataclass
class LoadedWan:
    """What the causal sampler needs from a stock MODEL (a ComfyUI ModelPatcher)."""

    patcher: Any
    base: Any  # comfy.model_base.WAN21 (has process_latent_in/out)
    module: Any  # comfy.ldm.wan.model.WanModel: the module tree sf_core.model.forward runs on
    device: torch.device
    dtype: torch.dtype


_WAN_PARTS = ("patch_embedding", "text_embedding", "time_embedding", "time_projection", "blocks", "head")


def wan_module_of(model) -> Any:
    """The Wan diffusion module inside a MODEL, or a clear error for anything else.

    Latent channels must be Wan2.1's 16 unless the MODEL declares its own (`sf_latent_channels`: the toy model).
    """
    base = getattr(model, "model", None)
    dm = getattr(base, "diffusion_model", None)
    if dm is None or not all(hasattr(dm, p) for p in _WAN_PARTS) or not hasattr(dm.head, "modulation"):
        kind = type(dm).__name__ if dm is not None else type(base).__name__
        raise NodeInputError(
            f"MODEL is not a Wan2.1 text-to-video model (got {kind}). Load a Wan2.1 T2V model (e.g. the Self "
            f"Forcing checkpoint) with 'Load Diffusion Model' or 'SF Load Self Forcing Checkpoint'.")
    in_dim = dm.patch_embedding.weight.shape[1]
    out_dim = int(getattr(dm, "out_dim", 16))
    want = int(getattr(base, "sf_latent_channels", 16))
    if in_dim != want or out_dim != want:
        raise NodeInputError(
            f"MODEL is a Wan model with {in_dim} input / {out_dim} output latent channels; the causal sampler "
            f"needs a Wan2.1 text-to-video model (16 / 16). Image-to-video and Wan2.2 models are not supported.")
    return dm


def load_wan(model) -> LoadedWan:
    """Load the MODEL onto its compute device (LoRA patches applied) and read its device and compute dtype.

    The device comes from the patcher (reading it from the weights is wrong in low-VRAM mode); the dtype is
    the manual-cast dtype when set (fp8 weights), else the model's own dtype.
    """
    import comfy.model_management as mm

    dm = wan_module_of(model)
    mm.load_models_gpu([model])
    base = model.model
    dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        dtype = torch.bfloat16  # fp8 storage without a manual-cast dtype: compute in bf16
    return LoadedWan(model, base, dm, torch.device(model.load_device), dtype)


def model_shift(model) -> float | None:
    """The flow shift of the MODEL's model_sampling (honours ModelSamplingSD3 and friends), if it has one."""
    try:
        ms = model.get_model_object("model_sampling")
    except Exception:  # not a diffusion ModelPatcher
        return None
    shift = getattr(ms, "shift", None)
    return None if shift is None else float(shift)


def latent_in(base, raw: torch.Tensor) -> torch.Tensor:
    """Raw VAE latent (what LATENT holds) -> the model's normalised space."""
    return base.process_latent_in(raw)


def latent_out(base, z: torch.Tensor) -> torch.Tensor:
    """The model's normalised space -> raw VAE latent."""
    return base.process_latent_out(z)


def module_as_model(base: torch.nn.Module):
    """A host ModelPatcher around a pack module (the toy model), so memory management loads and offloads it."""
    import comfy.model_management as mm
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def load_diffusion_state_dict(sd: dict, weight_dtype: torch.dtype | None = None, metadata: dict | None = None):
    """A stock MODEL (ModelPatcher) from a Wan2.1 state dict, exactly as 'Load Diffusion Model' builds it.

    `metadata`: the file's safetensors metadata (ComfyUI >= ~0.2x reads quantisation formats from it; older
    hosts have no such argument). On NVIDIA, newer hosts return a dynamic-VRAM wrapper of ModelPatcher: it is
    used through the same calls."""
    import inspect

    import comfy.sd

    opts = {} if weight_dtype is None else {"dtype": weight_dtype}
    load = comfy.sd.load_diffusion_model_state_dict
    if metadata is not None and "metadata" in inspect.signature(load).parameters:
        patcher = load(sd, model_options=opts, metadata=metadata)
    else:
        patcher = load(sd, model_options=opts)
    if patcher is None:
        raise NodeInputError("ComfyUI did not recognise the checkpoint as a diffusion model "
                             "(its keys do not match any known architecture)")
    return patcher


# ---------------------------------------------------------------------------------------------- VAE
def load_vae(vae) -> None:
    """Make sure a stock VAE's weights are on its device before streaming decode."""
    import comfy.model_management as mm

    mm.load_models_gpu([vae.patcher])


# ---------------------------------------------------------------------------------------------- execution
def check_interrupt() -> None:
    """Raise the host's interruption exception if the user pressed Cancel (POST /interrupt)."""
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()


def intermediate_device() -> torch.device:
    import comfy.model_management as mm

    return torch.device(mm.intermediate_device())


def free_memory() -> None:
    """Return cached device memory after a run (or an interruption)."""
    import comfy.model_management as mm

    mm.soft_empty_cache()


class Progress:
    """The node's progress bar; each update is also an interruption point in the host."""

    def __init__(self, total: int, node_id: str | None):
        import comfy.utils

        self.total = max(int(total), 1)
        self._bar = comfy.utils.ProgressBar(self.total, node_id=node_id)

    def update(self, value: int, preview=None) -> None:
        """preview: a PIL image shown on the node (sent as JPEG, at most 512 px)."""
        self._bar.update_absolute(min(int(value), self.total), self.total,
                                  None if preview is None else ("JPEG", preview, 512))


def send_event(name: str, data: dict) -> None:
    """Send a custom websocket event `selfforcing.<name>` to the client that queued the prompt."""
    try:
        from server import PromptServer
    except ImportError:  # not inside the server (e.g. a script using the nodes)
        return
    inst = getattr(PromptServer, "instance", None)
    if inst is None:
        return
    inst.send_sync(EVENT_PREFIX + name, data, getattr(inst, "client_id", None))


def send_text(text: str, node_id: str | None) -> None:
    """Status text under the node."""
    try:
        from server import PromptServer
    except ImportError:
        return
    inst = getattr(PromptServer, "instance", None)
    if inst is not None and node_id is not None:
        inst.send_progress_text(text, node_id)


# ---------------------------------------------------------------------------------------------- text, video
def encode_text(clip, text: str) -> torch.Tensor:
    """Prompt text -> conditioning tensor [1, L, D] through a CLIP object (stock CLIPLoader, or the toy's)."""
    tokens = clip.tokenize(text)
    cond = clip.encode_from_tokens_scheduled(tokens)
    return cond[0][0]


def video_output(path: str):
    """A VIDEO value for a finished mp4 file (what stock video nodes pass on)."""
    from comfy_api.latest import InputImpl

    return InputImpl.VideoFromFile(path)


def saved_video_ui(filename: str, subfolder: str):
    """The node's UI entry for a file in the output folder: shown in the queue / history like SaveVideo's."""
    from comfy_api.latest import io, ui  # public names only (core's nodes_video.py does the same)

    return ui.PreviewVideo([ui.SavedResult(filename, subfolder, io.FolderType.output)])


# ---------------------------------------------------------------------------------------------- folders
def temp_directory() -> str:
    import folder_paths

    return folder_paths.get_temp_directory()


def output_directory() -> str:
    import folder_paths

    return folder_paths.get_output_directory()


def input_directory() -> str:
    import folder_paths

    return folder_paths.get_input_directory()


def inside(name: str, roots: dict[str, str | list[str]], what: str, example: str) -> str:
    """The real path of `name` (relative to the first root, or absolute), required to lie inside one of `roots`
    ({label: folder or folders}) after `..` and symbolic links are resolved. Every node that reads or writes a
    file a graph names goes through here: /prompt is unauthenticated, so a graph must not reach other files."""
    real = {label: [os.path.realpath(f) for f in ([folders] if isinstance(folders, str) else folders)]
            for label, folders in roots.items()}
    name = str(name).strip()
    first = next(iter(real.values()))[0]
    path = os.path.realpath(name if os.path.isabs(name) else os.path.join(first, name))
    for folders in real.values():
        for root in folders:
            if os.path.commonpath([root, path]) == root:
                return path
    labels = " and ".join(real)
    where = f"ComfyUI's {labels} folder{'s' if len(real) > 1 else ''} ({', '.join(f for fs in real.values() for f in fs)})"
    raise NodeInputError(f"{what} {name!r} is outside {where}; only files there are allowed. "
                         f"Give a path relative to the {next(iter(real))} folder, e.g. {example!r}")


def model_roots() -> list[str]:
    """Every folder ComfyUI reads model files from (extra_model_paths.yaml included)."""
    import folder_paths

    out = []
    for kind in ("diffusion_models", "checkpoints", "vae", "vae_approx", "loras", "text_encoders", "clip_vision"):
        try:
            out += [f for f in folder_paths.get_folder_paths(kind) if f not in out]
        except KeyError:
            continue
    return out


def new_output_file(prefix: str, ext: str) -> tuple[str, str, str]:
    """(full path, file name, subfolder) of a new file in the output folder, SaveVideo-style: `prefix` may hold
    a subfolder ("selfforcing/live"); files are numbered <name>_00001_.<ext>. Refuses paths that leave it,
    through `..`, an absolute path or a symbolic link."""
    root = os.path.realpath(output_directory())
    norm = os.path.normpath(prefix.strip() or "selfforcing/live")
    if os.path.isabs(norm):
        raise NodeInputError(f"filename_prefix {prefix!r} is absolute; use a name relative to the output folder "
                             f"such as 'selfforcing/live'")
    full_dir = os.path.dirname(inside(norm, {"output": root}, "filename_prefix", "selfforcing/live"))
    os.makedirs(full_dir, exist_ok=True)
    base = os.path.basename(norm)
    taken = {f for f in os.listdir(full_dir)}
    n = 1
    while f"{base}_{n:05d}_.{ext}" in taken:
        n += 1
    name = f"{base}_{n:05d}_.{ext}"
    sub = os.path.relpath(full_dir, root)
    return os.path.join(full_dir, name), name, "" if sub == "." else sub.replace(os.sep, "/")


def model_files(folder: str) -> list[str]:
    """File names in a model folder (e.g. "diffusion_models", "vae_approx"); [] if the key is unknown."""
    import folder_paths

    try:
        return folder_paths.get_filename_list(folder)
    except KeyError:
        return []


def model_path(folder: str, name: str) -> str:
    import folder_paths

    return folder_paths.get_full_path_or_raise(folder, name)


def model_folder(folder: str) -> str:
    """The first (writable) directory of a model folder, created if missing (downloads go there)."""
    import folder_paths

    path = folder_paths.get_folder_paths(folder)[0]
    os.makedirs(path, exist_ok=True)
    return path


def torch_device() -> torch.device:
    """The host's compute device (where small pack models such as TAEHV go)."""
    import comfy.model_management as mm

    return torch.device(mm.get_torch_device())
