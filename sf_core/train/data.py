"""Training data: prompt files, precomputed text-embedding shards, latent shards, a resumable global sampler.

Self Forcing DMD is data-free: it needs only prompts. Their text embeddings are computed once
(`python -m sf_core.train encode-prompts`, or the ComfyUI node with the stock CLIP) into a directory:

    index.json                {"format": "sf_train_shards", "kind": "prompts"|"latents"|"ode", "num_samples",
                               "text_dim", "shards": [{"file", "count"}], "negative_prompt", "encoder", ...}
    negative.safetensors      "embeds" [L, D]: the unconditional (negative prompt) embedding
    shard_00000.safetensors   "embeds" [sum L_i, D] + "offsets" [n+1] (rows of prompt i), metadata "prompts";
                              latent shards add "latents" [n, C, F, H, W], ODE shards "trajectory" [n, K, C, F, H, W];
                              with partial prompts (JSONL "partial" fields, for `dmd.partial_guidance`),
                              "partial_embeds" + "partial_offsets" as embeds / offsets

Trailing all-zero rows (the encoder's zeroed padding) are not stored: the model zero-pads to text_len
itself, so trimming is lossless and shrinks umT5's [512, 4096] rows to the prompt's token count.

`GlobalBatchSampler` defines the global batch of every draw from one integer position (batches consumed),
so resuming needs only that integer, and the same global batch is split over 1 or N ranks.
"""
from __future__ import annotations

import bisect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..config import ConfigError
from ..fileio import atomic_path
from .rng import keyed_generator

log = logging.getLogger(__name__)

FORMAT = "sf_train_shards"
Encoder = Callable[[list[str]], torch.Tensor]


class DataError(ConfigError):
    """Bad or missing training data (message names the file and the fix)."""


# ------------------------------------------------------------------------------------------ prompts
def _prompt_rows(path: str | Path) -> list[tuple[int, str, object]]:
    """(line number, prompt, the object's "partial" value or None) per prompt of a prompts file, checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prompts file {path} does not exist; give a .txt (one prompt per line) or .jsonl file")
    rows: list[tuple[int, str, object]] = []
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or (not jsonl and line.startswith("#")):
            continue
        partial = None
        if jsonl:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n} is not valid JSON ({exc.msg})") from None
            if isinstance(obj, dict):
                partial = obj.get("partial")
                obj = next((obj[k] for k in ("prompt", "text", "caption") if k in obj), None)
            if not isinstance(obj, str):
                raise DataError(f"{path}:{n}: expected a string or an object with a 'prompt' field")
            line = obj.strip()
            if not line:
                continue
        rows.append((n, line, partial))
    if not rows:
        raise DataError(f"prompts file {path} contains no prompts (blank lines and # comments are skipped)")
    return rows


def _partials(path: str | Path, rows: list[tuple[int, str, object]]) -> list[str] | None:
    if all(p is None for _, _, p in rows):
        return None
    bad = [n for n, _, p in rows if not isinstance(p, str)]
    if bad:
        raise DataError(f"{path}: lines {bad[:5]} have no \"partial\" text while others do; give every prompt one "
                        f"(the prompt without the words to amplify; \"\" for none) or none")
    return [p.strip() for _, _, p in rows]


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a text file (one per line; blank lines and lines starting with # skipped) or JSONL
    (one JSON string or object with a "prompt" / "text" / "caption" field per line)."""
    return [text for _, text, _ in _prompt_rows(path)]


def read_partial_prompts(path: str | Path) -> list[str] | None:
    """The partial prompts of a JSONL prompts file (the "partial" field of each object: the prompt without the words
    partial guidance amplifies), in the order of `read_prompts`; None when no line has one (or a .txt file)."""
    return _partials(path, _prompt_rows(path))


def read_prompt_file(path: str | Path) -> tuple[list[str], list[str] | None]:
    """`read_prompts` and `read_partial_prompts` of one file, read once."""
    rows = _prompt_rows(path)
    return [text for _, text, _ in rows], _partials(path, rows)


