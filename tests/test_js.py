"""The live player's pure logic (js/lib) through node's own test runner (js/tests/*.test.mjs)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_player_logic_with_node_test_runner():
    out = subprocess.run(["node", "--test", "tests/"], cwd=ROOT / "js", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "# fail 0" in out.stdout and "# pass " in out.stdout
