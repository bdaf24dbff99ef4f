"""`python -m sf_core generate` refuses bad numbers, prompts and output paths before any work, and keeps what it made.

Lengths are checked against arithmetic written out here (video frames = 1 + s (latent - 1) for a fresh video,
s = 4 for Wan, 1 for the toy), not against the CLI's own helpers.
"""
import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from sessions_kit import StubDecoder, conditioning, tiny_model
from sf_core.cli import generate as cli
from sf_core.cli import inputs
from sf_core.config import CausalConfig, ConfigError
from sf_core.sampling.pipeline import Bundle
from sf_core.sampling.session import SamplingSettings, default_causal


def stub_bundle(model=None, **kw):
    b = dict(transformer=model or tiny_model(), text_encoder=None, decoder=StubDecoder(),
             settings=SamplingSettings(causal=default_causal()), fps=8, latent_hw=(4, 6), spatial_scale=2)
    b.update(kw)
    return Bundle(**b)


@pytest.fixture
def emb(tmp_path):
    path = tmp_path / "emb.safetensors"
    save_file({"context": conditioning(0)[0], "a dog": conditioning(1, length=7)[0]}, str(path))
    return path


def run(argv, capsys, bundle=None):
    code = cli.main(argv, bundle=bundle)
    return code, capsys.readouterr()


def parse(argv):
    return cli.build_parser().parse_args(argv)


# ------------------------------------------------------------------------------------------ item 5: numbers
@pytest.mark.parametrize("extra, msg", [
    (["--latent-frames", "999999999999"], "--latent-frames must be a finite number >= 1 and <= 1,000,000"),
    (["--seconds", "inf"], "--seconds must be a finite number > 0, got inf"),
    (["--seconds", "nan"], "--seconds must be a finite number > 0, got nan"),
    (["--seconds", "-2"], "--seconds must be a finite number > 0"),
    (["--seconds", "1e9"], "asks for 4,000,000,001 latent frames; one run makes at most 1,000,000"),
    (["--frames", "0"], "--frames must be a finite number >= 1"),
    (["--fps", "0"], "--fps must be a finite number >= 0.1 and <= 1,000"),
    (["--fps", "nan"], "--fps must be a finite number"),
    (["--seed", "-1"], "--seed must be a finite number >= 0"),
    (["--window", "-3"], "--window must be a finite number >= 0"),
    (["--window", "big"], "--window must be a number of latent frames"),
    (["--width", "0"], "--width must be a finite number >= 1 and <= 16,384 pixels"),
    (["--height", "99999"], "--height must be a finite number >= 1 and <= 16,384 pixels"),
    (["--shift", "0"], "--shift must be a finite number > 0"),
    (["--crf", "70"], "--crf must be a finite number >= 0 and <= 51"),
    (["--steps", "1000,inf"], "--steps: denoising step 'inf' must be an integer in 1..1000"),
    (["--transition", "-1"], "--transition must be a finite number >= 0"),
])
def test_numbers_are_checked_before_the_model_is_loaded(tmp_path, capsys, extra, msg):
    missing = tmp_path / "not_downloaded_yet.safetensors"  # loading it would fail: the check must come first
    code, io = run(["--model", str(missing), "-o", "", "--latents-out", str(tmp_path / "l.st"), "-q", *extra], capsys)
    assert code == 2 and msg in io.err, io.err


