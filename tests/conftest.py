"""Shared test helpers: tiny models with non-trivial weights, fixture discovery."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "fixtures"

# Tiny models: one intra-op thread is fastest (OpenMP threads spinning on tiny tensors slow everything down,
# badly so on a busy machine). SF_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("SF_TEST_THREADS", "1")))


def reference_fixtures() -> list[Path]:
    """Every Self Forcing transformer reference fixture in tests/fixtures: safetensors whose `meta_json`
    metadata describes the tiny model (`tiny_config`); other fixtures there (e.g. the VAE's) have other meta."""
    from safetensors import safe_open

    out = []
    for p in sorted(FIXTURES.glob("*.safetensors")):
        with safe_open(str(p), "pt") as f:
            meta = (f.metadata() or {}).get("meta_json")
        if meta is not None and "tiny_config" in json.loads(meta):
            out.append(p)
    return out


@pytest.fixture
def tiny_model():
    """A tiny WanTransformer (fixture size) with seeded random weights (head not zero)."""
    from sf_core.config import WanConfig
    from sf_core.model.transformer import WanTransformer, randomize_weights

    return randomize_weights(WanTransformer(WanConfig.tiny()), seed=0)
