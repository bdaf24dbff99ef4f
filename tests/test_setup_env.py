"""The environment setup (issue 14, items 13-15): sf_core installed editable so its commands work from any
folder, without pulling torch; numpy installed before torch is first imported; matplotlib named for the toy
evaluation."""
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = (ROOT / "scripts" / "setup_env.sh").read_text()


def _commands(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_numpy_is_installed_before_torch_is_imported_or_installed():
    lines = _commands(SCRIPT)
    numpy_at = next(i for i, ln in enumerate(lines) if re.search(r"install .*numpy", ln))
    torch_at = next(i for i, ln in enumerate(lines) if "TORCH_SPEC\"" in ln and "install" in ln)
    assert numpy_at < torch_at
    imports = [i for i, ln in enumerate(lines) if re.search(r"import torch\b", ln)]
    assert all(i > numpy_at for i in imports), imports


def test_editable_install_never_pulls_dependencies():
    installs = [ln for ln in _commands(SCRIPT) if " -e " in f" {ln} "]
    assert installs and all("--no-deps" in ln for ln in installs), installs


def test_wheel_holds_sf_core_only_and_no_torch(tmp_path):
    """Build the project as pip would (from a copy: builds write into the source folder)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "sf_core", src / "sf_core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wh"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next((tmp_path / "wh").glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"sf_core"}, tops
    assert "sf_core/toy/assets/toy_sf.safetensors" in names  # the embedded toy model ships with it
    requires = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    assert requires and not [ln for ln in requires if re.search(r"torch|nvidia|cuda", ln, re.I)], requires


def _installed() -> bool:
    try:
        importlib.metadata.version("comfyui-self-forcing")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed(), reason="sf_core is not installed in this venv (run scripts/setup_env.sh)")
def test_commands_work_from_any_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for mod in ("sf_core", "sf_core.train", "sf_core.toy"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and "usage" in r.stdout.lower(), (mod, r.stderr[-2000:])
        assert "Failed to initialize NumPy" not in r.stderr


def test_matplotlib_is_named_for_the_toy_evaluation():
    standalone = (ROOT / "requirements-standalone.txt").read_text()
    assert re.search(r"^matplotlib\b", standalone, re.M)
    assert "matplotlib" not in (ROOT / "requirements.txt").read_text()  # the ComfyUI pack does not need it


def test_toy_eval_without_matplotlib_fails_before_any_work(tmp_path, monkeypatch, capsys):
    from sf_core.toy.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    code = main(["eval", "--root", str(tmp_path / "runs"), "--videos", "1", "--out", str(tmp_path / "r.json"),
                 "--plot", str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert code == 2 and "needs matplotlib" in err and "requirements-standalone.txt" in err and "--plot ''" in err
    assert not (tmp_path / "r.json").exists()  # nothing computed, nothing written
