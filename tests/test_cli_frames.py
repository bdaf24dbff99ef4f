"""`generate` / `live` with --image and --video (toy model): the video starts with the image; an extended video
holds the given frames followed by the continuation; bad inputs are refused before any work."""
import json

import numpy as np
import pytest
import torch

from sf_core.cli import generate as gen
from sf_core.toy.world import Scene, render
from sf_core.video import probe_video, read_video, write_video

PROMPT = "a blue circle moving down slow"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    v = render(Scene("circle", "blue", "down", "slow", 8, 5), 24)  # [3, 24, 16, 16]
    write_video(d / "world.mp4", v.repeat_interleave(8, 2).repeat_interleave(8, 3), 8, crf=0)
    from PIL import Image

    Image.fromarray(((v[:, 0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(d / "start.png")
    return d


def _gen(args, capsys):
    code = gen.main(["--model", "toy", "--prompt", PROMPT, "-q", "--crf", "0", *args])
    out = capsys.readouterr()
    return code, out


def test_image_to_video_starts_with_the_image(files, tmp_path, capsys):
    code, out = _gen(["--image", str(files / "start.png"), "--seconds", "3", "-o", str(tmp_path / "a.mp4")], capsys)
    assert code == 0, out.err
    summary = json.loads(out.out.splitlines()[-1])
    video = read_video(tmp_path / "a.mp4")
    assert summary["total_latent_frames"] == 25 and video.shape[0] == 25
    from PIL import Image

    image = np.asarray(Image.open(files / "start.png").convert("RGB")).astype(np.float32)
    first = video[0, 4::8, 4::8].astype(np.float32)  # the toy decoder enlarges 8x (nearest)
    assert np.abs(first - image).max() <= 8  # the first frame is the image (codec round trip)


def test_extend_video_holds_the_given_frames_then_the_new_ones(files, tmp_path, capsys):
    code, out = _gen(["--video", str(files / "world.mp4"), "--seconds", "3", "-o", str(tmp_path / "b.mp4"),
                      "--save-session", str(tmp_path / "b.session")], capsys)
    assert code == 0, out.err
    given, video = read_video(files / "world.mp4"), read_video(tmp_path / "b.mp4")
    assert video.shape[0] == 24 + 24 and np.array_equal(video[:24], given)
    from sf_core.sampling.session_io import load_session

    s = load_session(tmp_path / "b.session")
    assert s.settings.causal.independent_first_frame and s.next_frame == 7 + 24  # 7 given latent frames + 24


def test_bad_frame_inputs(files, tmp_path, capsys):
    bad = tmp_path / "odd.png"
    from PIL import Image

    Image.new("RGB", (20, 20)).save(bad)
    for args, msg in ((["--image", str(bad)], "16x16"), (["--image", str(tmp_path / "none.png")], "no such file"),
                      (["--video", str(files / "world.mp4"), "-o", str(files / "world.mp4")], "would destroy")):
        code, out = _gen([*args, "--seconds", "1", *(["-o", str(tmp_path / "x.mp4")] if "-o" not in args else [])],
                         capsys)
        assert code == 2 and msg in out.err, (args, out.err)
    assert probe_video(files / "world.mp4")["frames"] == 24  # the input was not touched
