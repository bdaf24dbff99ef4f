"""`generate --plan` and the memory check of every generate run (sf_core.memory.plan on the parsed arguments).

Called once the model bundle is loaded -- its weights are then known exactly, and they are the only thing
allocated -- and before the session: the KV cache, the activations and the decoder's work come after. `--plan`
prints the plan and exits; otherwise a run whose plan does not fit the device's free memory is refused with the
knobs that would make it fit (`--no-memory-check` runs it anyway: the plan is an estimate).
"""
from __future__ import annotations

import json
import logging

import torch

from ..memory.measure import tensor_bytes
from ..memory.plan import RunShape, check_fits, plan_memory
from ..sampling.session import SamplingSettings
from . import inputs

log = logging.getLogger("sf_core.generate")
DECODER_KINDS = {"WanVAE": "wan", "ComfyWanDecoder": "wan", "TAEHV": "taehv", "ToyDecoder": "toy"}


def _resumed(path: str) -> tuple[SamplingSettings, tuple[int, int], int, int]:
    """(settings, latent size, batch, next frame) from a session file's metadata, without reading its tensors."""
    from safetensors import SafetensorError, safe_open

    from ..sampling.session import SessionError
    from ..sampling.session_io import FORMAT

    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get(FORMAT, "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SessionError(f"--resume {path}: not a readable session file ({exc}); give a file written by "
                           f"--save-session (python -m sf_core generate/live)") from None
    if not meta:
        return SamplingSettings(), (60, 104), 1, 0  # not a session file: load_session names the problem later
    return (SamplingSettings.from_dict(meta["settings"]), tuple(meta["latent_hw"]), int(meta["batch"]),
            int(meta["next_frame"]))


def shape_of_run(args, bundle, device: torch.device, dtype: torch.dtype) -> RunShape:
    model = bundle.transformer
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise ValueError("the memory plan needs a WanTransformer with its config")
    fps, ts = args.fps or bundle.fps, bundle.temporal_scale
    if args.resume:
        st, hw, batch, start = _resumed(args.resume)
    else:
        st, hw, batch, start = inputs.settings_from_args(args, bundle.settings), inputs.latent_size(args, bundle), 1, 0
    try:
        n = inputs.latent_length(args, st.causal, fps=fps, temporal_scale=ts, fresh=start == 0)
    except ValueError:
        n = inputs.requested_latent(args, fps=fps, temporal_scale=ts, fresh=start == 0)  # refused later, by name
    dec = bundle.decoder
    kind = "none" if dec is None else DECODER_KINDS.get(type(dec).__name__, "wan")
    dec_bytes = tensor_bytes(dec) if isinstance(dec, torch.nn.Module) else None
    w = next(iter(model.parameters()))
    return RunShape(cfg, hw, st.causal, start + n, batch=batch, dtype=dtype, weight_dtype=w.dtype,
                    kv_dtype=st.kv_dtype, decoder=kind, decoder_weight_bytes=dec_bytes,
                    decoder_frames_per_call=int(getattr(dec, "frames_per_call", 1)),
                    keep_latents=bool(args.latents_out), device=device.type, weight_bytes=tensor_bytes(model),
                    merge_commit=st.merge_commit)


def check_run(args, bundle, device: torch.device, dtype: torch.dtype) -> int | None:
    """With --plan: print the plan, return 0 (exit). Else raise ConfigError if the run cannot fit; None to go on."""
    try:
        shape = shape_of_run(args, bundle, device, dtype)
    except (ValueError, KeyError, OSError) as exc:
        if getattr(args, "plan", False):
            raise
        log.debug("no memory plan for this run (%s)", exc)
        return None
    plan = plan_memory(shape)
    if getattr(args, "plan", False):
        print(plan.describe())
        return 0
    if getattr(args, "no_memory_check", False):
        return None
    loaded = shape.weight_bytes + (shape.decoder_weight_bytes or 0)  # already allocated: not in the free memory
    check_fits(plan, device, already=loaded)
    log.debug("memory plan: peak %.2f GiB", plan.peak / 2 ** 30)
    return None


__all__ = ["check_run", "shape_of_run"]
