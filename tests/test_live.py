"""Live runs (sf_core.sampling.live, `python -m sf_core live`): steering between chunks, judged by the toy world's
ground-truth detector on the decoded frames; bad controls refused while the run goes on; clean ends."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from sf_core.sampling.live import LiveControlError, LiveRun, make_control, parse_control, parse_line
from sf_core.sampling.pipeline import as_bundle, generate
from sf_core.sampling.session import new_session
from sf_core.toy import load_toy_bundle
from sf_core.toy.codec import ToyDecoder
from sf_core.toy.metrics import detect
from sf_core.toy.world import WorldSpec

ROOT = Path(__file__).resolve().parents[1]
RED, BLUE = "a red square moving right slow", "a blue circle moving down slow"


@pytest.fixture(scope="module")
def toy():
    return as_bundle(load_toy_bundle())


def _encode(toy):
    return lambda text: toy.text_encoder.encode([text])


def _looks(frames: torch.Tensor) -> list[tuple[str | None, str | None]]:
    """(colour, shape) per frame of [3, T, H, W] in [-1, 1] (the toy world's ground-truth detector)."""
    d = detect(frames, WorldSpec())
    return list(zip(d["colour"], d["shape"]))


def _majority(looks, colour, shape) -> float:
    return sum(1 for c, s in looks if c == colour and s == shape) / max(len(looks), 1)


def test_a_prompt_typed_mid_run_changes_the_video_within_two_chunks(toy):
    session = new_session(toy.transformer, _encode(toy)(RED), latent_hw=toy.latent_hw, seed=0,
                          settings=toy.settings)
    run = LiveRun(toy.transformer, session, encode=_encode(toy), prompt=RED, decoder=ToyDecoder(), max_chunks=14)
    chunks, prompts, switch_at = [], [], 6

    def on_chunk(c):
        chunks.append(c.result.frames[0])
        prompts.append(c.prompt)
        if c.result.index == switch_at - 1:  # typed while chunk 5 was shown: applies at chunk 6
            threading.Thread(target=lambda: run.submit(make_control("prompt", BLUE))).start()
            threading.Event().wait(0.05)

    summary = run.run(on_chunk=on_chunk)
    assert summary.status == "limit" and summary.chunks == 14
    first = prompts.index(BLUE)
    assert switch_at <= first <= switch_at + 1 and prompts[:first] == [RED] * first
    before = _looks(torch.cat(chunks[1:first], dim=1))
    after = _looks(torch.cat(chunks[first + 2:], dim=1))  # "within 2 chunks after"
    assert _majority(before, "red", "square") >= 0.9, before
    assert _majority(after, "blue", "circle") >= 0.9, after


def test_pause_reset_stop_and_bad_controls_keep_the_run_going(toy):
    session = new_session(toy.transformer, _encode(toy)(RED), latent_hw=toy.latent_hw, seed=1,
                          settings=toy.settings)

    def encode(text):
        out = toy.text_encoder.encode([text])
        return out * float("nan") if "poison" in text else out

    run = LiveRun(toy.transformer, session, encode=encode, prompt=RED, decoder=None)
    log, states, results = [], [], {}

    def on_chunk(c):
        log.append((c.result.index, c.prompt, [a["action"] + ("" if a["ok"] else "!") for a in c.actions]))
        i = c.result.index
        if i == 1:
            results["nan"] = run.submit(make_control("prompt", "poison red square"))
        if i == 2:
            results["pause"] = run.submit(make_control("pause"))
            threading.Timer(0.3, lambda: results.setdefault("resume", run.submit(make_control("resume")))).start()
        if i == 3:
            results["reset"] = run.submit(make_control("reset"))
        if i == 5:
            results["stop"] = run.submit(make_control("stop"))

    summary = run.run(on_chunk=on_chunk, on_state=states.append)
    assert summary.status == "stopped" and summary.chunks == 6 and session.next_frame == 18
    assert log[2][2] == ["prompt!"] and all(p == RED for _, p, _ in log)  # refused, still generating
    with pytest.raises(LiveControlError, match="NaN"):
        results["nan"].result(timeout=1)
    assert [s["state"] for s in states][:2] == ["paused", "running"]
    assert results["pause"].result(timeout=1)["state"] == "paused"
    assert results["reset"].result(timeout=1)["applied"]
    assert session.cache.positions == [12, 13, 14, 15, 16, 17]  # a new shot from chunk 4 on
    with pytest.raises(LiveControlError, match="ended"):
        run.submit(make_control("pause"))  # control after stop


def test_an_interrupt_leaves_the_session_at_the_last_finished_chunk(toy):
    session = new_session(toy.transformer, _encode(toy)(RED), latent_hw=toy.latent_hw, seed=2,
                          settings=toy.settings)
    run = LiveRun(toy.transformer, session, encode=_encode(toy), prompt=RED)
    count = {"steps": 0}

    def check():  # called once per loop turn and once per denoising step
        if session.chunk_index == 3:
            count["steps"] += 1
            if count["steps"] == 3:  # the second denoising step of chunk 3
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.run(check_interrupt=check)
    assert session.next_frame == 9 and session.cache.positions[-1] == 8
    ref = new_session(toy.transformer, _encode(toy)(RED), latent_hw=toy.latent_hw, seed=2, settings=toy.settings)
    full = generate(toy.transformer, ref, num_frames=12)
    assert torch.equal(generate(toy.transformer, session, num_frames=3), full[:, :, 9:])


@pytest.mark.parametrize("obj, msg", [
    ({"action": "jump"}, "unknown action"), ({"action": "prompt"}, "non-empty 'text'"),
    ({"action": "prompt", "text": "  "}, "non-empty"), ({"action": "prompt", "text": "x", "blend_chunks": -1}, "0..64"),
    ({"action": "prompt", "text": "x", "blend_chunks": "nan"}, "whole number"), ([1, 2], "JSON object"),
    ({"action": "prompt", "text": "x" * 5000}, "at most"),
])
def test_bad_control_requests_are_refused_with_a_clear_message(obj, msg):
    with pytest.raises(LiveControlError, match=msg):
        parse_control(obj)


def test_control_lines():
    assert parse_line("prompt a blue circle").text == "a blue circle"
    c = parse_line("blend 3 a green triangle")
    assert (c.action, c.blend_chunks, c.text) == ("prompt", 3, "a green triangle")
    assert parse_line("  # comment") is None and parse_line("") is None
    for bad in ("stop now", "blend x y", "teleport"):
        with pytest.raises(LiveControlError):
            parse_line(bad)


def test_cli_live_from_stdin_writes_a_playable_mp4_that_matches_the_session(tmp_path):
    from sf_core.sampling.session_io import load_session
    from sf_core.video import read_video

    script = f"@4 prompt {BLUE}\n@5 bogus command\n@10 stop\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "sf_core", "live", "--model", "toy", "--prompt", RED, "-q",
                        "-o", str(tmp_path / "live.mp4"), "--save-session", str(tmp_path / "live.session")],
                       input=script, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    chunks, summary = lines[:-1], lines[-1]
    assert summary["status"] == "stopped" and summary["chunks"] == 10 == len(chunks)
    assert [c["prompt"] for c in chunks] == [RED] * 4 + [BLUE] * 6
    assert chunks[4]["actions"][0]["ok"] and chunks[4]["actions"][0]["latency_s"] > 0
    assert "unknown command 'bogus'" in p.stderr
    video = read_video(tmp_path / "live.mp4")  # [T, H, W, 3] uint8
    session = load_session(tmp_path / "live.session")
    assert video.shape[0] == session.next_frame == 30  # the toy makes one video frame per latent frame
    up = video.shape[1] // WorldSpec().height  # the CLI's toy decoder enlarges frames (nearest neighbour)
    frames = torch.from_numpy(video[:, up // 2::up, up // 2::up]).permute(3, 0, 1, 2).float() / 127.5 - 1
    assert _majority(_looks(frames[:, 3:12]), "red", "square") >= 0.8
    assert _majority(_looks(frames[:, 18:]), "blue", "circle") >= 0.8
    assert not list(tmp_path.glob(".*.mp4"))  # no temp file left behind


def test_cli_controls_file_with_a_bad_utf8_line_keeps_the_other_lines(tmp_path):
    """Issue 27 item 9: one invalid UTF-8 byte dropped every control of the file, `stop` included (the run went on
    to --max-chunks). Now the bad line is refused with its number and the others apply."""
    controls = tmp_path / "controls.txt"
    controls.write_bytes(f"@2 prompt {BLUE}\n".encode() + b"prompt caf\xe9 au lait\n" + b"@4 stop\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "sf_core", "live", "--model", "toy", "--prompt", RED, "-q", "-o", "",
                        "--save-session", str(tmp_path / "s.session"), "--controls", str(controls),
                        "--max-chunks", "12"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    chunks, summary = lines[:-1], lines[-1]
    assert summary["status"] == "stopped" and summary["chunks"] == 4 == len(chunks), summary
    assert [c["prompt"] for c in chunks] == [RED] * 2 + [BLUE] * 2
    assert "line 2 of" in p.stderr and "not UTF-8" in p.stderr and "0xe9" in p.stderr, p.stderr


def test_cli_reports_controls_applied_after_the_last_chunk(tmp_path):
    """Issue 27 item 14: a `reset` sent together with `stop` applied, but no chunk came after it to report it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "sf_core", "live", "--model", "toy", "--prompt", RED, "-q", "-o", "",
                        "--save-session", str(tmp_path / "s.session"), "--max-chunks", "12"],
                       input="@3 reset\n@3 stop\n", capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    chunks, summary = lines[:-1], lines[-1]
    assert summary["status"] == "stopped" and summary["chunks"] == 3 == len(chunks)
    assert [a["action"] for a in summary["actions"]] == ["reset", "stop"], summary
    assert all(a["ok"] for a in summary["actions"]) and not any(c.get("actions") for c in chunks)
