"""Stand-in for comfy.model_patcher.ModelPatcher: holds a module and its devices; attribute lookup like the host."""


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device

    def get_model_object(self, name):
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
