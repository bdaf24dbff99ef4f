"""Load and save Wan2.1 transformer weights in every format we meet, checked against a `WanConfig`.

Formats read (`LoadedCheckpoint.format`):
- "wan_original": Wan2.1 release, `diffusion_pytorch_model.safetensors` or shards + `*.safetensors.index.json`
  (+ `config.json`); give the directory, the index, any shard or the file;
- "comfyui": ComfyUI repackaged single files (`wan2.1_t2v_1.3B_fp16.safetensors`), with or without the
  `model.diffusion_model.` prefix, also ComfyUI "scaled fp8" files (dequantised to bf16 on load);
- "self_forcing": Self Forcing training checkpoints (`.pt` dict with `generator` / `generator_ema` / `critic`,
  `model.` prefix, FSDP wrapper segments in names);
- "pt_state_dict": any other `.pt` holding a bare state dict or `{"model": ...}` / `{"state_dict": ...}`;
- "diffusers": diffusers `WanTransformer3DModel` names (renamed by `keymap`);
- "sf_core": files written by `save_model` (config JSON in the safetensors metadata).

The config comes from, in order: the `config` argument, our metadata or a `config.json` beside Wan weights,
and the tensor shapes (num_heads = dim // 128, as Wan and ComfyUI do). Whatever its source, it is checked
against every tensor's name and shape. Every problem is a `CheckpointError` naming the file and the fix.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from . import keymap
from .files import CheckpointError, RawCheckpoint, read
from ..config import CausalConfig, ConfigError, WanConfig
from ..fileio import atomic_path
from ..model.transformer import WanTransformer, expected_shapes

log = logging.getLogger(__name__)

FORMAT_NAME = "sf_core.wan21"
FORMAT_VERSION = 1
WHICH = ("auto", "generator", "generator_ema", "critic")
# `auto` on a Self Forcing training checkpoint: the EMA weights are what the authors sample with
# (README: `--use_ema`), then the raw generator, then generic containers.
_AUTO_ORDER = ("generator_ema", "generator", "model", "state_dict", "module", "ema")
# Fields the tensor shapes determine; the others (num_heads, text_len, eps, norms) come from metadata.
SHAPE_FIELDS = ("dim", "ffn_dim", "num_layers", "in_dim", "out_dim", "text_dim", "freq_dim", "patch_size")
HEAD_DIM = 128  # every released Wan2.1 model; ComfyUI's detection assumes it too

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16, "fp8": torch.float8_e4m3fn,
          "fp8_e4m3fn": torch.float8_e4m3fn, "float8_e4m3fn": torch.float8_e4m3fn}
FP8_MAX = 448.0  # largest finite float8_e4m3fn


@dataclass
class LoadedCheckpoint:
    """Weights with Wan2.1 names (tensors as stored: dtype kept, scaled fp8 dequantised), their config,
    the causal config if the file records one, what we learnt about the file (`meta`), and its format."""

    state_dict: dict[str, torch.Tensor]
    config: WanConfig
    causal: CausalConfig | None
    meta: dict[str, Any] = field(default_factory=dict)
    format: str = ""


# ------------------------------------------------------------------------------------------ loading
def load_checkpoint(path: str | Path, which: str = "auto",
                    config: WanConfig | Mapping[str, Any] | None = None, *, lora: str | Path | None = None,
                    lora_alpha: float | None = None) -> LoadedCheckpoint:
    """Read a Wan2.1 transformer from any supported format.

    which: "auto" | "generator" | "generator_ema" | "critic" (Self Forcing training checkpoints hold several).
    config: a WanConfig to use (checked against the weights), or a mapping of fields that the shapes cannot
    tell (e.g. {"num_heads": 2} for a model whose dim is not a multiple of 128).
    lora: a LoRA file merged into the weights (`sf_core.checkpoints.lora`: LongLive's `lora.pt`); lora_alpha: its alpha
    (default: its rank, as LongLive's configs).
    """
    if which not in WHICH:
        raise CheckpointError(f"which={which!r} is not one of {WHICH}")
    raw = read(path)
    where = raw.files[0] if len(raw.files) == 1 else raw.path
    _refuse_lora_file(raw, where)
    tensors, chosen, available = _select(raw, which, where)
    try:
        names = keymap.to_wan_names(tensors.keys())
    except keymap.KeyMapError as exc:
        raise CheckpointError(
            f"{where}: unknown format, {exc}; its first keys are {keymap.sample(tensors, 4)}. Supported: Wan2.1 "
            "(original, ComfyUI, diffusers names), Self Forcing .pt, files written by sf_core") from exc
    if keymap.looks_image_to_video(names.mapping):
        raise CheckpointError(f"{where} is a Wan2.1 image-to-video model (img_emb / k_img weights); only "
                              "text-to-video (T2V) transformers are supported")
    extra = names.outside_prefix + names.unknown
    if extra:
        raise CheckpointError(f"{where}: unexpected keys that are not part of a Wan2.1 transformer: "
                              f"{keymap.sample(extra)}; is this the right file?")
    sd = {wan: tensors[src] for wan, src in names.mapping.items()}
    meta: dict[str, Any] = {"path": str(raw.path), "files": [str(f) for f in raw.files],
                            "container": raw.container, "layout": names.layout.layout,
                            "prefix": names.layout.prefix, "which": chosen, "available": available,
                            "metadata": dict(raw.metadata)}
    if names.other_components:
        meta["ignored_keys"] = len(names.other_components)
        log.info("%s: ignoring %d keys of other components (VAE / text encoder)", where, len(names.other_components))
    if names.quant:
        sd = _dequantize_scaled_fp8(sd, {k: tensors[s] for k, s in names.quant.items()}, where)
        meta["dequantized_scaled_fp8"] = True
    file_cfg, causal, cfg_source = _file_config(raw, where)
    cfg, meta["config_source"] = resolve_config(sd, file_cfg, config, where, cfg_source)
    check_weights(sd, cfg, where)
    if raw.metadata.get("format") == FORMAT_NAME and raw.metadata.get("which"):
        meta["which"] = raw.metadata["which"]
    if raw.container == "pickle" and isinstance(raw.obj, Mapping):  # markers such as LongLive's checkpoint_format
        meta["pickle_info"] = {str(k): v for k, v in raw.obj.items() if isinstance(v, (str, bool, int, float))}
    if lora is not None:
        from .lora import merge_lora, read_lora  # noqa: PLC0415

        factors = read_lora(lora)
        sd = merge_lora(sd, factors, alpha=lora_alpha)
        meta.update(lora=str(lora), lora_rank=factors.rank, lora_family=factors.family)
    return LoadedCheckpoint(sd, cfg, causal, meta, _format_name(raw, names.layout, chosen))


def _refuse_lora_file(raw: RawCheckpoint, where: Path) -> None:
    """A LoRA file given as the model: say what it is and how to use it."""
    obj = raw.obj if raw.container == "pickle" else raw.tensors
    if not isinstance(obj, Mapping):
        return
    inner = obj.get("generator_lora") if isinstance(obj.get("generator_lora"), Mapping) else obj
    if "generator_lora" in obj or keymap.looks_like_lora(map(str, inner)):
        whose = "LongLive's LoRA (models/lora.pt)" if "generator_lora" in obj else "a LoRA"
        raise CheckpointError(f"{where} is {whose}, not a model: load the base generator (LongLive: "
                              "models/longlive_base.pt) and give this file as its LoRA (--lora FILE on the command "
                              "line, the loader node's 'lora' input, or python -m sf_core.checkpoints.convert BASE OUT --lora FILE)")


def load_model(path: str | Path, which: str = "auto", dtype: torch.dtype | str | None = None,
               device: torch.device | str = "cpu", config: WanConfig | Mapping[str, Any] | None = None
               ) -> WanTransformer:
    """A `WanTransformer` with the checkpoint's weights. dtype: storage dtype (see `cast_for_storage`;
    None keeps the file's); layers compute in the dtype of their input, so fp8 weights are upcast per layer."""
    ck = load_checkpoint(path, which, config)
    sd = cast_for_storage(ck.state_dict, dtype)
    with torch.device("meta"):
        model = WanTransformer(ck.config)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.to(device)


def _select(raw: RawCheckpoint, which: str, where: Path) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """The state dict to use: the whole file, or one model of a training checkpoint."""
    if raw.container != "pickle":
        single = raw.metadata.get("which") if raw.metadata.get("format") == FORMAT_NAME else None
        if which not in ("auto", "generator", single):
            raise CheckpointError(f"{where} holds a single model{f' ({single})' if single else ''}; "
                                  f"which={which!r} does not apply, use which='auto'")
        return raw.tensors, single or "model", [single or "model"]
    obj = raw.obj
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{where} holds {type(obj).__name__ if obj is not None else 'nothing'}, not a dict of "
                              "tensors; it is not a model checkpoint")
    if _is_state_dict(obj):
        if which not in ("auto", "generator"):
            raise CheckpointError(f"{where} holds a single bare state dict; which={which!r} does not apply, "
                                  "use which='auto'")
        return dict(obj), "state_dict", ["state_dict"]
    subs = {k: v for k, v in obj.items() if isinstance(v, Mapping) and _is_state_dict(v)}
    available = sorted(subs)
    if not subs:
        raise CheckpointError(f"{where} holds a dict with keys {keymap.sample(map(str, obj), 6)} but no state dict "
                              "of tensors; it is not a model checkpoint")
    if which == "auto":
        pick = next((k for k in _AUTO_ORDER if k in subs), None)
        if pick is None and len(subs) == 1:
            pick = available[0]
        if pick is None:
            raise CheckpointError(f"{where} holds several models {available}; choose one with which=...")
    elif which in subs:
        pick = which
    elif which == "generator" and any(k in subs for k in ("model", "state_dict", "module")):
        # a single generic container: Self Forcing's train.py falls back to ["model"] the same way
        pick = next(k for k in ("model", "state_dict", "module") if k in subs)
    else:
        raise CheckpointError(f"{where} has no {which!r} model; it holds {available}. Choose one of those")
    return dict(subs[pick]), pick, available


def _is_state_dict(d: Mapping) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def _dequantize_scaled_fp8(sd: dict, quant: dict, where: Path) -> dict:
    """ComfyUI scaled fp8: real weight = stored fp8 weight * scale_weight. Dequantised to bf16."""
    out = dict(sd)
    for name, scale in quant.items():
        if not name.endswith(".scale_weight"):
            continue  # the marker and scale_input (fp8 activation scaling) carry no weight
        wname = name[: -len(".scale_weight")] + ".weight"
        if wname not in out:
            raise CheckpointError(f"{where}: scale {name!r} has no weight {wname!r}; the file is damaged")
        out[wname] = (out[wname].float() * scale.float()).to(torch.bfloat16)
    return out


def _file_config(raw: RawCheckpoint, where: Path) -> tuple[dict | None, CausalConfig | None, str]:
    """The WanConfig fields and CausalConfig recorded in the file (our metadata or config.json)."""
    md = raw.metadata
    if md.get("format") == FORMAT_NAME:
        try:
            version = int(md.get("format_version", "0"))
        except ValueError:
            version = -1
        if version > FORMAT_VERSION or version < 1:
            raise CheckpointError(f"{where} has format_version {md.get('format_version')!r}; this sf_core reads "
                                  f"1..{FORMAT_VERSION}. Update the pack or re-export the file")
        try:
            cfg = json.loads(md["wan_config"]) if "wan_config" in md else None
            causal = CausalConfig.from_dict(json.loads(md["causal_config"])) if md.get("causal_config") else None
        except (ValueError, TypeError, ConfigError) as exc:
            raise CheckpointError(f"{where}: config metadata is unreadable ({exc}); re-export the file") from exc
        return cfg, causal, "metadata"
    if raw.config_json is not None:
        cj = raw.config_json
        if "num_attention_heads" in cj:  # diffusers naming
            return keymap.diffusers_config_to_wan(cj), None, "config.json"
        known = {f.name for f in fields(WanConfig)}
        return {k: v for k, v in cj.items() if k in known}, None, "config.json"
    return None, None, "inferred"


def infer_fields(sd: Mapping[str, torch.Tensor], where: Path | str = "<state dict>") -> dict[str, Any]:
    """The WanConfig fields that the tensor shapes determine."""
    need = ("patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight", "head.head.weight",
            "blocks.0.ffn.0.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"{where}: missing keys {keymap.sample(missing)}; the file is incomplete or not a "
                              "Wan2.1 transformer")
    pe = sd["patch_embedding.weight"]
    if pe.ndim != 5:
        raise CheckpointError(f"{where}: patch_embedding.weight has shape {tuple(pe.shape)}, expected 5-D "
                              "[dim, in_dim, pt, ph, pw]")
    patch = tuple(int(p) for p in pe.shape[2:])
    return {"dim": int(pe.shape[0]), "in_dim": int(pe.shape[1]), "patch_size": patch,
            "ffn_dim": int(sd["blocks.0.ffn.0.weight"].shape[0]),
            "num_layers": len(keymap.block_indices(sd)) and max(keymap.block_indices(sd)) + 1,
            "text_dim": int(sd["text_embedding.0.weight"].shape[-1]),
            "freq_dim": int(sd["time_embedding.0.weight"].shape[-1]),
            "out_dim": int(sd["head.head.weight"].shape[0]) // math.prod(patch)}


def resolve_config(sd: Mapping[str, torch.Tensor], file_cfg: Mapping | None,
                   given: WanConfig | Mapping[str, Any] | None, where: Path | str, file_source: str = "metadata"
                   ) -> tuple[WanConfig, str]:
    """Combine shapes, file config and caller config; any contradiction is a CheckpointError."""
    shapes = infer_fields(sd, where)
    if isinstance(given, WanConfig):
        _check_agrees(given.to_dict(), shapes, where, "the config passed in", "pass the config of this model")
        return given, "argument"
    fields_ = dict(shapes)
    source = "inferred"
    if file_cfg:
        _check_agrees(file_cfg, shapes, where, f"the {file_source}",
                      "the metadata is wrong or the weights belong to another model; re-export the file or fix it")
        fields_.update({k: v for k, v in file_cfg.items() if k not in SHAPE_FIELDS})
        source = file_source
    if given:
        _check_agrees(given, shapes, where, "the config passed in", "pass values that match the weights")
        fields_.update({k: v for k, v in given.items() if k not in SHAPE_FIELDS})
        source = "argument" if source == "inferred" else f"{source}+argument"
    if "num_heads" not in fields_:
        dim = fields_["dim"]
        if dim % HEAD_DIM:
            raise CheckpointError(
                f"{where}: cannot tell num_heads for dim={dim} (Wan2.1 uses head_dim {HEAD_DIM}, but {dim} is not a "
                f"multiple of it) and the file records no config; convert it once with the head count, e.g. "
                f"`python -m sf_core.checkpoints.convert {where} out.safetensors --num-heads N` (the output records "
                "it; then load out.safetensors), or in Python pass config={'num_heads': N}")
        fields_["num_heads"] = dim // HEAD_DIM
    known = {f.name for f in fields(WanConfig)}
    try:
        return WanConfig(**{k: v for k, v in fields_.items() if k in known}), source
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{where}: the config is invalid for these weights ({exc})") from exc


def _check_agrees(cfg: Mapping, shapes: Mapping, where, what: str, fix: str) -> None:
    for k in SHAPE_FIELDS:
        if k in cfg and cfg[k] is not None:
            want = tuple(cfg[k]) if k == "patch_size" else cfg[k]
            if want != shapes[k]:
                raise CheckpointError(f"{where}: {what} says {k}={want} but the weights have {k}={shapes[k]}; {fix}")


def check_weights(sd: Mapping[str, torch.Tensor], cfg: WanConfig, where: Path | str = "<state dict>") -> None:
    """Exactly the keys and shapes of `cfg`, floating-point tensors only."""
    want = expected_shapes(cfg)
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {want[k]})" for k in sorted(set(want) & set(sd))
             if tuple(sd[k].shape) != want[k]]
    problems = []
    if missing:
        problems.append(f"missing keys {keymap.sample(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {keymap.sample(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes {', '.join(wrong[:4])}" + (f" (+{len(wrong) - 4} more)" if len(wrong) > 4 else ""))
    if problems:
        raise CheckpointError(f"{where} does not match a Wan2.1 transformer with {_describe(cfg)}: "
                              + "; ".join(problems) + ". Is it the right file, complete, and is the config right?")
    bad = [k for k, v in sd.items() if not v.is_floating_point()]
    if bad:
        raise CheckpointError(f"{where}: non-floating-point tensors {keymap.sample(bad)}; the file is not a model")


