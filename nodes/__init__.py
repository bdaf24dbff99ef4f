"""The pack's node registry: every node class, one list, one V3 extension.

Other parts add their nodes here with one import line and one list entry. Node ids are permanent: a node
that is replaced stays registered (deprecated) so saved workflows keep loading.
"""
from __future__ import annotations

import os
import sys

# ComfyUI imports the pack as a package from its folder without putting the folder on sys.path; the pack's
# host-independent core `sf_core` (also used standalone) is imported by its own name, so make it findable.
_PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _PACK_ROOT not in sys.path:
    sys.path.append(_PACK_ROOT)

from comfy_api.latest import ComfyExtension, io  # noqa: E402

from .context import ExtendVideo, ImageToVideo  # noqa: E402
from .decode import StreamingDecode  # noqa: E402
from .live import LiveStreamNode  # noqa: E402
from .loaders import DownloadCheckpoint, LoadCheckpoint, LoadConditioning, LoadPreviewDecoder  # noqa: E402
from .prompts import PromptScheduleNode  # noqa: E402
from .sampler import CausalSampler  # noqa: E402
from .session import ContinueSession, LoadSession, SaveSession  # noqa: E402
from .toy import EmptyToyLatent, LoadToyModel, ToyTextEncode  # noqa: E402
from .toy_training import ToyTrainingPrompts  # noqa: E402
from .training import EncodeTrainingPrompts, TrainSelfForcing  # noqa: E402

NODES: list[type[io.ComfyNode]] = [
    LoadCheckpoint,
    DownloadCheckpoint,
    LoadConditioning,
    LoadPreviewDecoder,
    CausalSampler,
    LiveStreamNode,
    ImageToVideo,
    ExtendVideo,
    PromptScheduleNode,
    StreamingDecode,
    ContinueSession,
    SaveSession,
    LoadSession,
    LoadToyModel,
    ToyTextEncode,
    EmptyToyLatent,
    EncodeTrainingPrompts,
    TrainSelfForcing,
    ToyTrainingPrompts,
]


class SelfForcingExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .live_routes import register

        register()  # the live stream's control routes (ComfyUI adds routes after loading the packs)
        return list(NODES)


__all__ = ["SelfForcingExtension", "NODES"]
