"""A random sequence of edits, then undo all: the document equals the saved one exactly."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PySide6.QtGui import QUndoStack

from editor import commands
from editor.document import Document
from engine import blocks, serialize
from engine.errors import EngineError
from tests.editor.helpers import two_layer

ADDABLE = [("ReLU", {}), ("Tanh", {}), ("Add", {}), ("Scale", {"factor": 2.0}), ("Linear", {"out_features": 3}),
           ("Input", {"shape": (4, 3)}), ("Sum", {}), ("Multiply", {}),
           ("Input", {"shape": (2, 4, 3)}), ("TransformerBlock", {"dim": 3, "heads": 1, "hidden": 4})]


def _apply(doc: Document, stack: QUndoStack, data: st.DataObject) -> None:
    g = doc.graph
    ids = list(g.nodes)
    op = data.draw(st.sampled_from(["add", "remove", "connect", "disconnect", "params", "rename", "move",
                                    "paste", "layout", "expand"]))
    try:
        if op == "add":
            type_id, params = data.draw(st.sampled_from(ADDABLE))
            x, y = data.draw(st.tuples(st.integers(-500, 500), st.integers(-500, 500)))
            stack.push(commands.AddNodeCommand(doc, type_id, params, position=(x, y)))
        elif op == "remove" and ids:
            chosen = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=3, unique=True))
            stack.push(commands.RemoveItemsCommand(doc, chosen))
        elif op == "connect" and len(ids) >= 2:
            a, b = data.draw(st.sampled_from(ids)), data.draw(st.sampled_from(ids))
            outs, ins = g.nodes[a].output_ports(), g.nodes[b].input_ports()
            if outs and ins:
                stack.push(commands.ConnectCommand(doc, a, data.draw(st.sampled_from(outs)).name,
                                                   b, data.draw(st.sampled_from(ins)).name))
        elif op == "disconnect" and g.links:
            stack.push(commands.RemoveItemsCommand(doc, [], [data.draw(st.sampled_from(list(g.links)))]))
        elif op == "params" and ids:
            nid = data.draw(st.sampled_from(ids))
            node = g.nodes[nid]
            if node.type == "Linear":
                stack.push(commands.SetParamsCommand(doc, nid, {"out_features": data.draw(st.integers(1, 6))}))
            elif node.type == "Scale":
                key = data.draw(st.sampled_from(["a", "b"]))
                for v in data.draw(st.lists(st.floats(-3, 3), min_size=1, max_size=3)):
                    stack.push(commands.SetParamsCommand(doc, nid, {"factor": v}, merge_key=key))
            elif node.type == "Input":
                stack.push(commands.SetParamsCommand(doc, nid, {"shape": (4, data.draw(st.integers(1, 5)))}))
        elif op == "rename" and ids:
            stack.push(commands.RenameCommand(doc, data.draw(st.sampled_from(ids)), data.draw(st.text(max_size=6))))
        elif op == "move" and ids:
            nid = data.draw(st.sampled_from(ids))
            stack.push(commands.MoveNodesCommand(doc, {nid: (g.nodes[nid].position, (1.5, -7.0))}))
        elif op == "paste" and ids:
            chosen = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=4, unique=True))
            stack.push(commands.PasteCommand(doc, commands.clip_selection(doc, chosen)))
        elif op == "layout":
            cmd = commands.auto_layout_command(doc, lambda nid: (150.0, 80.0))
            if cmd is not None:
                stack.push(cmd)
        elif op == "expand":
            composites = [nid for nid in ids if g.nodes[nid].block is not None
                          and blocks.spec(g.nodes[nid].type).composite]
            if composites:
                stack.push(commands.ExpandCompositeCommand(doc, data.draw(st.sampled_from(composites))))
    except EngineError:
        pass  # refused edits push nothing; that is tested elsewhere


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_undo_all_restores_the_saved_document(qapp, data):
    doc, stack = Document(), QUndoStack()
    two_layer(doc, stack)
    stack.setClean()
    saved = doc.dump()
    saved_file = serialize.graph_to_dict(doc.graph)
    n_edits = data.draw(st.integers(1, 25))
    for _ in range(n_edits):
        _apply(doc, stack, data)
    assert doc.graph.revision >= 0
    after = doc.dump()
    while stack.index() > stack.cleanIndex():
        stack.undo()
    assert stack.isClean()
    assert doc.dump() == saved
    assert serialize.graph_to_dict(doc.graph) == saved_file
    # and redo gets back to exactly where the edits left it
    while stack.canRedo():
        stack.redo()
    assert doc.dump() == after
