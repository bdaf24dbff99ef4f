"""Build the pack's workflows in both formats from one description (a developer tool; not loaded by ComfyUI).

    python workflows/build_workflows.py            # rewrites workflows/*.json and example_workflows/*.json

Each graph is declared once (nodes, widget values by input name, links). The API format (`*.api.json`, what
POST /prompt takes) and the UI format (LiteGraph, what the editor and the template browser load) are both
derived from it with the node schemas: core nodes from ComfyUI's /object_info (the snapshot in
shared/comfy/object_info.json), the pack's nodes from their code. tests/test_workflows.py checks both files
against the schemas and against each other.
"""
from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from workflow_schema import load_schemas  # noqa: E402  (tests/workflow_schema.py)

T2V_PROMPT = ("A red fox trotting through fresh snow in a quiet pine forest at sunrise, soft golden light, "
              "tracking shot, breath visible in the cold air, highly detailed, cinematic")
STORY = [
    (7, "The fox stops at the edge of a frozen lake and looks across the ice, mountains in the background, "
        "golden light, tracking shot, cinematic"),
    (14, "The fox runs across the frozen lake, snow spraying behind it, low camera following close, cinematic"),
]
SF_MODEL = "self_forcing_dmd.safetensors"
CLIP = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "wan_2.1_vae.safetensors"


def loaders(g: list, y: int = 0) -> None:
    g += [
        dict(id=1, type="UNETLoader", pos=[0, y], widgets=dict(unet_name=SF_MODEL, weight_dtype="default"),
             title="Load Self Forcing model (diffusion_models)"),
        dict(id=2, type="CLIPLoader", pos=[0, y + 140], widgets=dict(clip_name=CLIP, type="wan", device="default")),
        dict(id=3, type="VAELoader", pos=[0, y + 290], widgets=dict(vae_name=VAE)),
    ]


def sampler_widgets(**over) -> dict:
    w = dict(width=832, height=480, length=81, batch_size=1, seed=42, timesteps="1000,750,500,250",
             warp_timesteps=True, shift=5.0, chunk_frames=3, window_frames=21, sink_frames=3, fps=16.0,
             live_preview=True)
    w.update(over)
    return w


def text_to_video() -> list:
    g: list = []
    loaders(g)
    g += [
        dict(id=4, type="CLIPTextEncode", pos=[420, 0], widgets=dict(text=T2V_PROMPT), links=dict(clip=(2, 0)),
             title="Prompt"),
        dict(id=5, type="EmptyHunyuanLatentVideo", pos=[420, 260],
             widgets=dict(width=832, height=480, length=81, batch_size=1), title="Video size (81 frames = 5 s)"),
        dict(id=6, type="SF_CausalSampler", pos=[860, 0], widgets=sampler_widgets(),
             links=dict(model=(1, 0), positive=(4, 0), latent=(5, 0))),
        dict(id=7, type="SF_StreamingDecode", pos=[1300, 0], widgets=dict(chunk_frames=3, fps=16.0, live_preview=True),
             links=dict(samples=(6, 0), vae=(3, 0), session=(6, 1))),
        dict(id=8, type="CreateVideo", pos=[1700, 0], widgets=dict(fps=16.0), links=dict(images=(7, 0))),
        dict(id=9, type="SaveVideo", pos=[2000, 0],
             widgets=dict(filename_prefix="video/self_forcing", format="auto", codec="auto"),
             links=dict(video=(8, 0))),
        dict(id=10, type="SF_SaveSession", pos=[1300, 420],
             widgets=dict(filename_prefix="selfforcing/session", include_cache=True), links=dict(session=(7, 1))),
    ]
    return g


