"""No code runs from a training checkpoint (issue 14, item 1).

A real tiny checkpoint is written by the trainer; then each of its files gets a payload whose unpickling would
create a marker file: `.metadata` (whole, and nested inside real metadata), a non-tensor and a tensor item of the
`.distcp` shard, `rng_rank00000.pt`, `train_state.json`, plus a `.metadata` pointing a shard outside the folder.
Every entry point that loads a checkpoint is driven on each: `train run` (auto-resume and --resume PATH),
`train export --checkpoint` and `--run`, the toy trainer, and (for `.metadata`) the `python -m sf_core.train`
subprocess and the training node. The marker must never appear, the error must name the file and say it was
refused, and not a byte of the checkpoint may change. A control test shows each payload is live: the stock
loaders (plain pickle, `torch.load(weights_only=False)`, stock `dcp.load`) do run it.
"""
import dataclasses
import hashlib
import io
import json
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from train_kit import cli, tiny_config, write_config, write_embeddings


class Payload:
    """Unpickling this runs code: it creates `marker` (what an attacker's os.system call would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A run folder holding one real checkpoint (DMD, EMA started: weights, both optimisers, EMA, RNG)."""
    from sf_core.train.distributed import shutdown
    from sf_core.train.trainer import run_training

    tmp = tmp_path_factory.mktemp("sec_ckpt")
    write_embeddings(tmp / "emb", n=2)
    cfg = tiny_config(tmp, max_steps=2, checkpoint={"every": 2, "keep_last": 1}, ema={"start_step": 1},
                      export_at_end=False)
    write_config(tmp / "cfg.json", cfg)
    status, _ = run_training(cfg)
    shutdown()
    assert status["state"] == "finished"
    return tmp


def _ck(run: Path) -> Path:
    return run / "checkpoints" / "step_0000002"


def _real_metadata(ck: Path):
    return pickle.loads((ck / ".metadata").read_bytes())  # the fixture's own file: trusted here


