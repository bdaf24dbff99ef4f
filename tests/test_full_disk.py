"""A live run whose video writer fails (a full disk) stops at that chunk and keeps the session (issue 27 item 8).

The old code ran to the end and then lost both the mp4 and the session. The writer's failure is simulated by
making `VideoWriter.write` raise ENOSPC from its 3rd call (PyAV raises exactly this on a full tmpfs: checked by
hand with a 300 KB tmpfs, write 28 of 200 failed with `[Errno 28] No space left on device`); the session goes to
another folder, as it would to another disk.
"""
from __future__ import annotations

import errno
import json
import threading

import pytest

from nodes_harness import events, install_stubs

RED = "a red square moving right slow"


@pytest.fixture()
def full_disk(monkeypatch):
    from sf_core.video import VideoWriter

    real = VideoWriter.write
    calls = {"n": 0}

    def write(self, frames):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self._tmp))
        return real(self, frames)

    monkeypatch.setattr(VideoWriter, "write", write)
    return calls


def test_cli_live_stops_at_the_failed_chunk_and_saves_the_session(tmp_path, capsys, full_disk):
    from sf_core.cli import live as live_cli
    from sf_core.sampling.session_io import load_session

    out, sess = tmp_path / "video" / "live.mp4", tmp_path / "other_disk" / "live.session"
    out.parent.mkdir()
    code = live_cli.main(["--model", "toy", "--prompt", RED, "-q", "-o", str(out), "--save-session", str(sess),
                          "--max-chunks", "40"], stdin=iter(()))
    cap = capsys.readouterr()
    lines = [json.loads(x) for x in cap.out.splitlines()]
    summary = lines[-1]
    assert code == 1, cap.err
    assert summary["status"] == "write_failed" and summary["chunks"] == 3 < 40, summary
    assert summary["output"] is None and summary["session"] == str(sess)
    assert "failed at chunk 2" in cap.err and "was lost" in cap.err and f"--resume {sess}" in cap.err, cap.err
    assert not out.exists() and not list(out.parent.iterdir())  # no mp4, no hidden temp file
    assert load_session(sess).chunk_index == 3


def test_live_node_stops_at_the_failed_chunk_and_saves_the_session(tmp_path, full_disk):
    install_stubs(str(tmp_path))
    from nodes.host import NodeInputError
    from nodes.live import LiveStreamNode
    from nodes.toy import EmptyToyLatent, LoadToyModel
    from sf_core.sampling.session_io import load_session

    model, decoder, clip = LoadToyModel.run(upscale=1).args
    latent = EmptyToyLatent.run(frames=3, batch_size=1)[0]
    kw = dict(width=832, height=480, seed=0, timesteps="1000,750,500,250", warp_timesteps=True, shift=5.0,
              chunk_frames=3, window_frames=12, sink_frames=3, positions="relative", fps=8.0, max_chunks=40,
              max_minutes=0.0, keep_last_frames=0, filename_prefix="selfforcing/live")
    box = {}

    def go():
        try:
            box["out"] = LiveStreamNode.run(model=model, clip=clip, prompt=RED, latent=latent,
                                            preview_decoder=decoder, **kw)
        except BaseException as e:  # noqa: BLE001
            box["err"] = e

    th = threading.Thread(target=go)
    th.start()
    th.join(120)
    err = box.get("err")
    assert isinstance(err, NodeInputError), box
    msg = str(err)
    assert "failed at chunk" in msg and "was lost" in msg and "SF Load Session" in msg, msg
    assert len(events("chunk")) <= 3 and events("stream_end")[0][1]["status"] == "error"
    outs = list((tmp_path / "output" / "selfforcing").iterdir())
    assert not [p for p in outs if p.suffix == ".mp4" or p.name.startswith(".")], outs
    rescued = list((tmp_path / "output" / "selfforcing" / "sessions").glob("live_rescued_*.safetensors"))
    assert len(rescued) == 1 and rescued[0].name in msg
    assert load_session(rescued[0]).chunk_index >= 2
