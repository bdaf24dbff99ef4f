"""Stand-in for comfy_api.latest: the schema classes the pack uses, recording what they are given."""
from . import _io as io
from . import _ui as ui


class VideoFromFile:
    """Like comfy_api's: a VIDEO backed by a file."""

    def __init__(self, file):
        self.file = file


class InputImpl:
    VideoFromFile = VideoFromFile


class ComfyExtension:
    async def get_node_list(self):
        raise NotImplementedError


__all__ = ["ComfyExtension", "InputImpl", "io", "ui"]
