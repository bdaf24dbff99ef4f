"""Reward models that ship with the trainer: image-text and video-text similarity from `transformers` checkpoints.

- `clip:FOLDER` (reward.image): any CLIP-family checkpoint in the transformers format (`CLIPModel`: OpenAI CLIP,
  and PickScore- / HPS-style models converted to it) -> cosine similarity of the image and prompt embeddings;
- `xclip:FOLDER` (reward.video): X-CLIP (`XCLIPModel`) -> cosine similarity of the clip and its
  video-conditioned prompt embedding (X-CLIP's prompt generator), on `vision_config.num_frames` frames
  resampled evenly from the clip.

FOLDER holds what `save_pretrained` writes for the model (config.json + weights, safetensors preferred) and its
tokenizer; `preprocessor_config.json` (image_mean / image_std) is read if present, else CLIP's constants. Loading
is local only (`local_files_only=True`, nothing is downloaded) and runs no code from the folder
(`trust_remote_code` stays off). Pixels go through a differentiable centre crop + bilinear resize + normalise,
so the reward's gradient reaches the decoded frames and, through the decoder, the generator. The reward
networks are frozen (eval, no grad to their weights). Scores are in [-1, 1]; choose the betas accordingly.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import ConfigError

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BUILTIN = ("clip", "xclip")


def _folder(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise ConfigError(f"reward.{what}: {p} is not a transformers model folder (no config.json); give the folder "
                          f"that save_pretrained wrote (config.json, model.safetensors, tokenizer files)")
    return p


def _norm_constants(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        d = json.loads(pre.read_text(encoding="utf-8"))
        return tuple(d.get("image_mean", CLIP_MEAN)), tuple(d.get("image_std", CLIP_STD))
    return CLIP_MEAN, CLIP_STD


def prepare_pixels(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> centre crop to a square, bilinear resize to size x size, normalise (with grad)."""
    h, w = images.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = images[..., top:top + s, left:left + s].float()
    if s != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=s > size)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype)[:, None, None]
    sd = torch.tensor(std, device=x.device, dtype=x.dtype)[:, None, None]
    return (x - m) / sd


class _TextModelReward:
    """Shared loading: a frozen transformers model + tokenizer from a local folder."""

    model_class, model_type = "", ""

    def __init__(self, folder: str | Path, *, device: torch.device | str = "cpu", what: str = "image"):
        import transformers

        self.folder = _folder(str(folder), what)
        cls = getattr(transformers, self.model_class)
        kind = json.loads((self.folder / "config.json").read_text(encoding="utf-8")).get("model_type")
        if kind != self.model_type:
            raise ConfigError(f"reward.{what}: {self.folder} holds a {kind!r} model, not {self.model_type!r}: "
                              f"cannot load a {self.model_class} from it")
        from ..checkpoints.files import CheckpointError, refuse_pickle_folder

        try:
            refuse_pickle_folder(self.folder, f"reward.{what}")
        except CheckpointError as exc:
            raise ConfigError(str(exc)) from None
        try:
            self.model, info = cls.from_pretrained(str(self.folder), local_files_only=True, output_loading_info=True,
                                                   use_safetensors=True)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: weights of another shape
            raise ConfigError(f"reward.{what}: cannot load a {self.model_class} from {self.folder}: {exc}") from None
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise ConfigError(f"reward.{what}: {self.folder} lacks {len(missing)} weights of a {self.model_class} "
                              f"(e.g. {missing[:3]}); a reward model must be complete, not partly random")
        self.model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
        self.mean, self.std = _norm_constants(self.folder)
        vision = self.model.config.vision_config
        self.size = int(vision.image_size)
        self.max_len = int(min(77, self.model.config.text_config.max_position_embeddings))

    def tokens(self, prompts: list[str], device) -> dict[str, torch.Tensor]:
        t = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.max_len,
                           return_tensors="pt")
        return {"input_ids": t["input_ids"].to(device), "attention_mask": t["attention_mask"].to(device)}


class CLIPImageReward(_TextModelReward):
    """`fn(images [N, 3, H, W] in [0, 1], prompts [N]) -> cosine similarity [N]` of a CLIPModel checkpoint."""

    model_class, model_type = "CLIPModel", "clip"

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or len(prompts) != images.shape[0]:
            raise ValueError(f"CLIP reward: expected images [N, 3, H, W] and N prompts, got {tuple(images.shape)} "
                             f"and {len(prompts)} prompts")
        dev = next(self.model.parameters()).device
        out = self.model(pixel_values=prepare_pixels(images.to(dev), self.size, self.mean, self.std),
                         **self.tokens(prompts, dev))
        img = F.normalize(out.image_embeds.float(), dim=-1)
        txt = F.normalize(out.text_embeds.float(), dim=-1)
        return (img * txt).sum(-1)


class XCLIPVideoReward(_TextModelReward):
    """`fn(clips [N, T, 3, H, W] in [0, 1], prompts [N]) -> cosine similarity [N]` of an XCLIPModel checkpoint."""

    model_class, model_type = "XCLIPModel", "xclip"

    def __call__(self, clips: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if clips.ndim != 5 or clips.shape[2] != 3 or len(prompts) != clips.shape[0]:
            raise ValueError(f"X-CLIP reward: expected clips [N, T, 3, H, W] and N prompts, got "
                             f"{tuple(clips.shape)} and {len(prompts)} prompts")
        n, t = clips.shape[:2]
        frames = int(self.model.config.vision_config.num_frames)
        idx = torch.linspace(0, t - 1, frames).round().long()
        dev = next(self.model.parameters()).device
        pix = prepare_pixels(clips[:, idx].flatten(0, 1).to(dev), self.size, self.mean, self.std)
        out = self.model(pixel_values=pix.unflatten(0, (n, frames)), **self.tokens(prompts, dev))
        # logits_per_video[i, j] = logit_scale * cos(video_i, text_j conditioned on video_i)
        return torch.diagonal(out.logits_per_video.float()) / self.model.logit_scale.exp().float()


def builtin_reward(spec: str, what: str, device: torch.device | str = "cpu"):
    """The reward callable of a built-in spec ("clip:FOLDER" / "xclip:FOLDER"), or None for any other spec."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in BUILTIN:
        return None
    if not rest:
        raise ConfigError(f"reward.{what}={spec!r}: give the model folder after '{kind}:'")
    cls = CLIPImageReward if kind == "clip" else XCLIPVideoReward
    want = "image" if kind == "clip" else "video"
    if want != what:
        raise ConfigError(f"reward.{what}={spec!r}: {kind} is a{'n' if want == 'image' else ''} {want} reward; use "
                          f"it as reward.{want}")
    reward = cls(rest, device=device, what=what)
    log.info("reward.%s: %s from %s", what, cls.model_class, reward.folder)
    return reward


__all__ = ["CLIPImageReward", "XCLIPVideoReward", "builtin_reward", "prepare_pixels"]