def _describe(cfg: WanConfig) -> str:
    return (f"dim={cfg.dim}, ffn_dim={cfg.ffn_dim}, num_layers={cfg.num_layers}, text_dim={cfg.text_dim}, "
            f"num_heads={cfg.num_heads}")


def _format_name(raw: RawCheckpoint, layout: keymap.KeyLayout, chosen: str) -> str:
    if raw.metadata.get("format") == FORMAT_NAME:
        return "sf_core"
    if layout.layout == "diffusers":
        return "diffusers"
    if raw.container == "pickle":
        return "self_forcing" if chosen in ("generator", "generator_ema", "critic") else "pt_state_dict"
    if raw.container == "sharded_safetensors" or raw.files[0].name.startswith("diffusion_pytorch_model"):
        return "wan_original"
    return "comfyui"


# ------------------------------------------------------------------------------------------ dtypes + saving
def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key in ("keep", "none", ""):
        return None
    if key not in DTYPES:
        raise CheckpointError(f"dtype {dtype!r} is not one of fp32, bf16, fp16, fp8 (e4m3fn) or keep")
    return DTYPES[key]


def cast_for_storage(sd: Mapping[str, torch.Tensor], dtype: torch.dtype | str | None) -> dict[str, torch.Tensor]:
    """Storage dtypes: fp32 / bf16 / fp16 cast every tensor; fp8 (e4m3fn) stores the Linear weights inside the
    blocks (98% of the 1.3B and 14B parameters) in fp8, clamped to +-448, and everything else in bf16 -- embeddings,
    biases, norms, modulations and the head are small and precision-sensitive. None keeps the dtypes."""
    dt = parse_dtype(dtype)
    if dt is None:
        return dict(sd)
    if dt != torch.float8_e4m3fn:
        return {k: v.to(dt) for k, v in sd.items()}
    out = {}
    for k, v in sd.items():
        if keymap.is_block_linear_weight(k):
            out[k] = v if v.dtype == dt else v.float().clamp(-FP8_MAX, FP8_MAX).to(dt)
        else:
            out[k] = v.to(torch.bfloat16)
    return out


