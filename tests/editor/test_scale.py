"""The editor at scale: an edit of many nodes costs one update of the graph, the selection and the
wires, however many nodes it touches; an undo brings back the same cards without routing a wire
again; and the wires and texts an edit leaves are exactly those a pass from scratch gives.

Counted, not timed (speed figures live in benchmarks/bench_editor_scale.py): counting is what
fails on code that updates once per node, whatever the machine's load.
"""

from __future__ import annotations

from collections import Counter

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QUndoStack
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from editor import commands
from editor.document import Document
from editor.scene import GraphScene
from editor.window import MainWindow
from engine import serialize
from engine.graph import Graph, Link

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise", "grabbing the keyboard")


def chain(n: int, row: int = 20, skip: int = 0) -> Graph:
    """Input → n−1 ReLU/Tanh nodes in rows of ``row`` cards (the wire back to each next row must
    be routed around the cards); with ``skip``, every ``skip``-th node is an Add whose second
    input comes from ``skip`` nodes earlier (a residual wire over the cards between)."""
    g = Graph()
    ids = [g.add_node("Input", {"shape": (4, 8)}, name="x", position=(0.0, 0.0)).id]
    for i in range(1, n):
        r, c = divmod(i, row)
        add = bool(skip) and i % skip == 0 and i > skip
        node = g.add_node("Add" if add else ("ReLU" if i % 2 else "Tanh"), {}, name=f"n{i}",
                          position=(220.0 * c, 170.0 * r))
        g.add_link(Link(ids[-1], "out", node.id, "a"))
        if add:
            g.add_link(Link(ids[-skip], "out", node.id, "b"))
        ids.append(node.id)
    return g


