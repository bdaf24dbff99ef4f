"""Writing output files safely: atomically (temp file + rename) and with the user's umask.

`tempfile.mkstemp` creates files mode 0600 whatever the umask, so a file renamed from it into place is unreadable
for a ComfyUI service account or a second user. Every file this project writes goes through `atomic_path`, which
gives the final file the permissions a plain `open(path, "w")` would (0666 & ~umask), and never leaves a partial
file under the final name: a failed or interrupted write leaves the old file (or none) and removes the temp file.

    with atomic_path("out.mp4") as tmp:      # write tmp however you like (PyAV, safetensors, torch.save)
        write_video(tmp)
    # out.mp4 now exists completely, or not at all
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator


class OutputPathError(OSError):
    """An output path that cannot be written (checked before any work starts)."""


def current_umask() -> int:
    """The process umask (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode() -> int:
    """Permissions of a new regular file under the current umask (what `open(path, "w")` gives)."""
    return 0o666 & ~current_umask()


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def refuse_special(path: str | Path, what: str = "output") -> None:
    """OutputPathError if `path` exists (links followed) and is neither a regular file nor a folder: writing there
    by rename would replace a device node or FIFO with a regular file (as root, e.g. /dev/full)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # does not exist (or a dangling link): a new file is created
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OutputPathError(f"{what} path {str(path)!r} is a {_kind(mode)}, not a regular file: refusing to "
                              f"replace it; give the name of a new or regular file")


def check_writable(path: str | Path, *, what: str = "output") -> Path:
    """Fail early, before any work, if `path` cannot be created: a missing or read-only folder, a folder in the
    way, an empty name. Creates the parent folder if it is missing and creatable. Returns the path."""
    if str(path).strip() == "":
        raise OutputPathError(f"{what} path is empty: give a file name (e.g. out.mp4)")
    p = Path(path).expanduser()
    refuse_special(p, what)
    if p.is_dir():
        raise OutputPathError(f"{what} path {str(p)!r} is a folder: give a file name inside it")
    parent = p.parent if str(p.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create the folder {str(parent)!r} for the {what} {str(p)!r}: "
                              f"{exc.strerror or exc}; choose another location") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".sf_probe_", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(f"cannot write the {what} {str(p)!r}: the folder {str(parent)!r} is not writable "
                              f"({exc.strerror or exc}); choose another location") from exc
    return p


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it onto `path` with umask permissions.

    suffix: the temp file's extension (default: the final one, so writers that pick a format by extension work).
    """
    final = Path(path)
    refuse_special(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sfx = final.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=sfx or ".part",
                                    dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, default_mode())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically with umask permissions."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "check_writable", "default_mode",
           "current_umask", "OutputPathError"]
