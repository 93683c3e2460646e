"""Every kind of edit is one undo step, and undo restores the document exactly."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QUndoStack

from editor import commands
from editor.document import Document, ReadOnlyError
from engine.errors import CycleError, ParamError, PortKindError, ShapeError
from engine.graph import Link
from tests.editor.helpers import two_layer


@pytest.fixture
def doc_stack(qapp):
    doc = Document()
    stack = QUndoStack()
    return doc, stack


def _round_trip(doc, stack, command):
    """Push, undo, redo: the dump after redo equals the dump after the first push, and undo
    restores the dump from before."""
    before = doc.dump()
    stack.push(command)
    after = doc.dump()
    assert after != before
    stack.undo()
    assert doc.dump() == before
    stack.redo()
    assert doc.dump() == after
    return after


def test_add_connect_and_shapes(doc_stack):
    doc, stack = doc_stack
    ids = two_layer(doc, stack)
    report = doc.report()
    assert report.ok
    assert report.shapes[(ids["l2"], "out")] == (4, 2)
    assert stack.count() == 11
    while stack.canUndo():
        stack.undo()
    assert doc.dump() == {"nodes": [], "links": []}


def test_every_edit_undoes_exactly(doc_stack):
    doc, stack = doc_stack
    ids = two_layer(doc, stack)
    # remove a node in the middle: its two links go with it, in one step
    _round_trip(doc, stack, commands.RemoveItemsCommand(doc, [ids["act"]]))
    assert ids["act"] not in doc.graph.nodes
    stack.undo()
    # disconnect a link
    link = doc.graph.link_into(ids["loss"], "target")
    _round_trip(doc, stack, commands.RemoveItemsCommand(doc, [], [link]))
    stack.undo()
    # params, rename, move
    _round_trip(doc, stack, commands.SetParamsCommand(doc, ids["l1"], {"out_features": 7}))
    assert doc.report().shapes[(ids["l1"], "out")] == (4, 7)
    stack.undo()
    _round_trip(doc, stack, commands.RenameCommand(doc, ids["l1"], "hidden"))
    stack.undo()
    _round_trip(doc, stack, commands.MoveNodesCommand(doc, {ids["x"]: ((0, 0), (10, 20))}))
    stack.undo()
    # paste keeps internal links only
    clip = commands.clip_selection(doc, [ids["l1"], ids["act"], ids["l2"]])
    assert len(clip["links"]) == 2
    _round_trip(doc, stack, commands.PasteCommand(doc, clip))
    assert len(doc.graph.nodes) == 9 and len(doc.graph.links) == 7
    stack.undo()
    # auto-layout is one move
    cmd = commands.auto_layout_command(doc, lambda nid: (180.0, 100.0))
    assert cmd is not None
    _round_trip(doc, stack, cmd)


def test_replace_link_is_one_step(doc_stack):
    doc, stack = doc_stack
    ids = two_layer(doc, stack)
    old = doc.graph.link_into(ids["l2"], "x")
    before = doc.dump()
    stack.push(commands.ConnectCommand(doc, ids["l1"], "out", ids["l2"], "x"))  # replaces act → l2
    assert doc.graph.link_into(ids["l2"], "x").src == ids["l1"]
    assert old not in doc.graph.links
    stack.undo()
    assert doc.dump() == before


def test_refused_edits_push_nothing(doc_stack):
    doc, stack = doc_stack
    ids = two_layer(doc, stack)
    n = stack.count()
    with pytest.raises(CycleError, match="cycle"):
        commands.ConnectCommand(doc, ids["act"], "out", ids["l1"], "x")
    with pytest.raises(ShapeError):
        commands.ConnectCommand(doc, ids["x"], "out", ids["loss"], "pred")  # (4, 3) against target (4, 2)
    with pytest.raises(ParamError, match="out_features"):
        commands.SetParamsCommand(doc, ids["l1"], {"out_features": 0})
    stack.push(commands.AddNodeCommand(doc, "Input", {"shape": (4,), "dtype": "ids"}, name="ids"))
    with pytest.raises(PortKindError, match="ids|integers|real"):
        commands.ConnectCommand(doc, doc.graph.find("ids").id, "out", ids["act"], "a")
    assert stack.count() == n + 1


def test_slider_drag_merges(doc_stack):
    doc, stack = doc_stack
    stack.push(commands.AddNodeCommand(doc, "Scale", {}, name="s"))
    nid = doc.graph.find("s").id
    before = doc.dump()
    for v in (0.5, 0.6, 0.7, 0.8):
        stack.push(commands.SetParamsCommand(doc, nid, {"factor": v}, merge_key="drag-1"))
    assert stack.count() == 2
    assert doc.node(nid).params["factor"] == 0.8
    stack.undo()
    assert doc.dump() == before
    # a new drag is a new step
    stack.redo()
    stack.push(commands.SetParamsCommand(doc, nid, {"factor": 0.1}, merge_key="drag-2"))
    assert stack.count() == 3


def test_read_only_document_refuses_edits(qapp):
    doc = Document(read_only=True, title="inside")
    with pytest.raises(ReadOnlyError, match="read-only"):
        doc.add_node("ReLU")


def test_signals_follow_edits(doc_stack):
    doc, stack = doc_stack
    seen = []
    doc.node_added.connect(lambda nid: seen.append(("node_added", nid)))
    doc.link_added.connect(lambda l: seen.append(("link_added", l)))
    doc.link_removed.connect(lambda l: seen.append(("link_removed", l)))
    doc.node_removed.connect(lambda nid: seen.append(("node_removed", nid)))
    ids = two_layer(doc, stack)
    assert sum(1 for k, _ in seen if k == "node_added") == 6
    seen.clear()
    stack.push(commands.RemoveItemsCommand(doc, [ids["act"]]))
    kinds = [k for k, _ in seen]
    assert kinds.count("link_removed") == 2 and kinds[-1] == "node_removed"
    assert all(isinstance(l, Link) for k, l in seen if k == "link_removed")


def test_expand_composite_is_one_step_and_wired(doc_stack):
    doc, stack = doc_stack
    stack.push(commands.AddNodeCommand(doc, "Input", {"shape": (2, 5, 8)}, name="x"))
    stack.push(commands.AddNodeCommand(doc, "TransformerBlock", {"dim": 8, "heads": 2}, name="tb", position=(300, 0)))
    stack.push(commands.AddNodeCommand(doc, "Mean", {}, name="m", position=(600, 0)))
    x, tb, m = (doc.graph.find(k).id for k in ("x", "tb", "m"))
    stack.push(commands.ConnectCommand(doc, x, "out", tb, "x"))
    stack.push(commands.ConnectCommand(doc, tb, "out", m, "a"))
    before = doc.dump()
    shape_before = doc.report().shapes[(m, "out")]
    stack.push(commands.ExpandCompositeCommand(doc, tb, size_of=lambda nid: (150.0, 80.0)))
    assert tb not in doc.graph.nodes
    types = sorted(n.type for n in doc.graph.nodes.values())
    assert "Attention" in types and "FeedForward" in types and "Output" not in types
    assert types.count("Input") == 1  # the inner Input gave way to the outside source
    assert doc.report().ok and doc.report().shapes[(m, "out")] == shape_before
    assert all(n.name.startswith("tb/") for n in doc.graph.nodes.values() if n.id not in (x, m))
    stack.undo()
    assert doc.dump() == before


def test_copy_paste_keeps_internal_links(doc_stack):
    doc, stack = doc_stack
    ids = two_layer(doc, stack)
    clip = commands.clip_selection(doc, [ids["l1"], ids["act"]])
    stack.push(commands.PasteCommand(doc, clip))
    new = [n for n in doc.graph.nodes if n not in ids.values()]
    assert len(new) == 2
    links = [l for l in doc.graph.links if l.src in new or l.dst in new]
    assert len(links) == 1 and {links[0].src, links[0].dst} == set(new)
    names = {doc.node(n).name for n in new}
    assert names == {"l1 2", "act 2"}


def test_paste_validates_the_clip_and_remaps_ties(doc_stack):
    from engine.errors import FileFormatError

    doc, stack = doc_stack
    stack.push(commands.AddNodeCommand(doc, "EmbedToken", {"vocab": 10, "dim": 4}, name="emb"))
    emb = doc.graph.find("emb").id
    stack.push(commands.AddNodeCommand(doc, "GenerateToken", {"vocab": 10, "tie_to": emb}, name="gen"))
    gen = doc.graph.find("gen").id
    stack.push(commands.PasteCommand(doc, commands.clip_selection(doc, [emb, gen])))
    new_gen = next(n for n in doc.graph.nodes.values() if n.type == "GenerateToken" and n.id != gen)
    new_emb = next(n for n in doc.graph.nodes.values() if n.type == "EmbedToken" and n.id != emb)
    assert new_gen.params["tie_to"] == new_emb.id
    # a clip with a cycle (or any other problem) is refused with the loader's message
    clip = commands.clip_selection(doc, [emb])
    a = clip["nodes"][0]["id"]
    bad = {"nodes": [{"id": "n1", "type": "ReLU", "name": "r1", "params": {}, "position": [0, 0]},
                     {"id": "n2", "type": "ReLU", "name": "r2", "params": {}, "position": [0, 0]}],
           "links": [{"from": ["n1", "out"], "to": ["n2", "a"]}, {"from": ["n2", "out"], "to": ["n1", "a"]}]}
    n = stack.count()
    with pytest.raises(FileFormatError, match="cycle"):
        commands.PasteCommand(doc, bad)
    assert stack.count() == n and a


def test_a_macro_is_one_step_and_outlives_its_stack(doc_stack):
    """MacroCommand runs its children in order and undoes them in reverse; the stack that held
    it can go (Qt's own QUndoCommand(parent) children crashed PySide6 in ~QUndoCommand)."""
    import gc

    doc, stack = doc_stack
    ids = two_layer(doc, stack)
    size = doc.node(ids["l1"]).params["out_features"]
    own = QUndoStack()
    own.push(commands.MacroCommand("Set two sizes", [commands.SetParamsCommand(doc, ids["l1"], {"out_features": 7}),
                                                     commands.SetParamsCommand(doc, ids["l1"], {"out_features": 9})]))
    assert own.count() == 1 and own.text(0) == "Set two sizes" and doc.node(ids["l1"]).params["out_features"] == 9
    own.undo()  # in reverse: back before both
    assert doc.node(ids["l1"]).params["out_features"] == size
    own.redo()
    assert doc.node(ids["l1"]).params["out_features"] == 9
    del own
    gc.collect()
    assert doc.node(ids["l1"]).params["out_features"] == 9
