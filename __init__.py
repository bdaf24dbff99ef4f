"""ComfyUI node pack: Self Forcing real-time autoregressive video (causal Wan2.1).

Importing this module has no side effects: nodes (and torch-heavy code) load only when ComfyUI calls
`comfy_entrypoint`.
"""
WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes import SelfForcingExtension

    return SelfForcingExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
