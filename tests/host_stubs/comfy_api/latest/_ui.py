class PreviewText:
    def __init__(self, value, **kw):
        self.value = value

    def as_dict(self):
        return {"text": [self.value]}


from ._io import FolderType  # noqa: E402,F401


class SavedResult(dict):
    def __init__(self, filename, subfolder, type):
        super().__init__(filename=filename, subfolder=subfolder, type=type.value)


class PreviewVideo:
    def __init__(self, values, **kw):
        self.values = values

    def as_dict(self):
        return {"images": self.values, "animated": (True,)}