class Counts:
    """Shape inferences (graph revisions inferred) and selection changes, counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, scene: GraphScene) -> None:
        self.n: Counter[str] = Counter()
        real = Graph.infer

        def infer(graph: Graph):  # noqa: ANN202
            cached = graph._cache.get("infer")
            if not (cached and cached[0] == graph.revision):
                self.n["inferences"] += 1
            return real(graph)

        monkeypatch.setattr(Graph, "infer", infer)
        scene.selectionChanged.connect(lambda: self.n.update(["selection changes"]))

    def take(self) -> Counter[str]:
        out, self.n = self.n, Counter()
        return out


@pytest.fixture
def big(qtbot, tmp_path, monkeypatch):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.resize(1300, 800)
    w.show()
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w)
    w.files.set_project(serialize.Project(chain(400), "chain"), None)
    QApplication.processEvents()
    yield w
    w.undo_stack.setClean()


def _settle() -> None:
    for _ in range(3):
        QApplication.processEvents()


def test_select_all_delete_and_undo_cost_one_update_each(big, monkeypatch):
    w = big
    scene, g = w.scene, w.doc.graph
    counts = Counts(monkeypatch, scene)
    before = w.doc.dump()
    links = len(g.links)
    assert links == 399

    w.view.setFocus()
    QTest.keyClick(w.view, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    _settle()
    assert len(scene.selected_node_ids()) == 400
    assert counts.take()["selection changes"] == 1  # was one per node: the panels re-read 400 times

    revision, arrangements = g.revision, scene.arrangements
    QTest.keyClick(w.view, Qt.Key.Key_Delete)
    _settle()
    assert not w.doc.graph.nodes and not scene.nodes and not scene.links
    n = counts.take()
    assert n["selection changes"] == 1
    assert g.revision == revision + 1, "one change of the graph, not one per node and link"
    assert n["inferences"] <= 1
    assert scene.arrangements - arrangements <= 1

    routes, arrangements = scene.routes_planned, scene.arrangements
    QTest.keyClick(w.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    _settle()
    assert w.doc.dump() == before
    assert len(scene.nodes) == 400 and len(scene.links) == links
    n = counts.take()
    assert n["selection changes"] <= 1 and n["inferences"] <= 1
    assert scene.arrangements - arrangements <= 1
    # the same cards come back where they were: no wire needs routing again
    assert scene.routes_planned == routes
    assert len(scene.selected_node_ids()) == 400, "they come back selected, as they went"

    # moving one card re-routes the wires near it, not all 399
    nid = next(iter(w.doc.graph.nodes))
    x, y = w.doc.node(nid).position
    w.undo_stack.push(commands.MoveNodesCommand(w.doc, {nid: ((x, y), (x, y + 40.0))}))
    _settle()
    assert 1 <= scene.routes_planned - routes <= 20
    assert counts.take()["inferences"] == 0  # a move changes no shape


def _picture(scene: GraphScene) -> dict:
    """Every wire's path and every text's place, as drawn."""
    out = {}
    for link, item in scene.links.items():
        texts = tuple((slot, lb.chosen, round(lb.pos().x(), 3), round(lb.pos().y(), 3), lb.isVisible())
                      for slot, lb in sorted(item.labels.items()))
        out[link] = (item.geometry, texts)
    return out


def _shown(scene: GraphScene) -> dict:
    """What :func:`_picture` holds, without where hidden texts would go (they are not drawn)."""
    return {link: (geometry, tuple(t if t[4] else t[:2] for t in texts))
            for link, (geometry, texts) in _picture(scene).items()}


def _from_scratch(scene: GraphScene) -> dict:
    for item in scene.links.values():
        item.route_memo = None
        for lb in item.labels.values():
            lb.spot = None
    scene.arrange(reroute=True)
    return _picture(scene)


def test_an_edit_leaves_the_wires_and_texts_a_fresh_arrangement_would(qtbot):
    doc = Document(chain(90, row=12, skip=4))
    stack = QUndoStack()
    scene = GraphScene(doc, stack)
    scene.arrange(reroute=True)
    assert any(item.route for item in scene.links.values()), "the graph has routed wires to check"
    ids = list(doc.graph.nodes)

    def check(what: str) -> None:
        scene.arrange()
        incremental = _picture(scene)
        assert incremental == _from_scratch(scene), what

    check("opened")
    # a card moved into the middle of other wires and texts
    x, y = doc.node(ids[30]).position
    stack.push(commands.MoveNodesCommand(doc, {ids[30]: ((x, y), (x + 90.0, y + 85.0))}))
    check("a card moved")
    stack.push(commands.RemoveItemsCommand(doc, ids[40:47]))
    check("nodes deleted")
    stack.push(commands.MoveNodesCommand(doc, {n: (doc.node(n).position, (doc.node(n).position[0], doc.node(n).position[1] - 60.0))
                                               for n in ids[50:60]}))
    check("a row moved up")
    stack.undo()
    check("undo the row")
    stack.undo()
    check("undo the delete")
    stack.push(commands.SetParamsCommand(doc, ids[0], {"shape": (4, 64)}))
    check("every shape text changed")
    stack.undo()
    stack.undo()
    check("back to the start")


def _shown_texts(scene: GraphScene) -> dict:
    """What every card and wire says about shapes: status, port tooltips, wire label."""
    out: dict = {}
    for nid, item in scene.nodes.items():
        out[nid] = (item.error, item.incomplete, tuple((n, p.toolTip()) for n, p in sorted(item.inputs.items())),
                    tuple((n, p.toolTip()) for n, p in sorted(item.outputs.items())))
    for link, item in scene.links.items():
        out[link] = (item.label, item.kind, item.known, item.toolTip())
    return out


def test_undo_and_redo_leave_the_shape_texts_a_fresh_scene_shows(qtbot):
    """Cards and wires that already show the current shape report are not re-read: after every
    step, what they say is what a scene built from scratch on the same graph says."""
    doc = Document(chain(60, row=12, skip=4))
    stack = QUndoStack()
    scene = GraphScene(doc, stack)
    ids = list(doc.graph.nodes)

    def check(what: str) -> None:
        fresh = GraphScene(doc, None)
        try:
            assert _shown_texts(scene) == _shown_texts(fresh), what
        finally:
            doc.disconnect(fresh)

    check("opened")
    stack.push(commands.RemoveItemsCommand(doc, ids))
    check("everything deleted")
    stack.undo()
    check("undo: the very report comes back")
    stack.push(commands.RemoveItemsCommand(doc, ids[10:12]))  # what follows is not connected any more
    check("a gap in the chain")
    stack.push(commands.SetParamsCommand(doc, ids[0], {"shape": (4, 64)}))
    check("every shape changed")
    stack.undo()
    check("undo the shapes")
    stack.undo()
    check("undo the gap")
    stack.redo()
    stack.redo()
    stack.push(commands.RemoveItemsCommand(doc, ids[20:]))
    stack.undo()
    check("a delete undone after other edits")
    stack.undo()
    stack.undo()
    check("back to the start")


def test_texts_that_crowd_each_other_move_as_a_fresh_placement_would(qtbot):
    """One output feeding a column of cards: the wires' texts compete for the same room, so where
    one goes decides where the next can; edits reshuffle them."""
    g = Graph()
    x = g.add_node("Input", {"shape": (4, 8)}, name="x", position=(0.0, 200.0))
    fan = [g.add_node("ReLU", {}, name=f"r{k}", position=(260.0 + 25.0 * (k % 3), 75.0 * k)) for k in range(8)]
    for node in fan:
        g.add_link(Link(x.id, "out", node.id, "a"))
    doc = Document(g)
    stack = QUndoStack()
    scene = GraphScene(doc, stack)
    scene.arrange(reroute=True)
    shown = [lb for item in scene.links.values() for lb in item.labels.values() if lb.chosen >= 0]
    assert len({(round(lb.pos().x()), round(lb.pos().y())) for lb in shown}) == len(shown) > 3

    def check(what: str) -> None:
        scene.arrange()
        assert _picture(scene) == _from_scratch(scene), what

    for k, dy in ((3, 160.0), (0, 120.0), (6, -300.0), (2, -40.0)):
        nid = fan[k].id
        px, py = doc.node(nid).position
        stack.push(commands.MoveNodesCommand(doc, {nid: ((px, py), (px - 120.0, py + dy))}))
        check(f"r{k} moved")
    stack.push(commands.RemoveItemsCommand(doc, [fan[4].id]))
    check("r4 deleted")
    stack.push(commands.SetParamsCommand(doc, x.id, {"shape": (4, 12345)}))
    check("longer texts")
    while stack.canUndo():
        stack.undo()
        check(f"undo to {stack.index()}")


def test_a_wire_follows_when_a_wire_routed_before_it_takes_another_lane(qtbot):
    """Two bypass wires over one row of cards: the inner one runs beside the outer one's lane,
    so when the outer one moves (its far-away source card moves) the inner one must move too,
    though nothing near it changed."""
    g = Graph()
    row = [g.add_node("Input", {"shape": (4, 8)}, name="c0", position=(0.0, 0.0))]
    for k in range(1, 9):
        row.append(g.add_node("Add", {}, name=f"c{k}", position=(230.0 * k, 0.0)))  # tall: no lane at port height
    outer = Link(row[0].id, "out", row[8].id, "b")
    inner = Link(row[2].id, "out", row[6].id, "b")
    g.add_link(outer)  # routed first: the inner wire sees its lane
    g.add_link(inner)
    for a, b in zip(row, row[1:]):
        g.add_link(Link(a.id, "out", b.id, "a"))
    doc = Document(g)
    stack = QUndoStack()
    scene = GraphScene(doc, stack)
    scene.arrange(reroute=True)
    assert scene.links[outer].route and scene.links[inner].route

    def check(what: str) -> None:
        scene.arrange()
        assert _picture(scene) == _from_scratch(scene), what

    moved = []
    for dy in (-40.0, 40.0, 60.0, -75.0):
        px, py = doc.node(row[0].id).position
        stack.push(commands.MoveNodesCommand(doc, {row[0].id: ((px, py), (px - 200.0, py + dy))}))
        check(f"c0 moved by {dy}")
        moved.append(scene.links[inner].geometry)
    assert len(set(moved)) > 1, "the inner wire did move with the outer one"


def test_a_big_graph_shown_is_frozen_out_of_full_collections_and_released_by_the_next(qtbot, tmp_path):
    """A full pass of the cyclic collector walks every object a big graph's items hold (~0.3 s
    at 5,000 nodes, landing on whatever edit comes next): a big project shown is frozen out of it;
    the next project shown releases it (it may be garbage now)."""
    import gc

    from editor import window as window_module

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings)
    qtbot.addWidget(w)
    try:
        assert gc.get_freeze_count() == 0
        w.files.set_project(serialize.Project(chain(window_module.FREEZE_NODES, row=40), "big"), None)
        assert gc.get_freeze_count() > 0
        w.files.set_project(serialize.Project(chain(10), "small"), None)
        assert gc.get_freeze_count() == 0, "what the big one froze is released"
    finally:
        gc.unfreeze()
        w.undo_stack.setClean()


# --- an undone delete brings back the picture it took away ----------------------------------------

def _settled(scene: GraphScene) -> None:
    QApplication.processEvents()
    QApplication.processEvents()


def _fresh_grid(scene: GraphScene) -> dict:
    """The cards' grid as a scene building it now would have it."""
    kept = scene._grid
    scene._grid = None
    try:
        return scene.card_grid().buckets
    finally:
        scene._grid = kept


