"""Benchmark (not a test): torch.compile of the blocks (sf_core.model.accel.compile_blocks) vs eager, on CPU (inductor).

    python bench/bench_accel.py --rounds 4 --threads 1

Interleaved A/B in separate processes (eager, compiled, compiled, eager, ...): each process builds the random
"small" model of bench_vs_reference.py (dim 256, 4 layers, 16x16 latents), runs one warm-up video (the compiled
side compiles there; its time is reported as compile_s) and `--repeat` timed videos: 36 latent frames through a
rolling window of 21 + sink 3 (steady state), fp32. Reports the median and spread of CPU and wall time per side,
the ratio compiled/eager, and the largest difference of the compiled latents from the eager ones.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(side: str, repeat: int, threads: int) -> dict:
    from bench_vs_reference import _build

    from sf_core.model import accel
    from sf_core.config import CausalConfig
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import SamplingSettings, new_session

    torch.set_num_threads(threads)
    cfg, model, ctx, spec = _build("small")
    st = SamplingSettings(causal=CausalConfig(chunk_frames=3, window_frames=21, sink_frames=3))

    def video():
        with torch.no_grad():
            return generate(model, new_session(model, ctx, latent_hw=spec["hw"], seed=0, settings=st), num_frames=36)
    eager = video() if side == "compiled" else None
    if side == "compiled":
        accel.compile_blocks(model)
    t0 = time.perf_counter()
    first = video()
    compile_s = time.perf_counter() - t0
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        video()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out = {"side": side, "wall_s": wall, "cpu_s": cpu, "first_video_s": compile_s}
    if eager is not None:
        out["max_abs_diff"] = (first - eager).abs().max().item()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", choices=("eager", "compiled"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.repeat, a.threads)))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(Path(__file__).resolve().parent)}
    res = {"eager": [], "compiled": []}
    for r in range(a.rounds):
        for side in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
            out = subprocess.run([sys.executable, __file__, "--child", side, "--repeat", str(a.repeat), "--threads",
                                  str(a.threads)], capture_output=True, text=True, env=env, check=True).stdout
            res[side].append(json.loads(out.strip().splitlines()[-1]))
    for side, rows in res.items():
        cpu = [x for r in rows for x in r["cpu_s"]]
        wall = [x for r in rows for x in r["wall_s"]]
        extra = (f", first video (compiling) {statistics.median(r['first_video_s'] for r in rows):.1f} s, max |diff| "
                 f"{max(r['max_abs_diff'] for r in rows):.2e}" if side == "compiled" else "")
        print(f"{side}: cpu {statistics.median(cpu):.3f} s ({min(cpu):.3f}-{max(cpu):.3f}), wall "
              f"{statistics.median(wall):.3f} s ({min(wall):.3f}-{max(wall):.3f}){extra}")
    med = {s: statistics.median(x for r in rows for x in r["cpu_s"]) for s, rows in res.items()}
    print(f"compiled/eager CPU time: {med['compiled'] / med['eager']:.3f}; load {os.getloadavg()}")
    print(json.dumps({"results": res, "load": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
