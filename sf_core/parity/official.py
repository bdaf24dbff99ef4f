"""`python -m sf_core.parity FIXTURE.safetensors`: is this install numerically the official Self Forcing?

Reads a reference fixture (tensors recorded from the official code, sizes in its metadata), recomputes every
part with sf_core and prints the max abs difference per part as JSON. Exit code 1 if any part is past its
tolerance, 2 if the file cannot be read.

Parts: A block-causal training forward; B every KV-cache inference call replayed (outputs and cache
contents after each call, cross-attention cache); B_rollout the whole sampler replaying the recorded noise;
C training forward vs KV cache; D (per rolling run) the same as B with a rolling cache and sink;
E / F the DMD generator step and the critic step (`sf_core.train.parity`, when present in the fixture).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable

import torch

from ..model.attention import BlockCausalMask
from ..config import CausalConfig
from ..sampling.denoiser import Denoiser
from .fixture import Fixture, FixtureError
from ..model.forward import flow_to_x0, wan_forward
from ..cache.kv_cache import KVCache
from ..sampling.sampler import replay_noise, rollout
from ..sampling.schedule import FlowSchedule

TOL = {"activation": 1e-5, "dmd_grad": 2e-5, "loss_rel": 1e-6, "grad_abs": 1e-6, "grad_rel_l2": 1e-5}


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _track(worst: dict, key: str, value: float) -> None:
    worst[key] = max(worst.get(key, 0.0), value)


def _block_causal_flow(fx: Fixture, prefix: str):
    """(x, t, mask, flow) of the whole-sequence block-causal forward on the fixture's `prefix/in*` input."""
    x = fx.latent(f"{prefix}/in_noisy" if prefix == "train" else f"{prefix}/in")
    t = fx.tensors[f"{prefix}/timestep"].float()
    causal = CausalConfig(chunk_frames=fx.meta["num_frame_per_block"])
    mask = BlockCausalMask(tuple(causal.chunk_bounds(x.shape[2])), fx.tokens_per_frame)
    with torch.no_grad():
        return x, t, mask, wan_forward(fx.model(), x, t, fx.context(), mask=mask)


def part_a(fx: Fixture) -> dict:
    x, t, mask, flow = _block_causal_flow(fx, "train")
    x0 = flow_to_x0(x, flow, FlowSchedule(fx.meta["timestep_shift"]).sigma(t))
    out = {"flow_pred": _maxabs(flow, fx.latent("train/flow_pred")),
           "x0_pred": _maxabs(x0, fx.latent("train/x0_pred"))}
    key = "train/block_mask_dense_padded"
    if key in fx.tensors:
        n = x.shape[2] * fx.tokens_per_frame
        out["mask_mismatches"] = float((fx.tensors[key][:n, :n].bool() != mask.dense()).sum())
    return out


def _cache_for(fx: Fixture, run: dict) -> KVCache:
    cfg = fx.config
    return KVCache.allocate(cfg.num_layers, 1, cfg.num_heads, cfg.head_dim, fx.tokens_per_frame,
                            frames=run["rows"] // fx.tokens_per_frame, window_frames=run["window"],
                            sink_frames=run["sink"], strict=False)


def replay_calls(fx: Fixture, run: dict) -> dict:
    """Feed every recorded call's input; compare outputs and the cache after each call."""
    m, cfg, p = fx.model(), fx.config, run["prefix"]
    sched = FlowSchedule(fx.meta["timestep_shift"])
    cache = _cache_for(fx, run)
    worst: dict = {}
    with torch.no_grad():
        for c in run["calls"]:
            pre = f"{p}/call{c['call']:02d}/"
            x = fx.latent(pre + "in_noisy")
            t = fx.tensors[pre + "timestep"].float()
            flow = wan_forward(m, x, t, fx.context(), cache=cache, start_frame=c["start_frame"])
            _track(worst, "flow_pred", _maxabs(flow, fx.latent(pre + "flow_pred")))
            _track(worst, "x0_pred", _maxabs(flow_to_x0(x, flow, sched.sigma(t)), fx.latent(pre + "x0_pred")))
            if cache.length * fx.tokens_per_frame != c["local_end_index"][0]:
                worst["cache_index_mismatches"] = worst.get("cache_index_mismatches", 0.0) + 1
            for layer in range(cfg.num_layers):
                for name, buf in (("k", cache.k), ("v", cache.v)):
                    ref = fx.tensors[f"{pre}kv{layer}_{name}"]
                    _track(worst, "kv_cache", _maxabs(buf[layer][:, :ref.shape[1]], ref))
    for layer in range(cfg.num_layers):
        for name, lst in (("k", cache.cross_k), ("v", cache.cross_v)):
            key = f"{p}/xattn{layer}_{name}"
            if key in fx.tensors:
                _track(worst, "cross_attn_cache", _maxabs(lst[layer], fx.tensors[key]))
    return worst


