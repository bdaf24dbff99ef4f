"""The toy world, its text encoder, codec and metrics: determinism, exact ground truth, invertibility, and
metrics that recognise correct videos and catch broken ones."""
import pytest
import torch

from sf_core.toy import codec
from sf_core.toy.metrics import MOTION_CAP, POS_CAP, score_batch, summarize
from sf_core.toy.text import VOCAB, ToyTextEncoder, parse_prompt, tokenize
from sf_core.toy.world import (COLOURS, SHAPES, Scene, WorldError, WorldSpec, all_prompts, bounce, render,
                               sample_batch, scene_trajectory)


def test_world_is_deterministic_for_a_seed():
    a, sa = sample_batch(6, 12, seed=3)
    b, sb = sample_batch(6, 12, seed=3)
    c, _ = sample_batch(6, 12, seed=4)
    assert torch.equal(a, b) and sa == sb
    assert not torch.equal(a, c)
    assert a.shape == (6, 3, 12, 16, 16) and a.min() >= -1 and a.max() <= 1


def test_trajectory_bounces_and_matches_the_rendered_centre():
    spec = WorldSpec()
    s = Scene("square", "red", "right", "fast", 10.0, 5.0)
    traj = scene_trajectory(s, 40, spec)
    (xl, xh), _ = spec.bounds
    assert traj[:, 0].min() >= xl - 1e-5 and traj[:, 0].max() <= xh + 1e-5
    assert torch.allclose(traj[:, 1], torch.full((40,), 5.0))
    steps = traj[1:, 0] - traj[:-1, 0]
    assert (steps > 0).any() and (steps < 0).any()  # it bounced
    assert torch.allclose(steps.abs()[steps.abs() > 0.99], torch.full_like(steps[steps.abs() > 0.99], 1.0))
    v = render(s, 40, spec)
    alpha = (v[0] + 1) / 2 * (1 - spec.walls())  # red channel inside the walls = coverage
    xs = torch.arange(16) + 0.5
    cx = (alpha.sum(dim=1) * xs).sum(dim=1) / alpha.sum(dim=(1, 2))
    assert (cx - traj[:, 0]).abs().max() < 0.05
    assert bounce(torch.tensor([0.0, 27.0, 30.0]), 5.0, 27.0).tolist() == [10.0, 27.0, 24.0]


def test_scene_rejects_unknown_attributes():
    with pytest.raises(WorldError, match="unknown colour 'teal'"):
        Scene("square", "teal", "left", "fast", 10, 10)
    with pytest.raises(WorldError, match="too small"):
        WorldSpec(height=16, width=16, size=5)  # needs 20 pixels


def test_prompts_and_text_encoder():
    prompts = all_prompts()
    assert len(prompts) == 144 == len(set(prompts))
    assert parse_prompt("a red square moving left fast") == {"shape": "square", "colour": "red",
                                                            "direction": "left", "speed": "fast"}
    assert tokenize("A Purple BALL moving quickly upwards!") == ["magenta", "circle", "fast", "up"]
    enc = ToyTextEncoder()
    e = enc.encode(["a red square moving left fast", "a red square moving left fast", "", "a blue box"])
    assert e.shape == (4, 8, 32)
    assert torch.equal(e[0], e[1]) and torch.equal(e, ToyTextEncoder().encode(
        ["a red square moving left fast", "a red square moving left fast", "", "a blue box"]))
    assert e[2].abs().sum() == 0  # the empty (negative) prompt
    assert (e[0, :4].norm(dim=1) > 1).all() and e[0, 4:].abs().sum() == 0  # 4 concept rows, zero padding
    assert torch.equal(e[3, 1], enc.table()[VOCAB.index("square")])  # synonym "box"
    assert not torch.equal(enc.encode(["a red circle"]), enc.encode(["a red square"]))
    assert not torch.equal(ToyTextEncoder(seed=1).table(), enc.table())


def test_codec_round_trip_and_streaming_decode():
    x, _ = sample_batch(3, 9, seed=5)
    z = codec.encode(x)
    assert z.shape == (3, 12, 9, 8, 8)
    assert (codec.decode(z) - x).abs().max() < 1e-5
    dec = codec.ToyDecoder()
    full = dec.decode(z)
    state, parts = None, []
    for s in range(0, 9, 3):
        f, state = dec.decode_chunk(z[:, :, s:s + 3], state)
        parts.append(f)
    assert torch.equal(torch.cat(parts, dim=2), full)
    assert state.frames_done == 9
    big, _ = codec.ToyDecoder(upscale=4).decode_chunk(z[:, :, :3])
    assert big.shape == (3, 3, 3, 64, 64)
    assert torch.equal(big[..., ::4, ::4], full[:, :, :3])
    with pytest.raises(codec.CodecError, match="12 channels, got 16"):
        dec.decode(torch.zeros(1, 16, 3, 8, 8))


def test_codec_normalisation_constants_match_the_world():
    """The hard-coded latent mean/std are still what the world produces (they would go stale if it changed)."""
    mean, std = codec.measure_stats(videos=96, frames=8, seed=11)
    assert (mean - torch.tensor(codec.LATENT_MEAN)).abs().max() < 0.25
    assert ((std / torch.tensor(codec.LATENT_STD)).log().abs()).max() < 0.25
    z = codec.encode(sample_batch(64, 8, seed=12)[0])
    assert abs(z.mean()) < 0.1 and 0.6 < z.std() < 1.4


def _scores(videos, scenes):
    return summarize(score_batch(videos, [s.prompt for s in scenes]))


def test_metrics_are_perfect_on_world_videos_and_catch_errors():
    x, scenes = sample_batch(16, 20, seed=7)
    good = _scores(x, scenes)
    assert good["shape_acc"] == 1 and good["colour_acc"] == 1 and good["present"] == 1
    assert good["prompt_motion"] == 1
    assert good["pos_err"] < 0.3 and good["motion_err"] < 0.3 and good["flicker"] == 0
    # wrong colour: every prompt names another colour
    names = list(COLOURS)
    recol = [Scene(s.shape, names[(names.index(s.colour) + 1) % len(names)], s.direction, s.speed, s.x, s.y)
             for s in scenes]
    assert _scores(x, recol)["colour_acc"] == 0
    reshaped = [Scene(SHAPES[(SHAPES.index(s.shape) + 1) % 3], s.colour, s.direction, s.speed, s.x, s.y)
                for s in scenes]
    assert _scores(x, reshaped)["shape_acc"] < 0.1
    # played backwards: valid physics (no drift) but not the prompted direction
    backwards = _scores(x.flip(2), scenes)
    assert backwards["prompt_motion"] < 0.6 and backwards["pos_err"] < 0.3
    # a frozen object: right shape and colour, a static motion nobody asked for
    frozen = _scores(x[:, :, :1].expand_as(x), scenes)
    assert frozen["prompt_motion"] == 0 and frozen["shape_acc"] == 1
    # a jump after frame 10 is drift
    jump = x.clone()
    jump[:, :, 10:] = x[:, :, 10:].roll(3, dims=-1)
    assert _scores(jump, scenes)["pos_err"] > 1
    # an empty video scores the caps
    empty = _scores(torch.full_like(x, -1.0), scenes)
    assert empty["present"] == 0 and empty["pos_err"] == POS_CAP and empty["motion_err"] == MOTION_CAP
    # noise in the background is flicker
    assert _scores((x + 0.2 * torch.randn_like(x)).clamp(-1, 1), scenes)["flicker"] > 0.02
