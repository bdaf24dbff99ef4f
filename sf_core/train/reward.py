"""T2V-Turbo mixed reward on the decoded Self Forcing rollout (turbo_and_eval.md section 1.6).

In generator updates only: L_G = L_DMD - beta_img * mean_m R_img(frame_m, prompt) - beta_vid * R_vid(clip, prompt).
The rollout output carries gradient through each chunk's exit step. Wan's VAE is causal in time, so the
latents before the reward window are decoded without grad to warm the decoder state, then a window of
`window_latents` latent frames inside one chunk is decoded *with* grad through the chunk-decoder protocol
(`decode_chunk(z, state) -> (frames in [-1, 1], state)`: our Wan VAE, TAEHV, or any object with that method).

Reward callables (pluggable, from local files only -- nothing is downloaded):
- image: `fn(images [N, 3, H, W] in [0, 1], prompts list[N]) -> scores [N]` (e.g. HPSv2 / CLIP cosine);
- video: `fn(clips [N, T, 3, H, W] in [0, 1], prompts list[N]) -> scores [N]` (e.g. InternVideo2 / ViCLIP).
Built in (`sf_core.train.reward_models`): "clip:FOLDER" (image: any CLIP-family transformers checkpoint) and
"xclip:FOLDER" (video: X-CLIP). Any other is a "package.module:factory" spec; the factory is called without
arguments and returns the callable (it loads its own weights from local paths). Decoders: "taehv:PATH",
"wan:PATH", a weight file path (kind detected) or a "module:factory" spec. Frames of the window and the clip
are chosen with keyed randomness (same on every rank).
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import ConfigError
from .config import RewardConfig, RolloutConfig
from .rng import keyed_generator

log = logging.getLogger(__name__)

ImageReward = Callable[[torch.Tensor, list[str]], torch.Tensor]
VideoReward = Callable[[torch.Tensor, list[str]], torch.Tensor]


BUILTIN_REWARD_KINDS = {"image": ("clip",), "video": ("xclip",), "decoder": ("taehv", "wan")}


def spec_path(spec: str | None, what: str) -> str | None:
    """The file or folder a spec for reward.<what> names: the PATH of a built-in kind ("clip:PATH", "taehv:PATH",
    ...) or, for the decoder, a weight file given as is; None for a "package.module:factory" spec (or none)."""
    if not spec:
        return None
    kind, sep, rest = str(spec).partition(":")
    if sep and kind in BUILTIN_REWARD_KINDS.get(what, ()):
        return rest
    if what == "decoder" and (not sep or Path(spec).exists()):
        return str(spec)  # a weight file path (kind detected from its keys)
    return None


def is_code_spec(spec: str | None, what: str) -> bool:
    """True when `spec` for reward.<what> would import a module and call a function ("package.module:factory")."""
    return bool(spec) and spec_path(spec, what) is None


def refuse_code_specs(reward: RewardConfig, where: str) -> None:
    """Refuse "module:factory" specs where code must not be chosen by the caller (ComfyUI's unauthenticated
    /prompt reaches the training node): only the built-in kinds are allowed there."""
    bad = [f"reward.{what}={getattr(reward, what)!r}" for what in ("image", "video", "decoder")
           if is_code_spec(getattr(reward, what), what)]
    if bad:
        allowed = "; ".join(f"reward.{w}: " + ", ".join(f"{k}:PATH" for k in kinds)
                            for w, kinds in BUILTIN_REWARD_KINDS.items())
        raise ConfigError(f"{', '.join(bad)}: 'package.module:factory' specs import and call code, which {where} "
                          f"refuses. Allowed: {allowed} (or a decoder weight file). Custom reward code runs from the "
                          f"command line only: python -m sf_core.train run --config cfg.json --set reward.image=package.module:factory")


def load_factory(spec: str, what: str) -> Any:
    """Import "package.module:attr" and call attr() (no arguments)."""
    mod, sep, attr = spec.partition(":")
    if not sep or not mod or not attr:
        raise ConfigError(f"reward.{what}={spec!r}: expected 'package.module:factory'")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"reward.{what}={spec!r} cannot be imported ({exc}); is the module on PYTHONPATH?") from None
    return fn()


def load_reward(spec: str, what: str, device: torch.device | str = "cpu") -> Any:
    """A reward callable: built in ("clip:FOLDER", "xclip:FOLDER") or from a "package.module:factory" spec."""
    from .reward_models import builtin_reward

    reward = builtin_reward(spec, what, device)
    return reward if reward is not None else load_factory(spec, what)


def load_decoder(spec: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """A chunk decoder from "taehv:PATH", "wan:PATH", a weight file, or a "module:factory" spec."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("taehv", "wan"):
        path, kind_ = rest, kind
    elif Path(spec).exists():
        path, kind_ = spec, "auto"
    else:
        dec = load_factory(spec, "decoder")
        if not hasattr(dec, "decode_chunk"):
            raise ConfigError(f"reward.decoder={spec!r} returned {type(dec).__name__}, which has no decode_chunk()")
        return dec
    if not Path(path).exists():
        raise ConfigError(f"reward.decoder: {path} does not exist")
    from ..vae.loader import load_decoder as _load  # the VAE part's loaders

    try:
        dec = _load(path, kind_, dtype=dtype, device=device)
    except ValueError as exc:  # VAEError names the file and the problem
        raise ConfigError(f"reward.decoder: {exc}") from None
    if hasattr(dec, "requires_grad_"):
        dec.requires_grad_(False)
    return dec


