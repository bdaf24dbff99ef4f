"""Checkpoint families: the causal Wan2.1 models forked from Self Forcing, each sampled as its authors sample it.

A `Family` is a preset of sampling defaults read from the family's official repository (its inference config
and pipeline): chunk size, denoising steps, shift, context noise, KV-cache window and sink, the sampler (one chunk
at a time, or Rolling Forcing's joint rolling window), the first-chunk schedule (Causal Forcing++), how a prompt
switch recomputes the cache (LongLive), and which weights of a training checkpoint the authors load. A preset
gives a `SamplingSettings`; every value can still be overridden (`settings_for(name, overrides)`).

`detect(ck)` tells the family of a loaded checkpoint where the file says so: our own metadata (`family`),
LongLive's merged-LoRA marker, LongLive's LoRA file, or the official file names (`rolling_forcing_dmd.pt`,
`causal_forcing.pt` in `framewise/`, `longlive_base.pt`, CausVid's `autoregressive_checkpoint/model.pt`, ...).
The weights themselves cannot tell: every family is a Wan2.1 T2V 1.3B with the same keys. `check_family` turns
a mismatch into a clear message naming the family the file looks like.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Mapping

from ..config import CausalConfig, ConfigError
from ..sampling.session import SamplingSettings

log = logging.getLogger(__name__)

AUTO = "auto"
DEFAULT = "self_forcing"


@dataclass(frozen=True)
class Family:
    """Sampling defaults of one checkpoint family (values from its official inference config)."""

    name: str
    title: str
    repo: str  # official code
    steps: tuple[int, ...] = (1000, 750, 500, 250)
    warp: bool = True
    shift: float = 5.0
    chunk_frames: int = 3
    window_frames: int | None = 21  # KV-cache frames, sink included (None: global)
    sink_frames: int = 3
    context_t: float = 0.0
    sampler: str = "chunk"
    first_steps: tuple[int, ...] | None = None
    recache: str = "chunks"
    which: str = "generator_ema"  # weights of a training checkpoint the authors sample with
    lora: bool = False  # the release is a base generator plus a LoRA
    differs: str = ""  # what differs from Self Forcing, for docs and messages

    @property
    def causal(self) -> CausalConfig:
        return CausalConfig(chunk_frames=self.chunk_frames, window_frames=self.window_frames,
                            sink_frames=self.sink_frames if self.window_frames is not None else 0)

    def settings(self, **overrides: Any) -> SamplingSettings:
        """The preset as SamplingSettings; `overrides` (SamplingSettings fields) win."""
        base = dict(steps=self.steps, shift=self.shift, warp=self.warp, context_t=self.context_t,
                    causal=self.causal, sampler=self.sampler, first_steps=self.first_steps,
                    recache=self.recache, family=self.name)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingSettings(**base)


_SF = "github.com/guandeh17/Self-Forcing"
_CF = "github.com/thu-ml/Causal-Forcing"
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("self_forcing", "Self Forcing (chunk-wise DMD)", _SF,
           differs="the reference: chunks of 3 latent frames, 4 steps, clean context pass, 21-frame cache"),
    Family("causal_forcing", "Causal Forcing, chunk-wise 4-step", _CF, which="generator",
           differs="same sampler as Self Forcing; the README samples the chunk-wise model without --use_ema "
                   "(the 'generator' weights)"),
    Family("causal_forcing_framewise", "Causal Forcing, frame-wise 4-step", _CF, chunk_frames=1, sink_frames=1,
           differs="one latent frame per chunk (5 model calls per frame), EMA weights"),
    Family("causal_forcing_2step", "Causal Forcing++, frame-wise 2-step", _CF, steps=(1000, 500),
           first_steps=(1000, 750, 500, 250), chunk_frames=1, sink_frames=1,
           differs="frame-wise, 2 steps (1000, 500 warped); the first frame uses 4 steps (1000, 750, 500, 250)"),
    Family("causal_forcing_1step", "Causal Forcing++, frame-wise 1-step", _CF, steps=(1000,),
           first_steps=(1000, 750, 500, 250), chunk_frames=1, sink_frames=1,
           differs="frame-wise, 1 step (t = 1000); the first frame uses 4 steps (1000, 750, 500, 250)"),
    Family("causal_forcing_long", "Causal Forcing long video (Rolling Forcing sampler)", _CF,
           steps=(1000, 800, 600, 400, 200), sampler="rolling", window_frames=24, sink_frames=3,
           differs="Causal Forcing weights sampled with Rolling Forcing's joint rolling window (long_video/)"),
    Family("rolling_forcing", "Rolling Forcing", "github.com/TencentARC/RollingForcing",
           steps=(1000, 800, 600, 400, 200), sampler="rolling", window_frames=24, sink_frames=3,
           differs="a window of 5 chunks at rising noise levels denoised jointly, one step each per call; "
                   "the oldest chunk finishes and is committed each call; sink = the first chunk, re-roped "
                   "just before the working cache; 24-frame cache, attention over at most 21 frames"),
    Family("longlive", "LongLive", "github.com/NVlabs/LongLive (v1.0)", window_frames=12, sink_frames=3,
           recache="window", which="generator", lora=True,
           differs="12-frame rolling window with a 3-frame sink; base generator + rank-256 LoRA; a prompt "
                   "switch recomputes the window's frames in one pass under the new prompt, sink kept"),
    Family("causvid", "CausVid (3-step)", "github.com/tianweiy/CausVid", steps=(1000, 757, 522), warp=False,
           shift=8.0, which="generator",
           differs="3 unwarped steps (1000, 757, 522) on a shift-8 schedule; the official cache is global "
                   "(21 frames)"),
    Family("causvid_4step", "CausVid (4-step, warped)", "github.com/tianweiy/CausVid", shift=8.0,
           which="generator", differs="4 steps warped on a shift-8 schedule (wan_causal_dmd_warp_4step_cfg2)"),
)}
NAMES = tuple(FAMILIES)

# Official file names -> family (the last path parts, lower case), most specific first.
_FILE_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("causal-forcing++", "framewise-2step.pt"), "causal_forcing_2step"),
    (("causal-forcing++", "framewise-1step.pt"), "causal_forcing_1step"),
    (("framewise-2step.pt",), "causal_forcing_2step"),
    (("framewise-1step.pt",), "causal_forcing_1step"),
    (("framewise", "causal_forcing.pt"), "causal_forcing_framewise"),
    (("chunkwise", "causal_forcing.pt"), "causal_forcing"),
    (("chunkwise", "longvideo.pt"), "causal_forcing_long"),
    (("rolling_forcing_dmd.pt",), "rolling_forcing"),
    (("longlive_base.pt",), "longlive"),
    (("autoregressive_checkpoint", "model.pt"), "causvid"),
    (("self_forcing_dmd.pt",), "self_forcing"),
)


class FamilyError(ConfigError):
    """An unknown family name, or a checkpoint that looks like another family than the one asked for."""


def get(name: str) -> Family:
    key = str(name).strip().lower().replace("-", "_")
    if key not in FAMILIES:
        raise FamilyError(f"unknown checkpoint family {name!r}; choose one of {', '.join(NAMES)} (or 'auto': "
                          f"detect it from the file)")
    return FAMILIES[key]


@dataclass(frozen=True)
class Detection:
    family: str | None
    evidence: str  # what told us
    strong: bool  # recorded in the file (metadata, markers) rather than guessed from its name


def detect_path(path: str | PurePath) -> Detection:
    """The family an official file name points to (weak evidence: files can be renamed)."""
    parts = tuple(p.lower() for p in PurePath(str(path)).parts)
    for tail, fam in _FILE_HINTS:
        if parts[-len(tail):] == tail:
            return Detection(fam, f"its name ({'/'.join(tail)}) is the official {FAMILIES[fam].title} file", False)
    return Detection(None, "", False)


def detect(ck) -> Detection:
    """Family of a `LoadedCheckpoint` (or anything with `.meta`): metadata first, then markers, then the name."""
    meta = getattr(ck, "meta", {}) or {}
    md = meta.get("metadata") or {}
    fam = md.get("family")
    if fam in FAMILIES:
        return Detection(fam, f"its metadata records family {fam!r}", True)
    info = meta.get("pickle_info") or {}
    if info.get("checkpoint_format") == "longlive_generator_merged_lora":
        return Detection("longlive", "it is a LongLive generator with its LoRA merged (checkpoint_format)", True)
    if meta.get("lora_family"):
        return Detection(meta["lora_family"], "a LongLive LoRA was merged into it", True)
    for p in [meta.get("path", "")] + list(meta.get("files") or []):
        d = detect_path(p) if p else Detection(None, "", False)
        if d.family:
            return d
    return Detection(None, "", False)


def check_family(requested: str, detection: Detection, where: str = "the checkpoint") -> str:
    """The family to use: `requested` ('auto' -> the detected one, else Self Forcing).

    A requested family that contradicts strong evidence (recorded in the file) is a FamilyError naming the family
    the file looks like; against weak evidence (its name) it is a warning only (the user may have renamed it)."""
    if requested in (None, "", AUTO):
        return detection.family or DEFAULT
    fam = get(requested).name
    if detection.family and detection.family != fam and not _compatible(fam, detection.family):
        msg = (f"{where} looks like {FAMILIES[detection.family].title} ({detection.evidence}), but family "
               f"{fam!r} ({FAMILIES[fam].title}) was asked for; its authors sample it as family "
               f"{detection.family!r}: use --family {detection.family} (node: family '{detection.family}') or "
               f"'auto'")
        if detection.strong:
            raise FamilyError(msg)
        log.warning("%s; continuing with %r as asked", msg, fam)
    return fam


# Presets that differ only in the step schedule of one model shape: picking another is a choice, not a mistake.
_GROUPS = ({"causal_forcing_framewise", "causal_forcing_2step", "causal_forcing_1step"}, {"causvid", "causvid_4step"})


def _compatible(a: str, b: str) -> bool:
    return any(a in g and b in g for g in _GROUPS)


def load_for_family(path: str | PurePath, *, family: str = AUTO, which: str = "auto", lora: str | None = None,
                    lora_alpha: float | None = None):
    """Load a transformer checkpoint the way its family's authors do; returns (LoadedCheckpoint, family name or
    None when neither asked for nor recognised).

    which 'auto' takes the family's choice (e.g. LongLive and CausVid sample the raw 'generator', Rolling Forcing
    and the frame-wise Causal Forcing models the EMA), falling back to the file's own order if it lacks it."""
    from .weights import CheckpointError, load_checkpoint  # noqa: PLC0415 - heavy, only when loading

    asked = None if family in (None, "", AUTO) else get(family).name
    guess = asked or detect_path(path).family
    pick = FAMILIES[guess].which if (which == "auto" and guess) else which
    try:
        ck = load_checkpoint(path, which=pick, lora=lora, lora_alpha=lora_alpha)
    except CheckpointError as exc:
        if pick == which or "has no" not in str(exc):
            raise
        ck = load_checkpoint(path, which=which, lora=lora, lora_alpha=lora_alpha)
    det = detect(ck)
    name = check_family(family, det, where=PurePath(str(path)).name)
    if asked is None and det.family is None:
        return ck, None
    if FAMILIES[name].lora and not ck.meta.get("lora") and not det.strong:
        log.warning("%s is %s's base generator; its authors sample it with their LoRA on top (LongLive: "
                    "models/lora.pt): pass --lora FILE (node: 'lora')", PurePath(str(path)).name, FAMILIES[name].title)
    return ck, name