def test_length_messages_use_the_models_frame_arithmetic():
    wan, toy = dict(fps=16.0, temporal_scale=4, fresh=True), dict(fps=8.0, temporal_scale=1, fresh=True)
    c3 = CausalConfig(chunk_frames=3)
    # Wan: 10 latent frames -> nearest 9 (1 + 4*8 = 33 video frames) or 12 (45)
    with pytest.raises(ConfigError, match=r"9 latent frames \(33 video frames, 2.06 s\) or 12 latent frames \(45"):
        inputs.latent_length(parse(["--latent-frames", "10"]), c3, **wan)
    # toy: one latent frame is one video frame
    with pytest.raises(ConfigError, match=r"9 latent frames \(9 video frames, 1.12 s\) or 12 latent frames \(12 "):
        inputs.latent_length(parse(["--latent-frames", "10"]), c3, **toy)
    with pytest.raises(ConfigError, match="the shortest valid video is 3 frames"):  # not "3 or 3 frames"
        inputs.latent_length(parse(["--frames", "2"]), c3, **toy)
    with pytest.raises(ConfigError, match="nearest valid video lengths: 9 or 12 frames"):
        inputs.latent_length(parse(["--frames", "10"]), c3, **toy)
    with pytest.raises(ConfigError, match="nearest valid video lengths: 9 or 21 frames"):
        inputs.latent_length(parse(["--frames", "20"]), c3, **wan)
    assert inputs.latent_length(parse(["--frames", "81"]), c3, **wan) == 21
    assert inputs.latent_length(parse(["--frames", "12"]), c3, **toy) == 12
    assert inputs.latent_length(parse(["--seconds", "5"]), c3, **wan) == 21  # 80 frames -> 1 + 20 -> 21
    assert inputs.latent_length(parse(["--seconds", "2"]), c3, **toy) == 18  # 16 frames -> 6 chunks
    # a continuation (not fresh): every latent frame is s video frames
    assert inputs.latent_length(parse(["--frames", "24"]), c3, fps=16.0, temporal_scale=4, fresh=False) == 6
    first = CausalConfig(chunk_frames=3, independent_first_frame=True)
    assert inputs.latent_length(parse(["--seconds", "1"]), first, **toy) == 10
    with pytest.raises(ConfigError, match="after an independent first frame; nearest valid lengths: 4 latent"):
        inputs.latent_length(parse(["--latent-frames", "6"]), first, **wan)


def test_rope_limit_names_a_length_of_whole_chunks():
    c3 = CausalConfig(chunk_frames=3)
    inputs.check_room(0, 1023, 1024, c3, fps=16.0, temporal_scale=4)  # fits
    with pytest.raises(ConfigError, match=r"RoPE limit of 1024.*at most 1023 latent frames \(4089 video frames"):
        inputs.check_room(0, 1026, 1024, c3, fps=16.0, temporal_scale=4)
    with pytest.raises(ConfigError, match=r"at latent frame 1017; ask for at most 6 latent frames \(6 video"):
        inputs.check_room(1017, 9, 1024, c3, fps=8.0, temporal_scale=1)
    with pytest.raises(ConfigError, match="no whole chunk fits"):
        inputs.check_room(1023, 3, 1024, c3, fps=8.0, temporal_scale=1)


def test_nan_steps_in_the_schedule_parser():
    from sf_core.sampling.schedule import parse_steps

    for bad in ("nan", "1000,inf", "-inf"):
        with pytest.raises(ValueError, match="must be an integer in 1..1000"):
            parse_steps(bad)


# ------------------------------------------------------------------------------------------ item 6: schedules
@pytest.mark.parametrize("spec", ["1m:a dog", "-1:a dog", "nans:a dog"])
def test_schedule_typos_are_refused_before_the_model_is_loaded(tmp_path, capsys, spec):
    code, io = run(["--model", str(tmp_path / "missing.safetensors"), "--prompt", spec, "-o", "",
                    "--latents-out", str(tmp_path / "l.st"), "-q"], capsys)
    assert code == 2 and "which is not a start" in io.err, io.err


@pytest.mark.parametrize("item, msg", [({"start": -1, "prompt": "a"}, "'start' must be a whole chunk index >= 0"),
                                       ({"start": "2", "prompt": "a"}, "'start' must be a whole chunk index"),
                                       ({"start": 1.5, "prompt": "a"}, "'start' must be a whole chunk index"),
                                       ({"seconds": float("nan"), "prompt": "a"}, "'seconds' must be a number"),
                                       ({"seconds": 1, "start": 2, "prompt": "a"}, "not both")])
