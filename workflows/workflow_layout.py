"""Node boxes and the saved view of a generated workflow (used by build_workflows.py and its tests).

Nodes are placed in columns (`col` in the graph description), stacked top to bottom in declaration order. A
node's height is what ComfyUI's frontend needs for its sockets and widgets (LiteGraph: 20 px per socket row,
24 px per widget, 14 px margin; the title bar of 30 px sits above `pos`) plus room for the DOM parts: multiline
text boxes, the pack's player, the image shown by PreviewImage. The frontend only ever grows a node to its
minimum, so boxes computed here never overlap on screen; tests/browser/workflows_check.mjs measures that in the
real frontend.
"""
from __future__ import annotations

TITLE_H = 30
SLOT_H = 20
WIDGET_H = 24
MARGIN_H = 14
MULTILINE_H = 96
COLUMN_GAP = 60
ROW_GAP = 40
WIDTH = 360
PLAYER_NODES = {"SF_CausalSampler", "SF_ContinueSession", "SF_StreamingDecode", "SF_LiveStream", "SF_ImageToVideo",
                "SF_ExtendVideo"}
PLAYER_H = 300  # js/self_forcing_player.js: the player's height at the default node width
EXTRA_H = {"PreviewImage": 240, "SaveVideo": 0}
WIDE = {"SF_CausalSampler": 440, "SF_ContinueSession": 400, "SF_StreamingDecode": 400, "SF_LiveStream": 440,
        "SF_TrainSelfForcing": 540, "CLIPTextEncode": 400, "SF_ToyTrainingPrompts": 380}  # the frontend's widths


def node_height(node: dict, schema: dict) -> int:
    rows = max(len(schema["sockets"]), len(schema["outputs"]))
    widgets = len(schema["widgets"]) + len(schema["control"])
    multiline = sum(1 for name, (typ, opts) in schema["specs"].items() if typ == "STRING" and opts.get("multiline"))
    h = rows * SLOT_H + (widgets - multiline) * WIDGET_H + multiline * MULTILINE_H + MARGIN_H
    if node["type"] in PLAYER_NODES:
        h += PLAYER_H
    return h + EXTRA_H.get(node["type"], 0)


def layout(graph: list, schemas: dict) -> dict[int, tuple[int, int, int, int]]:
    """{node id: (x, y, width, height)}; y is the top of the body (the title bar is above it)."""
    cols: dict[int, list[dict]] = {}
    for n in graph:
        cols.setdefault(int(n["col"]), []).append(n)
    boxes = {}
    x = 0
    for c in sorted(cols):
        width = max(WIDE.get(n["type"], WIDTH) for n in cols[c])
        y = 0
        for n in cols[c]:
            h = node_height(n, schemas[n["type"]])
            boxes[n["id"]] = (x, y, width, h)
            y += h + TITLE_H + ROW_GAP
        x += width + COLUMN_GAP
    return boxes


def overlaps(boxes) -> list[tuple]:
    """Pairs of boxes (x, y, w, h, with the title bar above y) that intersect."""
    full = [(i, (x, y - TITLE_H, x + w, y + h)) for i, (x, y, w, h) in enumerate(boxes)]
    out = []
    for a, (i, ra) in enumerate(full):
        for j, rb in full[a + 1:]:
            if ra[0] < rb[2] and rb[0] < ra[2] and ra[1] < rb[3] and rb[1] < ra[3]:
                out.append((i, j))
    return out


def view(boxes, screen=(1500, 820)) -> dict:
    """The saved canvas view: everything visible on a 1600x1000 window (the editor's menus take the rest),
    titles of the top row included (LiteGraph: screen = (graph + offset) * scale)."""
    boxes = list(boxes)
    right = max(x + w for x, _, w, _ in boxes)
    bottom = max(y + h for _, y, _, h in boxes)
    top = -TITLE_H
    scale = min(1.0, screen[0] / (right + 40), screen[1] / (bottom - top + 40))
    scale = int(scale * 20) / 20  # a round zoom level
    return {"scale": scale, "offset": [20, 20 - top]}
