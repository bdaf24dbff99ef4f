"""Import hygiene: sf_core never imports ComfyUI; importing anything has no side effects.

- static: no `import` of a ComfyUI module anywhere in sf_core (also inside functions, also importlib calls);
- runtime: importing every sf_core module (fresh interpreter) adds no ComfyUI module to sys.modules, prints
  nothing and initialises no CUDA;
- the pack root imports as a package without printing, without torch and without the node code, which
  loads only when ComfyUI calls `comfy_entrypoint` (checked with the real host when COMFYUI_DIR is set).
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "comfy_config", "comfy_api_nodes",
                "folder_paths", "server", "nodes", "execution", "latent_preview", "node_helpers", "comfyui_version"}


def _sf_core_files():
    return sorted((ROOT / "sf_core").rglob("*.py"))


def _imported_modules(tree: ast.AST):
    """(line, module) for every absolute import and importlib.import_module / __import__ with a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("import_module", "__import__"):
                yield node.lineno, node.args[0].value


def test_static_scan_finds_no_host_imports():
    files = _sf_core_files()
    assert len(files) > 10
    bad = []
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for line, mod in _imported_modules(tree):
            if mod.split(".")[0] in HOST_MODULES:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "sf_core must not import ComfyUI:\n" + "\n".join(bad)


def test_static_scan_catches_a_host_import():
    """The scanner is not vacuous: it sees imports at top level, in functions and through importlib."""
    src = ("import comfy.sd\n"
           "def f():\n    from folder_paths import get_full_path\n"
           "def g():\n    import importlib; importlib.import_module('comfy_api.latest')\n")
    mods = [m.split(".")[0] for _, m in _imported_modules(ast.parse(src))]
    assert {"comfy", "folder_paths", "comfy_api"} <= set(mods)


_IMPORT_ALL = r"""
import contextlib, importlib, io, json, pkgutil, sys
sys.path.insert(0, ROOT)
out, err, failed, names = io.StringIO(), io.StringIO(), {}, []
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    import sf_core
    for info in pkgutil.walk_packages(sf_core.__path__, "sf_core."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # running a CLI is not importing it
        names.append(info.name)
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed[info.name] = f"{type(exc).__name__}: {exc}"
import torch
host = sorted(m for m in sys.modules if m.split(".")[0] in HOST)
print(json.dumps({"modules": names, "failed": failed, "host": host, "stdout": out.getvalue(),
                  "stderr": err.getvalue(), "cuda_initialized": torch.cuda.is_initialized()}))
"""


def test_importing_every_sf_core_module_is_clean():
    code = f"ROOT = {str(ROOT)!r}\nHOST = {sorted(HOST_MODULES)!r}\n" + _IMPORT_ALL
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "sf_core.checkpoints.weights" in r["modules"] and "sf_core.model.forward" in r["modules"]
    assert not r["failed"], f"modules that fail to import: {r['failed']}"
    assert not r["host"], f"importing sf_core pulled in ComfyUI modules: {r['host']}"
    assert r["stdout"] == "", f"imports printed: {r['stdout'][:500]!r}"
    assert r["stderr"] == "", f"imports wrote to stderr: {r['stderr'][:500]!r}"
    assert not r["cuda_initialized"]


_IMPORT_PACK = r"""
import contextlib, importlib.util, inspect, io, json, sys
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    spec = importlib.util.spec_from_file_location("sf_pack", ROOT + "/__init__.py",
                                                  submodule_search_locations=[ROOT])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["sf_pack"] = pack
    spec.loader.exec_module(pack)
r = {"stdout": out.getvalue(), "stderr": err.getvalue(), "torch": "torch" in sys.modules,
     "loaded": sorted(m for m in sys.modules if m.startswith("sf_pack.") or m.startswith("sf_core")),
     "web": pack.WEB_DIRECTORY, "entry_is_coroutine": inspect.iscoroutinefunction(pack.comfy_entrypoint)}
if WITH_HOST:
    import asyncio
    sys.path.insert(0, HOST_DIR)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    out2 = io.StringIO()
    with contextlib.redirect_stdout(out2):
        ext = asyncio.run(pack.comfy_entrypoint())
        node_list = asyncio.run(ext.get_node_list())
    import torch
    r.update(entry_stdout=out2.getvalue(), nodes=[n.__name__ for n in node_list],
             cuda_initialized=torch.cuda.is_initialized(),
             node_modules=sorted(m for m in sys.modules if m.startswith("sf_pack.nodes")))
print(json.dumps(r))
"""


def _run_pack_import(python: str, host_dir: str | None):
    code = (f"ROOT = {str(ROOT)!r}\nWITH_HOST = {host_dir is not None!r}\nHOST_DIR = {host_dir!r}\n" + _IMPORT_PACK)
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=host_dir or str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pack_root_import_has_no_side_effects():
    r = _run_pack_import(sys.executable, None)
    assert r["stdout"] == "" and r["stderr"] == ""
    assert not r["torch"], "importing the pack root must not import torch"
    assert r["loaded"] == [], f"node / core code loaded before comfy_entrypoint: {r['loaded']}"
    assert r["entry_is_coroutine"] and r["web"] == "./js" and (ROOT / "js").is_dir()


def _comfy():
    d = os.environ.get("COMFYUI_DIR")
    if not d:
        pytest.skip("set COMFYUI_DIR (and optionally COMFY_PYTHON) to run against the real ComfyUI host")
    py = os.environ.get("COMFY_PYTHON") or str(Path(d).resolve().parent / "comfyvenv" / "bin" / "python")
    if not Path(py).exists():
        pytest.skip(f"ComfyUI's python {py} not found; set COMFY_PYTHON")
    return d, py


def test_comfy_entrypoint_loads_nodes_quietly_without_cuda():
    host_dir, py = _comfy()
    r = _run_pack_import(py, host_dir)
    assert r["stdout"] == "" and not r["torch"] and r["loaded"] == []
    assert r["nodes"], "the extension registered no nodes"
    assert r["node_modules"], "comfy_entrypoint should have loaded the node modules"
    assert r["entry_stdout"] == "", f"comfy_entrypoint printed: {r['entry_stdout'][:300]!r}"
    assert not r["cuda_initialized"]
