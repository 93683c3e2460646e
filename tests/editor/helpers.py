"""Small builders shared by the editor tests."""

from __future__ import annotations

from PySide6.QtGui import QUndoStack

from editor import commands
from editor.document import Document
from editor.scene import GraphScene
from editor.view import GraphView


def shown_canvas(qtbot, width: int = 1300, height: int = 700) -> tuple[Document, QUndoStack, GraphScene, GraphView]:
    """An empty document on a scene in a shown view of this size (a canvas without the window)."""
    doc, stack = Document(), QUndoStack()
    scene = GraphScene(doc, stack)
    view = GraphView()
    view.setScene(scene)
    view.resize(width, height)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(view.isVisible)
    return doc, stack, scene, view


def two_layer(doc: Document, stack: QUndoStack) -> dict[str, str]:
    """x (4, 3) → Linear(5) → ReLU → Linear(2) → SquaredLoss ← target (4, 2). Returns name → id."""
    def add(type_id, params=None, name=None, pos=(0.0, 0.0)):
        cmd = commands.AddNodeCommand(doc, type_id, params or {}, position=pos, name=name)
        stack.push(cmd)
        return cmd.node_id

    ids = {
        "x": add("Input", {"shape": (4, 3)}, "x", (0, 0)),
        "l1": add("Linear", {"out_features": 5}, "l1", (250, 0)),
        "act": add("ReLU", {}, "act", (500, 0)),
        "l2": add("Linear", {"out_features": 2}, "l2", (750, 0)),
        "target": add("Input", {"shape": (4, 2)}, "target", (750, 200)),
        "loss": add("SquaredLoss", {}, "loss", (1000, 0)),
    }
    for a, b, port in [("x", "l1", "x"), ("l1", "act", "a"), ("act", "l2", "x"), ("l2", "loss", "pred"),
                       ("target", "loss", "target")]:
        stack.push(commands.ConnectCommand(doc, ids[a], "out", ids[b], port))
    return ids
