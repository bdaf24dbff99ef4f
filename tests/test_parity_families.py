"""Parity with the official code of the other checkpoint families, replaying their recorded fixtures
(tests/fixtures/*_ref_tiny.safetensors whose metadata names a `family`) through `python -m sf_core.parity`."""
import json
from pathlib import Path

import pytest
from safetensors import safe_open

from sf_core.fixture import Fixture
from sf_core.parity import failures, main, run_all

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _family_fixtures():
    out = []
    for p in sorted(FIXTURES.glob("*.safetensors")):
        with safe_open(str(p), "pt") as f:
            meta = (f.metadata() or {}).get("meta_json")
        if meta is not None and "family" in json.loads(meta):
            out.append(p)
    return out


FILES = _family_fixtures()


def test_there_are_family_fixtures():
    assert any("rolling_forcing" in p.read_bytes()[:20000].decode("latin1") for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_family_fixture_parity(path):
    fx = Fixture.load(path)
    results = run_all(fx)
    assert failures(results) == [] and results
    assert main([str(path), "--threads", "1"]) == 0
    if fx.meta["family"] == "rolling_forcing":
        r = results["RF_rolling_window"]
        assert {"kv_cache", "window_x0", "output_latents"} <= set(r)
        assert fx.latent("infer/output_latents").abs().max() > 1  # not vacuous: O(1) outputs compared


def test_rolling_parity_detects_a_wrong_model_or_attention(monkeypatch):
    path = next(p for p in FILES if "rf_" in p.name)
    fx = Fixture.load(path)
    key = "weights/blocks.1.cross_attn.k.weight"
    fx.tensors[key] = fx.tensors[key] * 1.001
    assert failures(run_all(fx))
    import sf_core.rolling as rolling

    monkeypatch.setattr(rolling, "span_frames", lambda cache, chunk: cache.window_frames)  # attend to 24, not 21
    assert failures(run_all(Fixture.load(path)))
