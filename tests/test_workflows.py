"""Every shipped workflow is valid against the node schemas, and its UI and API formats agree.

Schemas: core nodes from ComfyUI's /object_info snapshot (shared/comfy/object_info.json), the pack's nodes
from their code. File-name combos are free strings; the 18 audio nodes missing from the snapshot's CPU host
are accepted. The UI -> API conversion here is written independently of workflows/build_workflows.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workflow_schema import FILE_COMBOS, MISSING_AUDIO_NODES, load_schemas, object_info_path

ROOT = Path(__file__).resolve().parents[1]
API_FILES = sorted((ROOT / "workflows").glob("*.api.json"))
UI_FILES = sorted(p for p in (ROOT / "workflows").glob("*.json") if not p.name.endswith(".api.json"))
TEMPLATES = sorted((ROOT / "example_workflows").glob("*.json"))

pytestmark = pytest.mark.skipif(object_info_path() is None, reason="shared/comfy/object_info.json not found")


@pytest.fixture(scope="module")
def schemas():
    return load_schemas()


def check_value(node_type: str, name: str, spec, value) -> str | None:
    typ, opts = spec
    if typ == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name}={value!r} is not an int"
    elif typ == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name}={value!r} is not a number"
    elif typ == "BOOLEAN":
        if not isinstance(value, bool):
            return f"{name}={value!r} is not a boolean"
    elif typ == "STRING":
        if not isinstance(value, str):
            return f"{name}={value!r} is not a string"
    elif typ == "COMBO":
        if (node_type, name) in FILE_COMBOS:
            return None if isinstance(value, str) and value else f"{name}: empty file name"
        if value not in opts.get("options", []):
            return f"{name}={value!r} not in {opts.get('options')}"
    if typ in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
            return f"{name}={value} outside [{opts.get('min')}, {opts.get('max')}]"
    return None


def validate_api(api: dict, schemas: dict) -> list[str]:
    errors = []
    for nid, node in api.items():
        t = node["class_type"]
        if t in MISSING_AUDIO_NODES:
            continue
        if t not in schemas:
            errors.append(f"#{nid}: unknown node type {t}")
            continue
        s = schemas[t]
        inputs = node["inputs"]
        for name in inputs:
            if name not in s["order"]:
                errors.append(f"#{nid} {t}: unknown input {name}")
        for name in s["order"]:
            if name not in inputs:
                if not s["optional"][name]:
                    errors.append(f"#{nid} {t}: missing required input {name}")
                continue
            v = inputs[name]
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                src = api.get(v[0])
                if src is None:
                    errors.append(f"#{nid} {t}.{name}: link to missing node {v[0]}")
                    continue
                st = src["class_type"]
                if st in MISSING_AUDIO_NODES:
                    continue
                outs = schemas[st]["outputs"]
                if not 0 <= v[1] < len(outs):
                    errors.append(f"#{nid} {t}.{name}: output {v[1]} of {st} does not exist")
                    continue
                want = s["sockets"].get(name) or s["specs"][name][0]
                if outs[v[1]][1] != want and "*" not in (want, outs[v[1]][1]):
                    errors.append(f"#{nid} {t}.{name}: {st} output {v[1]} is {outs[v[1]][1]}, input wants {want}")
            elif name in s["specs"]:
                e = check_value(t, name, s["specs"][name], v)
                if e:
                    errors.append(f"#{nid} {t}: {e}")
            else:
                errors.append(f"#{nid} {t}.{name}: socket input given a value {v!r}")
    return errors


def ui_to_api(ui: dict, schemas: dict) -> dict:
    """What the editor's 'Export (API)' produces: widget values by name (control values skipped), links."""
    links = {l[0]: l for l in ui["links"]}
    out = {}
    for n in ui["nodes"]:
        if n.get("mode", 0) != 0:
            continue
        s = schemas[n["type"]]
        inputs = {}
        vals = list(n.get("widgets_values", []))
        linked = {i["name"] for i in n["inputs"] if i.get("link") is not None}
        for name in s["order"]:
            if name in s["specs"]:
                if not vals:
                    raise AssertionError(f"node {n['id']} {n['type']}: too few widgets_values for {name}")
                v = vals.pop(0)
                if name in s["control"]:
                    assert vals and vals.pop(0) in ("fixed", "increment", "decrement", "randomize")
                if name not in linked:
                    inputs[name] = v
        assert not vals, f"node {n['id']} {n['type']}: {len(vals)} widgets_values left over"
        for i in n["inputs"]:
            if i.get("link") is not None:
                l = links[i["link"]]
                assert l[3] == n["id"], f"link {l} does not end at node {n['id']}"
                inputs[i["name"]] = [str(l[1]), l[2]]
        out[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return out


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_is_valid(path, schemas):
    api = json.loads(path.read_text())
    assert api, f"{path.name} is empty"
    assert validate_api(api, schemas) == []


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_and_api_formats_agree(path, schemas):
    ui = json.loads(path.read_text())
    for key in ("nodes", "links", "version", "last_node_id", "last_link_id"):
        assert key in ui
    for l in ui["links"]:  # both ends of every link know about it
        src = next(n for n in ui["nodes"] if n["id"] == l[1])
        dst = next(n for n in ui["nodes"] if n["id"] == l[3])
        assert l[0] in src["outputs"][l[2]]["links"]
        assert dst["inputs"][l[4]]["link"] == l[0]
    got = ui_to_api(ui, schemas)
    assert validate_api(got, schemas) == []
    api_path = path.with_name(path.name[:-5] + ".api.json")
    if api_path.exists():
        api = json.loads(api_path.read_text())
        assert {k: (v["class_type"], v["inputs"]) for k, v in got.items()} == \
            {k: (v["class_type"], v["inputs"]) for k, v in api.items()}


def test_templates_match_workflows():
    assert TEMPLATES and {p.name for p in TEMPLATES} <= {p.name for p in UI_FILES}
    for p in TEMPLATES:
        assert json.loads(p.read_text()) == json.loads((ROOT / "workflows" / p.name).read_text())


def test_validator_rejects_broken_workflows(schemas):
    api = json.loads((ROOT / "workflows" / "self_forcing_text_to_video.api.json").read_text())
    sampler = next(k for k, v in api.items() if v["class_type"] == "SF_CausalSampler")
    bad = json.loads(json.dumps(api))
    bad[sampler]["inputs"]["chunk_frames"] = 0
    del bad[sampler]["inputs"]["seed"]
    bad[sampler]["inputs"]["positive"] = [next(k for k, v in api.items() if v["class_type"] == "VAELoader"), 0]
    errs = validate_api(bad, schemas)
    assert any("chunk_frames=0 outside" in e for e in errs)
    assert any("missing required input seed" in e for e in errs)
    assert any("positive: VAELoader output 0 is VAE" in e for e in errs)
    assert validate_api({"1": {"class_type": "SaveAudio", "inputs": {}}}, schemas) == []
    assert validate_api({"1": {"class_type": "NoSuchNode", "inputs": {}}}, schemas) == ["#1: unknown node type NoSuchNode"]
