"""Stand-in for comfy.utils.ProgressBar: records (value, total, has_preview); each update is an interrupt check."""
updates = []


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total, self.node_id = total, node_id

    def update_absolute(self, value, total=None, preview=None):
        from comfy import model_management

        model_management.throw_exception_if_processing_interrupted()
        updates.append((value, total or self.total, preview is not None))