def test_bad_entries_of_a_prompts_file(tmp_path, capsys, item, msg):
    f = tmp_path / "p.json"
    f.write_text(json.dumps([{"start": 0, "prompt": "x"}, item]))
    code, io = run(["--model", str(tmp_path / "missing.safetensors"), "--prompts", str(f), "-o", "",
                    "--latents-out", str(tmp_path / "l.st"), "-q"], capsys)
    assert code == 2 and "item 1" in io.err and msg in io.err, io.err


def test_a_prompt_after_the_end_is_reported(tmp_path, emb, capsys, caplog):
    argv = ["--embeddings", str(emb), "--latent-frames", "6", "--prompt", "0:context", "--prompt", "9:a dog",
            "-o", "", "--latents-out", str(tmp_path / "l.st"), "-q"]
    with caplog.at_level("WARNING"):
        code, io = run(argv, capsys, stub_bundle())
    assert code == 0, io.err
    assert "'a dog' starts at chunk 9, but this video ends after chunk 1: it is not used" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        code, io = run(argv + ["--save-session", str(tmp_path / "s.st")], capsys, stub_bundle())
    assert code == 0 and "kept in the saved session" in caplog.text


# ------------------------------------------------------------------------------------------ item 7: toy messages
def _toy():
    toy = pytest.importorskip("sf_core.toy.bundle")
    if not toy.DEFAULT_MODEL.is_file():
        pytest.skip("the toy model file is not in this checkout")


def test_toy_length_messages_count_one_video_frame_per_latent_frame(tmp_path, capsys):
    _toy()
    base = ["--model", "toy", "--prompt", "a red square moving left fast", "-o", "", "--latents-out",
            str(tmp_path / "l.st"), "-q"]
    code, io = run(base + ["--latent-frames", "10"], capsys)
    assert code == 2 and "9 latent frames (9 video frames, 1.12 s) or 12 latent frames (12 video frames" in io.err
    code, io = run(base + ["--frames", "2"], capsys)
    assert code == 2 and "the shortest valid video is 3 frames" in io.err, io.err


def test_toy_prompt_words_warned_per_word_and_long_prompts_cut(tmp_path, capsys, caplog):
    _toy()
    base = ["--model", "toy", "--seconds", "0.5", "-o", "", "--latents-out", str(tmp_path / "l.st"), "-q"]
    with caplog.at_level("WARNING"):
        code, io = run(base + ["--prompt", "a bluee circl moving up fast"], capsys)
    assert code == 0, io.err
    assert "unknown words 'bluee', 'circl' ignored" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        code, io = run(base + ["--prompt", "a red square moving left fast"], capsys)
    assert code == 0 and caplog.text == ""  # an ordinary prompt: nothing to warn about
    with caplog.at_level("DEBUG"):
        code, io = run(base + ["-v", "--prompt", "a red square " + "zz " * 3400], capsys)
    assert code == 0 and "… (10212 characters)" in caplog.text
    assert max(len(r.getMessage()) for r in caplog.records) < 600
    assert max(len(line) for line in (io.err + io.out).splitlines()) < 600


def test_node_length_message_uses_the_models_frame_arithmetic(tmp_path):
    from nodes_harness import install_stubs

    install_stubs(str(tmp_path))
    from nodes.host import NodeInputError
    from nodes.inputs import check_length

    c3 = CausalConfig(chunk_frames=3)
    check_length(9, c3, 1)
    with pytest.raises(NodeInputError, match=r"10 latent frames \(10 video frames\).*9 latent frames \(9 video "
                                             r"frames\) or 12 \(12 video frames\)"):
        check_length(10, c3, 1)
    with pytest.raises(NodeInputError, match=r"7 latent frames \(25 video frames\).*6 latent frames \(21 video "
                                             r"frames\) or 9 \(33 video frames\)"):
        check_length(7, c3, 4)
    with pytest.raises(NodeInputError, match=r"the shortest valid length is 3 latent frames \(3 video frames\)"):
        check_length(2, c3, 1)


