"""Every shipped workflow is valid against the node schemas, and its UI and API formats agree.

Also: one template card per workflow (title, thumbnail), layouts without overlaps, the saved view, the toy and
CPU-smoke-test workflows' promises. Schemas: core nodes from ComfyUI's /object_info snapshot (shared/comfy/object_info.json), the pack's nodes
from their code. File-name combos are free strings; the 18 audio nodes missing from the snapshot's CPU host
are accepted. The UI -> API conversion here is written independently of workflows/build_workflows.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from workflow_schema import FILE_COMBOS, MISSING_AUDIO_NODES, load_schemas, object_info_path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflows"))  # build_workflows, workflow_layout
API_FILES = sorted((ROOT / "workflows" / "api").glob("*.api.json"))
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


def api_name(template: Path) -> str:
    from build_workflows import WORKFLOWS  # the title -> API name table (the conversion below is independent)

    return next(w.name for w in WORKFLOWS if w.title == template.stem)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
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
    api = json.loads((ROOT / "workflows" / "api" / f"{api_name(path)}.api.json").read_text())
    assert {k: (v["class_type"], v["inputs"]) for k, v in got.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in api.items()}


def test_one_template_card_per_workflow():
    """ComfyUI lists every *.json directly in a pack's example_workflows/ *and* workflows/ folder as a template
    card: only the UI files may be there, each with its thumbnail, under a title the search finds."""
    assert not list((ROOT / "workflows").glob("*.json")), "JSON files directly in workflows/ become template cards"
    assert len(TEMPLATES) == len(API_FILES) >= 6
    for p in TEMPLATES:
        assert not p.name.endswith(".api.json")
        assert (p.with_suffix(".jpg")).is_file(), f"no thumbnail {p.with_suffix('.jpg').name}"
        assert not set(p.stem) & set("/\\#?%&."), p.stem  # the frontend puts it into URLs and i18n keys
        assert p.stem.startswith("Self Forcing ") and "_" not in p.stem
    assert any("toy demo" in p.stem.lower() for p in TEMPLATES)
    assert not [p for p in (ROOT / "example_workflows").iterdir() if p.suffix not in (".json", ".jpg")]


def test_generated_files_are_up_to_date(tmp_path):
    from build_workflows import build

    for p in build(tmp_path / "templates", tmp_path / "api"):
        shipped = (ROOT / "example_workflows" if p.parent.name == "templates" else ROOT / "workflows" / "api") / p.name
        assert shipped.is_file() and json.loads(shipped.read_text()) == json.loads(p.read_text()), \
            f"{shipped.name} is stale: run python workflows/build_workflows.py"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_layout_no_overlap_and_titles_in_view(path):
    """No two nodes (title bars included) overlap, and the saved view shows the top row's titles and every node
    on a 1600x1000 window (canvas about 1530x880 under the editor's menus)."""
    from workflow_layout import TITLE_H, overlaps

    ui = json.loads(path.read_text())
    boxes = [(*n["pos"], *n["size"]) for n in ui["nodes"]]
    assert overlaps(boxes) == [], [(ui["nodes"][i]["type"], ui["nodes"][j]["type"]) for i, j in overlaps(boxes)]
    ds = ui["extra"]["ds"]
    sx = lambda x: (x + ds["offset"][0]) * ds["scale"]  # noqa: E731  LiteGraph: screen = (graph + offset) * scale
    sy = lambda y: (y + ds["offset"][1]) * ds["scale"]  # noqa: E731
    assert min(sy(y - TITLE_H) for _, y, _, _ in boxes) >= 0 and min(sx(x) for x, *_ in boxes) >= 0
    assert max(sx(x + w) for x, _, w, _ in boxes) <= 1530 and max(sy(y + h) for _, y, _, h in boxes) <= 880


def test_toy_sampler_size_widgets_match_its_latent():
    """The toy sampler takes its size from SF Empty Toy Latent; its own (greyed-out) size widgets must not claim
    another length (81 while it makes 48 frames)."""
    api = json.loads((ROOT / "workflows" / "api" / "self_forcing_toy_demo.api.json").read_text())
    sampler = next(v for v in api.values() if v["class_type"] == "SF_CausalSampler")
    latent = api[sampler["inputs"]["latent"][0]]
    assert latent["class_type"] == "SF_EmptyToyLatent"
    assert sampler["inputs"]["length"] <= latent["inputs"]["frames"] + 1


def test_cpu_smoke_test_needs_no_downloads():
    """The CPU training smoke test runs on a bare install: no text encoder, no model file, no input file."""
    api = json.loads((ROOT / "workflows" / "api" / "training_smoke_test_cpu.api.json").read_text())
    types = {v["class_type"] for v in api.values()}
    assert not types & {"CLIPLoader", "SF_EncodeTrainingPrompts", "UNETLoader", "VAELoader"}
    train = next(v["inputs"] for v in api.values() if v["class_type"] == "SF_TrainSelfForcing")
    from workflow_schema import pack_schemas  # (installs the host stand-ins itself)

    random_model = pack_schemas()["SF_TrainSelfForcing"]["widgets"]["generator"]
    assert random_model.startswith("(random") and all(train[k] == random_model for k in ("generator", "teacher",
                                                                                         "critic"))
    assert "train_data" in train and not train["data_dir"]


def test_validator_rejects_broken_workflows(schemas):
    api = json.loads((ROOT / "workflows" / "api" / "self_forcing_text_to_video.api.json").read_text())
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
