"""SF Live Stream in the stand-in host: steered over the HTTP contract's handler while it runs, judged by the toy
world's detector on the mp4 it wrote; bad requests get 400/404 and the stream goes on; Cancel ends it cleanly."""
import asyncio
import threading
import time

import pytest
import torch

from nodes_harness import events, install_stubs

RED, BLUE = "a red square moving right slow", "a blue circle moving down slow"


@pytest.fixture()
def host(tmp_path):
    install_stubs(str(tmp_path))
    return tmp_path


def _kw(**over):
    kw = dict(width=832, height=480, seed=0, timesteps="1000,750,500,250", warp_timesteps=True, shift=5.0,
              chunk_frames=3, window_frames=12, sink_frames=3, positions="relative", fps=8.0, max_chunks=0,
              max_minutes=0.0, keep_last_frames=6, filename_prefix="selfforcing/live")
    kw.update(over)
    return kw


def _start(node_kw):
    from nodes.live import LiveStreamNode
    from nodes.live_routes import list_streams

    box = {}

    def go():
        try:
            box["out"] = LiveStreamNode.run(**node_kw)
        except BaseException as e:  # noqa: BLE001
            box["err"] = e

    th = threading.Thread(target=go)
    th.start()
    for _ in range(600):
        if list_streams() or not th.is_alive():
            break
        time.sleep(0.01)
    return th, box


def _send(payload):
    from nodes.live_routes import answer

    return asyncio.run(answer(payload))


def _wait_chunks(n, timeout=60):
    t0 = time.time()
    while len(events("chunk")) < n and time.time() - t0 < timeout:
        time.sleep(0.01)


def test_live_node_is_steered_over_http_and_stops_with_a_playable_file(host):
    from nodes.live_routes import list_streams
    from nodes.toy import EmptyToyLatent, LoadToyModel
    from sf_core.toy.metrics import detect
    from sf_core.toy.world import WorldSpec
    from sf_core.video import read_video

    model, decoder, clip = LoadToyModel.run(upscale=1).args
    latent = EmptyToyLatent.run(frames=3, batch_size=1)[0]
    th, box = _start(dict(model=model, clip=clip, prompt=RED, latent=latent, preview_decoder=decoder, **_kw()))
    sid = list_streams()[0]["stream"]
    _wait_chunks(3)
    assert _send({"stream": "nope", "action": "pause"})[0] == 404
    assert _send({"stream": sid, "action": "jump"})[0] == 400
    assert _send({"stream": sid, "action": "prompt", "text": ""})[0] == 400
    assert _send({"stream": sid, "action": "prompt", "text": "x", "blend_chunks": 1.5})[0] == 400
    code, body = _send({"stream": sid, "action": "prompt", "text": BLUE})
    assert code == 200 and body["prompt"] == BLUE and body["applied"], body
    switch_chunk = body["chunk"]
    _wait_chunks(switch_chunk + 5)
    assert _send({"stream": sid, "action": "pause"})[1]["state"] == "paused"
    n_paused = len(events("chunk"))
    time.sleep(0.3)
    assert len(events("chunk")) == n_paused  # nothing generated while paused
    assert _send({"stream": sid, "action": "resume"})[1]["state"] == "running"
    _wait_chunks(n_paused + 1)
    code, body = _send({"stream": sid, "action": "stop"})
    assert code == 200 and body["state"] == "stopping"
    th.join(60)
    assert "err" not in box, box.get("err")
    assert _send({"stream": sid, "action": "pause"})[0] == 404  # control after stop
    video, session, frames = box["out"].args
    chunks = [d for _, d in events("chunk")]
    start = events("stream_start")[0][1]
    assert start["live"] and start["stream"] == sid and start["prompt"] == RED
    assert [c["prompt"] for c in chunks] == [RED] * switch_chunk + [BLUE] * (len(chunks) - switch_chunk)
    assert chunks[switch_chunk]["actions"][-1]["text"] == BLUE
    end = events("stream_end")[0][1]
    assert end["status"] == "stopped" and end["file"]["type"] == "output"
    path = host / "output" / end["file"]["subfolder"] / end["file"]["filename"]
    assert str(path) == video.file and box["out"].ui.values[0]["filename"] == path.name
    mp4 = read_video(path)
    assert mp4.shape[0] == session.next_frame == 3 * len(chunks) and frames.shape == (6, 16, 16, 3)
    x = torch.from_numpy(mp4).permute(3, 0, 1, 2).float() / 127.5 - 1
    det = detect(x, WorldSpec())
    looks = list(zip(det["colour"], det["shape"]))
    before, after = looks[3:3 * switch_chunk], looks[3 * (switch_chunk + 2):]
    assert sum(lk == ("red", "square") for lk in before) >= 0.8 * len(before), before
    assert sum(lk == ("blue", "circle") for lk in after) >= 0.8 * len(after), after


def test_cancel_ends_the_live_node_with_a_finished_file(host, monkeypatch):
    import nodes.host as nh
    from nodes.toy import EmptyToyLatent, LoadToyModel
    from sf_core.video import probe_video

    class InterruptProcessingException(Exception):
        pass

    model, decoder, clip = LoadToyModel.run(upscale=1).args
    latent = EmptyToyLatent.run(frames=3, batch_size=1)[0]
    calls = {"n": 0}

    def interrupt():
        calls["n"] += 1
        if calls["n"] > 40:
            raise InterruptProcessingException()

    monkeypatch.setattr(nh, "check_interrupt", interrupt)
    th, box = _start(dict(model=model, clip=clip, prompt=RED, latent=latent, preview_decoder=decoder, **_kw()))
    th.join(60)
    assert type(box.get("err")).__name__ == "InterruptProcessingException"
    end = events("stream_end")[0][1]
    assert end["status"] == "interrupted" and end["file"] is not None
    info = probe_video(host / "output" / end["file"]["subfolder"] / end["file"]["filename"])
    assert info["frames"] == 3 * len(events("chunk")) > 0


def test_live_node_starts_from_an_image(host):
    from nodes.toy import LoadToyModel
    from sf_core.toy.world import Scene, render
    from sf_core.video import read_video

    model, decoder, clip = LoadToyModel.run(upscale=1).args
    v = render(Scene("circle", "blue", "down", "slow", 8, 5), 1)
    image = ((v + 1) / 2).permute(1, 2, 3, 0)  # IMAGE [1, 16, 16, 3]
    out = LiveStreamNode_run(model=model, clip=clip, prompt=BLUE, preview_decoder=decoder, start_image=image,
                             **_kw(max_chunks=3))
    video, session, _ = out.args
    frames = read_video(video.file)
    assert frames.shape[0] == 1 + 9 and session.next_frame == 10 and session.settings.causal.independent_first_frame
    from sf_core.toy.metrics import detect
    from sf_core.toy.world import WorldSpec

    first = torch.from_numpy(frames[:1]).permute(3, 0, 1, 2).float() / 127.5 - 1
    got, want = detect(first, WorldSpec()), detect(v, WorldSpec())
    assert (got["colour"], got["shape"]) == (want["colour"], want["shape"])  # the stream starts with the image
    assert (got["centre"] - want["centre"]).norm() < 0.5  # (an mp4 of 16x16 frames: compare what it shows)
    assert [d["chunk"] for _, d in events("chunk")] == [0, 1, 2, 3]


def LiveStreamNode_run(**kw):
    from nodes.live import LiveStreamNode

    return LiveStreamNode.run(**kw)
