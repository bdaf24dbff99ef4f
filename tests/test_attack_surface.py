"""The attack surface of the nodes, with the host stand-ins (issue 27): every node input that names a file, the
training node's overrides, and crafted session files. ComfyUI's /prompt has no authentication, so each input is
treated as hostile. The same checks against the real server: tests/test_attack_surface_host.py.

- item 1: SF Load Conditioning reads only inside the input folder (`..`, absolute paths and links refused, and
  the refusal does not say whether the file exists);
- item 2: the training node refuses "module:function" reward specs (overrides or a config file) before any
  import, and every path it hands the trainer must lie in ComfyUI's folders;
- item 3: a crafted session file is refused before its declared cache is allocated;
- item 5: every writer resolves links before requiring the output folder.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nodes_harness import install_stubs
from sessions_kit import HW, conditioning, tiny_model


@pytest.fixture()
def comfy(tmp_path):
    install_stubs(str(tmp_path / "comfy"))
    import folder_paths

    out, inp = Path(folder_paths.get_output_directory()), Path(folder_paths.get_input_directory())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    secret = elsewhere / "secret.safetensors"
    save_file({"context": torch.full((4, 8), 7.0)}, str(secret))
    save_file({"context": torch.ones(4, 8)}, str(inp / "mine.safetensors"))
    return {"out": out, "inp": inp, "secret": secret, "tmp": tmp_path}


# ------------------------------------------------------------------------------------------ item 1
def test_load_conditioning_reads_inside_the_input_folder(comfy):
    from nodes.loaders import LoadConditioning

    cond = LoadConditioning.run(file="mine.safetensors", key="")[0]
    assert torch.equal(cond[0][0], torch.ones(1, 4, 8))
    cond = LoadConditioning.run(file=str(comfy["inp"] / "mine.safetensors"), key="")[0]
    assert torch.equal(cond[0][0], torch.ones(1, 4, 8))


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "symlinked_folder"])
def test_load_conditioning_refuses_files_outside(comfy, how):
    from nodes.host import NodeInputError
    from nodes.loaders import LoadConditioning

    secret, inp = comfy["secret"], comfy["inp"]
    if how == "absolute":
        name, missing = str(secret), str(secret.with_name("nope.safetensors"))
    elif how == "dotdot":
        name = os.path.relpath(secret, inp)
        missing = os.path.relpath(secret.with_name("nope.safetensors"), inp)
        assert name.startswith("..")
    elif how == "symlink":
        (inp / "link.safetensors").symlink_to(secret)
        (inp / "dangling.safetensors").symlink_to(secret.with_name("nope.safetensors"))
        name, missing = "link.safetensors", "dangling.safetensors"
    else:
        (inp / "sub").symlink_to(secret.parent, target_is_directory=True)
        name, missing = "sub/secret.safetensors", "sub/nope.safetensors"
    with pytest.raises(NodeInputError) as exc:
        LoadConditioning.run(file=name, key="")
    msg = str(exc.value)
    assert "outside ComfyUI's input folder" in msg and "7.0" not in msg
    with pytest.raises(NodeInputError) as exc2:  # the same answer whether the file exists or not
        LoadConditioning.run(file=missing, key="")
    assert str(exc2.value).replace(missing, "X").split("(")[0] == msg.replace(name, "X").split("(")[0]


# ------------------------------------------------------------------------------------------ item 2
@pytest.fixture()
def probe(tmp_path, monkeypatch):
    """A module that records being imported and its factory being called."""
    flag = tmp_path / "probe_called"
    (tmp_path / "sf_attack_probe.py").write_text(
        f"import pathlib\npathlib.Path({str(flag)!r}).write_text('imported')\n"
        f"def make():\n    pathlib.Path({str(flag)!r}).write_text('called')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield flag
    sys.modules.pop("sf_attack_probe", None)


def _train_args(comfy, **over):
    from nodes.training import RANDOM_MODEL
    from train_kit import write_embeddings

    emb = write_embeddings(comfy["inp"] / "emb")
    args = dict(method="dmd", embeddings_dir=str(emb), generator=RANDOM_MODEL, teacher=RANDOM_MODEL,
                critic=RANDOM_MODEL, max_steps=3, batch_size=1, config_file="", overrides="",
                run_dir=comfy["out"] / "self_forcing_training" / "r")
    args.update(over)
    return args


@pytest.mark.parametrize("spec", ["reward.decoder=\"sf_attack_probe:make\"", "reward.image=\"sf_attack_probe:make\"",
                                  "reward.video=\"tempfile:mkdtemp\"", "reward.decoder=\"tempfile:mkdtemp\""])
def test_training_node_refuses_code_specs_in_overrides(comfy, probe, spec):
    from nodes.training import build_config
    from sf_core.config import ConfigError

    with pytest.raises(ConfigError, match="import and call code.*refuses") as exc:
        build_config(**_train_args(comfy, overrides=spec))
    assert "command line" in str(exc.value)
    assert not probe.exists() and "sf_attack_probe" not in sys.modules


def test_training_node_refuses_code_specs_in_a_config_file(comfy, probe):
    from nodes.training import TrainSelfForcing
    from nodes.host import NodeInputError

    (comfy["inp"] / "cfg.json").write_text(json.dumps({"reward": {"decoder": "sf_attack_probe:make"}}))
    args = _train_args(comfy)
    with pytest.raises(NodeInputError, match="refuses"):
        TrainSelfForcing.run(method="dmd", generator=args["generator"], teacher=args["teacher"],
                             critic=args["critic"], run_name="r", max_steps=3, batch_size=1, nproc_per_node=1,
                             nnodes=1, node_rank=0, master_addr="127.0.0.1", master_port=29500, resume=False,
                             data_dir=args["embeddings_dir"], config_file="cfg.json", overrides="")
    assert not probe.exists() and "sf_attack_probe" not in sys.modules
    assert not (comfy["out"] / "self_forcing_training" / "r").exists()  # nothing launched, nothing written


def test_training_node_keeps_builtin_specs_and_the_cli_keeps_factories(comfy, probe):
    from nodes.training import build_config
    from sf_core.train.reward import is_code_spec, load_decoder

    clip = comfy["inp"] / "clip_model"
    clip.mkdir()
    d = build_config(**_train_args(comfy, overrides=f"reward.image=\"clip:{clip}\""))
    assert d["reward"]["image"] == f"clip:{clip}"
    assert not is_code_spec(f"taehv:{clip}", "decoder") and not is_code_spec(f"xclip:{clip}", "video")
    assert is_code_spec("clip:x", "decoder") and is_code_spec("a.b:c", "image")
    with pytest.raises(Exception, match="no decode_chunk"):  # the CLI's documented factory form still imports
        load_decoder("sf_attack_probe:make")
    assert probe.read_text() == "called"


@pytest.mark.parametrize("override", ["out_dir=\"{tmp}/x\"", "models.generator=\"{tmp}/elsewhere/secret.safetensors\"",
                                      "data.embeddings=\"{tmp}/elsewhere\"", "checkpoint.resume=\"{tmp}/elsewhere\"",
                                      "reward.image=\"clip:{tmp}/elsewhere\""])
def test_training_node_paths_stay_in_comfyuis_folders(comfy, override):
    from nodes.host import NodeInputError
    from nodes.training import build_config

    with pytest.raises(NodeInputError, match="out_dir|outside ComfyUI"):
        build_config(**_train_args(comfy, overrides=override.format(tmp=comfy["tmp"])))


@pytest.mark.parametrize("field", ["data_dir", "config_file"])
def test_training_node_file_inputs_stay_in_comfyuis_folders(comfy, field):
    from nodes.host import NodeInputError
    from nodes.training import TrainSelfForcing

    kw = dict(method="dmd", generator="x", teacher="x", critic="x", run_name="r", max_steps=3, batch_size=1,
              nproc_per_node=1, nnodes=1, node_rank=0, master_addr="127.0.0.1", master_port=29500, resume=False,
              data_dir="emb", config_file="")
    (comfy["tmp"] / "elsewhere" / "cfg.json").write_text("{}")
    kw[field] = str(comfy["tmp"] / "elsewhere" / ("cfg.json" if field == "config_file" else ""))
    with pytest.raises(NodeInputError, match="outside ComfyUI"):
        TrainSelfForcing.run(**kw)


# ------------------------------------------------------------------------------------------ item 3
@pytest.fixture()
def session_file(comfy):
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import new_session
    from sf_core.sampling.session_io import save_session

    model = tiny_model()
    s = new_session(model, conditioning(0), latent_hw=HW, seed=3)
    generate(model, s, num_frames=6)
    return save_session(s, comfy["inp"] / "good.safetensors"), model


def _craft(src: Path, dst: Path, edit) -> Path:
    with safe_open(str(src), "pt") as f:
        md = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(md["sf_session"])
    edit(meta, tensors)
    md["sf_session"] = json.dumps(meta)
    save_file(tensors, str(dst), metadata=md)
    return dst


def _window(meta, tensors):
    meta["cache"]["window_frames"] = 60_000  # ~ the 421 KB file of the attack: gigabytes for a real model


def _capacity(meta, tensors):  # a global cache (no window, no sink, absolute positions) of a million frames
    meta["cache"].update(window_frames=None, sink_frames=0, rope_mode="absolute", relative=False, capacity=1_000_000)


def _layers(meta, tensors):
    meta["cache"]["num_layers"] = 4000


def _tokens(meta, tensors):
    meta["cache"]["tokens_per_frame"] = 900_000
    meta["latent_hw"] = [1500, 2400]


def _huge(meta, tensors):
    meta["cache"]["head_dim"] = 1 << 40


def _cacheless(meta, tensors):
    meta["cache"]["included"] = False
    for k in [k for k in tensors if k.startswith("cache.")]:
        del tensors[k]


@pytest.mark.parametrize("edit", [_window, _layers, _tokens, _huge, _cacheless])
def test_crafted_session_is_refused_before_allocating(comfy, session_file, edit, monkeypatch):
    from nodes.host import NodeInputError
    from nodes.session import LoadSession
    from sf_core.cache.kv_cache import KVCache
    from sf_core.sampling.session import SessionError
    from sf_core.sampling.session_io import load_session

    calls = []
    real = KVCache.allocate.__func__
    monkeypatch.setattr(KVCache, "allocate", classmethod(lambda cls, *a, **k: calls.append((a, k)) or real(cls, *a, **k)))
    good, model = session_file
    load_session(good)
    assert len(calls) == 1  # a real file allocates its cache
    calls.clear()
    bad = _craft(good, comfy["inp"] / "crafted.safetensors", edit)
    with pytest.raises(SessionError, match="damaged|crafted|without its KV cache"):
        load_session(bad)
    with pytest.raises(NodeInputError, match="damaged|crafted|without its KV cache"):
        LoadSession.run(session_file=str(bad))
    assert calls == []  # refused before any cache buffer was allocated


def test_a_global_cache_capacity_is_only_preallocated_up_to_the_ratio(comfy, session_file, monkeypatch):
    """A global cache grows on demand, so a huge declared capacity is a hint to clamp, not a file to refuse."""
    from sf_core.cache.kv_cache import KVCache
    from sf_core.sampling.session_io import load_session
    from sf_core.sampling.session_limits import MAX_PREALLOC_RATIO

    calls = []
    real = KVCache.allocate.__func__
    monkeypatch.setattr(KVCache, "allocate", classmethod(lambda cls, *a, **k: calls.append(k) or real(cls, *a, **k)))
    good, model = session_file
    bad = _craft(good, comfy["inp"] / "global.safetensors", _capacity)
    s = load_session(bad)
    assert calls[0]["window_frames"] is None and calls[0]["frames"] == MAX_PREALLOC_RATIO * s.cache.length
    assert s.cache.length > 0


def test_cacheless_session_with_the_wrong_model_is_refused_before_allocating(comfy, session_file, monkeypatch):
    from sf_core.cache.kv_cache import KVCache
    from sf_core.sampling.session import SessionError
    from sf_core.sampling.session_io import load_session

    good, model = session_file
    bad = _craft(good, comfy["inp"] / "cacheless.safetensors", _cacheless)
    s = load_session(bad, model)  # with its own model: recomputed
    assert s.cache.length > 0
    bad = _craft(good, comfy["inp"] / "cacheless_big.safetensors",
                 lambda m, t: (_cacheless(m, t), m["cache"].update(num_heads=64), m["model"].update(num_heads=64)))
    monkeypatch.setattr(KVCache, "allocate", classmethod(lambda *a, **k: pytest.fail("allocated")))
    with pytest.raises(SessionError, match="another model"):
        load_session(bad, model)


def test_crafted_session_peak_memory_stays_small(comfy, session_file, tmp_path):
    """In a fresh process: a file declaring a window big enough for a 400 MB layer buffer is refused, and the
    process's peak RSS stays within 100 MB of a valid load's (the old loader allocated it; touching one layer
    shows it)."""
    import subprocess

    good, _ = session_file
    with safe_open(str(good), "pt") as f:
        cm = json.loads(f.metadata()["sf_session"])["cache"]
    layer_frame = cm["batch"] * cm["tokens_per_frame"] * cm["num_heads"] * cm["head_dim"] * 4
    frames = (400 << 20) // layer_frame

    def scale(meta, tensors):
        meta["cache"]["window_frames"] = frames

    bad = _craft(good, tmp_path / "big.safetensors", scale)
    assert bad.stat().st_size < 1 << 20
    # VmHWM: this process's own peak (ru_maxrss keeps the parent's peak across fork + exec on Linux)
    code = ("import re,sys\nfrom sf_core.sampling.session_io import load_session\n"
            "hwm=lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "load_session(sys.argv[1])\nbase=hwm()\n"
            "try:\n    s=load_session(sys.argv[2]); s.cache.k[0].fill_(1); print('loaded')\n"
            "except Exception as e: print(type(e).__name__)\n"
            "print(hwm()-base)\n")
    out = subprocess.run([sys.executable, "-c", code, str(good), str(bad)], capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).resolve().parents[1])
    lines = out.stdout.split()
    assert out.returncode == 0, out.stderr[-2000:]
    assert lines[0] == "SessionError" and int(lines[1]) < 100_000, lines


# ------------------------------------------------------------------------------------------ item 5
@pytest.mark.parametrize("writer", ["live_output", "save_session"])
def test_writers_refuse_a_symlinked_folder_inside_output(comfy, writer):
    from nodes.host import NodeInputError, new_output_file

    target = comfy["tmp"] / "elsewhere"
    (comfy["out"] / "linked").symlink_to(target, target_is_directory=True)
    before = sorted(os.listdir(target))
    with pytest.raises(NodeInputError, match="outside ComfyUI's output folder"):
        if writer == "live_output":
            new_output_file("linked/live", "mp4")
        else:
            from nodes.session import SaveSession
            from sf_core.sampling.session import new_session

            s = new_session(tiny_model(), conditioning(0), latent_hw=HW, seed=3)
            SaveSession.run(session=s, filename_prefix="linked/session", include_cache=True)
    assert sorted(os.listdir(target)) == before
    path, name, sub = new_output_file("selfforcing/live", "mp4")  # a plain subfolder still works
    assert sub == "selfforcing" and Path(path).parent.is_dir()


@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_encode_training_prompts_reads_only_the_input_folder(comfy, how):
    from nodes.host import NodeInputError
    from nodes.training import EncodeTrainingPrompts

    secret = comfy["tmp"] / "elsewhere" / "prompts.txt"
    secret.write_text("a secret prompt\n")
    name = str(secret) if how == "absolute" else os.path.relpath(secret, comfy["inp"])
    with pytest.raises(NodeInputError, match="outside ComfyUI's input folder") as exc:
        EncodeTrainingPrompts.run(clip=None, prompts_file=name, negative_prompt="", name="x")
    assert "secret" not in str(exc.value).replace(str(secret), "").replace(name, "")
