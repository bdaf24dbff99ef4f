"""Parity with the official code of the other checkpoint families (`sf_core.checkpoints.families`), on recorded fixtures.

A family fixture has the format of the Self Forcing ones (`docs/fixtures.md`: safetensors, flat keys, latents
[B, F, C, H, W], JSON under `meta_json`) with `meta.family` naming the family and the model shape under
`model_config`. `python -m sf_core.parity FILE` dispatches here. Parts:
- rolling_forcing: every window call of the official `inference_rolling_forcing` replayed by
  `sf_core.sampling.rolling.rolling_rollout` (the window's input and per-frame timesteps, its x0), the KV cache after every
  commit of a finished chunk (the sink's keys, stored unroped by the official cache, roped at frame 0 here), and
  the output latents; noise draws replayed in the order sf_core draws them.
- causal_forcing, longlive: chunk-sampler families, replayed through presets, sessions and the session stepper
  (`sf_core.parity.replay`).
"""
from __future__ import annotations

import torch

from ..config import WanConfig
from ..sampling.denoiser import Denoiser
from .fixture import Fixture
from ..cache.kv_cache import KVCache
from ..model.transformer import WanTransformer
from ..sampling.rolling import rolling_rollout
from ..model.rope import apply_rope, rope_cos_sin
from ..sampling.sampler import replay_noise
from ..sampling.schedule import FlowSchedule


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _model(fx: Fixture) -> WanTransformer:
    m = WanTransformer(WanConfig.from_dict(fx.meta["model_config"]))
    m.load_state_dict({k[8:]: v for k, v in fx.tensors.items() if k.startswith("weights/")}, strict=True)
    return m.eval()


def rolling_forcing(fx: Fixture) -> dict[str, dict]:
    meta, m = fx.meta, _model(fx)
    cfg, tpf = m.config, int(meta["frame_seq_length"])
    sched = FlowSchedule(float(meta["timestep_shift"]))
    ts = torch.tensor(meta["denoising_step_list"], dtype=torch.float32)
    noise = fx.latent("infer/noise")
    h, w = noise.shape[-2:]
    gh, gw = h // cfg.patch_size[1], w // cfg.patch_size[2]
    sink = int(meta["sink_frames"])
    cache = KVCache.allocate(cfg.num_layers, 1, cfg.num_heads, cfg.head_dim, tpf,
                             window_frames=int(meta["kv_cache_frames"]), sink_frames=sink,
                             chunk_frames=int(meta["num_frame_per_block"]))
    cos, sin = rope_cos_sin(cfg.head_dim, 0, sink, gh, gw, torch.device("cpu"))
    worst: dict[str, float] = {}

    def track(key, val):
        worst[key] = max(worst.get(key, 0.0), val)

    def compare_cache(win: int) -> None:
        pre = f"win{win:02d}/"
        if pre + "kv0_k" not in fx.tensors:
            return
        for layer in range(cfg.num_layers):
            k, v = cache.valid(layer)
            rk, rv = fx.tensors[pre + f"kv{layer}_k"], fx.tensors[pre + f"kv{layer}_v"]
            if rk.shape != k.shape:
                worst["cache_shape_mismatches"] = worst.get("cache_shape_mismatches", 0.0) + 1
                continue
            n = sink * tpf
            rk = torch.cat([apply_rope(rk[:, :n], cos, sin), rk[:, n:]], 1)
            track("kv_cache", max(_maxabs(k, rk), _maxabs(v, rv)))
        worst["caches_compared"] = worst.get("caches_compared", 0.0) + 1

    calls = []

    class Recorder(Denoiser):
        def __call__(self, x, t, **kw):
            x0 = super().__call__(x, t, **kw)
            calls.append((x, t, x0))
            return x0

    den = Recorder(m, sched, fx.context())
    draws = [fx.latent(f"draws/{j:03d}") for j in range(int(meta["draws"]))]
    with torch.no_grad():
        out = rolling_rollout(den, cache, batch=1, num_frames=int(meta["num_frames"]), latent_hw=(h, w),
                              timesteps=ts, chunk_frames=int(meta["num_frame_per_block"]),
                              noise_fn=replay_noise(draws), context_t=float(meta["context_noise"]),
                              callback=lambda i, t, x0: compare_cache(i - 1))
    compare_cache(len(meta["windows"]) - 1)
    if len(calls) != len(meta["windows"]):
        worst["call_count_mismatch"] = float(abs(len(calls) - len(meta["windows"])))
    for i, (x, t, x0) in enumerate(calls):
        pre = f"win{i:02d}/"
        track("window_inputs", _maxabs(x, fx.latent(pre + "in")))
        track("window_timesteps", _maxabs(t, fx.tensors[pre + "timestep"]))
        track("window_x0", _maxabs(x0, fx.latent(pre + "x0")))
    track("output_latents", _maxabs(out, fx.latent("infer/output_latents")))
    compared = worst.pop("caches_compared", 0.0)
    if compared < 1:
        worst["cache_compare_mismatch"] = 1.0
    return {"RF_rolling_window": worst}


def _chunk_family(name: str):
    def run(fx: Fixture) -> dict[str, dict]:
        from . import replay  # noqa: PLC0415 - sessions and nodes of the pipeline, only when needed

        return getattr(replay, name)(fx, _model)
    return run


PARTS = {"rolling_forcing": rolling_forcing, "causal_forcing": _chunk_family("causal_forcing"),
         "longlive": _chunk_family("longlive")}


def run(fx: Fixture) -> dict[str, dict]:
    fam = fx.meta["family"]
    if fam not in PARTS:
        raise ValueError(f"no parity check for family {fam!r}; known: {sorted(PARTS)}")
    return PARTS[fam](fx)


__all__ = ["run", "PARTS"]
