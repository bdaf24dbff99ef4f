"""SF Load Session reads only inside ComfyUI's output and input folders (issue 14, item 2), as SF Save Session
writes only into the output folder: a shared graph must not read arbitrary files of the server."""
import os
import shutil
from pathlib import Path

import pytest
import torch

from nodes_harness import install_stubs
from sessions_kit import HW, conditioning, tiny_model


@pytest.fixture()
def comfy(tmp_path):
    install_stubs(str(tmp_path / "comfy"))
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import new_session
    from sf_core.sampling.session_io import save_session

    model = tiny_model()
    s = new_session(model, conditioning(0), latent_hw=HW, seed=3)
    generate(model, s, num_frames=6)
    import folder_paths

    out, inp = Path(folder_paths.get_output_directory()), Path(folder_paths.get_input_directory())
    good = save_session(s, out / "selfforcing" / "good.safetensors")
    outside = tmp_path / "elsewhere" / "secret.safetensors"
    outside.parent.mkdir()
    shutil.copyfile(good, outside)
    shutil.copyfile(good, inp / "given.safetensors")
    return {"out": out, "inp": inp, "outside": outside, "session": s}


def _load(name):
    from nodes.session import LoadSession

    return LoadSession.run(session_file=name)[0]


def test_reads_inside_output_and_input(comfy):
    want = comfy["session"]
    for name in ("selfforcing/good.safetensors", str(comfy["out"] / "selfforcing" / "good.safetensors"),
                 str(comfy["inp"] / "given.safetensors"), " selfforcing/good.safetensors "):
        s = _load(name)
        assert (s.next_frame, s.chunk_index, s.seed) == (want.next_frame, want.chunk_index, want.seed)
        assert torch.equal(s.cache.k[0].cpu(), want.cache.k[0].cpu())


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "input_dotdot"])
def test_refuses_paths_outside(comfy, how):
    from nodes.host import NodeInputError
    from nodes.session import LoadSession

    outside = comfy["outside"]
    if how == "absolute":
        name = str(outside)
    elif how == "dotdot":
        name = os.path.relpath(outside, comfy["out"])
        assert name.startswith("..")
    elif how == "symlink":  # a link inside the output folder pointing out of it
        link = comfy["out"] / "selfforcing" / "link.safetensors"
        link.symlink_to(outside)
        name = "selfforcing/link.safetensors"
    else:
        name = str(comfy["inp"] / ".." / ".." / "elsewhere" / "secret.safetensors")
    with pytest.raises(NodeInputError) as exc:
        _load(name)
    msg = str(exc.value)
    assert "outside ComfyUI's output and input folders" in msg and "selfforcing/" in msg
    assert LoadSession.fingerprint_inputs(name) != LoadSession.fingerprint_inputs(name)  # nan: execute reports it
