"""Export the trained generator (EMA weights when the EMA exists) as one safetensors file.

The file is written by `sf_core.checkpoints.weights.save_model`: Wan2.1 key names without prefix (ComfyUI's stock
UNETLoader and the pack's loader read it), the WanConfig and CausalConfig as JSON metadata, LoRA adapters
merged into the weights, plus `sf_train` metadata (method, step, which weights). Export works from the
running trainer (a collective over sharded weights) or offline from a checkpoint directory
(`python -m sf_core.train export --checkpoint DIR`).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoints.weights import save_model
from ..config import CausalConfig, WanConfig
from .distributed import DistInfo, full_tensor
from .ema import EMA
from .lora import lora_scales, merge_state_dict

log = logging.getLogger(__name__)


def full_state(model: nn.Module, ema: EMA | None, info: DistInfo) -> dict[str, torch.Tensor]:
    """The whole generator state on the CPU, EMA shadow substituted for the trainable weights.

    Collective under FSDP (every rank must call it); the result is complete on every rank.
    """
    sd = {k: full_tensor(v) for k, v in model.state_dict().items()}
    if ema is not None:
        for name, shadow in ema.shadow.items():
            sd[name] = full_tensor(shadow).to(sd[name].dtype)
    return sd


def export_generator(path: str | Path, state: dict[str, torch.Tensor], model: nn.Module, config: WanConfig,
                     causal: CausalConfig, *, dtype: str | torch.dtype | None = "bfloat16",
                     meta: dict | None = None) -> Path:
    """Merge LoRA (if any) and write `state` with `save_model`."""
    merged = merge_state_dict({**state, **lora_scales(model)})
    out = save_model(path, merged, config, causal=causal, dtype=dtype, extra_meta={"sf_train": meta or {}},
                     source="sf_core.train", which=(meta or {}).get("weights", "generator"))
    log.info("exported %s (%d tensors)", out, len(merged))
    return out


def _check_declared_size(ck: Path, wan: WanConfig, dcp_safe) -> None:
    """The model train_state.json declares must be no larger than the generator weights the checkpoint stores
    (their sizes come from its DCP metadata, nothing is loaded): a crafted train_state.json must not make the
    export allocate gigabytes (a 6 GB attempt was seen) for weights that are not there."""
    from ..model.transformer import WanTransformer
    from .checkpoint import CheckpointFileError

    with torch.device("meta"):  # shapes only
        declared = sum(p.numel() for p in WanTransformer(wan).parameters())
    meta = dcp_safe.read_metadata(ck / ".metadata")
    stored = sum(math.prod(getattr(v, "size", ())) for k, v in meta.state_dict_metadata.items()
                 if k.startswith("generator.") and hasattr(v, "size"))
    if declared > stored:
        raise CheckpointFileError(
            f"{ck / 'train_state.json'} declares a model of {declared:,} parameters but the checkpoint stores "
            f"{stored:,} generator values: train_state.json does not belong to these weights (damaged or crafted); "
            f"refused before allocating anything")


def export_checkpoint(checkpoint_dir: str | Path, out: str | Path | None = None, *, weights: str = "auto",
                      dtype: str | None = None) -> Path:
    """Offline export from a training checkpoint directory (single process, no GPU needed)."""
    from ..model.transformer import WanTransformer
    from . import dcp_safe
    from .checkpoint import CheckpointCorrupt, CheckpointFileError, describe_error, read_train_state
    from .config import ConfigError, TrainConfig
    from .lora import apply_lora

    ck = Path(checkpoint_dir)
    ts = read_train_state(ck)
    try:
        cfg = TrainConfig.from_dict(ts["config"])
        wan = WanConfig.from_dict(ts["wan_config"])
    except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise CheckpointFileError(f"{ck / 'train_state.json'} holds no valid run config ({exc})") from None
    if weights not in ("auto", "ema", "generator"):
        raise ConfigError(f"--weights {weights!r}: use auto, ema or generator")
    if weights == "ema" and not ts.get("ema"):
        raise ConfigError(f"checkpoint {ck} has no EMA yet (it starts at step {cfg.ema.start_step}); "
                          f"use --weights generator")
    use_ema = ts.get("ema") and weights in ("auto", "ema")
    _check_declared_size(ck, wan, dcp_safe)  # before the model is allocated
    model = WanTransformer(wan)
    if cfg.lora.rank:
        apply_lora(model, cfg.lora.rank, cfg.lora.targets, cfg.lora.alpha, cfg.lora.dropout, seed=cfg.seed)
    state: dict = {"generator": model.state_dict()}
    if use_ema:
        state["ema"] = {n: torch.empty_like(p, dtype=torch.float32) for n, p in model.named_parameters()
                        if p.requires_grad}
    try:
        dcp_safe.load(state, ck)
    except CheckpointCorrupt as exc:
        raise type(exc)(f"checkpoint {ck} cannot be read: {exc}") from None
    except BaseException as exc:  # noqa: BLE001 - DCP's CheckpointException derives from BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise CheckpointCorrupt(f"checkpoint {ck} cannot be read ({describe_error(exc)})") from None
    model.load_state_dict(state["generator"])
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    which = "generator_ema" if use_ema else "generator"
    if use_ema:
        for n, v in state["ema"].items():
            sd[n] = v.to(sd[n].dtype)
    step = int(ts["step"])
    # default: beside the checkpoints of this run (never a folder named inside the checkpoint's own files)
    out = Path(out) if out else ck.resolve().parent.parent / "export" / f"{which}_{ck.name}.safetensors"
    meta = {"method": cfg.method, "step": step, "weights": which, "lora_rank": cfg.lora.rank,
            "denoising_steps": list(cfg.rollout.denoising_steps), "shift": cfg.rollout.shift}
    return export_generator(out, sd, model, wan, cfg.rollout.causal(), dtype=dtype or cfg.export_dtype, meta=meta)
