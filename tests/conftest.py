"""Shared test helpers: tiny models with non-trivial weights, fixture discovery."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "fixtures"

torch.set_num_threads(2)


def reference_fixtures() -> list[Path]:
    """Every reference fixture in tests/fixtures (safetensors with `meta_json` metadata)."""
    from safetensors import safe_open

    out = []
    for p in sorted(FIXTURES.glob("*.safetensors")):
        with safe_open(str(p), "pt") as f:
            if "meta_json" in (f.metadata() or {}):
                out.append(p)
    return out


@pytest.fixture
def tiny_model():
    """A tiny WanTransformer (fixture size) with seeded random weights (head not zero)."""
    from sf_core.config import WanConfig
    from sf_core.model import WanTransformer, randomize_weights

    return randomize_weights(WanTransformer(WanConfig.tiny()), seed=0)
