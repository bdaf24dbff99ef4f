class ExecutionBlocker:
    """Like ComfyUI's: an output value that blocks downstream nodes (with an error if message is set)."""

    def __init__(self, message):
        self.message = message
