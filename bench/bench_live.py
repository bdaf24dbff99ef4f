"""Benchmark (not a test): a long live toy stream through `python -m sf_core live`, and control latency.

    .venv/bin/python bench/bench_live.py                       # 2,000 chunks vs 100 chunks, toy, CPU
    .venv/bin/python bench/bench_live.py --chunks 200 --short 50   # quicker

1. Flatness: a `--chunks`-chunk live run (a prompt switch every 50 chunks, alternating re-cache and a 2-chunk
   blend, scripted with `@N` control lines) and a `--short`-chunk run, each in its own process. Reports the
   per-chunk CPU time of the last 100 chunks / chunks 10-110 (median ratio; target <= 1.10), the processes' peak
   RSS (long / short; target <= 1.05), and checks the mp4: frames decoded == frames generated.
2. Control-to-display latency: in-process, controls submitted from another thread at random moments; for each,
   the time from the request to the end of the first chunk generated under the new prompt (its frames are then
   decoded and handed to the player / file), in ms and in chunks.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red square moving right slow", "a blue circle moving down slow", "a green triangle moving left fast",
           "a yellow square moving up fast"]


def run_cli(chunks: int, out: Path, threads: int) -> dict:
    script = "".join(f"@{k} {'prompt' if (k // 50) % 2 else 'blend 2'} {PROMPTS[(k // 50) % len(PROMPTS)]}\n"
                     for k in range(50, chunks, 50))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "sf_core", "live", "--model", "toy", "--prompt", PROMPTS[0], "-q",
                        "--max-chunks", str(chunks), "--threads", str(threads), "-o", str(out)],
                       input=script, capture_output=True, text=True, env=env, check=True)
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    return {"chunks": lines[:-1], "summary": lines[-1], "wall_s": time.perf_counter() - t0}


def flatness(args) -> dict:
    from sf_core.video import probe_video

    with tempfile.TemporaryDirectory() as d:
        short = run_cli(args.short, Path(d) / "short.mp4", args.threads)
        long = run_cli(args.chunks, Path(d) / "long.mp4", args.threads)
        probe = probe_video(Path(d) / "long.mp4")
    cpu = [c["cpu_s"] for c in long["chunks"]]
    early, late = cpu[10:110], cpu[-100:]
    return {
        "chunks": len(cpu), "switches": sum(1 for c in long["chunks"] if c.get("actions")),
        "cpu_s_chunks_10_110_median": round(statistics.median(early), 5),
        "cpu_s_last_100_median": round(statistics.median(late), 5),
        "cpu_ratio_last100_over_10_110": round(statistics.median(late) / statistics.median(early), 3),
        "cpu_ratio_means": round(statistics.mean(late) / statistics.mean(early), 3),
        "peak_rss_mb_long": long["summary"]["peak_rss_mb"], "peak_rss_mb_short": short["summary"]["peak_rss_mb"],
        "rss_ratio_long_over_short": round(long["summary"]["peak_rss_mb"] / short["summary"]["peak_rss_mb"], 3),
        "mp4_frames": probe["frames"], "generated_frames": long["summary"]["video_frames"],
        "latent_frames": long["summary"]["latent_frames"], "wall_s_long": round(long["wall_s"], 1),
    }


def latency(args) -> dict:
    import torch

    from sf_core.sampling.live import LiveRun, make_control
    from sf_core.sampling.pipeline import as_bundle
    from sf_core.sampling.session import new_session
    from sf_core.toy import load_toy_bundle

    torch.set_num_threads(args.threads)
    b = as_bundle(load_toy_bundle())
    enc = lambda t: b.text_encoder.encode([t])  # noqa: E731
    sess = new_session(b.transformer, enc(PROMPTS[0]), latent_hw=b.latent_hw, seed=0, settings=b.settings)
    run = LiveRun(b.transformer, sess, encode=enc, prompt=PROMPTS[0], decoder=b.decoder,
                  max_chunks=args.latency_switches * 6 + 10)
    rng = random.Random(0)
    pending: dict[str, float] = {}
    results: list[dict] = []
    chunk_s: list[float] = []

    def on_chunk(c):
        chunk_s.append(c.result.seconds)
        if c.prompt in pending:
            t_req = pending.pop(c.prompt)
            results.append({"ms": 1000 * (time.perf_counter() - t_req)})
        if c.result.index % 6 == 2 and not pending and len(results) < args.latency_switches:
            text = PROMPTS[(c.result.index // 6) % len(PROMPTS)]
            if text == c.prompt:
                text = PROMPTS[(PROMPTS.index(text) + 1) % len(PROMPTS)]
            delay = rng.uniform(0, c.result.seconds)

            def send(t=text, dly=delay):
                time.sleep(dly)
                pending[t] = time.perf_counter()
                run.submit(make_control("prompt", t))
            threading.Thread(target=send, daemon=True).start()

    run.run(on_chunk=on_chunk)
    mean_chunk = statistics.mean(chunk_s)
    ms = [r["ms"] for r in results]
    return {"switches": len(ms), "latency_ms_median": round(statistics.median(ms), 1),
            "latency_ms_max": round(max(ms), 1), "chunk_ms_mean": round(1000 * mean_chunk, 1),
            "latency_chunks_median": round(statistics.median(ms) / (1000 * mean_chunk), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--short", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latency-switches", type=int, default=20)
    ap.add_argument("--skip-flatness", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    report = {"cpu_count": os.cpu_count(), "threads": args.threads}
    if not args.skip_flatness:
        report["flatness"] = flatness(args)
    report["latency"] = latency(args)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