def save_model(path: str | Path, model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], config: WanConfig,
               causal: CausalConfig | None = None, extra_meta: Mapping[str, Any] | None = None,
               dtype: torch.dtype | str | None = None, *, source: str | None = None, which: str | None = None
               ) -> Path:
    """Write safetensors with Wan2.1 key names (no prefix: ComfyUI's UNETLoader loads it) and metadata:
    format / format_version, wan_config JSON, causal_config JSON, source, which, dtype, plus `extra_meta`
    (values JSON-encoded unless strings). Written atomically with umask permissions (`fileio.atomic_path`), so
    a crash never leaves a truncated file under the final name."""
    from safetensors.torch import save_file

    sd = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    sd = {keymap.strip_wrappers(k): v for k, v in sd.items()}
    check_weights(sd, config, "model to save")
    sd = {k: v.detach().to("cpu").contiguous() for k, v in cast_for_storage(sd, dtype).items()}
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "wan_config": config.to_json()}
    if causal is not None:
        meta["causal_config"] = json.dumps(causal.to_dict(), sort_keys=True)
    if source:
        meta["source"] = str(source)
    if which:
        meta["which"] = str(which)
    dt = parse_dtype(dtype)
    meta["dtype"] = "keep" if dt is None else str(dt).removeprefix("torch.")
    for k, v in (extra_meta or {}).items():
        if k in meta:
            raise CheckpointError(f"extra_meta key {k!r} is reserved; choose another name")
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    path = Path(path)
    with atomic_path(path) as tmp:  # umask permissions (safetensors alone creates 0600 files)
        save_file(sd, str(tmp), metadata=meta)
    return path


__all__ = ["CheckpointError", "LoadedCheckpoint", "load_checkpoint", "load_model", "save_model", "check_weights",
           "resolve_config", "infer_fields", "cast_for_storage", "parse_dtype", "FORMAT_NAME", "FORMAT_VERSION"]
