"""State-dict key names of the Wan2.1 transformer in the formats we read, renamed to Wan2.1's own names.

Every rename lives here, in explicit tables; `checkpoints.py` only reads files and checks shapes.

Name layouts:
- "wan": Wan2.1 / ComfyUI / Self Forcing names (`blocks.0.self_attn.q.weight`), possibly under a prefix
  (`model.` in Self Forcing training checkpoints, `model.diffusion_model.` in ComfyUI full checkpoints)
  and with wrapper segments inserted by FSDP, activation checkpointing or torch.compile anywhere in the
  name (`_fsdp_wrapped_module.`, `_checkpoint_wrapped_module.`, `_orig_mod.`);
- "diffusers": `WanTransformer3DModel` names (`blocks.0.attn1.to_q.weight`), renamed by the tables below.

ComfyUI "scaled fp8" files add `scaled_fp8` and per-layer `*.scale_weight` / `*.scale_input` tensors;
they are reported as quantisation keys and resolved by the loader.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

# Segments that training wrappers insert into parameter names (spec 5.9: strip them, as the reference's
# `rename_param` does).
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")

# A key that exists in every Wan2.1 transformer, in each layout, and nowhere else in a checkpoint.
_ANCHOR = {"wan": "head.modulation", "diffusers": "condition_embedder.time_proj.weight"}

# Top-level components of full checkpoints that are not the transformer (ignored, not "unexpected").
OTHER_COMPONENTS = ("first_stage_model.", "cond_stage_model.", "conditioner.", "text_encoders.", "vae.",
                    "text_encoder.", "clip_vision.")

# Keys of ComfyUI's scaled-fp8 format (`comfy/model_detection.py`, `comfy/ops.py`): a marker tensor whose
# dtype names the fp8 format, and per-Linear scalar scales (stored weight * scale_weight = real weight).
SCALED_FP8_MARKER = "scaled_fp8"
SCALE_SUFFIXES = (".scale_weight", ".scale_input")

# diffusers `WanTransformer3DModel` -> Wan2.1, top-level modules (full name prefix -> Wan prefix).
DIFFUSERS_TOP = {
    "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
    "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
    "condition_embedder.time_proj.": "time_projection.1.",
    "patch_embedding.": "patch_embedding.",
    "proj_out.": "head.head.",
    "scale_shift_table": "head.modulation",
}

# diffusers -> Wan2.1 inside `blocks.N.` (sub-name prefix -> Wan sub-name prefix). diffusers numbers the
# block norms in call order (norm1, norm2 = the affine cross-attention norm, norm3); Wan calls the affine
# one norm3. Only the affine norm has weights.
DIFFUSERS_BLOCK = {
    "attn1.to_q.": "self_attn.q.",
    "attn1.to_k.": "self_attn.k.",
    "attn1.to_v.": "self_attn.v.",
    "attn1.to_out.0.": "self_attn.o.",
    "attn1.norm_q.": "self_attn.norm_q.",
    "attn1.norm_k.": "self_attn.norm_k.",
    "attn2.to_q.": "cross_attn.q.",
    "attn2.to_k.": "cross_attn.k.",
    "attn2.to_v.": "cross_attn.v.",
    "attn2.to_out.0.": "cross_attn.o.",
    "attn2.norm_q.": "cross_attn.norm_q.",
    "attn2.norm_k.": "cross_attn.norm_k.",
    "norm2.": "norm3.",
    "ffn.net.0.proj.": "ffn.0.",
    "ffn.net.2.": "ffn.2.",
    "scale_shift_table": "modulation",
}

# Keys that only image-to-video Wan models have (Wan layout and diffusers layout).
I2V_MARKERS = ("img_emb.", "condition_embedder.image_embedder.", ".k_img.", ".v_img.", ".norm_k_img.",
               ".add_k_proj.", ".add_v_proj.")

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.*)$")

# LoRA files (peft, as LongLive's `lora.pt` stores them: `get_peft_model_state_dict` of the peft-wrapped causal
# Wan model): `base_model.model.blocks.0.self_attn.q.lora_A.weight` [r, in] and `...lora_B.weight` [out, r]; an
# unfiltered peft state dict has the adapter name (`lora_A.default.weight`); ComfyUI-style files prefix
# `diffusion_model.`. Prefixes are stripped in this order; what remains is a Wan2.1 module name.
LORA_PREFIXES = ("base_model.model.", "diffusion_model.", "model.")
LORA_SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_A.default.weight": "A",
                 ".lora_B.default.weight": "B"}


class KeyMapError(ValueError):
    """The key names match no known Wan2.1 layout, or two source keys map to one Wan2.1 name."""


@dataclass(frozen=True)
class KeyLayout:
    """How the names of one state dict are written: layout ("wan" | "diffusers") under a prefix."""

    layout: str
    prefix: str


def strip_wrappers(key: str) -> str:
    """`model._fsdp_wrapped_module.blocks.0...` -> `model.blocks.0...`."""
    for seg in WRAPPER_SEGMENTS:
        key = key.replace(seg, "")
    return key


def detect_layout(keys: Iterable[str]) -> KeyLayout | None:
    """Find the layout and prefix from the anchor key (names already free of wrapper segments).

    The prefix is whatever stands before the anchor (`model.`, `model.diffusion_model.`, ``...). Returns
    None when no anchor is present: not a Wan2.1 transformer.
    """
    keys = list(keys)
    for layout, anchor in _ANCHOR.items():
        hits = [k[: -len(anchor)] for k in keys if k.endswith(anchor)]
        hits = [p for p in hits if p == "" or p.endswith(".")]  # whole name segments only
        if hits:
            return KeyLayout(layout, min(hits, key=len))
    return None


def is_quant_key(key: str) -> bool:
    return key == SCALED_FP8_MARKER or key.endswith(SCALE_SUFFIXES)


def _diffusers_name(name: str) -> str | None:
    """One diffusers name (without prefix) -> Wan2.1 name, or None if the tables do not know it."""
    m = _BLOCK_RE.match(name)
    if m:
        idx, rest = m.groups()
        for src, dst in DIFFUSERS_BLOCK.items():
            if rest.startswith(src):
                return f"blocks.{idx}.{dst}{rest[len(src):]}"
        return None
    for src, dst in DIFFUSERS_TOP.items():
        if name.startswith(src):
            return dst + name[len(src):]
    return None


@dataclass
class RenamedKeys:
    """Result of `to_wan_names`: Wan2.1 name -> source key, plus what was set aside and why."""

    mapping: dict[str, str]
    layout: KeyLayout
    quant: dict[str, str]  # Wan-style name of a quantisation key -> source key
    other_components: list[str]  # keys of VAE / text encoder etc. in a full checkpoint (ignored)
    outside_prefix: list[str]  # keys outside the transformer's prefix that are not known components
    unknown: list[str]  # keys under the prefix that the rename tables do not know (diffusers layout)


def to_wan_names(keys: Iterable[str], layout: KeyLayout | None = None) -> RenamedKeys:
    """Map the keys of a state dict to Wan2.1 names. Raises KeyMapError if no layout is recognised."""
    keys = list(keys)
    clean = {k: strip_wrappers(k) for k in keys}
    layout = layout or detect_layout(clean.values())
    if layout is None:
        raise KeyMapError("no Wan2.1 transformer keys found (looked for "
                          + " or ".join(repr(a) for a in _ANCHOR.values()) + ")")
    mapping: dict[str, str] = {}
    quant: dict[str, str] = {}
    other, outside, unknown = [], [], []
    for src, name in clean.items():
        if not name.startswith(layout.prefix):
            if name == SCALED_FP8_MARKER:
                quant[name] = src
            elif name.startswith(OTHER_COMPONENTS):
                other.append(src)
            else:
                outside.append(src)
            continue
        name = name[len(layout.prefix):]
        if is_quant_key(name):
            base = name
            if layout.layout == "diffusers" and name != SCALED_FP8_MARKER:
                suffix = next(s for s in SCALE_SUFFIXES if name.endswith(s))
                wan = _diffusers_name(name[: -len(suffix)] + ".weight")
                base = None if wan is None else wan[: -len(".weight")] + suffix
            if base is None:
                unknown.append(src)
            else:
                quant[base] = src
            continue
        if layout.layout == "diffusers":
            wan = _diffusers_name(name)
            if wan is None:
                unknown.append(src)
                continue
            name = wan
        if name in mapping:
            raise KeyMapError(f"keys {mapping[name]!r} and {src!r} both map to {name!r}: the file holds two "
                              "copies of the same weight (mixed wrapper names?)")
        mapping[name] = src
    return RenamedKeys(mapping, layout, quant, other, outside, unknown)


def lora_target(key: str) -> tuple[str, str] | None:
    """A LoRA key -> (Wan2.1 weight name it patches, "A" or "B"), or None if it is not a LoRA key."""
    name = strip_wrappers(key)
    for suffix, part in LORA_SUFFIXES.items():
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            for prefix in LORA_PREFIXES:
                if name.startswith(prefix):
                    name = name[len(prefix):]
            return name + ".weight", part
    return None


def looks_like_lora(keys: Iterable[str]) -> bool:
    """Whether a state dict is (mostly) LoRA factors rather than a model."""
    keys = list(keys)
    return bool(keys) and sum(lora_target(k) is not None for k in keys) * 2 > len(keys)


def looks_image_to_video(keys: Iterable[str]) -> bool:
    return any(marker in "." + k for k in keys for marker in I2V_MARKERS)


def block_indices(names: Iterable[str]) -> list[int]:
    """Sorted distinct N of `blocks.N.*` names."""
    out = set()
    for n in names:
        m = _BLOCK_RE.match(n)
        if m:
            out.add(int(m.group(1)))
    return sorted(out)


def is_block_linear_weight(name: str) -> bool:
    """A Linear weight inside a transformer block (the tensors stored as fp8 by `save_model`)."""
    m = _BLOCK_RE.match(name)
    if not m:
        return False
    rest = m.group(2)
    return rest.endswith(".weight") and rest[: -len(".weight")] in _BLOCK_LINEARS


_BLOCK_LINEARS = frozenset([f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"] + ["ffn.0", "ffn.2"])


def sample(names: Iterable[str], n: int = 5) -> str:
    """A few names for an error message: "'a', 'b', 'c' (+12 more)"."""
    names = sorted(names)
    head = ", ".join(repr(x) for x in names[:n])
    return head + (f" (+{len(names) - n} more)" if len(names) > n else "")


def diffusers_config_to_wan(cfg: Mapping) -> dict:
    """A diffusers `WanTransformer3DModel` config.json -> WanConfig fields (the ones it determines)."""
    out = {}
    if "num_attention_heads" in cfg:
        out["num_heads"] = int(cfg["num_attention_heads"])
        if "attention_head_dim" in cfg:
            out["dim"] = int(cfg["num_attention_heads"]) * int(cfg["attention_head_dim"])
    for src, dst in (("in_channels", "in_dim"), ("out_channels", "out_dim"), ("ffn_dim", "ffn_dim"),
                     ("num_layers", "num_layers"), ("text_dim", "text_dim"), ("freq_dim", "freq_dim"),
                     ("eps", "eps"), ("patch_size", "patch_size")):
        if cfg.get(src) is not None:
            out[dst] = cfg[src]
    return out