class _Recorder(Denoiser):
    """A Denoiser that records every model call (input, timestep, flow) of a rollout."""

    def flow(self, x, t, **kw):
        out = super().flow(x, t, **kw)
        self.extra.setdefault("calls", []).append((x.detach(), t.detach(), None if out is None else out.detach()))
        return out


def replay_rollout(fx: Fixture, run: dict) -> dict:
    """Run the sampler end to end with the recorded initial noise and re-noising draws."""
    m, p, nf = fx.model(), run["prefix"], run["nf"]
    sched = FlowSchedule(fx.meta["timestep_shift"])
    draws = [fx.draw(f"{p}/noise{d['draw']:02d}/eps", nf) for d in run["draws"]]
    noise = fx.latent(f"{p}/noise")
    cache = _cache_for(fx, run)
    den = _Recorder(m, sched, fx.context())
    with torch.no_grad():
        out = rollout(den, cache, batch=noise.shape[0], num_frames=run["num_frames"], latent_hw=noise.shape[-2:],
                      timesteps=fx.timesteps, causal=CausalConfig(chunk_frames=nf), noise_fn=replay_noise(draws),
                      noise=noise)
    worst = {"output_latents": _maxabs(out, fx.latent(f"{p}/output_latents"))}
    calls = den.extra["calls"]
    if len(calls) != len(run["calls"]):
        worst["call_count_mismatch"] = float(abs(len(calls) - len(run["calls"])))
    for (x, t, flow), c in zip(calls, run["calls"]):
        pre = f"{p}/call{c['call']:02d}/"
        _track(worst, "call_inputs", _maxabs(x, fx.latent(pre + "in_noisy")))
        _track(worst, "call_timesteps", _maxabs(t, fx.tensors[pre + "timestep"]))
        if flow is not None:
            _track(worst, "call_flow", _maxabs(flow, fx.latent(pre + "flow_pred")))
    last = f"{p}/call{run['calls'][-1]['call']:02d}/"
    for layer in range(fx.config.num_layers):
        for name, buf in (("k", cache.k), ("v", cache.v)):
            ref = fx.tensors[f"{last}kv{layer}_{name}"]
            _track(worst, "final_kv_cache", _maxabs(buf[layer][:, :ref.shape[1]], ref))
    return worst


def part_c(fx: Fixture) -> dict:
    flow = _block_causal_flow(fx, "equiv")[3]
    return {"flow_pred": _maxabs(flow, fx.latent("equiv/flow_pred"))}


def run_all(fx: Fixture) -> dict[str, dict]:
    if "family" in fx.meta:  # another checkpoint family's official code (Rolling Forcing, ...)
        from .families import run  # noqa: PLC0415

        return run(fx)
    parts = set(fx.meta.get("parts", []))
    results: dict[str, dict] = {}
    if "A_train_forward" in parts:
        results["A_train_forward"] = part_a(fx)
    for run in fx.runs():
        name = "B_inference" if run["prefix"] == "infer" else f"D_rolling[{run['prefix']}]"
        if name.startswith("B") and "B_inference" not in parts:
            continue
        if name.startswith("D") and "D_rolling" not in parts:
            continue
        results[name] = replay_calls(fx, run)
        results[name + "_rollout"] = replay_rollout(fx, run)
    if "C_equivalence" in parts:
        results["C_equivalence"] = part_c(fx)
    extra = _training_parts()
    if extra is not None:
        results.update(extra(fx))
    return results


def _training_parts() -> Callable[[Fixture], dict] | None:
    try:
        from ..train.parity import training_parts  # noqa: PLC0415 - optional, lives with the trainer
    except ImportError:
        return None
    return training_parts


def failures(results: dict[str, dict]) -> list[str]:
    bad = []
    for part, vals in results.items():
        for key, val in vals.items():
            if key.endswith("mismatches") or key.endswith("mismatch"):
                limit = 0.0
            elif key == "dmd_grad":
                limit = TOL["dmd_grad"]
            elif key.startswith("loss_rel"):
                limit = TOL["loss_rel"]
            elif key.startswith("grad_rel_l2"):
                limit = TOL["grad_rel_l2"]
            elif key.startswith("grad_abs"):
                limit = TOL["grad_abs"]
            else:
                limit = TOL["activation"]
            if not val <= limit:
                bad.append(f"{part}.{key}={val:.3g} > {limit:g}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sf_core.parity", description=__doc__.splitlines()[0])
    ap.add_argument("fixture", help="reference fixture .safetensors (e.g. tests/fixtures/sf_ref_tiny.safetensors)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        fx = Fixture.load(args.fixture)
    except FixtureError as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 2
    results = run_all(fx)
    bad = failures(results)
    print(json.dumps({"fixture": str(args.fixture), "results": results, "ok": not bad, "failures": bad},
                     indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
