"""Optional download of known checkpoints from the Hugging Face Hub, only when the caller asks.

Nothing here runs at import (huggingface_hub itself is imported lazily). Files keep the repository's layout
under the folder you give, and a second call finds them there without downloading again:

    python -m sf_core.checkpoints.hub list
    python -m sf_core.checkpoints.hub download self-forcing-dmd --dir checkpoints/
    python -m sf_core.checkpoints.hub download wan2.1-t2v-1.3b-comfy-fp16 --dir ComfyUI/models/diffusion_models/

Offline (HF_HUB_OFFLINE=1, no network, a closed HF_ENDPOINT) a file that is not already in the folder is a
`HubError` that says where to get it by hand.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class HubError(RuntimeError):
    """A download failed; the message names the file, the reason and what to do."""


@dataclass(frozen=True)
class KnownFile:
    repo_id: str
    files: tuple[str, ...]  # the first is the one returned; the others are companions (config.json)
    kind: str  # "transformer" | "lora" | "vae" | "text_encoder"
    description: str


_COMFY = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
KNOWN: dict[str, KnownFile] = {
    "self-forcing-dmd": KnownFile(
        "gdhe17/Self-Forcing", ("checkpoints/self_forcing_dmd.pt",), "transformer",
        "Self Forcing chunk-wise DMD checkpoint (generator, EMA, critic); convert with python -m sf_core.checkpoints.convert"),
    "self-forcing-ode-init": KnownFile(
        "gdhe17/Self-Forcing", ("checkpoints/ode_init.pt",), "transformer",
        "causal ODE-regression initialisation, the starting point of Self Forcing training"),
    # checkpoint families (sf_core.checkpoints.families): the official files, as each README downloads them
    "causal-forcing-chunkwise": KnownFile(
        "zhuhz22/Causal-Forcing", ("chunkwise/causal_forcing.pt",), "transformer",
        "Causal Forcing chunk-wise 4-step (family causal_forcing)"),
    "causal-forcing-framewise": KnownFile(
        "zhuhz22/Causal-Forcing", ("framewise/causal_forcing.pt",), "transformer",
        "Causal Forcing frame-wise 4-step (family causal_forcing_framewise)"),
    "causal-forcing-framewise-2step": KnownFile(
        "zhuhz22/Causal-Forcing", ("causal-forcing++/framewise-2step.pt",), "transformer",
        "Causal Forcing++ frame-wise 2-step, first frame 4 steps (family causal_forcing_2step)"),
    "causal-forcing-framewise-1step": KnownFile(
        "zhuhz22/Causal-Forcing", ("causal-forcing++/framewise-1step.pt",), "transformer",
        "Causal Forcing++ frame-wise 1-step, first frame 4 steps (family causal_forcing_1step)"),
    "causal-forcing-longvideo": KnownFile(
        "zhuhz22/Causal-Forcing", ("chunkwise/longvideo.pt",), "transformer",
        "Causal Forcing long-video generator, sampled with Rolling Forcing's window (family causal_forcing_long)"),
    "rolling-forcing": KnownFile(
        "TencentARC/RollingForcing", ("checkpoints/rolling_forcing_dmd.pt",), "transformer",
        "Rolling Forcing DMD checkpoint (family rolling_forcing)"),
    "longlive-base": KnownFile(
        "Efficient-Large-Model/LongLive-1.3B", ("models/longlive_base.pt",), "transformer",
        "LongLive 1.3B base generator (family longlive); add longlive-lora on top"),
    "longlive-lora": KnownFile(
        "Efficient-Large-Model/LongLive-1.3B", ("models/lora.pt",), "lora",
        "LongLive 1.3B LoRA (rank 256), merged on longlive-base at load (--lora, the loader node's 'lora')"),
    "causvid": KnownFile(
        "tianweiy/CausVid", ("autoregressive_checkpoint/model.pt",), "transformer",
        "CausVid autoregressive 3-step checkpoint (family causvid)"),
    "wan2.1-t2v-1.3b": KnownFile(
        "Wan-AI/Wan2.1-T2V-1.3B", ("diffusion_pytorch_model.safetensors", "config.json"), "transformer",
        "Wan2.1 T2V 1.3B base transformer, fp32 (teacher / critic initialisation)"),
    "wan2.1-t2v-1.3b-comfy-fp16": KnownFile(
        _COMFY, ("split_files/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors",), "transformer",
        "Wan2.1 T2V 1.3B base, ComfyUI repackaged, fp16"),
    "wan2.1-t2v-1.3b-comfy-bf16": KnownFile(
        _COMFY, ("split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors",), "transformer",
        "Wan2.1 T2V 1.3B base, ComfyUI repackaged, bf16"),
    "wan2.1-vae-comfy": KnownFile(
        _COMFY, ("split_files/vae/wan_2.1_vae.safetensors",), "vae", "Wan2.1 VAE, ComfyUI repackaged"),
    "umt5-xxl-fp8-comfy": KnownFile(
        _COMFY, ("split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",), "text_encoder",
        "umT5-XXL text encoder, ComfyUI repackaged, scaled fp8"),
    "umt5-xxl-fp16-comfy": KnownFile(
        _COMFY, ("split_files/text_encoders/umt5_xxl_fp16.safetensors",), "text_encoder",
        "umT5-XXL text encoder, ComfyUI repackaged, fp16"),
}


# A release that is a base generator plus a LoRA: the LoRA to fetch with the base (into a LoRA folder).
COMPANION_LORA = {"longlive-base": "longlive-lora"}


def resolve(name: str) -> KnownFile:
    """A known name, or `owner/repo:path/in/repo` for any other file."""
    if name in KNOWN:
        return KNOWN[name]
    if ":" in name and "/" in name.split(":", 1)[0]:
        repo, file = name.split(":", 1)
        return KnownFile(repo, (file,), "unknown", "")
    raise HubError(f"unknown checkpoint {name!r}; known: {', '.join(KNOWN)} (or give owner/repo:path/in/repo)")


def url_of(spec: KnownFile, filename: str, revision: str = "main") -> str:
    return f"https://huggingface.co/{spec.repo_id}/resolve/{revision}/{filename}"


def download(name: str, folder: str | Path, *, revision: str | None = None, token: str | bool | None = None
             ) -> Path:
    """Download `name` (see KNOWN) into `folder` (created) and return the local path of its main file."""
    spec = resolve(name)
    folder = Path(folder).expanduser()
    try:
        import huggingface_hub as hf
    except ImportError as exc:
        raise HubError("downloading needs the huggingface_hub package: pip install huggingface_hub") from exc
    try:
        from huggingface_hub import errors as hf_errors
    except ImportError:  # huggingface_hub < 0.23 keeps them in utils
        from huggingface_hub import utils as hf_errors
    folder.mkdir(parents=True, exist_ok=True)
    # huggingface_hub reads HF_HUB_OFFLINE once at import; honour it as set now (no network retries offline)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    paths = []
    for filename in spec.files:
        where = f"{spec.repo_id}/{filename}"
        try:
            paths.append(Path(hf.hf_hub_download(spec.repo_id, filename, local_dir=str(folder), revision=revision,
                                                 token=token, local_files_only=offline)))
        except hf_errors.LocalEntryNotFoundError as exc:
            raise HubError(
                f"cannot download {where}: the Hub is unreachable (no network, HF_HUB_OFFLINE=1, or HF_ENDPOINT "
                f"points nowhere) and the file is not in {folder}. Connect and retry, or fetch "
                f"{url_of(spec, filename, revision or 'main')} by hand into {folder / filename}") from exc
        except (hf_errors.GatedRepoError, hf_errors.RepositoryNotFoundError) as exc:
            raise HubError(f"cannot download {where}: the repository is gated, private or gone ({exc}); accept its "
                           "licence on huggingface.co and log in (`hf auth login`), or pass token=") from exc
        except hf_errors.EntryNotFoundError as exc:
            raise HubError(f"{where} does not exist on the Hub (renamed?): {exc}") from exc
        except (hf_errors.HfHubHTTPError, OSError) as exc:
            raise HubError(f"downloading {where} into {folder} failed: {exc}") from exc
    log.info("%s -> %s", name, paths[0])
    return paths[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sf_core.checkpoints.hub", description="Download known checkpoints.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list known checkpoints")
    dl = sub.add_parser("download", help="download one checkpoint into a folder")
    dl.add_argument("name", help=f"one of {', '.join(KNOWN)}, or owner/repo:path")
    dl.add_argument("--dir", required=True, help="destination folder (repository layout is kept)")
    dl.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for key, spec in KNOWN.items():
            print(f"{key:28s} {spec.kind:12s} {spec.repo_id}/{spec.files[0]}\n{'':41s}{spec.description}")
        return 0
    logging.basicConfig(level=logging.INFO)
    try:
        print(download(args.name, args.dir, revision=args.revision))
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