def test_undoing_a_delete_of_everything_shows_the_picture_before_it_without_arranging(qtbot):
    doc = Document(chain(90, row=12, skip=4))
    stack = QUndoStack()
    scene = GraphScene(doc, stack)
    _settled(scene)
    before = _picture(scene)
    bounds = scene.items_bounding_rect()
    assert any(item.route for item in scene.links.values())
    ids = list(doc.graph.nodes)

    stack.push(commands.RemoveItemsCommand(doc, ids))
    _settled(scene)
    assert not scene.links and scene.items_bounding_rect().isEmpty()
    arrangements, routes = scene.arrangements, scene.routes_planned
    stack.undo()
    _settled(scene)
    assert scene.arrangements == arrangements, "the picture came back as it was: nothing to arrange"
    assert scene.routes_planned == routes
    assert _picture(scene) == before
    assert scene.items_bounding_rect() == bounds
    assert scene.card_grid().buckets == _fresh_grid(scene)
    assert _picture(scene) == _from_scratch(scene), "and it is what a fresh arrangement gives"

    # redo and undo again, this time before the delete's own arrangement ran (one event-loop turn)
    arrangements = scene.arrangements
    stack.redo()
    stack.undo()
    _settled(scene)
    assert scene.arrangements == arrangements
    assert _picture(scene) == _from_scratch(scene)


