"""The T2V-Turbo mixed reward term: decoded window == full decode, gradient only through the window, and
the term inside a DMD generator update (stand-in reward models and the tiny TAEHV decoder)."""
import dataclasses

import pytest
import torch

from sf_core.config import ConfigError
from sf_core.train.config import DistConfig, RewardConfig, RolloutConfig, TrainConfig
from sf_core.train.reward import RewardTerm, load_decoder, load_factory
from train_kit import brightness_reward, smoothness_reward, tiny_decoder, write_embeddings

ROLLOUT = RolloutConfig(num_frames=6, latent_height=4, latent_width=4)
RCFG = RewardConfig(image="train_kit:brightness_reward", video="train_kit:smoothness_reward",
                    decoder="train_kit:tiny_decoder", beta_img=1.0, beta_vid=0.5, image_frames=2,
                    video_frames=3, window_latents=2)


def test_window_decode_equals_full_decode_and_grad_stays_inside():
    term = RewardTerm(RCFG, ROLLOUT, tiny_decoder(), brightness_reward(), smoothness_reward())
    x = torch.randn(2, 16, 6, 4, 4, requires_grad=True)
    windows = {term.window(0, s) for s in range(30)}
    assert all(e - s <= 2 and (s // 3) == ((e - 1) // 3) for s, e in windows)  # inside one chunk
    w0, w1 = next((s, e) for s, e in sorted(windows) if s > 0)
    pix = term.decode_window(x, w0, w1)
    with torch.no_grad():
        full = term.decoder.decode(x)  # [B, 3, 4T-3, H, W]
    a, b = 4 * w0 - 3, 4 * w1 - 3
    want = (full[:, :, a:b] * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)
    assert pix.shape == want.shape and torch.allclose(pix, want, atol=1e-5)
    pix.sum().backward()
    g = x.grad.abs().sum(dim=(0, 1, 3, 4))
    assert (g[w0:w1] > 0).all() and (g[:w0] == 0).all() and (g[w1:] == 0).all()


def test_reward_loss_and_its_gradient_raise_the_reward():
    term = RewardTerm(dataclasses.replace(RCFG, beta_vid=0.0), ROLLOUT, tiny_decoder(), brightness_reward())
    x = torch.randn(1, 16, 6, 4, 4, requires_grad=True)
    env = type("Env", (), {"cfg": TrainConfig.tiny(), "step": 3})()
    batch = type("B", (), {"prompts": ["a red circle"]})()
    loss, logs = term(x, batch, env)
    assert loss.item() == pytest.approx(-logs["reward_image"], rel=1e-6) and "reward_video" not in logs
    loss.backward()
    with torch.no_grad():
        loss2, logs2 = term(x - 0.5 * x.grad / x.grad.abs().max(), batch, env)
    assert logs2["reward_image"] > logs["reward_image"]


def test_specs_and_errors(tmp_path):
    assert callable(load_factory("train_kit:brightness_reward", "image"))
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_factory("no_such_module:fn", "image")
    with pytest.raises(ConfigError, match="package.module:factory"):
        load_factory("just_a_name", "image")
    with pytest.raises(ConfigError, match="does not exist"):
        load_decoder(f"taehv:{tmp_path / 'missing.pth'}")
    with pytest.raises(ConfigError, match="reward.decoder is required"):
        RewardConfig(image="train_kit:brightness_reward", beta_img=1.0)


def test_reward_term_in_a_dmd_generator_update(tmp_path):
    from sf_core.train.distributed import init_distributed, shutdown
    from sf_core.train.trainer import Trainer

    write_embeddings(tmp_path / "emb")
    base = TrainConfig.tiny(out_dir=str(tmp_path / "run"), embeddings=str(tmp_path / "emb"))
    grads = {}
    info = init_distributed(DistConfig(mixed_precision=False))
    try:
        for name, cfg in (("plain", base), ("reward", dataclasses.replace(base, reward=RCFG))):
            tr = Trainer(cfg, info)
            assert (tr.method.reward is not None) == (name == "reward")
            logs = tr.train_step()  # step 0: generator + critic update
            grads[name] = logs
        assert {"reward_image", "reward_video", "reward_loss"} <= set(grads["reward"])
        # same rollout and DMD loss (logged without the reward); the generator's gradient includes the reward
        assert grads["reward"]["generator_loss"] == pytest.approx(grads["plain"]["generator_loss"], rel=1e-6)
        assert grads["reward"]["generator_grad_norm"] != pytest.approx(grads["plain"]["generator_grad_norm"], rel=1e-4)
    finally:
        shutdown()
