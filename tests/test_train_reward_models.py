"""The built-in reward models (sf_core.train.reward_models) on tiny random CLIP / X-CLIP checkpoints written with
save_pretrained: scores against transformers' own feature functions, pairing, gradients to the pixels and, in a
DMD + reward update, to the generator."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from reward_kit import tiny_clip, tiny_xclip
from sf_core.config import ConfigError
from sf_core.train.config import DistConfig, RewardConfig, TrainConfig
from sf_core.train.reward_models import CLIP_MEAN, CLIP_STD, CLIPImageReward, XCLIPVideoReward, builtin_reward
from train_kit import write_embeddings

PROMPTS = ["a red circle moving left", "a blue square", "green triangle moving up fast"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rewards")
    return tiny_clip(tmp / "clip"), tiny_xclip(tmp / "xclip")


def test_clip_reward_equals_transformers_features_and_scores_pairs(folders):
    from transformers import AutoTokenizer, CLIPModel

    reward = CLIPImageReward(folders[0])
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 16, 16, generator=g)  # the model's size: no resize, only normalisation
    score = reward(images, PROMPTS)
    model = CLIPModel.from_pretrained(folders[0]).eval()
    tok = AutoTokenizer.from_pretrained(folders[0])
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    with torch.no_grad():
        img = model.get_image_features(pixel_values=(images - mean) / std)
        t = tok(PROMPTS, padding=True, return_tensors="pt")
        txt = model.get_text_features(input_ids=t["input_ids"], attention_mask=t["attention_mask"])
    img, txt = (getattr(o, "pooler_output", o) for o in (img, txt))
    want = (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)
    assert score.shape == (3,) and torch.allclose(score, want, atol=1e-5)
    # each image is scored against its own prompt, whatever else is in the batch
    for i in range(3):
        assert torch.allclose(reward(images[i:i + 1], PROMPTS[i:i + 1]), score[i:i + 1], atol=1e-5)
    assert not torch.allclose(reward(images, PROMPTS[::-1]), score)


def test_rewards_pass_gradient_to_the_pixels(folders):
    clip, xclip = CLIPImageReward(folders[0]), XCLIPVideoReward(folders[1])
    images = torch.rand(2, 3, 24, 40, requires_grad=True)  # cropped to 24x24, resized to 16x16
    clip(images, PROMPTS[:2]).sum().backward()
    assert images.grad.abs().sum() > 0 and not any(p.grad is not None for p in clip.model.parameters())
    clips = torch.rand(2, 6, 3, 16, 16, requires_grad=True)  # 6 frames -> X-CLIP's 4: frames 0, 2, 3, 5
    score = xclip(clips, PROMPTS[:2])
    assert score.shape == (2,) and bool(((score >= -1) & (score <= 1)).all())
    score.sum().backward()
    per_frame = clips.grad.abs().sum(dim=(0, 2, 3, 4))
    assert (per_frame[[0, 2, 3, 5]] > 0).all() and (per_frame[[1, 4]] == 0).all()
    for i in range(2):
        assert torch.allclose(xclip(clips[i:i + 1].detach(), PROMPTS[i:i + 1]), score[i:i + 1].detach(), atol=1e-5)


def test_specs_and_errors(folders, tmp_path):
    assert builtin_reward("train_kit:brightness_reward", "image") is None  # a factory spec: not built in
    assert isinstance(builtin_reward(f"clip:{folders[0]}", "image"), CLIPImageReward)
    with pytest.raises(ConfigError, match="not a transformers model folder"):
        builtin_reward(f"clip:{tmp_path}", "image")
    with pytest.raises(ConfigError, match="is a video reward; use it as reward.video"):
        builtin_reward(f"xclip:{folders[1]}", "image")
    with pytest.raises(ConfigError, match="give the model folder"):
        builtin_reward("clip:", "image")
    with pytest.raises(ConfigError, match="holds a 'clip' model, not 'xclip'"):
        builtin_reward(f"xclip:{folders[0]}", "video")  # a CLIP folder is no X-CLIP
    import shutil

    shutil.copytree(folders[0], tmp_path / "partial")
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "partial" / "model.safetensors")
    del weights["visual_projection.weight"]  # it would be re-initialised at random
    save_file(weights, tmp_path / "partial" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="lacks 1 weights of a CLIPModel"):
        builtin_reward(f"clip:{tmp_path / 'partial'}", "image")


def test_dmd_update_with_shipped_rewards_reaches_the_generator(folders, tmp_path):
    from sf_core.train.distributed import init_distributed, shutdown
    from sf_core.train.methods.base import StepEnv
    from sf_core.train.trainer import Trainer

    write_embeddings(tmp_path / "emb")
    base = TrainConfig.tiny(out_dir=str(tmp_path / "run"), embeddings=str(tmp_path / "emb"))
    rcfg = RewardConfig(image=f"clip:{folders[0]}", video=f"xclip:{folders[1]}", decoder="train_kit:tiny_decoder",
                        beta_img=1.0, beta_vid=1.0, image_frames=2, video_frames=4, window_latents=2)
    info = init_distributed(DistConfig(mixed_precision=False))
    try:
        tr = Trainer(dataclasses.replace(base, reward=rcfg), info)
        env = StepEnv(tr.cfg, 0, info, torch.float32)
        batch = tr.next_batch()
        x, exits = tr.method._generate(tr.nets, batch, env, "generator")
        loss, logs = tr.method.reward(x, batch, env, exits)  # the reward term alone
        loss.backward()
        grads = [p.grad for p in tr.nets.generator.parameters()]
        assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > len(grads) // 2
        assert {"reward_image", "reward_video"} <= set(logs)
        tr.nets.generator.zero_grad(set_to_none=True)
        tr.position = 0
        metrics = tr.train_step()  # a whole DMD + reward step (generator and critic)
        assert {"reward_image", "reward_video", "generator_loss", "critic_loss"} <= set(metrics)
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    finally:
        shutdown()