def trim_embedding(e: torch.Tensor) -> torch.Tensor:
    """Drop trailing all-zero rows of one embedding [L, D] (keep at least one row)."""
    nz = (e != 0).any(dim=1).nonzero()
    n = int(nz[-1]) + 1 if len(nz) else 1
    return e[:n]


# ------------------------------------------------------------------------------------------ writing
def _packed(prefix: str, embeds: Sequence[torch.Tensor], cast) -> dict[str, torch.Tensor]:
    """Trimmed embeddings [L_i, D] stacked row-wise as `<prefix>embeds` [sum L_i, D] + `<prefix>offsets` [n+1]."""
    rows = [cast(trim_embedding(e.detach().cpu().reshape(-1, e.shape[-1]))) for e in embeds]
    return {f"{prefix}embeds": torch.cat(rows).contiguous(),
            f"{prefix}offsets": torch.tensor([0] + [r.shape[0] for r in rows]).cumsum(0)}


def write_shards(out_dir: str | Path, embeds: Iterable[torch.Tensor], prompts: Sequence[str],
                 negative: torch.Tensor, *, negative_prompt: str = "", encoder: str = "", shard_size: int = 1024,
                 latents: Sequence[torch.Tensor] | None = None, kind: str = "prompts",
                 dtype: torch.dtype | None = None, extra: dict | None = None,
                 partial: Sequence[torch.Tensor] | None = None) -> Path:
    """Write a shard directory. embeds: one [L_i, D] per prompt; latents: one [C, F, H, W] ("latents") or
    [K, C, F, H, W] ("ode") per prompt; partial: one [L'_i, D] partial-prompt embedding per prompt. Files are
    written next to each other, index.json last."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if kind not in ("prompts", "latents", "ode"):
        raise ValueError(f"kind must be prompts, latents or ode, got {kind!r}")
    embeds = list(embeds)
    if len(embeds) != len(prompts) or any(x is not None and len(x) != len(prompts) for x in (latents, partial)):
        raise ValueError("embeds, prompts (and latents, partial) must have the same length")
    if not prompts:
        raise DataError("no samples to write")
    cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
    shards = []
    for si, a in enumerate(range(0, len(prompts), shard_size)):
        b = min(a + shard_size, len(prompts))
        tensors = _packed("", [embeds[i] for i in range(a, b)], cast)
        if partial is not None:
            tensors.update(_packed("partial_", [partial[i] for i in range(a, b)], cast))
        if latents is not None:
            key = "trajectory" if kind == "ode" else "latents"
            tensors[key] = torch.stack([latents[i].detach().cpu().float() for i in range(a, b)]).contiguous()
        name = f"shard_{si:05d}.safetensors"
        with atomic_path(out / name) as tmp:  # umask permissions (safetensors alone creates 0600 files)
            save_file(tensors, str(tmp), metadata={"prompts": json.dumps(list(prompts[a:b]))})
        shards.append({"file": name, "count": b - a})
    neg = cast(trim_embedding(negative.detach().cpu().reshape(-1, negative.shape[-1])))
    with atomic_path(out / "negative.safetensors") as tmp:
        save_file({"embeds": neg.contiguous()}, str(tmp))
    index = {"format": FORMAT, "version": 1, "kind": kind, "num_samples": len(prompts),
             "text_dim": int(embeds[0].shape[-1]), "shards": shards, "negative_prompt": negative_prompt,
             "encoder": encoder, "dtype": str(neg.dtype).replace("torch.", ""), "partial": partial is not None,
             **(extra or {})}
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
    tmp.replace(out / "index.json")
    return out


def encode_prompts(prompts: Sequence[str], encoder: Encoder, out_dir: str | Path, *, negative_prompt: str = "",
                   batch_size: int = 8, shard_size: int = 1024, encoder_name: str = "",
                   dtype: torch.dtype | None = None, progress: Callable[[int, int], None] | None = None,
                   partials: Sequence[str] | None = None) -> Path:
    """Encode prompts (and the negative prompt, and each prompt's partial prompt when `partials` is given) once
    with `encoder(list[str]) -> [B, L, D]` into shards."""
    if not prompts:
        raise DataError("no prompts to encode")
    if partials is not None and len(partials) != len(prompts):
        raise DataError(f"{len(partials)} partial prompts for {len(prompts)} prompts; give one per prompt")

    def encode_all(texts: Sequence[str], report) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for a in range(0, len(texts), batch_size):
            e = encoder(list(texts[a:a + batch_size]))
            out.extend(e[i].float().cpu() for i in range(e.shape[0]))
            if report is not None:
                report(min(a + batch_size, len(texts)), len(texts))
        return out

    with torch.no_grad():
        embeds = encode_all(prompts, progress)
        part = None if partials is None else encode_all(partials, None)
        negative = encoder([negative_prompt])[0].float().cpu()
    return write_shards(out_dir, embeds, prompts, negative, negative_prompt=negative_prompt, encoder=encoder_name,
                        shard_size=shard_size, dtype=dtype, partial=part)


def write_latent_shards(out_dir: str | Path, latents: Sequence[torch.Tensor], embeds: Sequence[torch.Tensor],
                        prompts: Sequence[str], negative: torch.Tensor, **kw) -> Path:
    """Clean latents [C, F, H, W] (model space) per prompt, for teacher/diffusion forcing and flow matching."""
    return write_shards(out_dir, embeds, prompts, negative, latents=latents, kind="latents", **kw)


# ------------------------------------------------------------------------------------------ reading
@dataclass
class Sample:
    index: int
    prompt: str
    embeds: torch.Tensor  # [L, D]
    latents: torch.Tensor | None = None  # [C, F, H, W]
    trajectory: torch.Tensor | None = None  # [K, C, F, H, W]
    partial: torch.Tensor | None = None  # [L', D]: the prompt without the words that partial guidance amplifies


class ShardDataset:
    """Random access to a shard directory (memory-mapped safetensors, opened lazily)."""

    def __init__(self, root: str | Path, *, expect: Sequence[str] | None = None):
        self.root = Path(root)
        idx = self.root / "index.json"
        if not idx.is_file():
            raise DataError(f"{self.root} is not an embedding/latent directory (no index.json); create one with "
                            f"`python -m sf_core.train encode-prompts --prompts FILE --out {self.root}`")
        try:
            self.index = json.loads(idx.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{idx} is not valid JSON ({exc.msg}); re-run encode-prompts") from None
        if self.index.get("format") != FORMAT:
            raise DataError(f"{idx} is not a {FORMAT} index")
        if expect is not None and self.index.get("kind") not in expect:
            raise DataError(f"{self.root} holds {self.index.get('kind')!r} shards; this method needs one of "
                            f"{list(expect)}")
        self.kind = self.index["kind"]
        self.counts = [int(s["count"]) for s in self.index["shards"]]
        self.starts = [sum(self.counts[:i]) for i in range(len(self.counts))]
        self._open: dict[int, object] = {}
        self._prompts: dict[int, list[str]] = {}
        if len(self) == 0:
            raise DataError(f"{self.root} contains no samples")
        self.negative = self._read(self.root / "negative.safetensors", "embeds")

    def __len__(self) -> int:
        return sum(self.counts)

    @property
    def text_dim(self) -> int:
        return int(self.index["text_dim"])

    def _read(self, path: Path, key: str) -> torch.Tensor:
        try:
            with safe_open(str(path), "pt") as f:
                return f.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise DataError(f"cannot read {path} ({exc}); re-create the directory with encode-prompts") from None

    def _shard(self, si: int):
        if si not in self._open:
            path = self.root / self.index["shards"][si]["file"]
            try:
                f = safe_open(str(path), "pt")
            except (SafetensorError, OSError) as exc:
                raise DataError(f"cannot read shard {path} ({exc})") from None
            self._open[si] = f
            self._prompts[si] = json.loads((f.metadata() or {}).get("prompts", "[]"))
        return self._open[si]

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < len(self):
            raise IndexError(i)
        si = bisect.bisect_right(self.starts, i) - 1
        j = i - self.starts[si]
        f = self._shard(si)
        prompts = self._prompts[si]
        s = Sample(i, prompts[j] if j < len(prompts) else "", _unpacked(f, "", j))
        keys = set(f.keys())
        if "latents" in keys:
            s.latents = f.get_slice("latents")[j:j + 1][0]
        if "trajectory" in keys:
            s.trajectory = f.get_slice("trajectory")[j:j + 1][0]
        if "partial_embeds" in keys:
            s.partial = _unpacked(f, "partial_", j)
        return s


def _unpacked(f, prefix: str, j: int) -> torch.Tensor:
    """Row block j of a `_packed` pair in an open shard."""
    off = f.get_slice(f"{prefix}offsets")[j:j + 2]
    return f.get_slice(f"{prefix}embeds")[int(off[0]):int(off[1])]


class MemoryDataset:
    """The ShardDataset interface over in-memory tensors (experiments that train in-process, e.g. the toy
    world): embeds [L_i, D] per sample, the negative [L, D], optional latents [C, F, H, W] or ODE
    trajectories [K, C, F, H, W] per sample."""

    def __init__(self, embeds: Sequence[torch.Tensor], prompts: Sequence[str], negative: torch.Tensor, *,
                 latents: Sequence[torch.Tensor] | None = None, trajectory: Sequence[torch.Tensor] | None = None):
        if not embeds or len(embeds) != len(prompts):
            raise DataError("MemoryDataset needs one embedding per prompt and at least one sample")
        self.embeds, self.prompts, self.negative = list(embeds), list(prompts), negative
        self.latents, self.trajectory = latents, trajectory
        self.root = Path("<memory>")
        self.kind = "ode" if trajectory is not None else "latents" if latents is not None else "prompts"

    def __len__(self) -> int:
        return len(self.embeds)

    @property
    def text_dim(self) -> int:
        return int(self.embeds[0].shape[-1])

    def __getitem__(self, i: int) -> Sample:
        return Sample(i, self.prompts[i], self.embeds[i],
                      None if self.latents is None else self.latents[i],
                      None if self.trajectory is None else self.trajectory[i])


def pad_stack(embeds: Sequence[torch.Tensor]) -> torch.Tensor:
    """[L_i, D] embeddings -> [B, max L_i, D], zero-padded (the model pads to text_len with zeros anyway)."""
    n = max(e.shape[0] for e in embeds)
    out = embeds[0].new_zeros(len(embeds), n, embeds[0].shape[1])
    for i, e in enumerate(embeds):
        out[i, :e.shape[0]] = e
    return out


# ------------------------------------------------------------------------------------------ sampling
class GlobalBatchSampler:
    """Global batches of `global_batch` distinct indices, reshuffled every epoch (drop_last).

    Batch `position` of the run is fully determined by (seed, position): epoch = position // per_epoch, the
    epoch's permutation comes from a keyed generator. Rank r of `world` takes rows [r*b, (r+1)*b).
    """

    def __init__(self, num_samples: int, global_batch: int, seed: int, shuffle: bool = True):
        if num_samples < global_batch:
            raise DataError(f"{num_samples} samples cannot fill one global batch of {global_batch} (= ranks x "
                            f"data.batch_size): use fewer ranks / a smaller batch, or more prompts")
        self.n, self.g, self.seed, self.shuffle = num_samples, global_batch, seed, shuffle
        self.per_epoch = num_samples // global_batch
        self._cache: tuple[int, torch.Tensor] | None = None

    def _perm(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            p = (torch.randperm(self.n, generator=keyed_generator(self.seed, "data", epoch)) if self.shuffle
                 else torch.arange(self.n))
            self._cache = (epoch, p)
        return self._cache[1]

    def global_batch(self, position: int) -> list[int]:
        epoch, b = divmod(position, self.per_epoch)
        return self._perm(epoch)[b * self.g:(b + 1) * self.g].tolist()

    def local_batch(self, position: int, rank: int, world: int) -> tuple[list[int], list[int]]:
        """(dataset indices, global sample ids) of this rank's rows of batch `position`.

        Sample ids (position * global_batch + row) key the per-sample randomness, so a prompt seen again in a
        later epoch gets fresh noise."""
        per = self.g // world
        idx = self.global_batch(position)[rank * per:(rank + 1) * per]
        ids = [position * self.g + rank * per + j for j in range(per)]
        return idx, ids
