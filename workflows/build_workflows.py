"""Build the pack's workflows in both formats from one description (a developer tool; not loaded by ComfyUI).

    python workflows/build_workflows.py      # rewrites example_workflows/*.json and workflows/api/*.api.json

Each graph is declared once (nodes, widget values by input name, links, a layout column). Two files come from it:
- `example_workflows/<title>.json`, the UI format (LiteGraph): what the editor and the template browser load.
  ComfyUI's template browser shows a pack's template under its file name and `<title>.jpg` as its thumbnail
  (workflows/make_thumbnails.py), so the file name is the card's title and what its search matches.
- `workflows/api/<name>.api.json`, the API format (what POST /prompt takes), under a stable snake_case name.
ComfyUI also lists `*.json` lying directly in a pack's `workflows/` folder as templates, so nothing but this
script lives there. Node schemas: core nodes from ComfyUI's /object_info (the snapshot in
shared/comfy/object_info.json), the pack's nodes from their code. tests/test_workflows.py checks every file
against the schemas, UI against API, and that no two nodes overlap.
"""
from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from workflow_layout import layout, view  # noqa: E402  (workflows/workflow_layout.py)
from workflow_schema import load_schemas  # noqa: E402  (tests/workflow_schema.py)

TEMPLATES_DIR = ROOT / "example_workflows"
API_DIR = HERE / "api"

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


def loaders(g: list, col: int = 0) -> None:
    g += [
        dict(id=1, type="UNETLoader", col=col, widgets=dict(unet_name=SF_MODEL, weight_dtype="default"),
             title="Load Self Forcing model (diffusion_models)"),
        dict(id=2, type="CLIPLoader", col=col, widgets=dict(clip_name=CLIP, type="wan", device="default")),
        dict(id=3, type="VAELoader", col=col, widgets=dict(vae_name=VAE)),
    ]


def sampler_widgets(**over) -> dict:
    w = dict(width=832, height=480, length=81, batch_size=1, seed=42, timesteps="1000,750,500,250",
             warp_timesteps=True, shift=5.0, chunk_frames=3, window_frames=21, sink_frames=3, fps=16.0,
             live_preview=True)
    w.update(over)
    return w


def save_video(g: list, col: int, images: tuple[int, int], fps: float, prefix: str) -> None:
    """CreateVideo above SaveVideo in the last column (SaveVideo grows downwards when it shows the video)."""
    g += [
        dict(id=8, type="CreateVideo", col=col, widgets=dict(fps=fps), links=dict(images=images)),
        dict(id=9, type="SaveVideo", col=col, widgets=dict(filename_prefix=prefix, format="auto", codec="auto"),
             links=dict(video=(8, 0))),
    ]


def text_to_video() -> list:
    g: list = []
    loaders(g)
    g += [
        dict(id=4, type="CLIPTextEncode", col=1, widgets=dict(text=T2V_PROMPT), links=dict(clip=(2, 0)),
             title="Prompt"),
        dict(id=5, type="EmptyHunyuanLatentVideo", col=1,
             widgets=dict(width=832, height=480, length=81, batch_size=1), title="Video size (81 frames = 5 s)"),
        dict(id=6, type="SF_CausalSampler", col=2, widgets=sampler_widgets(),
             links=dict(model=(1, 0), positive=(4, 0), latent=(5, 0))),
        dict(id=7, type="SF_StreamingDecode", col=3, widgets=dict(chunk_frames=3, fps=16.0, live_preview=True),
             links=dict(samples=(6, 0), vae=(3, 0), session=(6, 1))),
        dict(id=10, type="SF_SaveSession", col=3,
             widgets=dict(filename_prefix="selfforcing/session", include_cache=True), links=dict(session=(7, 1))),
    ]
    save_video(g, 4, (7, 0), 16.0, "video/self_forcing")
    return g


