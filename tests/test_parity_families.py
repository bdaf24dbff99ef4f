"""Parity with the official code of the other checkpoint families, replaying their recorded fixtures
(tests/fixtures/*_ref_tiny.safetensors whose metadata names a `family`) through `python -m sf_core.parity`."""
import json
from pathlib import Path

import pytest
from safetensors import safe_open

from sf_core.parity.fixture import Fixture
from sf_core.parity.official import failures, main, run_all

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


def _fixture(family):
    return next(p for p in FILES if Fixture.load(p).meta["family"] == family)


def test_there_are_family_fixtures():
    assert {Fixture.load(p).meta["family"] for p in FILES} >= {"rolling_forcing", "causal_forcing", "longlive"}
    assert all(p.stat().st_size < 2_000_000 for p in FILES)


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
    if fx.meta["family"] == "causal_forcing":  # every run: the preset, each call, the cache after each commit
        runs = {r["prefix"]: r for r in fx.meta["runs"]}
        assert {"fw4", "fw2", "fw1", "i2v2", "cw4"} <= set(runs)
        for p, r in runs.items():
            assert {"preset_mismatches", "call_x0", "kv_cache", "output_latents"} <= set(results[f"CF[{p}]"])
            assert fx.latent(f"{p}/output_latents").abs().max() > 1
        assert runs["fw1"]["first_chunk"] and len(runs["fw1"]["denoising_step_list"]) == 1
    if fx.meta["family"] == "longlive":  # window + sink, three switches: before, at and after the first eviction
        r = results["LL_window_recache"]
        assert {"preset_mismatches", "call_x0", "kv_cache", "kv_cache_recache", "output_latents"} <= set(r)
        assert sum(c["kind"] == "recache" for c in fx.meta["calls"]) == 3
        assert fx.latent("infer/output_latents").abs().max() > 1


def test_rolling_parity_detects_a_wrong_model_or_attention(monkeypatch):
    path = next(p for p in FILES if "rf_" in p.name)
    fx = Fixture.load(path)
    key = "weights/blocks.1.cross_attn.k.weight"
    fx.tensors[key] = fx.tensors[key] * 1.001
    assert failures(run_all(fx))
    import sf_core.sampling.rolling as rolling

    monkeypatch.setattr(rolling, "span_frames", lambda cache, chunk: cache.window_frames)  # attend to 24, not 21
    assert failures(run_all(Fixture.load(path)))


def test_causal_forcing_parity_needs_first_steps_after_an_image(monkeypatch):
    """The image-to-video run fails if the first sampled frame after the image took the 2-step schedule (the rule
    'first_steps only on an empty cache'), and every run fails with a perturbed weight."""
    import sf_core.parity.replay as fr

    path = _fixture("causal_forcing")
    real = fr.commit_frames

    def commit_then_count(model, session, latents, **kw):
        out = real(model, session, latents, **kw)
        session.sampled_chunks = 1  # as if the image were a sampled chunk
        return out
    monkeypatch.setattr(fr, "commit_frames", commit_then_count)
    bad = failures(run_all(Fixture.load(path)))
    assert bad and all(b.startswith("CF[i2v2]") for b in bad)
    monkeypatch.undo()
    fx = Fixture.load(path)
    key = "weights/blocks.0.ffn.0.weight"
    fx.tensors[key] = fx.tensors[key] * 1.001
    assert {b.split(".")[0] for b in failures(run_all(fx))} == {f"CF[{r['prefix']}]" for r in fx.meta["runs"]}


def test_longlive_parity_detects_recache_lora_and_window(monkeypatch):
    import dataclasses

    import sf_core.checkpoints.families as families
    import sf_core.parity.replay as fr
    import sf_core.sampling.recache as recache
    from sf_core.sampling.session import recommit

    path = _fixture("longlive")
    # Self Forcing's re-cache (each cached chunk causally, sink rewritten) instead of LongLive's window pass
    monkeypatch.setattr(recache, "window_recache",
                        lambda den, cache, frames, lat, ct=0.0: recommit(den, cache, frames, lat,
                                                                          _causal(cache), ct))
    bad = failures(run_all(Fixture.load(path)))
    assert any("kv_cache_recache" in b for b in bad)
    monkeypatch.undo()
    monkeypatch.setattr(fr, "merge_lora", lambda sd, lora, alpha=None: sd)  # the base generator without its LoRA
    assert any("call_x0" in b for b in failures(run_all(Fixture.load(path))))
    monkeypatch.undo()
    wide = dataclasses.replace(families.FAMILIES["longlive"], window_frames=21)  # Self Forcing's window
    monkeypatch.setitem(families.FAMILIES, "longlive", wide)
    bad = failures(run_all(Fixture.load(path)))
    assert any("preset_mismatches" in b for b in bad) and any("call_x0" in b for b in bad)


def _causal(cache):
    from sf_core.config import CausalConfig

    return CausalConfig(chunk_frames=3, window_frames=cache.window_frames, sink_frames=cache.sink_frames)
