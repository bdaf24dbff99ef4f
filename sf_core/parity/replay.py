"""Parity of the chunk-sampler families (Causal Forcing, LongLive) with their official code, on recorded fixtures.

Each recorded run is replayed through the code users run: the family's preset (`families.settings_for`, checked
field by field against the official config the run used), a `Session`, `SessionStepper.step` per chunk (the
first-chunk schedule of Causal Forcing++, a prompt switch's re-cache of LongLive) and `commit_frames` for an
image. Only the noise is injected: each chunk's initial noise and every re-noising draw, as recorded.
Compared: every denoising call (input, per-frame timestep, x0), the KV cache after every clean context pass,
the KV cache right after every re-cache (before the next chunk's first call), and the output latents.

Fixture layout (`meta.family` = "causal_forcing" or "longlive"; latents [B, F, C, H, W] as in `docs/fixtures.md`,
draws [B*F, C, H, W] as `torch.randn_like` made them): per run `{p}/noise`, `{p}/callNN/{in,timestep,x0}`,
KV rows `{p}/commitNN/kv{L}_{k,v}` (Causal Forcing) or `kvNN/...` (LongLive: commits and re-caches in call
order, `meta.calls[i].kind`), `{p}/drawNN` / `draws/NNN`, `{p}/output_latents`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..checkpoints import families
from ..config import plan_chunks
from ..sampling.context_frames import commit_frames, frames_settings
from ..sampling.denoiser import Denoiser
from .fixture import Fixture
from ..cache.kv_cache import KVCache
from ..checkpoints.lora import lora_from_tensors, merge_lora
from ..sampling.pipeline import SessionStepper
from ..sampling.prompts import PromptEntry, PromptSchedule
from ..sampling.sampler import replay_noise
from ..sampling.session import SamplingSettings, new_session

Rows = list[tuple[torch.Tensor, torch.Tensor]]


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _rows(cache: KVCache) -> Rows:
    return [tuple(t.clone() for t in cache.valid(layer)) for layer in range(cache.num_layers)]


def _draw(z: torch.Tensor, batch: int) -> torch.Tensor:
    """An official draw [B*F, C, H, W] as [B, C, F, H, W]."""
    return z.view(batch, -1, *z.shape[1:]).permute(0, 2, 1, 3, 4)


class _Recorder(Denoiser):
    """Records every denoising call, and the cache rows before the first call of each chunk."""

    def __call__(self, x, t, *, cache=None, start_frame=0, mask=None):
        before = self.extra.setdefault("before", {})
        if cache is not None and start_frame not in before:
            before[start_frame] = _rows(cache)
        x0 = super().__call__(x, t, cache=cache, start_frame=start_frame, mask=mask)
        self.extra.setdefault("calls", []).append((x, t, x0))
        return x0


def replay(model, settings: SamplingSettings, prompts: PromptSchedule, noise: torch.Tensor,
           draws: list[torch.Tensor], image: torch.Tensor | None = None) -> dict:
    """Generate noise.shape[2] latent frames (after `image` frames, if given) with recorded noise.

    Returns {"calls": [(x, t, x0)], "commits": [rows after each context pass], "before": {start_frame: rows},
    "output": [B, C, F, h, w] (image frames first)}."""
    b, _, f, h, w = noise.shape
    session = new_session(model, prompts, latent_hw=(h, w), batch=b, settings=settings)
    commits, outs = [], []
    if image is not None:
        commit_frames(model, session, image)
        outs.append(image)
        commits.append(_rows(session.cache))
    stepper = SessionStepper(model, session)
    den = _Recorder(model, settings.schedule, context=None, dtype=session.dtype)
    stepper.den, stepper.noise_fn = den, replay_noise(draws)
    first = session.next_frame
    for s, e in plan_chunks(settings.causal, first, num_frames=f):
        res = stepper.step(noise=noise[:, :, s - first:e - first])
        outs.append(res.latents)
        commits.append(_rows(session.cache))
    return {"calls": den.extra.get("calls", []), "commits": commits, "before": den.extra.get("before", {}),
            "output": torch.cat(outs, dim=2)}


class _Worst(dict):
    def track(self, key: str, val: float) -> None:
        self[key] = max(self.get(key, 0.0), val)

    def count(self, key: str, n: float = 1.0) -> None:
        self[key] = self.get(key, 0.0) + n


def _compare_rows(worst: _Worst, ours: Rows, fx: Fixture, prefix: str, key: str = "kv_cache") -> None:
    for layer, (k, v) in enumerate(ours):
        rk, rv = fx.tensors[f"{prefix}kv{layer}_k"], fx.tensors[f"{prefix}kv{layer}_v"]
        if rk.shape != k.shape:
            worst.count("cache_shape_mismatches")
            continue
        worst.track(key, max(_maxabs(k, rk), _maxabs(v, rv)))


def _compare_calls(worst: _Worst, calls: list, fx: Fixture, prefix: str, recorded: list[dict]) -> None:
    recorded = [c for c in recorded if c["kind"] == "denoise"]
    if len(calls) != len(recorded):
        worst["call_count_mismatch"] = float(abs(len(calls) - len(recorded)))
    for (x, t, x0), c in zip(calls, recorded):
        pre = f"{prefix}call{c['index']:02d}/"
        worst.track("call_inputs", _maxabs(x, fx.latent(pre + "in")))
        worst.track("call_timesteps", _maxabs(t, fx.tensors[pre + "timestep"]))
        worst.track("call_x0", _maxabs(x0, fx.latent(pre + "x0")))


def _check_preset(worst: _Worst, st: SamplingSettings, run: dict, checks: dict[str, tuple]) -> None:
    """Count preset fields that differ from the official config (`checks`: name -> (ours, official))."""
    ts = [float(x) for x in st.timesteps()]
    checks = dict(checks, timesteps=(ts, run["denoising_step_list"]), steps=(list(st.steps),
                  run["denoising_step_list_raw"]), warp=(st.warp, run["warp"]), shift=(st.shift, run["timestep_shift"]),
                  chunk_frames=(st.causal.chunk_frames, run["num_frame_per_block"]),
                  context_t=(st.context_t, run["context_noise"]))
    bad = [k for k, (a, b) in checks.items() if a != b]
    worst["preset_mismatches"] = float(len(bad))


def causal_forcing(fx: Fixture, model_fn: Callable[[Fixture], torch.nn.Module]) -> dict[str, dict]:
    """Every run of a Causal Forcing fixture (frame-wise 4/2/1-step, image-to-video, chunk-wise)."""
    m = model_fn(fx)
    ctx = fx.tensors["inputs/prompt_embeds"]
    results = {}
    for run in fx.meta["runs"]:
        p, worst = run["prefix"], _Worst()
        st = families.settings_for(run["preset"])
        first = run.get("first_chunk_raw")
        _check_preset(worst, st, run, {
            "first_steps": (None if st.first_steps is None else list(st.first_steps), first),
            "first_timesteps": ([float(x) for x in st.timesteps(first=True)], run.get("first_chunk") or
                                run["denoising_step_list"]),
            "kv_frames": (st.causal.window_frames in (None, run["kv_cache_frames"]), True)})
        noise = fx.latent(f"{p}/noise")
        draws = [_draw(fx.tensors[f"{p}/draw{j:02d}"], noise.shape[0]) for j in range(run["draws"])]
        image = fx.latent(f"{p}/initial_latent") if run["image_frames"] else None
        out = replay(m, frames_settings(st) if image is not None else st, PromptSchedule.single(ctx), noise, draws,
                     image)
        _compare_calls(worst, out["calls"], fx, f"{p}/", run["calls"])
        commits = [c for c in run["calls"] if c["kind"] == "commit"]
        if len(commits) != len(out["commits"]):
            worst["commit_count_mismatch"] = float(abs(len(commits) - len(out["commits"])))
        for c, rows in zip(commits, out["commits"]):
            _compare_rows(worst, rows, fx, f"{p}/commit{c['index']:02d}/")
        worst.track("output_latents", _maxabs(out["output"], fx.latent(f"{p}/output_latents")))
        results[f"CF[{p}]"] = dict(worst)
    return results


def longlive_model(fx: Fixture, model_fn: Callable[[Fixture], torch.nn.Module]) -> torch.nn.Module:
    """The base generator with the fixture's peft LoRA merged (`sf_core.checkpoints.lora`, as the loader merges lora.pt)."""
    m = model_fn(fx)
    lora = lora_from_tensors({k[5:]: v for k, v in fx.tensors.items() if k.startswith("lora/")}, "fixture lora/")
    m.load_state_dict(merge_lora(m.state_dict(), lora, alpha=fx.meta["lora_alpha"]), strict=True)
    return m