_SETTING_FIELDS = {f.name for f in dataclasses.fields(SamplingSettings)}


def settings_for(name: str, overrides: Mapping[str, Any] | None = None, *,
                 window_frames: int | str | None = None, sink_frames: int | None = None,
                 chunk_frames: int | None = None) -> SamplingSettings:
    """The family's SamplingSettings with user overrides applied (None = keep the preset's value).

    window_frames: frames of the rolling cache, or 0 / 'global' for a global cache; a new chunk size without
    a sink keeps the preset's sink measured in chunks (one chunk)."""
    fam = get(name)
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    bad = sorted(set(over) - _SETTING_FIELDS)
    if bad:
        raise FamilyError(f"unknown sampling settings {bad}; known: {sorted(_SETTING_FIELDS)}")
    chunk = int(chunk_frames or fam.chunk_frames)
    window = fam.window_frames if window_frames is None else window_frames
    if str(window).lower() in ("0", "global", "none"):
        window, sink = None, 0
    else:
        window = int(window)
        sink = fam.sink_frames if sink_frames is None else int(sink_frames)
        if sink_frames is None and chunk != fam.chunk_frames and fam.sink_frames == fam.chunk_frames:
            sink = chunk  # the sink is one chunk in every preset
    if "causal" not in over:
        over["causal"] = CausalConfig(chunk_frames=chunk, window_frames=window, sink_frames=sink)
    return fam.settings(**over)


