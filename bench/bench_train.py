"""Training benchmark: iteration time and peak memory per rank of the Self Forcing DMD trainer.

    python bench/bench_train.py --preset tiny --nproc 1 2           # CPU, gloo: 1 vs 2 processes
    python bench/bench_train.py --preset 1.3b --nproc 1 --steps 10  # one GPU: 1.3B generator + critic + teacher

Each configuration runs the real trainer (`Trainer.train_step`, random weights, random prompt embeddings)
under torchrun; the first `--warmup` steps are not timed. Reported per rank: mean seconds of a step with a
generator update (generator + critic update, every `dmd.update_ratio` steps) and of a critic-only step (wall
clock, and CPU seconds of the process, which a busy machine inflates less), the 1-minute load average, and
peak memory (CUDA: max allocated; CPU: peak resident set size of the process, which includes the Python /
torch baseline). `--json FILE` appends the rows.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def preset(name: str, out: Path, emb: Path, batch: int):
    from sf_core.train.config import TrainConfig, apply_overrides

    if name == "tiny":
        return apply_overrides(TrainConfig.tiny(out_dir=str(out), embeddings=str(emb)),
                               {"data.batch_size": batch, "export_at_end": False})
    if name == "1.3b":  # the paper's sizes with a 1.3B teacher (the released recipe uses a 14B teacher)
        cfg = TrainConfig.from_dict({"out_dir": str(out), "models": {"wan": "1.3b"},
                                     "data": {"embeddings": str(emb), "batch_size": batch}, "export_at_end": False})
        return cfg
    raise SystemExit(f"unknown preset {name!r}: tiny or 1.3b")


def write_embeddings(path: Path, text_dim: int, n: int, length: int = 64) -> None:
    import torch

    from sf_core.train.data import write_shards

    g = torch.Generator().manual_seed(0)
    embeds = [torch.randn(length, text_dim, generator=g) for _ in range(n)]
    write_shards(path, embeds, [f"prompt {i}" for i in range(n)], torch.zeros(length, text_dim))


def child(args) -> None:
    """One rank: build the trainer, time steps, print one JSON line."""
    import torch

    from sf_core.train.distributed import init_distributed, shutdown
    from sf_core.train.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    cfg = preset(args.preset, work / f"run{os.environ.get('WORLD_SIZE', '1')}", work / "emb", args.batch)
    info = init_distributed(cfg.dist)
    cuda = info.device.type == "cuda"
    tr = Trainer(cfg, info)
    ratio = cfg.dmd.update_ratio
    gen, crit, gen_cpu, crit_cpu = [], [], [], []
    for i in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        with_gen = tr.step % ratio == 0
        tr.train_step()
        if cuda:
            torch.cuda.synchronize()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if i >= args.warmup:
            (gen if with_gen else crit).append(dt)
            (gen_cpu if with_gen else crit_cpu).append(dc)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    row = {"preset": args.preset, "world": info.world, "rank": info.rank, "device": str(info.device),
           "batch_per_rank": cfg.data.batch_size, "update_ratio": ratio,
           "gen_step_s": statistics.mean(gen) if gen else None, "critic_step_s": statistics.mean(crit) if crit else None,
           "gen_step_cpu_s": statistics.mean(gen_cpu) if gen_cpu else None,
           "critic_step_cpu_s": statistics.mean(crit_cpu) if crit_cpu else None, "loadavg_1m": os.getloadavg()[0],
           "steps_timed": len(gen) + len(crit), "peak_mem_mib": round(peak, 1),
           "mem_kind": "cuda_max_allocated" if cuda else "cpu_peak_rss", "torch": torch.__version__,
           "threads": torch.get_num_threads()}
    print("BENCH " + json.dumps(row), flush=True)
    shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=("tiny", "1.3b"))
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--global-batch", type=int, default=2, help="kept fixed across process counts")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: cores / nproc)")
    ap.add_argument("--json", help="append result rows to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="sf_bench_train_") as work:
        write_embeddings(Path(work) / "emb", 32 if args.preset == "tiny" else 4096, 64)
        for n in args.nproc:
            if args.global_batch % n:
                raise SystemExit(f"--global-batch {args.global_batch} is not divisible by {n} processes")
            threads = args.threads or max(1, (os.cpu_count() or 1) // n)
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                   __file__, "--child", "--work", work, "--preset", args.preset, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--batch", str(args.global_batch // n), "--threads", str(threads)]
            env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                       PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            got = [json.loads(line[6:]) for line in r.stdout.splitlines() if line.startswith("BENCH ")]
            if r.returncode or len(got) != n:
                sys.stderr.write(r.stderr[-4000:])
                raise SystemExit(f"benchmark with {n} processes failed (exit {r.returncode})")
            rows += sorted(got, key=lambda x: x["rank"])
    print("| preset | processes | rank | device | batch/rank | gen+critic step: wall s (CPU s) | critic step: wall s "
          "(CPU s) | peak memory (MiB) | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for x in rows:
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {x['preset']} | {x['world']} | {x['rank']} | {x['device']} | {x['batch_per_rank']} | "
              f"{fmt(x['gen_step_s'])} ({fmt(x['gen_step_cpu_s'])}) | {fmt(x['critic_step_s'])} "
              f"({fmt(x['critic_step_cpu_s'])}) | {x['peak_mem_mib']} ({x['mem_kind']}) | {x['loadavg_1m']:.1f} |")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for x in rows:
                f.write(json.dumps(x) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