def long_video() -> list:
    g: list = []
    loaders(g)
    g += [dict(id=4, type="CLIPTextEncode", pos=[420, 0], widgets=dict(text=T2V_PROMPT), links=dict(clip=(2, 0)),
               title="Prompt (chunks 0-6)")]
    prev = None
    for i, (start, text) in enumerate(STORY):
        enc, node = 20 + 2 * i, 21 + 2 * i
        g.append(dict(id=enc, type="CLIPTextEncode", pos=[420, 260 + 260 * i], widgets=dict(text=text),
                      links=dict(clip=(2, 0)), title=f"Prompt from chunk {start}"))
        links = dict(conditioning=(enc, 0))
        if prev is not None:
            links["previous"] = (prev, 0)
        g.append(dict(id=node, type="SF_PromptSchedule", pos=[860, 300 + 200 * i],
                      widgets=dict(start_chunk=start, switch_policy="recache", transition_chunks=2), links=links))
        prev = node
    g += [
        dict(id=6, type="SF_CausalSampler", pos=[1260, 0],
             widgets=sampler_widgets(length=237, seed=7),
             links=dict(model=(1, 0), positive=(4, 0), prompt_schedule=(prev, 0), vae=(3, 0)),
             title="SF Causal Sampler (237 frames = 20 chunks, rolling window)"),
        dict(id=8, type="CreateVideo", pos=[1700, 0], widgets=dict(fps=16.0), links=dict(images=(6, 2))),
        dict(id=9, type="SaveVideo", pos=[2000, 0],
             widgets=dict(filename_prefix="video/self_forcing_long", format="auto", codec="auto"),
             links=dict(video=(8, 0))),
    ]
    return g


def continue_session() -> list:
    g: list = []
    loaders(g)
    g += [
        dict(id=4, type="CLIPTextEncode", pos=[420, 0], widgets=dict(text=STORY[0][1]), links=dict(clip=(2, 0)),
             title="Prompt for the continuation"),
        dict(id=5, type="SF_LoadSession", pos=[420, 260],
             widgets=dict(session_file="selfforcing/session_00001.safetensors"), links=dict(model=(1, 0))),
        dict(id=6, type="SF_ContinueSession", pos=[860, 0],
             widgets=dict(chunks=7, switch_policy="recache", fps=16.0, live_preview=True),
             links=dict(model=(1, 0), session=(5, 0), positive=(4, 0), vae=(3, 0))),
        dict(id=8, type="CreateVideo", pos=[1300, 0], widgets=dict(fps=16.0), links=dict(images=(6, 2))),
        dict(id=9, type="SaveVideo", pos=[1600, 0],
             widgets=dict(filename_prefix="video/self_forcing_continued", format="auto", codec="auto"),
             links=dict(video=(8, 0))),
        dict(id=10, type="SF_SaveSession", pos=[1300, 320],
             widgets=dict(filename_prefix="selfforcing/session", include_cache=True), links=dict(session=(6, 1))),
    ]
    return g


def toy_demo() -> list:
    return [
        dict(id=1, type="SF_LoadToyModel", pos=[0, 0], widgets=dict(upscale=4)),
        dict(id=2, type="SF_ToyTextEncode", pos=[0, 200], widgets=dict(text="a red square moving right fast")),
        dict(id=3, type="SF_EmptyToyLatent", pos=[0, 360], widgets=dict(frames=48, batch_size=1),
             title="SF Empty Toy Latent (48 frames = 6 s)"),
        dict(id=4, type="SF_CausalSampler", pos=[420, 0],
             widgets=sampler_widgets(width=32, height=32, length=81, seed=0, window_frames=12, sink_frames=0,
                                     fps=8.0),
             links=dict(model=(1, 0), positive=(2, 0), latent=(3, 0), preview_decoder=(1, 1)),
             title="SF Causal Sampler (toy: 12-frame rolling window)"),
        dict(id=5, type="SF_StreamingDecode", pos=[860, 0], widgets=dict(chunk_frames=3, fps=8.0, live_preview=False),
             links=dict(samples=(4, 0), decoder=(1, 1), session=(4, 1))),
        dict(id=6, type="CreateVideo", pos=[1260, 0], widgets=dict(fps=8.0), links=dict(images=(5, 0))),
        dict(id=7, type="SaveVideo", pos=[1560, 0],
             widgets=dict(filename_prefix="video/self_forcing_toy", format="auto", codec="auto"),
             links=dict(video=(6, 0))),
    ]


