"""bench/bench_unbounded.py keeps its promise of resumability: a batch stopped between saves and run again
gives exactly the scores of an uninterrupted run, and the report reads them back."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

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


def test_noise_of_a_window_difference_is_paired(tmp_path):
    """Videos at very different but steady levels: every window equals frames 36-47 video by video, so the noise of
    a window's difference is zero (an unpaired estimate would see the spread between videos); per-video noise of
    known size gives se = its spread / sqrt(videos)."""
    bench = _bench()
    m, v, w = len(bench.METRICS), 400, 8
    level = torch.linspace(1.0, 3.0, v)[:, None, None].expand(v, w, m).clone()
    counts = torch.full((v, w, m), 12.0)
    meta = {"metadata": {"meta": json.dumps({"done": True})}}
    save_file({"sums": level * counts, "counts": counts, "cpu": torch.ones(3)}, str(tmp_path / "a.safetensors"), **meta)
    rep = bench.aggregate([tmp_path / "a.safetensors"])
    assert all(rep["metrics"][k]["noise_rel_of_difference"] == 0.0 for k in bench.METRICS)
    g = torch.Generator().manual_seed(0)
    noisy = level + 0.1 * torch.randn(v, w, m, generator=g)
    save_file({"sums": noisy * counts, "counts": counts, "cpu": torch.ones(3)}, str(tmp_path / "b.safetensors"), **meta)
    rep = bench.aggregate([tmp_path / "b.safetensors"])
    ref = float(noisy[:, 3].mean())  # per-metric refs are all close to 2.0
    for k in bench.METRICS:  # difference of two noisy windows: spread 0.1 * sqrt(2), over sqrt(400) videos
        assert rep["metrics"][k]["noise_rel_of_difference"] == pytest.approx(0.1 * 2 ** 0.5 / 20 / ref, rel=0.15)
