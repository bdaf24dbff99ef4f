"""The training nodes with host stand-ins (tests/host_stubs): encode prompts with a CLIP stand-in, launch the
trainer (a real torchrun subprocess), stream its progress, stop it with Cancel (checkpoint, clean exit) and
resume it to the end (export published to diffusion_models, loss plot as IMAGE)."""
import json
import threading
import time
from pathlib import Path

import pytest
import torch

from nodes_harness import install_stubs
from train_kit import PROMPTS


class FakeClip:
    """What CLIPTextEncode uses of a CLIP: tokenize + encode_from_tokens_scheduled -> [[cond [1, L, D], {}]]."""

    def __init__(self):
        from sf_core.toy.text import ToyTextEncoder

        self.enc = ToyTextEncoder(text_dim=32)

    def tokenize(self, text):
        return {"text": text}

    def encode_from_tokens_scheduled(self, tokens):
        return [[self.enc.encode([tokens["text"]]), {"pooled_output": None}]]


def _train_kw(emb, **over):
    from nodes.training import RANDOM_MODEL

    kw = dict(train_data=emb, method="dmd", generator=RANDOM_MODEL, teacher=RANDOM_MODEL, critic=RANDOM_MODEL,
              run_name="node_run", max_steps=400, batch_size=1, nproc_per_node=1, nnodes=1, node_rank=0,
              master_addr="127.0.0.1", master_port=29500, resume=True, config_file="",
              overrides="checkpoint.every=100\nema.start_step=1\nexport_dtype=\"float32\"")
    kw.update(over)
    return kw


def test_encode_train_stop_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the trainer subprocess: tiny nets run faster on one thread
    install_stubs(str(tmp_path / "comfy"))
    import comfy.model_management as mm
    import comfy.utils as cu
    from server import PromptServer

    from nodes.training import EncodeTrainingPrompts, TrainSelfForcing
    from sf_core.checkpoints.weights import load_checkpoint
    from sf_core.train.data import ShardDataset

    # 1. encode: CLIPTextEncode semantics into the embedding cache
    (tmp_path / "comfy" / "input").mkdir(parents=True, exist_ok=True)
    (tmp_path / "comfy" / "input" / "prompts.txt").write_text("\n".join(PROMPTS[:4]) + "\n")
    emb = EncodeTrainingPrompts.run(clip=FakeClip(), prompts_file="prompts.txt", negative_prompt="",
                                    name="toy")[0]
    ds = ShardDataset(emb)
    want = FakeClip().enc.encode(PROMPTS[:4])
    assert len(ds) == 4 and ds[2].prompt == PROMPTS[2]
    n = ds[2].embeds.shape[0]
    assert torch.equal(ds[2].embeds.float(), want[2, :n].bfloat16().float()) and not want[2, n:].any()
    assert [u[0] for u in cu.updates] == [1, 2, 3, 4]
    with pytest.raises(Exception, match="does not exist"):
        EncodeTrainingPrompts.run(clip=FakeClip(), prompts_file="missing.txt", negative_prompt="", name="x")

    # 2. train; Cancel once two steps are done -> the trainer checkpoints and exits cleanly
    run_dir = Path(tmp_path / "comfy" / "output" / "self_forcing_training" / "node_run")
    cu.updates.clear()
    box = {}

    def target():
        try:
            box["out"] = TrainSelfForcing.run(**_train_kw(emb))
        except BaseException as e:  # noqa: BLE001 - the host's interruption exception is expected
            box["err"] = e

    th = threading.Thread(target=target)
    th.start()
    deadline = time.time() + 240
    while time.time() < deadline and th.is_alive():
        m = run_dir / "metrics.jsonl"
        if cu.updates and m.exists() and len(m.read_text().splitlines()) >= 2:  # progress reached the UI
            mm.interrupt_after = mm.checks + 1  # the user presses Cancel
            break
        time.sleep(0.1)
    th.join(timeout=300)
    assert not th.is_alive()
    assert isinstance(box.get("err"), mm.InterruptProcessingException), box
    status = json.loads((run_dir / "status.json").read_text())
    stopped = status["step"]
    assert status["state"] == "stopped" and 2 <= stopped < 400
    assert (run_dir / "checkpoints" / f"step_{stopped:07d}" / "train_state.json").is_file()
    assert not (run_dir / "STOP").exists()
    assert cu.updates and cu.updates[0][1] == 400  # progress bar over max_steps
    assert any("step " in t and "critic_loss" in t for _, t in PromptServer.instance.texts)
    assert any(e == "selfforcing.training" for e, _ in PromptServer.instance.events)

    # 3. resume to the end: export published where Load Diffusion Model looks, plot as IMAGE
    mm.reset()
    out = TrainSelfForcing.run(**_train_kw(emb, max_steps=stopped + 1))
    ckpt_path, plot, rd = out[0], out[1], out[2]
    assert Path(rd) == run_dir
    assert Path(ckpt_path).parent == tmp_path / "comfy" / "models" / "diffusion_models" / "self_forcing"
    ck = load_checkpoint(ckpt_path)
    assert ck.meta["which"] == "generator_ema" and ck.config.text_dim == 32
    assert plot.ndim == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.shape[1] > 100
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, stopped + 2))
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    # resume off on a run that has checkpoints: refused, nothing deleted
    with pytest.raises(Exception, match="already holds checkpoints"):
        TrainSelfForcing.run(**_train_kw(emb, resume=False))
    assert (run_dir / "checkpoints").is_dir()
