"""Files the project writes get the user's umask like any other tool (issue 14, item 3): safetensors (and
`tempfile.mkstemp`) create 0600 files, which a ComfyUI service account or a second user cannot read. With umask
022 every file is 0644, with 027 it is 0640 (so the mode comes from the umask, not a constant)."""
import os
import stat
from pathlib import Path

import pytest
import torch

from sessions_kit import HW, conditioning, tiny_model
from train_kit import tiny_config, write_embeddings


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield 0o666 & ~request.param
    finally:
        os.umask(old)


def _modes(*paths: Path) -> dict[str, int]:
    files = []
    for p in paths:
        files += [q for q in Path(p).rglob("*") if q.is_file()] if Path(p).is_dir() else [Path(p)]
    assert files
    return {str(f): stat.S_IMODE(f.stat().st_mode) for f in files}


def _assert_modes(want: int, *paths: Path) -> None:
    wrong = {f: oct(m) for f, m in _modes(*paths).items() if m != want}
    assert not wrong, f"expected {oct(want)}: {wrong}"


def test_converter_output(tmp_path, umask):
    from sf_core.checkpoints.weights import save_model
    from sf_core.checkpoints.convert import convert

    model = tiny_model()
    src = save_model(tmp_path / "src.safetensors", model, model.config)
    out = tmp_path / "out" / "conv.safetensors"
    convert(src, out, dtype="fp32")
    _assert_modes(umask, src, out)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_session_file(tmp_path, umask):
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import new_session
    from sf_core.sampling.session_io import save_session

    model = tiny_model()
    s = new_session(model, conditioning(0), latent_hw=HW, seed=1)
    generate(model, s, num_frames=3)
    _assert_modes(umask, save_session(s, tmp_path / "s.safetensors"))


def test_training_data_checkpoints_and_export(tmp_path, umask):
    """Prompt shards, every checkpoint file (DCP shards, metadata, RNG, train state), status, metrics, plot and
    the exported generator."""
    from sf_core.train.distributed import shutdown
    from sf_core.train.trainer import run_training

    emb = write_embeddings(tmp_path / "emb", n=2)
    cfg = tiny_config(tmp_path, max_steps=1, checkpoint={"every": 1, "keep_last": 1}, ema={"start_step": 1})
    status, _ = run_training(cfg)
    shutdown()
    assert status["state"] == "finished" and status["export"]
    _assert_modes(umask, emb, tmp_path / "run")