def _plant_item(ck: Path, marker: Path, kind: str) -> None:
    """Append a payload to the shard and point one item of kind 'bytes' / 'tensor' at it (metadata stays clean)."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata

    meta = _real_metadata(ck)
    want = BytesStorageMetadata if kind == "bytes" else TensorStorageMetadata
    fqn = next(k for k, v in meta.state_dict_metadata.items() if isinstance(v, want) and k.startswith("generator"
                                                                                                     if kind == "tensor" else "optim"))
    idx = next(i for i in meta.storage_data if i.fqn == fqn)
    info = meta.storage_data[idx]
    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    shard = ck / info.relative_path
    offset = shard.stat().st_size
    with open(shard, "ab") as fh:
        fh.write(buf.getvalue())
    meta.storage_data[idx] = dataclasses.replace(info, offset=offset, length=len(buf.getvalue()))
    (ck / ".metadata").write_bytes(pickle.dumps(meta))


def plant(ck: Path, kind: str, marker: Path) -> str:
    """Plant payload `kind` into checkpoint `ck`; returns the file name the error must mention."""
    if kind == "metadata":
        (ck / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
        return ".metadata"
    if kind == "metadata_nested":  # real metadata with one extra object deep inside
        meta = _real_metadata(ck)
        meta.planner_data["generator.head.head.weight"] = (Payload(marker),)
        (ck / ".metadata").write_bytes(pickle.dumps(meta))
        return ".metadata"
    if kind == "metadata_path":  # a shard outside the checkpoint folder
        meta = _real_metadata(ck)
        idx = next(iter(meta.storage_data))
        meta.storage_data[idx] = dataclasses.replace(meta.storage_data[idx], relative_path="../../../etc/passwd")
        (ck / ".metadata").write_bytes(pickle.dumps(meta))
        return ".metadata"
    if kind in ("distcp_bytes", "distcp_tensor"):
        _plant_item(ck, marker, kind.split("_")[1])
        return "__0_0.distcp" if kind == "distcp_tensor" else "optim"
    if kind == "rng":
        torch.save({"cpu": Payload(marker)}, ck / "rng_rank00000.pt")
        return "rng_rank00000.pt"
    if kind == "train_state":
        (ck / "train_state.json").write_bytes(pickle.dumps(Payload(marker)))
        return "train_state.json"
    raise AssertionError(kind)


KINDS = ["metadata", "metadata_nested", "metadata_path", "distcp_bytes", "distcp_tensor", "rng", "train_state"]


def _digest(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _planted_run(base: Path, tmp_path: Path, kind: str) -> tuple[Path, Path, str]:
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    marker = tmp_path / "MARKER"
    name = plant(_ck(run), kind, marker)
    return run, marker, name


def _check_refusal(err: str, kind: str, name: str) -> None:
    assert name in err, err[-2000:]
    if kind == "train_state":  # JSON never runs code: it is reported as unreadable
        assert "no readable train_state.json" in err, err[-2000:]
    else:
        assert "refused" in err and "nothing from it was run" in err or "not a plain file name" in err, err[-2000:]
    assert "Traceback" not in err


def _main(capsys, *args) -> tuple[int, str]:
    from sf_core.train.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind", KINDS)
def test_payloads_are_live_with_stock_loaders(base, tmp_path, kind):
    """Control: the planted files do run code when read the stock way (so the other tests can fail)."""
    import torch.distributed.checkpoint as dcp

    run, marker, _ = _planted_run(base, tmp_path, kind)
    ck = _ck(run)
    if kind == "metadata_path":
        meta = pickle.loads((ck / ".metadata").read_bytes())
        assert any(i.relative_path.startswith("..") for i in meta.storage_data.values())
        return
    if kind in ("metadata", "metadata_nested", "train_state"):
        pickle.loads((ck / (".metadata" if kind != "train_state" else "train_state.json")).read_bytes())
    elif kind == "rng":
        torch.load(ck / "rng_rank00000.pt", weights_only=False)
    else:
        from sf_core.train.dcp_safe import read_metadata

        meta = read_metadata(ck / ".metadata")
        state = {}
        for fqn, md in meta.state_dict_metadata.items():
            if hasattr(md, "size"):
                state[fqn] = torch.empty(md.size, dtype=md.properties.dtype)
            else:
                state[fqn] = None
        try:
            dcp.load(state, checkpoint_id=str(ck))
        except BaseException:  # noqa: BLE001 - the tensor item fails after weights_only refused it
            pass
        if kind == "distcp_tensor":  # torch's reader already reads tensors weights_only: refused, not run
            assert not marker.exists()
            return
    assert marker.exists()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("entry", ["run", "run_resume_path", "export_checkpoint", "export_run"])
def test_cli_entry_points_refuse_payloads(base, tmp_path, capsys, kind, entry):
    run, marker, name = _planted_run(base, tmp_path, kind)
    before = _digest(run / "checkpoints")
    if entry == "run":
        code, err = _main(capsys, "run", "--config", base / "cfg.json", "--out-dir", run, "--max-steps", 4)
    elif entry == "run_resume_path":
        code, err = _main(capsys, "run", "--config", base / "cfg.json", "--out-dir", tmp_path / "other",
                          "--resume", _ck(run), "--max-steps", 4)
    elif entry == "export_checkpoint":
        code, err = _main(capsys, "export", "--checkpoint", _ck(run), "--out", tmp_path / "x.safetensors")
    else:
        code, err = _main(capsys, "export", "--run", run)
    assert not marker.exists(), f"{kind} payload ran through {entry}"
    assert _digest(run / "checkpoints") == before
    if kind in ("rng", "distcp_bytes") and entry.startswith("export"):  # export reads no RNG, no optimiser
        assert code == 0, err[-2000:]
        return
    assert code == 2, err[-2000:]
    _check_refusal(err, kind, name)


@pytest.fixture(scope="module")
def toy_base(tmp_path_factory):
    """A toy teacher stage stopped after 2 steps (its checkpoint is what the toy trainer resumes from)."""
    from sf_core.toy import recipes

    root = tmp_path_factory.mktemp("sec_toy") / "toy"
    recipes.train_stage("teacher", 0, root, steps=2)
    return root


@pytest.mark.parametrize("kind", KINDS)
def test_toy_trainer_resume_refuses_payloads(toy_base, tmp_path, kind):
    from sf_core.config import ConfigError
    from sf_core.toy import recipes

    root = tmp_path / "toy"
    shutil.copytree(toy_base, root)
    marker = tmp_path / "MARKER"
    name = plant(recipes.stage_dir(root, 0, "teacher") / "checkpoints" / "step_0000002", kind, marker)
    with pytest.raises(ConfigError) as exc:
        recipes.train_stage("teacher", 0, root, steps=4)
    assert not marker.exists()
    _check_refusal(str(exc.value), kind, name)


def test_cli_subprocess_refuses_metadata_payload(base, tmp_path):
    run, marker, _ = _planted_run(base, tmp_path, "metadata")
    r = cli("run", "--config", str(base / "cfg.json"), "--out-dir", str(run), "--max-steps", "4")
    assert not marker.exists()
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"refused to load {_ck(run) / '.metadata'}" in r.stderr and "Traceback" not in r.stderr


def test_training_node_resume_refuses_metadata_payload(base, tmp_path, monkeypatch):
    """The training node launches the trainer (torchrun subprocess) with resume on: refused, clear node error."""
    from nodes_harness import install_stubs

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    install_stubs(str(tmp_path / "comfy"))
    from nodes.training import RANDOM_MODEL, TrainSelfForcing

    run_dir = tmp_path / "comfy" / "output" / "self_forcing_training" / "node_run"
    shutil.copytree(_ck(base / "run"), run_dir / "checkpoints" / "step_0000002")
    marker = tmp_path / "MARKER"
    plant(run_dir / "checkpoints" / "step_0000002", "metadata", marker)
    emb = tmp_path / "comfy" / "input" / "emb"  # the node reads data only inside ComfyUI's folders
    shutil.copytree(base / "emb", emb)
    kw = dict(train_data=str(emb), method="dmd", generator=RANDOM_MODEL, teacher=RANDOM_MODEL,
              critic=RANDOM_MODEL, run_name="node_run", max_steps=4, batch_size=1, nproc_per_node=1, nnodes=1,
              node_rank=0, master_addr="127.0.0.1", master_port=29500, resume=True, config_file="", overrides="")
    with pytest.raises(Exception) as exc:
        TrainSelfForcing.run(**kw)
    assert not marker.exists()
    msg = str(exc.value)
    assert "refused to load" in msg and ".metadata" in msg, msg


def test_refused_metadata_is_not_even_partly_run(tmp_path):
    """The allow-list also refuses a class-state overwrite and a persistent id, before anything is called."""
    from sf_core.train.checkpoint import CheckpointRefused
    from sf_core.train.dcp_safe import read_metadata

    # BUILD on a class object (would set attributes on an allowed class for the whole process)
    p = tmp_path / "a.metadata"
    # GLOBAL Metadata, state (None, {"foo": "bar"}), BUILD: setattr(Metadata, "foo", "bar") if it were allowed
    p.write_bytes(b"\x80\x04ctorch.distributed.checkpoint.metadata\nMetadata\nN}\x8c\x03foo\x8c\x03bars\x86b.")
    with pytest.raises(CheckpointRefused, match="class"):
        read_metadata(p)
    from torch.distributed.checkpoint.metadata import Metadata

    assert not hasattr(Metadata, "foo")
    p.write_bytes(b"\x80\x04\x8c\x01x\x94Q.")  # BINPERSID
    with pytest.raises(CheckpointRefused, match="persistent id"):
        read_metadata(p)
    p.write_bytes(b"\x80\x04cos\nsystem\n\x8c\x04true\x85R.")
    with pytest.raises(CheckpointRefused, match="os.system"):
        read_metadata(p)


def test_export_refuses_a_train_state_declaring_a_bigger_model(base, tmp_path):
    """Issue 27 item 3: a crafted train_state.json made `train export` try to allocate > 6 GB for a model the
    checkpoint does not hold. The declared size is checked against the stored weights' sizes first."""
    import json

    from sf_core.train.checkpoint import CheckpointFileError
    from sf_core.train.export import export_checkpoint
    from sf_core.model import transformer

    ck = tmp_path / "step_0000002"
    shutil.copytree(_ck(base / "run"), ck)
    export_checkpoint(ck, tmp_path / "ok.safetensors")  # the real one exports
    state = json.loads((ck / "train_state.json").read_text())
    state["wan_config"].update(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)  # 1.3B: ~5.7 GB in fp32
    (ck / "train_state.json").write_text(json.dumps(state))
    built = []
    real_init = transformer.WanTransformer.__init__

    def spy(self, cfg, *a, **k):
        built.append(torch.empty(0).device.type)  # the default device when the model is built
        return real_init(self, cfg, *a, **k)

    transformer.WanTransformer.__init__ = spy
    try:
        with pytest.raises(CheckpointFileError, match="declares a model of .* refused before allocating"):
            export_checkpoint(ck, tmp_path / "bad.safetensors")
    finally:
        transformer.WanTransformer.__init__ = real_init
    assert built == ["meta"]  # only the shape probe, on the meta device
    assert not (tmp_path / "bad.safetensors").exists()