class RewardTerm:
    """-beta_img * image reward - beta_vid * video reward of a decoded window of the rollout."""

    def __init__(self, rcfg: RewardConfig, rollout: RolloutConfig, decoder: Any,
                 image: ImageReward | None = None, video: VideoReward | None = None):
        if decoder is None or not hasattr(decoder, "decode_chunk"):
            raise ConfigError("the reward term needs a chunk decoder (an object with decode_chunk(z, state))")
        self.cfg, self.decoder, self.image, self.video = rcfg, decoder, image, video
        self.bounds = rollout.causal().chunk_bounds(rollout.num_frames)

    @classmethod
    def from_config(cls, rcfg: RewardConfig, rollout: RolloutConfig, device, dtype=torch.float32) -> "RewardTerm":
        decoder = load_decoder(rcfg.decoder, device, dtype)
        image = load_reward(rcfg.image, "image", device) if rcfg.image and rcfg.beta_img else None
        video = load_reward(rcfg.video, "video", device) if rcfg.video and rcfg.beta_vid else None
        return cls(rcfg, rollout, decoder, image, video)

    def window(self, seed: int, step: int) -> tuple[int, int]:
        """Latent frames [w0, w1) decoded with grad: inside one (keyed) chunk, at most window_latents long."""
        g = keyed_generator(seed, step, "reward", "window")
        s, e = self.bounds[int(torch.randint(0, len(self.bounds), (1,), generator=g))]
        n = min(self.cfg.window_latents, e - s)
        w0 = s + int(torch.randint(0, e - s - n + 1, (1,), generator=g))
        return w0, w0 + n

    def decode_window(self, x: torch.Tensor, w0: int, w1: int) -> torch.Tensor:
        """Pixels [B, T, 3, H, W] in [0, 1] of latent frames [w0, w1) (with grad), the stream warmed on [0, w0)."""
        state = None
        if w0 > 0:
            with torch.no_grad():
                _, state = self.decoder.decode_chunk(x[:, :, :w0].detach(), None)
        frames, _ = self.decoder.decode_chunk(x[:, :, w0:w1], state)
        return (frames.float() * 0.5 + 0.5).clamp(0.0, 1.0).permute(0, 2, 1, 3, 4)

    def __call__(self, x: torch.Tensor, batch, env, exits=None) -> tuple[torch.Tensor, dict[str, float]]:
        w0, w1 = self.window(env.cfg.seed, env.step)
        pix = self.decode_window(x, w0, w1)
        b, t = pix.shape[:2]
        g = keyed_generator(env.cfg.seed, env.step, "reward", "frames")
        loss = pix.new_zeros(())
        logs: dict[str, float] = {}
        if self.image is not None and self.cfg.beta_img:
            idx = torch.randperm(t, generator=g)[:min(self.cfg.image_frames, t)].sort().values
            imgs = pix[:, idx].flatten(0, 1)  # [B*M, 3, H, W]
            prompts = [p for p in batch.prompts for _ in range(len(idx))]
            score = self.image(imgs, prompts).float().mean()
            loss = loss - self.cfg.beta_img * score
            logs["reward_image"] = float(score.detach())
        if self.video is not None and self.cfg.beta_vid:
            k = self.cfg.video_frames
            if t >= k:
                stride = t // k
                off = int(torch.randint(0, t - stride * (k - 1), (1,), generator=g))
                idx = torch.arange(k) * stride + off
            else:
                idx = torch.arange(t)
            score = self.video(pix[:, idx], list(batch.prompts)).float().mean()
            loss = loss - self.cfg.beta_vid * score
            logs["reward_video"] = float(score.detach())
        logs["reward_loss"] = float(loss.detach())
        return loss.to(torch.float64), logs
