"""What `python -m sf_core generate` writes: its output paths checked before any work, and written at the end.

Checked up front (`check_outputs`, `check_space`): something is kept, each path is writable, none is an input or
another output, `--append` has a video to add to, the disk has room for the session and latents. Written at the
end (`write_outputs`): the video is finished (moved into place), the session saved only if it holds exactly the
video's frames, the latents atomically; a failed write is reported and the others are still written.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch

from ..config import ConfigError
from ..fileio import atomic_path, check_writable
from ..sampling.pipeline import Bundle

_INPUTS = ("model", "lora", "vae", "text_encoder", "tokenizer", "embeddings", "prompts", "resume", "image",
           "video")  # files read
_OUTPUTS = {"output": "-o", "latents_out": "--latents-out", "save_session": "--save-session"}


def _flag(name: str) -> str:
    return _OUTPUTS.get(name) or "--" + name.replace("_", "-")


def _same(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return os.path.realpath(pa) == os.path.realpath(pb)


def check_outputs(args, bundle: Bundle | None) -> None:
    """Before anything is loaded: something will be kept, each output is writable, is no input (the session
    being resumed may be saved again: it is then updated in place) and no other output; --append is usable."""
    given = {k: getattr(args, k) for k in _OUTPUTS if getattr(args, k)}
    if not given:
        raise ConfigError("nothing would be kept: -o '' writes no video and neither --latents-out nor "
                          "--save-session is given; name at least one output")
    if args.output and bundle is None and args.model != "toy" and not args.vae:
        raise ConfigError("writing an mp4 needs a decoder: pass --vae (Wan VAE or TAEHV weights), or -o '' with "
                          "--latents-out / --save-session to keep only latents or the session")
    seen: dict[str, str] = {}
    for name, path in given.items():
        for src in _INPUTS:
            value = getattr(args, src, None)
            if not value or (src == "model" and value == "toy") or (src == "resume" and name == "save_session"):
                continue
            if _same(path, value):
                raise ConfigError(f"{_flag(name)} {path} is also the {_flag(src)} file: writing it would destroy "
                                  f"an input; choose another name")
        for other, opath in seen.items():
            if _same(path, opath):
                raise ConfigError(f"{_flag(name)} and {_flag(other)} are the same file {path}; give each output its "
                                  f"own name")
        seen[name] = path
        check_writable(path, what=_flag(name))
    if args.append:
        if not (args.resume and args.output and Path(args.output).is_file()):
            raise ConfigError("--append adds the continuation of a --resume'd session to its existing video: give "
                              "--resume SESSION and -o VIDEO.mp4 (an existing file)")
    elif args.resume and args.output and Path(args.output).exists():
        raise ConfigError(f"-o {args.output} exists and may be the video this session continues: --append adds the "
                          f"new frames to it (one file for the whole video), or choose a new name for the "
                          f"continuation alone")


def check_space(args, session, n_latent: int) -> None:
    """Refuse a run whose session or latents cannot fit on their disks (checked before generating)."""
    b, c, (h, w) = session.batch, session.channels, session.latent_hw
    need: dict[str, int] = {}
    if args.latents_out:
        need[args.latents_out] = b * c * n_latent * h * w * 4
    if args.save_session:
        cache = 0 if args.compact_session else session.cache.nbytes()
        need[args.save_session] = cache + len(session.held) * b * c * h * w * 4 + (1 << 20)
    per_disk: dict[int, list] = {}
    for path, n in need.items():
        parent = Path(path).expanduser().resolve().parent
        per_disk.setdefault(os.stat(parent).st_dev, [parent, 0, []])
        per_disk[os.stat(parent).st_dev][1] += n
        per_disk[os.stat(parent).st_dev][2].append(path)
    for parent, n, paths in per_disk.values():
        free = shutil.disk_usage(parent).free
        if n > free:
            raise ConfigError(f"{', '.join(paths)} need about {_size(n)} but {parent} has {_size(free)} free; "
                              f"free some space or write them elsewhere")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def write_outputs(args, session, writer, stats: dict) -> set[str]:
    """Finish the video, then save the session and the latents atomically. A session is saved only if it holds
    exactly the frames that reached the video. Returns the outputs that failed (each reported)."""
    from safetensors.torch import save_file  # noqa: PLC0415

    from ..sampling.session_io import save_session  # noqa: PLC0415

    failed: set[str] = set()
    if writer is not None:
        try:
            writer.close()
        except OSError as exc:
            print(f"error: could not write the video {args.output}: {exc}", file=sys.stderr)
            failed.add("video")
    if args.save_session:
        if writer is not None and ("video" in failed or stats["written_end"] != session.next_frame):
            print(f"error: the session was not saved: the video holds the frames up to latent frame "
                  f"{stats['written_end']}, the session {session.next_frame}; a continuation would not fit the "
                  f"video", file=sys.stderr)
            failed.add("session")
        else:
            try:
                save_session(session, args.save_session, include_cache=not args.compact_session)
            except OSError as exc:
                print(f"error: could not write the session {args.save_session}: {exc}", file=sys.stderr)
                failed.add("session")
    if args.latents_out and stats["latents"]:
        try:
            with atomic_path(args.latents_out) as tmp:
                save_file({"latents": torch.cat(stats["latents"], dim=2).float().cpu().contiguous()}, str(tmp))
        except OSError as exc:
            print(f"error: could not write the latents {args.latents_out}: {exc}", file=sys.stderr)
            failed.add("latents")
    return failed