def long_video() -> list:
    g: list = []
    loaders(g)
    g += [dict(id=4, type="CLIPTextEncode", col=1, widgets=dict(text=T2V_PROMPT), links=dict(clip=(2, 0)),
               title="Prompt (chunks 0-6)")]
    prev = None
    for i, (start, text) in enumerate(STORY):
        enc, node = 20 + 2 * i, 21 + 2 * i
        g.append(dict(id=enc, type="CLIPTextEncode", col=1, widgets=dict(text=text),
                      links=dict(clip=(2, 0)), title=f"Prompt from chunk {start}"))
        links = dict(conditioning=(enc, 0))
        if prev is not None:
            links["previous"] = (prev, 0)
        g.append(dict(id=node, type="SF_PromptSchedule", col=2,
                      widgets=dict(start_chunk=start, switch_policy="recache", transition_chunks=2), links=links))
        prev = node
    g += [
        dict(id=6, type="SF_CausalSampler", col=3,
             widgets=sampler_widgets(length=237, seed=7),
             links=dict(model=(1, 0), positive=(4, 0), prompt_schedule=(prev, 0), vae=(3, 0)),
             title="SF Causal Sampler (237 frames = 20 chunks, rolling window)"),
    ]
    save_video(g, 4, (6, 2), 16.0, "video/self_forcing_long")
    return g


def continue_session() -> list:
    g: list = []
    loaders(g)
    g += [
        dict(id=4, type="CLIPTextEncode", col=1, widgets=dict(text=STORY[0][1]), links=dict(clip=(2, 0)),
             title="Prompt for the continuation"),
        dict(id=5, type="SF_LoadSession", col=1,
             widgets=dict(session_file="selfforcing/session_00001.safetensors"), links=dict(model=(1, 0))),
        dict(id=6, type="SF_ContinueSession", col=2,
             widgets=dict(chunks=7, switch_policy="recache", fps=16.0, live_preview=True),
             links=dict(model=(1, 0), session=(5, 0), positive=(4, 0), vae=(3, 0))),
        dict(id=10, type="SF_SaveSession", col=3,
             widgets=dict(filename_prefix="selfforcing/session", include_cache=True), links=dict(session=(6, 1))),
    ]
    save_video(g, 4, (6, 2), 16.0, "video/self_forcing_continued")
    return g


def toy_demo() -> list:
    g = [
        dict(id=1, type="SF_LoadToyModel", col=0, widgets=dict(upscale=4)),
        dict(id=2, type="SF_ToyTextEncode", col=0, widgets=dict(text="a red square moving right fast")),
        dict(id=3, type="SF_EmptyToyLatent", col=0, widgets=dict(frames=48, batch_size=1),
             title="SF Empty Toy Latent (48 frames = 6 s)"),
        # width/height/length/batch_size are unused while a latent is connected (the player greys them out)
        dict(id=4, type="SF_CausalSampler", col=1,
             widgets=sampler_widgets(width=64, height=64, length=49, seed=0, window_frames=12, sink_frames=0,
                                     fps=8.0),
             links=dict(model=(1, 0), positive=(2, 0), latent=(3, 0), preview_decoder=(1, 1)),
             title="SF Causal Sampler (toy: 12-frame rolling window)"),
        dict(id=5, type="SF_StreamingDecode", col=2, widgets=dict(chunk_frames=3, fps=8.0, live_preview=False),
             links=dict(samples=(4, 0), decoder=(1, 1), session=(4, 1))),
    ]
    save_video(g, 3, (5, 0), 8.0, "video/self_forcing_toy")
    return g


def live_widgets(**over) -> dict:
    w = dict(prompt=T2V_PROMPT, width=832, height=480, seed=42, timesteps="1000,750,500,250", warp_timesteps=True,
             shift=5.0, chunk_frames=3, window_frames=21, sink_frames=3, positions="relative", fps=16.0, max_chunks=0,
             max_minutes=0.0, keep_last_frames=0, filename_prefix="selfforcing/live")
    w.update(over)
    return w


