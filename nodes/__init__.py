"""The pack's node registry: every node class, one list, one V3 extension.

Other parts add their nodes here with one import line and one list entry. Node ids are permanent: a node
that is replaced stays registered (deprecated) so saved workflows keep loading.
"""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .decode import StreamingDecode
from .loaders import DownloadCheckpoint, LoadCheckpoint, LoadConditioning, LoadPreviewDecoder
from .prompts import PromptScheduleNode
from .sampler import CausalSampler
from .session import ContinueSession, LoadSession, SaveSession

NODES: list[type[io.ComfyNode]] = [
    LoadCheckpoint,
    DownloadCheckpoint,
    LoadConditioning,
    LoadPreviewDecoder,
    CausalSampler,
    PromptScheduleNode,
    StreamingDecode,
    ContinueSession,
    SaveSession,
    LoadSession,
]


class SelfForcingExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


__all__ = ["SelfForcingExtension", "NODES"]
