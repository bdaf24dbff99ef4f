"""Stand-in for comfy_api.latest._io: inputs/outputs record their keyword arguments; Schema keeps its fields.

Only what the pack uses. `Input.as_dict` mirrors the option names the real host serialises to /object_info.
"""
from __future__ import annotations

from enum import Enum


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


class _Input:
    io_type = None
    widget = False

    def __init__(self, id, display_name=None, optional=False, tooltip=None, **opts):
        self.id, self.display_name, self.optional, self.tooltip = id, display_name, optional, tooltip
        self.opts = opts

    @property
    def default(self):
        return self.opts.get("default")


class _Output:
    io_type = None

    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id, self.display_name, self.tooltip = id, display_name, tooltip


def _type(name, widget=False):
    class T:
        io_type = name

        class Input(_Input):
            pass

        class Output(_Output):
            pass

    T.Input.io_type = T.Output.io_type = name
    T.Input.widget = widget
    T.__name__ = name
    return T


Int = _type("INT", True)
Float = _type("FLOAT", True)
String = _type("STRING", True)
Boolean = _type("BOOLEAN", True)
Combo = _type("COMBO", True)
Model = _type("MODEL")
Conditioning = _type("CONDITIONING")
Latent = _type("LATENT")
Vae = _type("VAE")
Image = _type("IMAGE")
Clip = _type("CLIP")
Video = _type("VIDEO")


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


def Custom(name):
    return _type(name)


class Schema:
    def __init__(self, node_id, display_name=None, category="sd", inputs=None, outputs=None, hidden=None,
                 description="", is_output_node=False, is_experimental=False, is_deprecated=False,
                 not_idempotent=False):
        self.node_id, self.display_name, self.category = node_id, display_name, category
        self.inputs, self.outputs, self.hidden = inputs or [], outputs or [], hidden or []
        self.description, self.is_output_node = description, is_output_node


class _Hidden:
    def __init__(self, unique_id=None):
        self.unique_id = unique_id


class ComfyNode:
    hidden = None

    @classmethod
    def define_schema(cls):
        raise NotImplementedError

    @classmethod
    def execute(cls, **kw):
        raise NotImplementedError

    @classmethod
    def run(cls, node_id="1", **kw):
        """Test helper: what the host does for one execution (hidden values set, then execute)."""
        cls.hidden = _Hidden(node_id)
        try:
            return cls.execute(**kw)
        finally:
            cls.hidden = None


class NodeOutput:
    def __init__(self, *args, ui=None, expand=None, block_execution=None):
        self.args, self.ui = args, ui

    def __getitem__(self, i):
        return self.args[i]