def test_undoing_a_delete_that_moved_other_wires_arranges_them_again(qtbot):
    """Deleting the cards a bypass wire ran around lets it run straight; the undo must route it
    around them again (the picture before the delete is not the one the delete left)."""
    doc = Document(chain(40, row=40, skip=4))  # one row: every 4th card takes a wire from 4 back
    stack = QUndoStack()
    scene = GraphScene(doc, stack)
    _settled(scene)
    ids = list(doc.graph.nodes)
    bypass = next(link for link in doc.graph.links if link.dst == ids[12] and link.dst_port == "b")
    assert link_route(scene, bypass), "the wire from 4 cards back runs around the cards between"
    before = _shown(scene)

    stack.push(commands.RemoveItemsCommand(doc, ids[9:12]))
    _settled(scene)
    assert not link_route(scene, bypass), "nothing in its way now"
    arrangements = scene.arrangements
    stack.undo()
    _settled(scene)
    assert scene.arrangements > arrangements
    assert link_route(scene, bypass)
    assert _shown(scene) == before
    assert _picture(scene) == _from_scratch(scene)


def test_undoing_the_delete_of_a_card_in_a_wires_way_routes_the_wire_around_it_again(qtbot):
    """A card that no wire touches stands between the two ends of a wire: deleting it changes
    no shape and no other card, only that wire's route (straight now). The undo brings back
    exactly what went, with nothing else changed in between, yet the picture before the delete
    is not the one the delete left: the wire must go around the card again."""
    g = Graph()
    x = g.add_node("Input", {"shape": (4, 8)}, name="x", position=(0.0, 0.0))
    y = g.add_node("ReLU", {}, name="y", position=(900.0, 0.0))
    blocker = g.add_node("Input", {"shape": (4, 8)}, name="in the way", position=(450.0, -10.0))
    wire = Link(x.id, "out", y.id, "a")
    g.add_link(wire)
    doc = Document(g)
    stack = QUndoStack()
    scene = GraphScene(doc, stack)
    _settled(scene)
    assert link_route(scene, wire), "it goes around the card"
    before = _shown(scene)
    stack.push(commands.RemoveItemsCommand(doc, [blocker.id]))
    _settled(scene)
    assert not link_route(scene, wire), "straight, now that nothing is in its way"
    stack.undo()
    _settled(scene)
    assert link_route(scene, wire)
    assert _shown(scene) == before
    assert _picture(scene) == _from_scratch(scene)


