"""SF Toy Training Prompts: training data for SF Train Self Forcing with no text encoder and no files.

The CPU smoke-test workflow must run on a bare install: no umT5 (11 GB), no prompts file in input/. This node
encodes the prompts typed into it with the toy world's deterministic text encoder (sf_core.toy.text, the same
as `python -m sf_core.train encode-prompts --encoder toy`) into the trainer's embedding shards, so the random
tiny nets of the smoke test (sized from the shards' text width) train on them. For real training use SF Encode
Training Prompts with the Wan text encoder.
"""
from __future__ import annotations

from pathlib import Path

from comfy_api.latest import io

from . import host, types
from .training import RUNS_SUBDIR, TrainData, _safe_name

DEFAULT_PROMPTS = "\n".join([
    "a red circle moving left",
    "a blue square moving up fast",
    "a green triangle moving right slowly",
    "a yellow circle moving down",
])
MAX_PROMPTS = 100_000


def parse_prompt_lines(text: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    return [ln.strip() for ln in str(text).splitlines() if ln.strip() and not ln.strip().startswith("#")]


class ToyTrainingPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_ToyTrainingPrompts",
            display_name="SF Toy Training Prompts (no text encoder)",
            category=f"{types.CATEGORY}/training",
            description="Training prompts typed here, encoded with the toy model's built-in text encoder (no umT5, "
                        "no download, no prompts file) into the embedding cache SF Train Self Forcing reads. For "
                        "the CPU smoke test and the toy model; real training uses SF Encode Training Prompts.",
            inputs=[
                io.String.Input("prompts", default=DEFAULT_PROMPTS, multiline=True,
                                tooltip="One prompt per line (# comments and blank lines are skipped), e.g. "
                                        "'a blue circle moving up slow'."),
                io.String.Input("name", default="toy_prompts",
                                tooltip="Folder name of the cache under output/self_forcing_training/embeddings."),
            ],
            outputs=[TrainData.Output(display_name="train_data")],
        )

    @classmethod
    def execute(cls, prompts, name) -> io.NodeOutput:
        from sf_core.train.data import encode_prompts
        from sf_core.train.encoders import resolve_encoder

        lines = parse_prompt_lines(prompts)
        if not lines:
            raise host.NodeInputError("prompts: type at least one prompt (one per line; blank lines and # comments "
                                      "are skipped)")
        if len(lines) > MAX_PROMPTS:
            raise host.NodeInputError(f"prompts: {len(lines)} lines, at most {MAX_PROMPTS}; use SF Encode Training "
                                      f"Prompts with a prompts file for large sets")
        out = Path(host.output_directory()) / RUNS_SUBDIR / "embeddings" / _safe_name(name, "name")
        encode, negative = resolve_encoder("toy")
        encode_prompts(lines, encode, out, negative_prompt=negative, encoder_name="toy")
        return io.NodeOutput(str(out))


NODES = [ToyTrainingPrompts]