WORKFLOWS = {
    "self_forcing_toy_demo": toy_demo,
    "self_forcing_text_to_video": text_to_video,
    "self_forcing_long_video_prompt_schedule": long_video,
    "self_forcing_continue_session": continue_session,
}


# ---------------------------------------------------------------------------------------------- conversion
def to_api(graph: list, schemas: dict) -> dict:
    api = {}
    for n in graph:
        inputs = dict(n.get("widgets", {}))
        for name, (src, slot) in n.get("links", {}).items():
            inputs[name] = [str(src), slot]
        s = schemas[n["type"]]
        order = [i for i in s["order"] if i in inputs]
        api[str(n["id"])] = {"inputs": {k: inputs[k] for k in order}, "class_type": n["type"],
                             "_meta": {"title": n.get("title") or s["display_name"]}}
    return api


def to_ui(graph: list, schemas: dict) -> dict:
    links, nodes = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    for n in graph:
        for name, (src, slot) in n.get("links", {}).items():
            lid = len(links) + 1
            src_type = schemas[next(m["type"] for m in graph if m["id"] == src)]["outputs"][slot][1]
            links.append([lid, src, slot, n["id"], name, src_type])
            out_links.setdefault((src, slot), []).append(lid)
    for order, n in enumerate(graph):
        s = schemas[n["type"]]
        link_in = {name: next(l for l in links if l[3] == n["id"] and l[4] == name)
                   for name in n.get("links", {})}
        inputs = []
        for name in s["order"]:
            if name in s["sockets"] and (name in link_in or not s["optional"].get(name)):
                inputs.append({"name": name, "type": s["sockets"][name],
                               "link": link_in[name][0] if name in link_in else None})
        widgets = []
        for name in s["order"]:
            if name in s["widgets"]:
                widgets.append(n["widgets"].get(name, s["widgets"][name]))
                if name in s["control"]:
                    widgets.append("fixed")
        outputs = [{"name": oname, "type": otype, "slot_index": i, "links": out_links.get((n["id"], i), [])}
                   for i, (oname, otype) in enumerate(s["outputs"])]
        node = {"id": n["id"], "type": n["type"], "pos": n["pos"], "size": [380, 60 + 26 * (len(widgets) + 1)],
                "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": n["type"]}, "widgets_values": widgets}
        if n.get("title"):
            node["title"] = n["title"]
        nodes.append(node)
    for l in links:  # LiteGraph links name the target slot by index among the node's socket inputs
        tgt = next(x for x in nodes if x["id"] == l[3])
        l[4] = next(i for i, inp in enumerate(tgt["inputs"]) if inp["name"] == l[4])
    return {"id": "", "revision": 0,
            "last_node_id": max(n["id"] for n in graph), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [0, 0]}},
            "version": 0.4}


def build(out_dirs=(HERE, ROOT / "example_workflows")) -> list[Path]:
    schemas = load_schemas()
    written = []
    for name, make in WORKFLOWS.items():
        graph = make()
        ui = to_ui(graph, schemas)
        ui["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-self-forcing/{name}"))
        api = to_api(graph, schemas)
        for d in out_dirs:
            d.mkdir(exist_ok=True)
            ui_path = d / f"{name}.json"
            ui_path.write_text(json.dumps(ui, indent=1, ensure_ascii=False) + "\n")
            written.append(ui_path)
            if d == HERE:
                api_path = d / f"{name}.api.json"
                api_path.write_text(json.dumps(api, indent=1, ensure_ascii=False) + "\n")
                written.append(api_path)
    return written


if __name__ == "__main__":
    for p in build():
        print(p.relative_to(ROOT))
