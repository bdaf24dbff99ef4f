"""Benchmark (not a test): merged commits (SamplingSettings.merge_commit) against the sequential order, same process.

    .venv/bin/python bench/bench_merge.py                       # small + wide configs, global and rolling, 2 threads
    .venv/bin/python bench/bench_merge.py --configs toy --threads 1

Each round generates the same video once sequentially and once merged (alternating which goes first), timing
wall and CPU; reports per mode the median per-video times, the median of the per-round ratios merged/sequential,
the transformer calls per video, and the largest latent difference (relative to the latents' scale). Modes:
`rollout` (a global cache, 21 latent frames = 7 chunks: the last chunk's commit is not needed and not made when
merged) and `rolling` (36 frames through a 21-frame window with a 3-frame sink: steady-state eviction).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {  # WanConfig fields and latent size (small / wide as bench_vs_reference.py)
    "small": (dict(dim=256, ffn_dim=1024, num_heads=2, num_layers=4, text_dim=64, text_len=32), (16, 16)),
    "wide": (dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=2, text_dim=64, text_len=32), (16, 16)),
    "toy": (None, None),
}
MODES = {"rollout": (21, None, 0), "rolling": (36, 21, 3)}


def build(name: str):
    sys.path.insert(0, str(ROOT))
    from sf_core.config import WanConfig
    from sf_core.model.transformer import WanTransformer, randomize_weights

    fields, hw = CONFIGS[name]
    if fields is None:
        from sf_core.toy import load_toy_bundle

        b = load_toy_bundle()
        return b.transformer, b.text_encoder.encode(["a red square moving right fast"]), b.latent_hw
    cfg = WanConfig(**{**WanConfig.tiny().to_dict(), **fields})
    model = randomize_weights(WanTransformer(cfg), seed=0).eval()
    ctx = torch.randn(1, 16, cfg.text_dim, generator=torch.Generator().manual_seed(0))
    return model, ctx, hw


def measure(model, ctx, hw, mode: str, rounds: int) -> dict:
    from sf_core.config import CausalConfig
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import SamplingSettings, new_session

    frames, window, sink = MODES[mode]
    calls = [0]
    hook = model.patch_embedding.register_forward_pre_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))

    def once(merge: bool):
        st = SamplingSettings(causal=CausalConfig(chunk_frames=3, window_frames=window, sink_frames=sink),
                              positions="absolute", merge_commit=merge)
        s = new_session(model, ctx, latent_hw=hw, seed=0, settings=st)
        calls[0] = 0
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            out = generate(model, s, num_frames=frames)
        return out, time.perf_counter() - t0, time.process_time() - c0, calls[0]

    once(False), once(True)  # warm-up
    rows = {False: {"wall": [], "cpu": []}, True: {"wall": [], "cpu": []}}
    ratios, outs, n_calls = [], {}, {}
    for r in range(rounds):
        got = {}
        for merge in ((False, True) if r % 2 == 0 else (True, False)):
            out, wall, cpu, n = once(merge)
            got[merge] = cpu
            rows[merge]["wall"].append(wall)
            rows[merge]["cpu"].append(cpu)
            outs[merge], n_calls[merge] = out, n
        ratios.append(got[True] / got[False])
    hook.remove()  # one counting hook per measurement, not one more per mode
    diff = float((outs[True] - outs[False]).abs().max() / outs[False].abs().max())
    med = {m: {k: round(statistics.median(v), 4) for k, v in rows[m].items()} for m in rows}
    return {"mode": mode, "frames": frames, "sequential_s": med[False], "merged_s": med[True],
            "cpu_ratio_merged_over_sequential": round(statistics.median(ratios), 3),
            "ratio_spread": [round(min(ratios), 3), round(max(ratios), 3)],
            "calls": {"sequential": n_calls[False], "merged": n_calls[True]}, "max_rel_latent_diff": diff}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="small,wide")
    ap.add_argument("--modes", default="rollout,rolling")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.configs.split(","):
        model, ctx, hw = build(name)
        for mode in args.modes.split(","):
            res = {"config": name, "threads": args.threads, "rounds": args.rounds, **measure(model, ctx, hw, mode,
                                                                                              args.rounds)}
            print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