def longlive(fx: Fixture, model_fn: Callable[[Fixture], torch.nn.Module]) -> dict[str, dict]:
    """LongLive's interactive inference: short window + sink, prompt switches with the window re-cache."""
    meta, worst = fx.meta, _Worst()
    m = longlive_model(fx, model_fn)
    st = families.settings_for("longlive")
    _check_preset(worst, st, meta, {
        "window_frames": (st.causal.window_frames, meta["local_attn_size"]),
        "sink_frames": (st.causal.sink_frames, meta["sink_size"]),
        "recache": (st.recache, "window" if meta["global_sink"] else "reset")})
    nf = st.causal.chunk_frames
    entries = [PromptEntry(0, fx.tensors["inputs/prompt0_embeds"], "prompt 0")]
    for i, frame in enumerate(meta["switch_frame_indices"]):  # official: the first block starting at or after it
        ctx = fx.tensors[f"inputs/prompt{i + 1}_embeds"]
        entries.append(PromptEntry(math.ceil(frame / nf), ctx, f"prompt {i + 1}"))
    noise = fx.latent("infer/noise")
    draws = [_draw(fx.tensors[f"draws/{j:03d}"], noise.shape[0]) for j in range(meta["draws"])]
    out = replay(m, st, PromptSchedule(tuple(entries), policy="recache"), noise, draws)
    _compare_calls(worst, out["calls"], fx, "", meta["calls"])
    commits = iter(out["commits"])
    compared = 0
    for c in meta["calls"]:
        if c["kind"] == "commit":
            rows = next(commits, None)
            key = "kv_cache"
        elif c["kind"] == "recache":
            rows = out["before"].get(c["start_frame"] + c["frames"])
            key = "kv_cache_recache"
        else:
            continue
        if rows is None:
            worst.count("cache_compare_mismatches")
            continue
        _compare_rows(worst, rows, fx, f"kv{c['index']:02d}/", key)
        compared += c["kind"] == "recache"
    if compared != len(meta["switch_frame_indices"]):
        worst["recache_compare_mismatch"] = float(abs(compared - len(meta["switch_frame_indices"])))
    worst.track("output_latents", _maxabs(out["output"], fx.latent("infer/output_latents")))
    return {"LL_window_recache": dict(worst)}


__all__ = ["replay", "causal_forcing", "longlive", "longlive_model"]
