"""Optional umT5-XXL text encoder for standalone use (transformers' `UMT5EncoderModel`, local files only).

Wan2.1 conditions on the last hidden state of the umT5-XXL encoder, one row per real token (end token
included), the padding rows cut off; the transformer then zero-pads to 512 rows. `encode` returns
[B, L, 4096] with padding rows set to zero, which is the same conditioning.

Accepted weights (`load_umt5(path, tokenizer=...)`):
- a Hugging Face folder (config.json, weights, tokenizer files), e.g. a `google/umt5-xxl` snapshot;
- one file with Hugging Face key names (`encoder.block.0.layer.0.SelfAttention.q.weight`, `shared.weight`),
  e.g. ComfyUI's `umt5_xxl_fp16.safetensors` / `umt5_xxl_fp8_e4m3fn_scaled.safetensors`;
- Wan2.1's own `models_t5_umt5-xxl-enc-bf16.pth` (Wan key names, converted on load).
A single file needs `tokenizer=` a folder with the umT5 tokenizer (Wan2.1 ships one as `google/umt5-xxl/`).
transformers is imported only here, lazily; nothing is downloaded.
"""
from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

UMT5_XXL = {"vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
            "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6, "pad_token_id": 0, "eos_token_id": 1,
            "tie_word_embeddings": False, "is_encoder_decoder": False}
MAX_TOKENS = 512  # Wan2.1's text_len


class TextEncoderError(ValueError):
    """The text encoder cannot be loaded or run as asked."""


def _transformers():
    try:
        import transformers  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise TextEncoderError("encoding prompts needs the optional dependency transformers: "
                               "pip install transformers sentencepiece (or pass precomputed embeddings with "
                               "--embeddings FILE)") from exc
    return transformers


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: HTML entities unescaped, whitespace runs collapsed, ends stripped."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


# Wan's T5 key names -> Hugging Face UMT5 names (per-layer relative position buckets, gated-GELU FFN).
_WAN_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def wan_t5_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Wan2.1's umT5 encoder state dict to Hugging Face `UMT5EncoderModel` names."""
    out = {}
    for k, v in sd.items():
        if k == "token_embedding.weight":
            out["shared.weight"] = v
        elif k == "norm.weight":
            out["encoder.final_layer_norm.weight"] = v
        elif k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            if rest not in _WAN_BLOCK:
                raise TextEncoderError(f"unexpected key {k!r} in a Wan umT5 file")
            out[f"encoder.block.{i}.{_WAN_BLOCK[rest]}"] = v
        else:
            raise TextEncoderError(f"unexpected key {k!r} in a Wan umT5 file (is this the encoder .pth?)")
    return out


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:  # weights-only unpickling; a refusal names what the pickle wanted to run
        from .checkpoints.files import CheckpointError, read_pickle

        try:
            sd = read_pickle(path)
        except CheckpointError as exc:
            raise TextEncoderError(str(exc)) from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise TextEncoderError(f"{path}: expected a dict of tensors (the umT5 encoder's state dict), got "
                               f"{type(sd).__name__}")
    if any(k.startswith("blocks.") for k in sd):
        sd = wan_t5_to_hf(sd)
    scales = {k[:-len(".scale_weight")]: v for k, v in sd.items() if k.endswith(".scale_weight")}
    sd = {k: v for k, v in sd.items() if k.startswith(("encoder.", "shared."))}
    for name, scale in scales.items():  # ComfyUI "scaled fp8": weight * per-tensor scale
        if name + ".weight" in sd:
            sd[name + ".weight"] = sd[name + ".weight"].float() * scale.float()
    if "shared.weight" not in sd and "encoder.embed_tokens.weight" in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    if "shared.weight" not in sd:
        raise TextEncoderError(f"{path}: no umT5 encoder weights found (expected 'shared.weight' / "
                               f"'encoder.block.*' or Wan's 'token_embedding.weight' / 'blocks.*')")
    sd["encoder.embed_tokens.weight"] = sd["shared.weight"]
    return sd


def _config_from_weights(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    cfg = dict(UMT5_XXL)
    vocab, d_model = sd["shared.weight"].shape
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.block."))
    d_ff = sd["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0]
    buckets, heads = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape
    d_kv = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0] // heads
    cfg.update(vocab_size=vocab, d_model=d_model, num_layers=layers, d_ff=d_ff, num_heads=heads, d_kv=d_kv,
               relative_attention_num_buckets=buckets)
    return cfg


@dataclass
class UMT5TextEncoder:
    """`encode(list[str]) -> [B, L, d_model]` (padding rows zero) with a transformers UMT5 encoder."""

    model: Any
    tokenizer: Any
    max_length: int = MAX_TOKENS

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str] | str) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        tok = self.tokenizer([clean_prompt(p) for p in prompts], padding="longest", truncation=True,
                             max_length=self.max_length, add_special_tokens=True, return_tensors="pt")
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden * mask[..., None].to(hidden.dtype)


def load_umt5(path: str | Path, tokenizer: str | Path | None = None, *, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.bfloat16, max_length: int = MAX_TOKENS) -> UMT5TextEncoder:
    """Load the umT5 encoder from local files (see the module docstring for the accepted layouts)."""
    tf = _transformers()
    path = Path(path)
    if not path.exists():
        raise TextEncoderError(f"text encoder {path} does not exist")
    from .checkpoints.files import CheckpointError, refuse_pickle_folder

    try:
        refuse_pickle_folder(path, "text encoder folder")  # before anything in it is read
    except CheckpointError as exc:
        raise TextEncoderError(str(exc)) from None
    tok_dir = Path(tokenizer) if tokenizer is not None else (path if path.is_dir() else path.parent)
    try:
        tok = tf.AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a missing tokenizer
        raise TextEncoderError(f"no umT5 tokenizer in {tok_dir} ({type(exc).__name__}: {exc}); pass --tokenizer "
                               f"with the folder holding tokenizer.json / spiece.model (Wan2.1 ships it as "
                               f"google/umt5-xxl/)") from exc
    if path.is_dir() and (path / "config.json").is_file():
        major = int(tf.__version__.split(".")[0])
        kw = {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}  # renamed in transformers 5
        try:
            model = tf.UMT5EncoderModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True, **kw)
        except (OSError, ValueError, RuntimeError) as exc:
            raise TextEncoderError(f"cannot load a umT5 encoder from {path} ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:300]})") from None
    else:
        if path.is_dir():
            raise TextEncoderError(f"{path} is a folder without config.json; give the weights file itself")
        sd = _read_weights(path)
        cfg = tf.UMT5Config(**_config_from_weights(sd))
        with torch.device("meta"):
            model = tf.UMT5EncoderModel(cfg)
        missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False,
                                                    assign=True)
        missing = [k for k in missing if "embed_tokens" not in k]
        if missing or unexpected:
            raise TextEncoderError(f"{path}: weights do not fit a umT5 encoder (missing {missing[:4]}, unexpected "
                                   f"{unexpected[:4]})")
        model.encoder.embed_tokens = model.shared
    return UMT5TextEncoder(model.to(device).eval().requires_grad_(False), tok, max_length)


__all__ = ["UMT5TextEncoder", "load_umt5", "wan_t5_to_hf", "clean_prompt", "TextEncoderError", "UMT5_XXL"]
