class PreviewText:
    def __init__(self, value, **kw):
        self.value = value

    def as_dict(self):
        return {"text": [self.value]}
