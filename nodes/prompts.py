"""SF Prompt Schedule: change the prompt at a given chunk (a story), chained node after node.

Each node adds one entry (start chunk, conditioning) to the schedule it receives; the sampler turns the
chain into an `sf_core.sampling.prompts.PromptSchedule` whose chunk-0 prompt is the sampler's `positive` (unless an
entry starts at 0). What happens at a switch (re-cache or keep) and the blend length apply to the whole
schedule: the last node of the chain sets them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

from sf_core.sampling.prompts import SWITCH_POLICIES, PromptEntry, PromptSchedule

from . import types
from .inputs import conditioning_tensor


@dataclass(frozen=True)
class ScheduleValue:
    """The SF_PROMPT_SCHEDULE socket value: entries by start chunk, plus the switch policy and blend."""

    entries: tuple[tuple[int, torch.Tensor], ...] = ()
    policy: str = "recache"
    transition_chunks: int = 0

    def add(self, start: int, context: torch.Tensor, policy: str, transition: int) -> "ScheduleValue":
        kept = [e for e in self.entries if e[0] != start]  # a later node at the same chunk replaces it
        return ScheduleValue(tuple(sorted([*kept, (start, context)], key=lambda e: e[0])), policy, transition)

    def build(self, positive: torch.Tensor) -> PromptSchedule:
        """The sf_core schedule, `positive` covering the chunks before the first entry."""
        entries = [PromptEntry(s, c) for s, c in self.entries]
        if not entries or entries[0].start_chunk != 0:
            entries.insert(0, PromptEntry(0, positive))
        return PromptSchedule(tuple(entries), policy=self.policy, transition_chunks=self.transition_chunks)


def schedule_for(positive: torch.Tensor, value) -> PromptSchedule:
    if value is None:
        return PromptSchedule.single(positive)
    if not isinstance(value, ScheduleValue):
        raise TypeError(f"prompt_schedule: expected SF_PROMPT_SCHEDULE, got {type(value).__name__}")
    return value.build(positive)


class PromptScheduleNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_PromptSchedule",
            display_name="SF Prompt Schedule",
            category=types.CATEGORY,
            description="Switch to this prompt from a given chunk on. Chain several for a story and connect the "
                        "last one to the causal sampler's prompt_schedule input.",
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="The prompt used from start_chunk on "
                                      "(CLIPTextEncode with a 'wan' CLIP, or SF Load Conditioning)."),
                io.Int.Input("start_chunk", default=7, min=0, max=4096,
                             tooltip="First chunk (0-based) that uses this prompt. With 3-frame chunks a chunk "
                                     "is 12 video frames (0.75 s at 16 fps); chunk 7 starts at 5 s."),
                io.Combo.Input("switch_policy", options=list(SWITCH_POLICIES), default="recache",
                               tooltip="recache: recompute the cached frames under the new prompt so it takes "
                                       "effect at once; keep: only the text changes (cheaper, reacts slower). "
                                       "The last node of the chain sets it for the whole schedule."),
                io.Int.Input("transition_chunks", default=0, min=0, max=64,
                             tooltip="Blend the conditioning over this many chunks (0 or 1 = hard cut). The last "
                                     "node of the chain sets it for the whole schedule."),
                types.PromptSchedule.Input("previous", optional=True,
                                           tooltip="Schedule built by earlier SF Prompt Schedule nodes."),
            ],
            outputs=[types.PromptSchedule.Output(display_name="prompt_schedule")],
        )

    @classmethod
    def execute(cls, conditioning, start_chunk, switch_policy, transition_chunks, previous=None) -> io.NodeOutput:
        ctx = conditioning_tensor(conditioning, None, "conditioning").detach().cpu()
        base = previous if isinstance(previous, ScheduleValue) else ScheduleValue()
        return io.NodeOutput(base.add(int(start_chunk), ctx, switch_policy, int(transition_chunks)))
