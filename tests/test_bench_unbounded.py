"""bench/bench_unbounded.py keeps its promise of resumability: a batch stopped between saves and run again
gives exactly the scores of an uninterrupted run, and the report reads them back."""
import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sf_core.sampling.pipeline as pipeline

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_unbounded", ROOT / "bench" / "bench_unbounded.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stopped_batch_resumes_bit_identically(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    bench = _bench()
    prompts = ["a red square moving right slow", "a blue circle moving down fast"]
    full = bench.run_batch(tmp_path / "a", 0, prompts, 60, "auto", save_every=1)
    real, chunks = pipeline.generate, []

    def stops_after_two(*a, on_chunk, **k):  # stopped in the 3rd save interval, after its first 2 chunks

        def counting(r):
            if len(chunks) == 10:
                raise KeyboardInterrupt
            chunks.append(1)
            on_chunk(r)
        return real(*a, on_chunk=counting, **k)

    monkeypatch.setattr(pipeline, "generate", stops_after_two)
    with pytest.raises(KeyboardInterrupt):
        bench.run_batch(tmp_path / "b", 0, prompts, 60, "auto", save_every=1)
    assert len(list((tmp_path / "b").glob("*.session.safetensors"))) == 1  # older sessions removed
    monkeypatch.setattr(pipeline, "generate", real)
    resumed = bench.run_batch(tmp_path / "b", 0, prompts, 60, "auto", save_every=1)
    a, b = load_file(str(full)), load_file(str(resumed))
    assert a["sums"].shape == (2, 5, len(bench.METRICS))  # 60 frames = 5 windows of 12
    assert torch.equal(a["sums"], b["sums"]) and torch.equal(a["counts"], b["counts"])
    assert len(b["cpu"]) == 20  # one CPU time per chunk of 3 frames

    with pytest.raises(SystemExit, match="other videos"):
        bench.run_batch(tmp_path / "b", 0, prompts[:1], 60, "auto", save_every=1)
    rep = bench.aggregate([full])
    assert rep["videos"] == 2 and rep["windows"] == 5 and rep["done"] and not bench.aggregate([full], 2)["done"]
    assert rep["metrics"]["shape_acc"]["drift_last_1000_minus_first_1000"] is None  # 60 frames: no two spans
    assert rep["metrics"]["colour_acc"]["frames_36_47"] == pytest.approx(float(
        a["sums"][:, 3, 1].sum() / a["counts"][:, 3, 1].sum()))