# ------------------------------------------------------------------------------------------ item 8: output paths
def _files_argv(emb, *extra):
    return ["--embeddings", str(emb), "--width", "12", "--height", "8", "--prompt", "0:context", "-q", *extra]


@pytest.mark.parametrize("flag", ["-o", "--latents-out", "--save-session"])
def test_unwritable_outputs_are_refused_before_the_model_is_loaded(tmp_path, capsys, flag):
    (tmp_path / "a_file").write_text("x")
    others = {"-o": ["-o", ""], "--latents-out": [], "--save-session": []}[flag]
    for bad, msg in ((tmp_path / "a_file" / "out.st", "cannot create the folder"),
                     ("/proc/sf_no_such_dir/out.st", "cannot"),
                     (tmp_path, "is a folder")):
        argv = ["--model", str(tmp_path / "missing.safetensors"), "--vae", "v.pth", "-q", *others, flag, str(bad)]
        if flag != "--latents-out":
            argv += ["--latents-out", str(tmp_path / "ok.st")]
        code, io = run(argv, capsys)
        assert code == 2 and msg in io.err and "missing.safetensors" not in io.err, (bad, io.err)


def test_not_enough_disk_space_is_refused_before_generating(tmp_path, emb, capsys, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    chunks = []
    b = stub_bundle()
    b.decoder.decode_chunk = lambda z, state=None, _f=b.decoder.decode_chunk: chunks.append(1) or _f(z, state)
    code, io = run(_files_argv(emb, "--latent-frames", "6", "-o", str(tmp_path / "v.mp4"), "--save-session",
                               str(tmp_path / "s.st")), capsys, b)
    assert code == 2 and "1000 bytes free" in io.err and str(tmp_path / "s.st") in io.err, io.err
    assert chunks == [] and not list(tmp_path.glob("*.mp4"))


def test_a_failing_video_write_leaves_no_file_that_looks_like_a_video(tmp_path, emb, capsys, monkeypatch):
    import errno

    from sf_core import video

    real, calls = video.VideoWriter.write, []

    def write(self, frames):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, frames)

    monkeypatch.setattr(video.VideoWriter, "write", write)
    out = tmp_path / "v.mp4"
    code, io = run(_files_argv(emb, "--latent-frames", "9", "-o", str(out)), capsys, stub_bundle())
    assert code == 1 and "No space left on device" in io.err and "nothing was kept" in io.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.safetensors"]  # no mp4, no temporary file


def test_a_failing_session_write_keeps_the_video_and_says_so(tmp_path, emb, capsys, monkeypatch):
    import sf_core.sampling.session_io as sio
    from sf_core.video import probe_video

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sio, "save_session", fail)
    out = tmp_path / "v.mp4"
    code, io = run(_files_argv(emb, "--latent-frames", "6", "-o", str(out), "--save-session",
                               str(tmp_path / "s.st")), capsys, stub_bundle())
    assert code == 1 and "could not write the session" in io.err
    assert probe_video(out)["frames"] == 21
    assert json.loads(io.out.strip().splitlines()[-1])["session"] is None


def test_video_writer_is_atomic(tmp_path):
    import torch

    from sf_core.fileio import default_mode
    from sf_core.video import VideoWriter, probe_video

    out = tmp_path / "a.mp4"
    w = VideoWriter(out, 8)
    w.write(torch.zeros(3, 2, 8, 8))
    assert not out.exists() and len(list(tmp_path.iterdir())) == 1  # only the hidden temporary file
    w.close()
    assert probe_video(out)["frames"] == 2 and (out.stat().st_mode & 0o777) == default_mode()
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 8) as w2:
            w2.write(torch.ones(3, 3, 8, 8))
            raise RuntimeError("boom")
    assert probe_video(out)["frames"] == 2 and sorted(tmp_path.iterdir()) == [out]  # the old file, untouched