def live_toy() -> list:
    return [
        dict(id=1, type="SF_LoadToyModel", col=0, widgets=dict(upscale=4)),
        dict(id=2, type="SF_EmptyToyLatent", col=0, widgets=dict(frames=3, batch_size=1),
             title="SF Empty Toy Latent (gives the size)"),
        dict(id=3, type="SF_LiveStream", col=1,
             widgets=live_widgets(prompt="a red square moving right slow", width=64, height=64, seed=0,
                                  window_frames=12, fps=8.0, filename_prefix="selfforcing/live_toy"),
             links=dict(model=(1, 0), clip=(1, 2), latent=(2, 0), preview_decoder=(1, 1)),
             title="SF Live Stream (type a new prompt in the player while it plays)"),
    ]


def live_wan() -> list:
    g: list = []
    loaders(g)
    g += [dict(id=6, type="SF_LiveStream", col=1, widgets=live_widgets(),
               links=dict(model=(1, 0), clip=(2, 0), vae=(3, 0)),
               title="SF Live Stream (type a new prompt in the player while it plays)")]
    return g


def image_to_video() -> list:
    g: list = []
    loaders(g)
    g += [
        dict(id=4, type="CLIPTextEncode", col=1, widgets=dict(text=T2V_PROMPT), links=dict(clip=(2, 0)),
             title="Prompt (what happens next)"),
        dict(id=5, type="LoadImage", col=1, widgets=dict(image="example.png"),
             title="Start image (832x480, or any multiple of 16)"),
        dict(id=6, type="SF_ImageToVideo", col=2,
             widgets=dict(length=73, seed=42, timesteps="1000,750,500,250", warp_timesteps=True, shift=5.0,
                          chunk_frames=3, window_frames=19, fps=16.0, live_preview=True),
             links=dict(model=(1, 0), positive=(4, 0), image=(5, 0), vae=(3, 0))),
    ]
    save_video(g, 3, (6, 2), 16.0, "video/self_forcing_i2v")
    return g


def extend_video() -> list:
    g: list = []
    loaders(g)
    g += [
        dict(id=4, type="CLIPTextEncode", col=1, widgets=dict(text=STORY[0][1]), links=dict(clip=(2, 0)),
             title="Prompt for the continuation"),
        dict(id=5, type="LoadVideo", col=1, widgets=dict(file="input.mp4"), title="The video to continue"),
        dict(id=11, type="GetVideoComponents", col=1, links=dict(video=(5, 0))),
        dict(id=6, type="SF_ExtendVideo", col=2,
             widgets=dict(chunks=7, seed=42, timesteps="1000,750,500,250", warp_timesteps=True, shift=5.0,
                          chunk_frames=3, window_frames=19, fps=16.0, live_preview=True),
             links=dict(model=(1, 0), positive=(4, 0), video=(11, 0), vae=(3, 0))),
    ]
    save_video(g, 3, (6, 2), 16.0, "video/self_forcing_extended")
    return g


def family_text_to_video(checkpoint: str, title: str, preset: str, length: int,
                         schedule: tuple[int, str] | None = None) -> list:
    """A checkpoint family's text to video (issue 11): its official file downloaded (SF Download Checkpoint records
    the family on the MODEL), the sampler's family 'auto' takes the family's preset; the widgets at their defaults."""
    g: list = [dict(id=1, type="SF_DownloadCheckpoint", col=0,
                    widgets=dict(checkpoint=checkpoint, which="auto", weight_dtype="default"), title=title)]
    loaders(g)
    del g[1]  # the UNETLoader: the download node gives the MODEL
    g.append(dict(id=4, type="CLIPTextEncode", col=1, widgets=dict(text=T2V_PROMPT), links=dict(clip=(2, 0)),
                  title="Prompt" if schedule is None else "Prompt (until the switch)"))
    links = dict(model=(1, 0), positive=(4, 0), vae=(3, 0))
    if schedule is not None:
        g += [dict(id=20, type="CLIPTextEncode", col=1, widgets=dict(text=schedule[1]), links=dict(clip=(2, 0)),
                   title=f"Prompt from chunk {schedule[0]}"),
              dict(id=21, type="SF_PromptSchedule", col=2, links=dict(conditioning=(20, 0)),
                   widgets=dict(start_chunk=schedule[0], switch_policy="recache", transition_chunks=0))]
        links["prompt_schedule"] = (21, 0)
    g.append(dict(id=6, type="SF_CausalSampler", col=3 if schedule else 2, links=links,
                  widgets=sampler_widgets(length=length, family="auto"),
                  title=f"SF Causal Sampler (family auto: {preset})"))
    save_video(g, 4 if schedule else 3, (6, 2), 16.0, f"video/{checkpoint}")
    return g