def test_undoing_the_delete_of_cards_nothing_else_depended_on_arranges_nothing(qtbot):
    """Cards (and the wire between them) far from the rest go and come back: the picture before
    the delete is the one the undo brings back, in the same order (routing follows it)."""
    g = Graph()
    prev = g.add_node("Input", {"shape": (4, 8)}, name="x", position=(0.0, 0.0))
    far: list = []
    for i in range(1, 30):
        if i == 15:  # the far cards in the middle of the order
            far = [g.add_node("Input", {"shape": (2, 3)}, name="far", position=(0.0, 3000.0)),
                   g.add_node("ReLU", {}, name="far too", position=(300.0, 3000.0))]
            g.add_link(Link(far[0].id, "out", far[1].id, "a"))
        node = g.add_node("Tanh", {}, name=f"n{i}", position=(220.0 * (i % 10), 170.0 * (i // 10)))
        g.add_link(Link(prev.id, "out", node.id, "a"))
        prev = node
    doc = Document(g)
    stack = QUndoStack()
    scene = GraphScene(doc, stack)
    _settled(scene)
    order = (list(scene.nodes), list(scene.links))
    before = _picture(scene)
    stack.push(commands.RemoveItemsCommand(doc, [f.id for f in far]))
    _settled(scene)
    arrangements, routes = scene.arrangements, scene.routes_planned
    stack.undo()
    _settled(scene)
    assert scene.arrangements == arrangements and scene.routes_planned == routes
    assert (list(scene.nodes), list(scene.links)) == order
    assert order[0].index(far[0].id) == 15
    assert _picture(scene) == before == _from_scratch(scene)


def link_route(scene: GraphScene, link: Link):  # noqa: ANN201
    return scene.links[link].route


@pytest.mark.parametrize("between", ["move undone", "shape changed and back", "renamed"])
def test_an_edit_between_a_delete_and_its_undo_leaves_a_fresh_picture(qtbot, between):
    doc = Document(chain(60, row=12, skip=4))
    stack = QUndoStack()
    scene = GraphScene(doc, stack)
    _settled(scene)
    ids = list(doc.graph.nodes)
    stack.push(commands.RemoveItemsCommand(doc, ids[20:30]))
    _settled(scene)
    if between == "move undone":
        x, y = doc.node(ids[2]).position
        stack.push(commands.MoveNodesCommand(doc, {ids[2]: ((x, y), (x + 300.0, y + 140.0))}))
        _settled(scene)
        stack.undo()
    elif between == "shape changed and back":
        stack.push(commands.SetParamsCommand(doc, ids[0], {"shape": (4, 64)}))
        _settled(scene)
        stack.undo()
    else:
        doc.rename(ids[3], "a much, much longer name than before")  # (kept: not on the stack)
        _settled(scene)
    _settled(scene)
    stack.undo()
    _settled(scene)
    assert len(scene.nodes) == 60
    assert scene.items_bounding_rect() == _fresh_bounds(scene)
    assert scene.card_grid().buckets == _fresh_grid(scene)
    assert _picture(scene) == _from_scratch(scene), between


def _fresh_bounds(scene: GraphScene):  # noqa: ANN202
    rect = None
    for item in scene.nodes.values():
        rect = item.card_rect() if rect is None else rect.united(item.card_rect())
    return rect


def test_a_card_and_a_wire_text_measure_themselves_again_when_they_change(qtbot):
    """Cards and wire texts keep their bounding rectangles (Qt asks for them all the time): a
    change of name, status or text must give the new one."""
    doc = Document(chain(3))
    stack = QUndoStack()
    scene = GraphScene(doc, stack)
    ids = list(doc.graph.nodes)
    card = scene.nodes[ids[1]]
    narrow = card.boundingRect()
    stack.push(commands.RenameCommand(doc, ids[1], "a card with a far longer name than it had"))
    assert card.boundingRect().width() > narrow.width()
    plain = card.boundingRect()
    card.set_status("this block's input shapes do not work", False)
    assert card.boundingRect().height() > plain.height(), "the error note under the card"
    card.set_status("", False)
    assert card.boundingRect() == plain

    label = scene.links[next(iter(doc.graph.links))].label_item
    scene.arrange()
    short = label.boundingRect()
    assert short.width() > 0 and label.text == "(4, 8)"
    stack.push(commands.SetParamsCommand(doc, ids[0], {"shape": (4, 123456)}))
    scene.arrange()
    assert label.text.startswith("(4, 123456") or label.text.startswith("4×123456")
    assert label.boundingRect().width() > short.width()
    assert label.boundingRect() == label.rect_for(label.text).adjusted(-1, -1, 1, 1)
