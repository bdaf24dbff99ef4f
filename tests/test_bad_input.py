"""Bad node inputs are refused at queue time by the host's own range checks, each error once, on its input.

The unit tests read the sampler's `validate_inputs` signature the way ComfyUI does (execution.py: every input
named there, or all of them with **kwargs, loses the host's min/max check and gets the custom error once per
named input). The server test posts bad values to the real host (COMFYUI_DIR) and reads its 400 answer.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest

from nodes_harness import install_stubs

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")


@pytest.fixture()
def sampler(tmp_path):
    install_stubs(str(tmp_path))
    from nodes.sampler import CausalSampler

    return CausalSampler


def _schema_inputs(node) -> dict:
    return {i.id: i for i in node.define_schema().inputs}


def test_only_timesteps_is_validated_by_the_node(sampler):
    spec = inspect.getfullargspec(sampler.validate_inputs)
    assert spec.varkw is None, "**kwargs makes ComfyUI skip min/max for every input"
    assert [a for a in spec.args if a != "cls"] == ["timesteps"]
    assert "timesteps" in sampler.validate_inputs(timesteps="5, 10")
    assert sampler.validate_inputs(timesteps="1000,500") is True
    assert sampler.validate_inputs(timesteps=None) is True  # a linked input: checked at execution


def test_schema_ranges_refuse_the_reported_values(sampler):
    inputs = _schema_inputs(sampler)
    for name, bad in (("seed", -1), ("fps", 0), ("window_frames", -3), ("length", 119_999_997),
                      ("sink_frames", -1), ("chunk_frames", 0), ("width", 0), ("batch_size", 65)):
        lo, hi = inputs[name].opts["min"], inputs[name].opts["max"]
        assert bad < lo or bad > hi, (name, lo, hi)
    assert inputs["fps"].opts["min"] > 0 and inputs["seed"].opts["min"] == 0
    # the longest video the schema allows stays within the RoPE limit (1024 latent frames = 4093 video frames)
    assert (inputs["length"].opts["max"] - 1) // 4 + 1 <= 1024


def test_a_scheduled_prompt_after_the_end_is_reported(sampler, caplog):
    import torch

    from nodes.prompts import PromptScheduleNode
    from nodes_harness import FakePatcher, tiny_wan

    cond = [[torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1)), {"pooled_output": None}]]
    sched = PromptScheduleNode.run(conditioning=cond, start_chunk=9, switch_policy="recache", transition_chunks=0)[0]
    with caplog.at_level("WARNING", logger="selfforcing.nodes"):
        sampler.run(model=FakePatcher(tiny_wan(0)), positive=cond, prompt_schedule=sched, width=16, height=16,
                    length=33, batch_size=1, seed=0, timesteps="1000,500", warp_timesteps=True, shift=5.0,
                    chunk_frames=3, window_frames=21, sink_frames=3, fps=16.0, live_preview=False)
    assert "the prompt from chunk 9 comes after the last chunk (2) of this video" in caplog.text


def test_a_bad_conditioning_names_the_input_that_holds_it(sampler):
    import torch

    from nodes.host import NodeInputError
    from nodes.prompts import PromptScheduleNode
    from nodes_harness import FakePatcher, tiny_wan

    good = [[torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1)), {"pooled_output": None}]]
    bad = [[torch.full((1, 8, 32), float("nan")), {"pooled_output": None}]]
    kw = dict(model=FakePatcher(tiny_wan(0)), width=16, height=16, length=33, batch_size=1, seed=0,
              timesteps="1000,500", warp_timesteps=True, shift=5.0, chunk_frames=3, window_frames=21, sink_frames=3,
              fps=16.0, live_preview=False)
    with pytest.raises(NodeInputError, match=r"^positive: .*NaN") as e:  # no schedule connected: not "prompt_schedule"
        sampler.run(positive=bad, **kw)
    assert "prompt_schedule" not in str(e.value)
    sched = PromptScheduleNode.run(conditioning=bad, start_chunk=1, switch_policy="recache", transition_chunks=0)[0]
    with pytest.raises(NodeInputError, match=r"^prompt_schedule: .*chunk 1 .*NaN"):
        sampler.run(positive=good, prompt_schedule=sched, **kw)


def _bad_prompt(files: dict, **bad) -> dict:
    inputs = {"model": ["1", 0], "positive": ["2", 0], "width": 32, "height": 32, "length": 21, "batch_size": 1,
              "seed": 0, "timesteps": "1000,750,500,250", "warp_timesteps": True, "shift": 5.0, "chunk_frames": 3,
              "window_frames": 21, "sink_frames": 3, "fps": 16.0, "live_preview": False}
    inputs.update(bad)
    return {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": files["dit"], "weight_dtype": "default"}},
            "2": {"class_type": "SF_LoadConditioning", "inputs": {"file": files["cond_a"], "key": ""}},
            "3": {"class_type": "SF_CausalSampler", "inputs": inputs},
            "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "latents/bad"}}}


@pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")
def test_real_host_refuses_out_of_range_values_once_per_input(tmp_path):
    from host_e2e_support import ComfyServer, write_models

    files = write_models(tmp_path)
    srv = ComfyServer(Path(COMFYUI_DIR), tmp_path, int(os.environ.get("SF_E2E_PORT", "8207"))).start()
    try:
        status, body = srv.post("/prompt", {"prompt": _bad_prompt(files, seed=-1, fps=0.0, window_frames=-3,
                                                                  length=119_999_997), "client_id": "x"})
        assert status == 400, body
        errs = body["node_errors"]["3"]["errors"]
        by_input = {e["extra_info"]["input_name"]: e["type"] for e in errs}
        assert by_input == {"seed": "value_smaller_than_min", "fps": "value_smaller_than_min",
                            "window_frames": "value_smaller_than_min", "length": "value_bigger_than_max"}, errs
        assert len(errs) == 4
        status, body = srv.post("/prompt", {"prompt": _bad_prompt(files, timesteps="1000, banana"),
                                            "client_id": "x"})
        errs = body["node_errors"]["3"]["errors"]
        assert status == 400 and len(errs) == 1 and errs[0]["extra_info"]["input_name"] == "timesteps", errs
        assert "banana" in json.dumps(errs)
        assert srv.get("/system_stats")
    finally:
        srv.stop()