def longlive() -> list:  # LongLive's interactive switch at latent frame 40 = chunk 14; 81 latent frames = 20 s
    return family_text_to_video("longlive-base", "LongLive 1.3B (base + LoRA, merged)",
                                "LongLive preset", 321, (14, STORY[1][1]))


def causal_forcing() -> list:
    return family_text_to_video("causal-forcing-framewise-2step", "Causal Forcing++ frame-wise 2-step",
                                "Causal Forcing++", 81)


def training_smoke_test() -> list:
    return [
        dict(id=1, type="SF_ToyTrainingPrompts", col=0, widgets=dict(name="smoke_test_prompts"),
             title="Training prompts (toy text encoder: no download)"),
        dict(id=3, type="SF_TrainSelfForcing", col=1,
             widgets=dict(method="dmd", run_name="smoke_test", max_steps=4, batch_size=1, nproc_per_node=1,
                          nnodes=1, node_rank=0, master_addr="127.0.0.1", master_port=29500, resume=True,
                          data_dir="", config_file="", overrides="checkpoint.every=2\nema.start_step=1"),
             links=dict(train_data=(1, 0)),
             title="SF Train Self Forcing (random tiny nets: checks the setup on CPU in a minute)"),
        dict(id=4, type="PreviewImage", col=2, links=dict(images=(3, 1)), title="Loss curves"),
    ]


def training_dmd() -> list:
    return [
        dict(id=1, type="CLIPLoader", col=0, widgets=dict(clip_name=CLIP, type="wan", device="default"),
             title="Load the Wan text encoder (umT5)"),
        dict(id=2, type="SF_EncodeTrainingPrompts", col=0,
             widgets=dict(prompts_file="prompts.txt", negative_prompt="", name="training_prompts"),
             links=dict(clip=(1, 0)), title="Encode the training prompts once"),
        dict(id=3, type="SF_TrainSelfForcing", col=1,
             widgets=dict(method="dmd", generator="ode_init.pt", teacher="wan2.1_t2v_14B_fp16.safetensors",
                          critic="wan2.1_t2v_1.3B_fp16.safetensors", run_name="self_forcing_dmd", max_steps=600,
                          batch_size=1, nproc_per_node=8, nnodes=1, node_rank=0, master_addr="127.0.0.1",
                          master_port=29500, resume=True, data_dir="", config_file="",
                          overrides="# the official recipe: see docs/training.md\ncheckpoint.every=50"),
             links=dict(train_data=(2, 0)), title="SF Train Self Forcing (DMD, 8 GPUs)"),
        dict(id=4, type="PreviewImage", col=2, links=dict(images=(3, 1)), title="Loss curves"),
    ]


@dataclass(frozen=True)
class Workflow:
    name: str  # API file name and stable id (snake_case)
    title: str  # template file name = the card title in the template browser (no / \ # ? % .)
    build: Callable[[], list]
    toy_prompt: str | None = None  # thumbnail: frames of the toy model under this prompt; None: the graph


