"""Node schemas for offline workflow checks: core nodes from ComfyUI's /object_info snapshot, the pack's nodes
from their code (imported with the host stand-ins). Used by tests/test_workflows.py and workflows/build_workflows.py.

Per node type: display_name, order (input names, required then optional, as the editor lays out widgets),
widgets {name: default}, specs {name: (type, options)}, sockets {name: type}, optional {name: bool},
control (inputs followed by a control_after_generate value in the UI), outputs [(name, type)].
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# core nodes that the snapshot's CPU host could not import (no torchaudio); a workflow may still use them
MISSING_AUDIO_NODES = {
    "EmptyLatentAudio", "VAEEncodeAudio", "VAEDecodeAudio", "SaveAudio", "SaveAudioMP3", "SaveAudioOpus",
    "LoadAudio", "PreviewAudio", "ConditioningStableAudio", "RecordAudio", "TrimAudioDuration",
    "SplitAudioChannels", "AudioConcat", "AudioMerge", "AudioAdjustVolume", "EmptyAudio", "AudioEncoderLoader",
    "AudioEncoderEncode"}
# combos listing the host's files: any name is acceptable offline
FILE_COMBOS = {("UNETLoader", "unet_name"), ("VAELoader", "vae_name"), ("CLIPLoader", "clip_name"),
               ("CheckpointLoaderSimple", "ckpt_name"), ("LoraLoaderModelOnly", "lora_name"),
               ("SF_LoadCheckpoint", "ckpt_name"), ("SF_LoadConditioning", "file"),
               ("SF_LoadPreviewDecoder", "decoder_name"),
               ("SF_TrainSelfForcing", "generator"), ("SF_TrainSelfForcing", "teacher"),
               ("SF_TrainSelfForcing", "critic"), ("LoadImage", "image"), ("LoadVideo", "file")}


def object_info_path() -> Path | None:
    for p in (ROOT.parent / "shared" / "comfy" / "object_info.json", Path("/work/shared/comfy/object_info.json")):
        if p.is_file():
            return p
    return None


def _entry(display, required, optional, outputs) -> dict:
    e = {"display_name": display, "order": [], "widgets": {}, "specs": {}, "sockets": {}, "optional": {},
         "control": set(), "outputs": outputs}
    for group, opt in ((required, False), (optional, True)):
        for name, (typ, opts) in group.items():
            e["order"].append(name)
            e["optional"][name] = opt
            if isinstance(typ, list):
                typ, opts = "COMBO", {**opts, "options": typ}
            if typ in WIDGET_TYPES:
                e["specs"][name] = (typ, opts)
                default = opts.get("default")
                if default is None and typ == "COMBO":
                    default = (opts.get("options") or [""])[0]
                e["widgets"][name] = default
                if opts.get("control_after_generate"):
                    e["control"].add(name)
            else:
                e["sockets"][name] = typ
    return e


def core_schemas() -> dict:
    p = object_info_path()
    if p is None:
        return {}
    info = json.loads(p.read_text())
    out = {}
    for name, d in info.items():
        inp = d.get("input", {})
        req = {k: (v[0], v[1] if len(v) > 1 else {}) for k, v in inp.get("required", {}).items()}
        opt = {k: (v[0], v[1] if len(v) > 1 else {}) for k, v in inp.get("optional", {}).items()}
        order = d.get("input_order", {})
        req = {k: req[k] for k in order.get("required", list(req))}
        opt = {k: opt[k] for k in order.get("optional", list(opt))}
        outputs = [(n, t if isinstance(t, str) else "COMBO") for n, t in zip(d.get("output_name", []), d["output"])]
        out[name] = _entry(d.get("display_name") or name, req, opt, outputs)
    return out


def pack_schemas() -> dict:
    from nodes_harness import install_stubs

    install_stubs(tempfile.mkdtemp(prefix="sf_schema_"))
    from nodes import NODES

    out = {}
    for node in NODES:
        s = node.define_schema()
        req, opt = {}, {}
        for i in s.inputs:
            opts = dict(i.opts)
            (opt if i.optional else req)[i.id] = (i.io_type, opts)
        outputs = [(o.display_name or o.io_type, o.io_type) for o in s.outputs]
        out[s.node_id] = _entry(s.display_name or s.node_id, req, opt, outputs)
    return out


def load_schemas() -> dict:
    return {**core_schemas(), **pack_schemas()}
