"""Stand-in for server.PromptServer: records custom events and progress texts."""


class PromptServer:
    instance = None

    def __init__(self):
        self.client_id = "test-client"
        self.events = []
        self.texts = []

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))

    def send_progress_text(self, text, node_id):
        self.texts.append((node_id, text))


PromptServer.instance = PromptServer()