# ------------------------------------------------------------------------------------------ item 12: no output
def test_no_output_at_all_is_refused_before_any_work(tmp_path, capsys):
    code, io = run(["--model", str(tmp_path / "missing.safetensors"), "-o", "", "-q"], capsys)
    assert code == 2 and "nothing would be kept" in io.err, io.err


# ---------------------------------------------------------------------------- item 10: inputs and resumed videos
def test_an_output_that_is_an_input_or_another_output_is_refused(tmp_path, emb, capsys):
    sess = tmp_path / "s.st"
    sess.write_bytes(b"not read: the check comes first")
    missing = str(tmp_path / "missing.safetensors")
    for extra, msg in (
        (["--resume", str(sess), "-o", str(sess)], "-o " + str(sess) + " is also the --resume file"),
        (["-o", str(emb)], "is also the --embeddings file"),
        (["--latents-out", missing, "-o", ""], "--latents-out " + missing + " is also the --model file"),
        (["-o", str(tmp_path / "a.st"), "--latents-out", str(tmp_path / "a.st")], "are the same file"),
        (["-o", str(tmp_path / "x" / ".." / "v.mp4"), "--save-session", str(tmp_path / "v.mp4")],
         "are the same file"),
    ):
        code, io = run(["--model", missing, "--vae", "v.pth", "--embeddings", str(emb), "-q", *extra], capsys)
        assert code == 2 and msg in io.err, (extra, io.err)
    assert sess.read_bytes() == b"not read: the check comes first"


def test_resume_does_not_overwrite_the_original_video(tmp_path, emb, capsys):
    from sf_core.video import probe_video

    base, sess = tmp_path / "base.mp4", tmp_path / "s.st"
    b = stub_bundle()
    assert run(_files_argv(emb, "--latent-frames", "6", "-o", str(base), "--save-session", str(sess)), capsys,
               b)[0] == 0
    code, io = run(_files_argv(emb, "--latent-frames", "3", "--resume", str(sess), "-o", str(base)), capsys,
                   stub_bundle(b.transformer))
    assert code == 2 and "may be the video this session continues: --append" in io.err
    assert probe_video(base)["frames"] == 21
    other = tmp_path / "other.mp4"  # 1 chunk: not the session's video
    assert run(_files_argv(emb, "--latent-frames", "3", "-o", str(other), "--latents-out",
                           str(tmp_path / "x.st")), capsys, stub_bundle(b.transformer))[0] == 0
    code, io = run(_files_argv(emb, "--latent-frames", "3", "--resume", str(sess), "-o", str(other), "--append"),
                   capsys, stub_bundle(b.transformer))
    assert code == 2 and "has 9 frames, but this session continues a video of 21 frames" in io.err, io.err
    mp4s = sorted(p.name for p in tmp_path.glob("*.mp4"))
    assert probe_video(other)["frames"] == 9 and mp4s == ["base.mp4", "other.mp4"]
    # the continuation alone to a new file; the session updated in place; then appended to the original
    code, io = run(_files_argv(emb, "--latent-frames", "3", "--resume", str(sess), "-o", str(tmp_path / "c.mp4"),
                               "--save-session", str(sess)), capsys, stub_bundle(b.transformer))
    summary = json.loads(io.out.strip().splitlines()[-1])
    assert code == 0 and (summary["latent_frames"], summary["total_latent_frames"]) == (3, 9)
    assert summary["video_frames"] == summary["output_frames"] == 12 == probe_video(tmp_path / "c.mp4")["frames"]
    code, io = run(_files_argv(emb, "--latent-frames", "3", "--resume", str(sess), "-o", str(base), "--append"),
                   capsys, stub_bundle(b.transformer))
    assert code == 2 and "has 21 frames, but this session continues a video of 33 frames" in io.err


# ------------------------------------------------------------------------------------------ item 9: Ctrl-C
def _ctrl_c():
    import os
    import signal

    os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("where, done", [("write", 6), ("decode", 6), ("step", 3), ("twice_in_decode", 3)])