def from_widgets(name: str, values: Mapping[str, Any], defaults: Mapping[str, Any]) -> SamplingSettings:
    """A node's settings for family `name`: the preset, with every widget the user moved off its default on top.

    values / defaults: steps (tuple), warp, shift, chunk_frames, window_frames (0 = global), sink_frames and any
    other SamplingSettings field (e.g. positions). A widget left at its default takes the family's value, so to
    force a default value on another family's preset pick the family 'custom' (the widgets as they are)."""
    moved = {k: v for k, v in values.items() if v is not None and v != defaults.get(k)}
    window = moved.pop("window_frames", None)
    sink = moved.pop("sink_frames", None)
    chunk = moved.pop("chunk_frames", None)
    return settings_for(name, moved, window_frames=window, sink_frames=sink, chunk_frames=chunk)


def table() -> list[dict[str, Any]]:
    """One row per family (for `python -m sf_core.checkpoints.families` and the docs)."""
    rows = []
    for f in FAMILIES.values():
        rows.append({"family": f.name, "title": f.title, "sampler": f.sampler, "chunk_frames": f.chunk_frames,
                     "steps": list(f.steps), "first_steps": list(f.first_steps) if f.first_steps else None,
                     "warp": f.warp, "shift": f.shift, "window_frames": f.window_frames, "sink_frames": f.sink_frames,
                     "recache": f.recache, "which": f.which, "lora": f.lora, "differs": f.differs})
    return rows


def main(argv: list[str] | None = None) -> int:
    import json

    print(json.dumps(table(), indent=1))
    return 0


__all__ = ["Family", "FAMILIES", "NAMES", "AUTO", "DEFAULT", "FamilyError", "Detection", "get", "detect",
           "detect_path", "check_family", "settings_for", "load_for_family", "from_widgets", "table"]

if __name__ == "__main__":
    raise SystemExit(main())