WORKFLOWS = [
    Workflow("self_forcing_toy_demo", "Self Forcing toy demo - runs on any CPU, no download", toy_demo,
             toy_prompt="a red square moving right fast"),
    Workflow("self_forcing_text_to_video", "Self Forcing text to video - Wan, 5 s, live player", text_to_video),
    Workflow("self_forcing_long_video_prompt_schedule",
             "Self Forcing long video - 15 s with a prompt schedule", long_video),
    Workflow("self_forcing_continue_session", "Self Forcing continue a saved session", continue_session),
    Workflow("self_forcing_live_toy", "Self Forcing live stream - toy, steer it while it plays, any CPU", live_toy,
             toy_prompt="a red square moving right slow"),
    Workflow("self_forcing_live_wan", "Self Forcing live stream - Wan, steer it while it plays", live_wan),
    Workflow("self_forcing_image_to_video", "Self Forcing image to video - Wan", image_to_video),
    Workflow("self_forcing_extend_video", "Self Forcing extend a video - Wan", extend_video),
    Workflow("longlive_text_to_video",
             "Self Forcing family LongLive - text to video, 20 s, prompt switch with re-cache", longlive),
    Workflow("causal_forcing_text_to_video", "Self Forcing family Causal Forcing - frame-wise 2-step, 5 s",
             causal_forcing),
    Workflow("training_smoke_test_cpu", "Self Forcing training smoke test - CPU, no download",
             training_smoke_test),
    Workflow("training_self_forcing_dmd", "Self Forcing DMD training - 8 GPUs", training_dmd),
]


# ---------------------------------------------------------------------------------------------- conversion
def to_api(graph: list, schemas: dict) -> dict:
    api = {}
    for n in graph:
        inputs = {name: v for name, v in n.get("widgets", {}).items()}
        for name, (src, slot) in n.get("links", {}).items():
            inputs[name] = [str(src), slot]
        s = schemas[n["type"]]
        for name in s["widgets"]:  # widgets not given take the schema default (as the editor exports them)
            inputs.setdefault(name, s["widgets"][name])
        order = [i for i in s["order"] if i in inputs]
        api[str(n["id"])] = {"inputs": {k: inputs[k] for k in order}, "class_type": n["type"],
                             "_meta": {"title": n.get("title") or s["display_name"]}}
    return api


def to_ui(graph: list, schemas: dict) -> dict:
    links, nodes = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    boxes = layout(graph, schemas)
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
                widgets.append(n.get("widgets", {}).get(name, s["widgets"][name]))
                if name in s["control"]:
                    widgets.append("fixed")
        outputs = [{"name": oname, "type": otype, "slot_index": i, "links": out_links.get((n["id"], i), [])}
                   for i, (oname, otype) in enumerate(s["outputs"])]
        x, y, w, h = boxes[n["id"]]
        node = {"id": n["id"], "type": n["type"], "pos": [x, y], "size": [w, h],
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
            "links": links, "groups": [], "config": {}, "extra": {"ds": view(boxes.values())},
            "version": 0.4}


def build(templates_dir: Path = TEMPLATES_DIR, api_dir: Path = API_DIR) -> list[Path]:
    schemas = load_schemas()
    templates_dir.mkdir(exist_ok=True)
    api_dir.mkdir(exist_ok=True)
    written = []
    for wf in WORKFLOWS:
        graph = wf.build()
        ui = to_ui(graph, schemas)
        ui["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-self-forcing/{wf.name}"))
        ui_path = templates_dir / f"{wf.title}.json"
        ui_path.write_text(json.dumps(ui, indent=1, ensure_ascii=False) + "\n")
        api_path = api_dir / f"{wf.name}.api.json"
        api_path.write_text(json.dumps(to_api(graph, schemas), indent=1, ensure_ascii=False) + "\n")
        written += [ui_path, api_path]
    return written


if __name__ == "__main__":
    for p in build():
        print(p.relative_to(ROOT))