def test_ctrl_c_anywhere_leaves_a_session_that_matches_the_video(tmp_path, emb, capsys, monkeypatch, where, done):
    """A Ctrl-C while chunk 2 is denoised, decoded or written (twice: the second one stops at once); the session
    and the mp4 must hold the same frames, and resuming with --append must give the video and latents of one
    uninterrupted run. Chunk 2 is finished (written) when the Ctrl-C came after its last denoising step, else
    rolled back."""
    from safetensors.torch import load_file

    from sf_core import video
    from sf_core.video import probe_video, read_video

    full = tmp_path / "full.mp4"
    assert run(_files_argv(emb, "--latent-frames", "12", "-o", str(full), "--crf", "0", "--latents-out",
                           str(tmp_path / "full.st")), capsys, stub_bundle())[0] == 0
    b = stub_bundle()
    calls = {"write": 0, "decode": 0}
    real_write, real_decode = video.VideoWriter.write, b.decoder.decode_chunk

    def write(self, frames):
        calls["write"] += 1
        if where == "write" and calls["write"] == 2:
            _ctrl_c()  # lands after the pipeline recorded chunk 2, before its frames reach the file
        real_write(self, frames)

    def decode(z, state=None):
        calls["decode"] += 1
        if where.endswith("decode") and calls["decode"] == 2:
            _ctrl_c()
            if where == "twice_in_decode":
                with pytest.raises(KeyboardInterrupt):  # the second one stops at once
                    _ctrl_c()
                raise KeyboardInterrupt
        return real_decode(z, state)

    def forward(*_):
        calls["forward"] = calls.get("forward", 0) + 1
        if where == "step" and calls["forward"] == 7:  # chunk 2's second denoising step
            _ctrl_c()

    monkeypatch.setattr(video.VideoWriter, "write", write)
    b.decoder.decode_chunk = decode
    hook = b.transformer.patch_embedding.register_forward_pre_hook(forward)
    part, sess = tmp_path / "part.mp4", tmp_path / "s.st"
    code, io = run(_files_argv(emb, "--latent-frames", "12", "-o", str(part), "--crf", "0", "--save-session",
                               str(sess), "--latents-out", str(tmp_path / "a.st")), capsys, b)
    assert code == 130, io.err
    from sf_core.sampling.session_io import load_session

    s = load_session(sess)
    assert s.next_frame == done and probe_video(part)["frames"] == 1 + 4 * (done - 1)
    assert load_file(str(tmp_path / "a.st"))["latents"].shape[2] == done
    monkeypatch.setattr(video.VideoWriter, "write", real_write)
    hook.remove()
    code, io = run(_files_argv(emb, "--latent-frames", str(12 - done), "--resume", str(sess), "-o", str(part),
                               "--append", "--crf", "0", "--latents-out", str(tmp_path / "b.st")), capsys,
                   stub_bundle(b.transformer))
    assert code == 0, io.err
    summary = json.loads(io.out.strip().splitlines()[-1])
    assert (summary["latent_frames"], summary["total_latent_frames"], summary["output_frames"]) == (12 - done, 12, 45)
    whole = load_file(str(tmp_path / "full.st"))["latents"]
    import torch

    got = torch.cat([load_file(str(tmp_path / n))["latents"] for n in ("a.st", "b.st")], dim=2)
    assert torch.equal(got, whole)
    assert (read_video(part) == read_video(full)).all()  # crf 0: the appended file is exactly one run's video


def test_ctrl_c_while_loading_exits_130_without_files(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(inputs, "load_bundle", interrupted)
    code, io = run(["--model", "toy", "--prompt", "a red square", "-o", str(tmp_path / "v.mp4"), "--save-session",
                    str(tmp_path / "s.st"), "-q"], capsys)
    assert code == 130 and "nothing was written" in io.err and list(tmp_path.iterdir()) == []
