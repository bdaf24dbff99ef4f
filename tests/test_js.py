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


def test_frontend_served_from_one_place():
    """Issue 14 item 19: `[tool.comfy] web` and `WEB_DIRECTORY` both register js/ (under the project name and
    under the folder name), so unless the folder is named like the project the player is loaded twice and
    ComfyUI refuses the second registration. Only WEB_DIRECTORY serves it; the player also skips a second copy."""
    import ast

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "web" not in cfg["tool"]["comfy"]
    tree = ast.parse((ROOT / "__init__.py").read_text())
    web = [n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "WEB_DIRECTORY"]
    assert web == ["./js"] and (ROOT / "js" / "self_forcing_player.js").is_file()
    assert "app.extensions?.some?.((e) => e.name === EXTENSION)" in (ROOT / "js" / "self_forcing_player.js").read_text()
