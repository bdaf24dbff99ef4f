"""Output paths and written videos (issue 27 items 4 and 6).

- item 4: an existing output that is a device node, a FIFO or a socket is refused before any work (the old
  rename-into-place replaced it with a regular file: as root it destroyed /dev/full), by the early check and by
  the atomic writer itself, and the special file is left as it was;
- item 6: frames copied from an input video (extend, --append) get their own increasing timestamps (they all got
  0), an input of more than 1,027 frames is copied (the muxer refused it), and a failed copy leaves no hidden
  temp file beside the output.
"""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import numpy as np
import pytest

from sf_core.fileio import OutputPathError, atomic_path, check_writable
from sf_core.video import VideoWriter


def _specials(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.mp4"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    out = {"fifo": fifo, "socket": sock_path, "char device": Path("/dev/null")}
    link = tmp_path / "link.mp4"
    link.symlink_to(fifo)
    out["link to a fifo"] = link
    return out


@pytest.mark.parametrize("kind", ["fifo", "socket", "char device", "link to a fifo"])
def test_special_files_are_refused_and_kept(tmp_path, kind):
    path = _specials(tmp_path)[kind]
    before = os.stat(path)
    with pytest.raises(OutputPathError, match="not a regular file"):
        check_writable(path)
    with pytest.raises(OutputPathError, match="not a regular file"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"x")
    after = os.stat(path)
    assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode) and after.st_ino == before.st_ino
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_cli_refuses_a_fifo_output_before_any_work(tmp_path, capsys):
    from sf_core.cli import generate as cli

    fifo = tmp_path / "out.mp4"
    os.mkfifo(fifo)
    code = cli.main(["--model", "toy", "--prompt", "a red square moving left fast", "--seconds", "1",
                     "-o", str(fifo), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "FIFO" in err and "not a regular file" in err, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_regular_files_and_new_names_still_work(tmp_path):
    (tmp_path / "old.bin").write_bytes(b"old")
    for name in ("old.bin", "new.bin"):
        with atomic_path(tmp_path / name) as tmp:
            tmp.write_bytes(b"new")
        assert (tmp_path / name).read_bytes() == b"new"


def _frames(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)


def _pts(path: Path) -> list[int]:
    import av

    with av.open(str(path)) as c:
        return [f.pts for f in c.decode(video=0)]


def test_copied_frames_get_their_own_timestamps_long_input(tmp_path):
    src = tmp_path / "in.mp4"
    with VideoWriter(src, 16, crf=0) as w:
        w.write(_frames(1100, 0))  # more than 1,027 frames: the old copy failed ("Invalid argument")
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 16, crf=0) as w:
        assert w.copy_from(src) == 1100
        w.write(_frames(12, 1))
        assert w.copy_from(src) == 1100  # twice: timestamps go on, no clash with the first copy
    pts = _pts(out)
    assert len(pts) == 2212
    steps = np.diff(pts)
    assert (steps > 0).all() and len(set(steps.tolist())) == 1, sorted(set(steps.tolist()))[:5]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failed_copy_leaves_no_hidden_file(tmp_path):
    from sf_core.video import VideoError

    src = tmp_path / "small.mp4"
    with VideoWriter(src, 8) as w:
        w.write(_frames(3, 2)[:, :8, :8])
    out = tmp_path / "out.mp4"
    with pytest.raises(VideoError):
        with VideoWriter(out, 8) as w:
            w.write(_frames(3, 3))
            w.copy_from(src)  # another frame size: refused
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
