"""Optional accelerators (sf_core.model.accel): torch.compile of the blocks on CPU (inductor) gives the eager outputs, and
the CUDA-graph replay plumbing (static buffers, steady-state detection, invalidation) with an eager stand-in."""
import time

import pytest
import torch

from sessions_kit import HW, conditioning, tiny_model
from sf_core.model import accel
from sf_core.config import CausalConfig, ConfigError
from sf_core.sampling.pipeline import generate, set_prompt
from sf_core.sampling.session import SamplingSettings, new_session

ROLL = SamplingSettings(causal=CausalConfig(chunk_frames=3, window_frames=9, sink_frames=3))


def _video(model, settings=ROLL, frames=24, switch_at=None):
    s = new_session(model, conditioning(0), latent_hw=HW, seed=4, settings=settings)
    if switch_at is None:
        return generate(model, s, num_frames=frames)
    a = generate(model, s, num_frames=switch_at)
    set_prompt(s, conditioning(1))
    return torch.cat([a, generate(model, s, num_frames=frames - switch_at)], dim=2)


def test_compiled_blocks_give_the_eager_outputs_on_cpu():
    model = tiny_model()
    eager = _video(model)
    accel.compile_blocks(model)
    t0 = time.perf_counter()
    compiled = _video(model)
    first = time.perf_counter() - t0
    assert (compiled - eager).abs().max().item() <= 1e-5 * max(1.0, eager.abs().max().item())
    t0 = time.perf_counter()
    again = _video(model)  # compiled graphs are reused: no recompilation, same result
    assert time.perf_counter() - t0 < first and torch.equal(again, compiled)
    accel.disable(model)
    assert torch.equal(_video(model), eager)


class EagerCapture:
    """Stand-in for a CUDA graph: 'replay' re-runs the captured function on the same static buffers and writes
    into the output the capture returned, as a graph replay would."""

    def __init__(self, pool=None):
        self.fn = self.out = None

    def capture(self, fn):
        self.fn = fn
        self.out = fn()
        return self.out

    def replay(self):
        new = self.fn()
        if self.out is not None:
            self.out.copy_(new)


def test_steady_state_calls_are_captured_once_and_replayed_with_the_same_results():
    model = tiny_model()
    want = _video(model)
    graphs = accel.enable_cuda_graphs(model, capture=EagerCapture)
    got = _video(model)
    assert torch.equal(got, want)
    # 8 chunks; the window (9 frames, sink 3) is full from chunk 3 on: its denoising and cache-only calls repeat
    assert graphs.captures == 2 and graphs.replays > 10
    before = graphs.replays
    assert torch.equal(_video(model), want)  # a new session: new cache buffers, captured again
    assert graphs.captures == 4 and graphs.replays > before


def test_a_new_prompt_drops_the_graphs_and_a_global_cache_never_captures():
    model = tiny_model()
    want = _video(model, switch_at=15)
    graphs = accel.enable_cuda_graphs(model, capture=EagerCapture)
    assert torch.equal(_video(model, switch_at=15), want)
    assert graphs.captures >= 2
    accel.disable(model)
    graphs = accel.enable_cuda_graphs(model, capture=EagerCapture)
    glob = SamplingSettings(causal=CausalConfig(chunk_frames=3))
    want = _video(accel.disable(model), glob, frames=12)
    accel.enable_cuda_graphs(model, capture=EagerCapture)
    assert torch.equal(_video(model, glob, frames=12), want)
    assert model._sf_graphs.captures == 0  # every chunk reads more rows than the last: nothing repeats


def test_cuda_graphs_are_refused_off_cuda():
    with pytest.raises(ConfigError, match="CUDA graphs need the model on a CUDA device"):
        accel.enable_cuda_graphs(tiny_model())


def test_gpu_check_smoke_prints_every_part(capsys):
    """bench/gpu_check.py --smoke (CPU, tiny sizes): one JSON with parity, drift and every run."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["parity"]["ok_1e-4"] and len(report["parity"]["fixtures"]) >= 4
    assert 0 < report["bf16_drift"]["rel_rms_max"] < 0.05
    names = set(report["runs"])
    for compile_on in ("on", "off"):
        for kv in ("auto", "int8"):
            assert {f"wan/compile_{compile_on}/kv_{kv}/81_frames", f"taehv/compile_{compile_on}/kv_{kv}/60_s"} <= names
    assert all(r["fps"] > 0 and r["planned_peak_gib"] > 0 for r in report["runs"].values())
