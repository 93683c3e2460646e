"""The canvas driven by real mouse events: wiring, refusing, moving, selecting."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest

from editor import commands
from editor.view import GraphView
from tests.editor.helpers import shown_canvas, two_layer


@pytest.fixture
def canvas(qtbot):
    return shown_canvas(qtbot)


def _vp(view: GraphView, scene_pos: QPointF) -> QPoint:
    return view.mapFromScene(scene_pos)


def _drag(view: GraphView, a: QPointF, b: QPointF, steps: int = 6) -> None:
    vp = view.viewport()
    p, q = _vp(view, a), _vp(view, b)
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p)
    for i in range(1, steps + 1):
        t = i / steps
        QTest.mouseMove(vp, QPoint(round(p.x() + (q.x() - p.x()) * t), round(p.y() + (q.y() - p.y()) * t)))
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, q)


def _port(scene, nid, name, output):
    item = scene.nodes[nid]
    return (item.outputs if output else item.inputs)[name].scenePos()


def test_items_mirror_document(canvas):
    doc, stack, scene, view = canvas
    ids = two_layer(doc, stack)
    assert set(scene.nodes) == set(doc.graph.nodes)
    assert set(scene.links) == set(doc.graph.links)
    # every wire shows its tensor shape
    link = doc.graph.link_into(ids["act"], "a")
    assert scene.links[link].label == "(4, 5)"
    stack.undo()
    assert len(scene.links) == len(doc.graph.links) == 4


def test_drag_output_to_input_makes_a_link(canvas):
    doc, stack, scene, view = canvas
    ids = two_layer(doc, stack)
    stack.push(commands.RemoveItemsCommand(doc, [], [doc.graph.link_into(ids["act"], "a")]))
    view.fit()
    assert doc.graph.link_into(ids["act"], "a") is None
    n = stack.count()
    _drag(view, _port(scene, ids["l1"], "out", True), _port(scene, ids["act"], "a", False))
    link = doc.graph.link_into(ids["act"], "a")
    assert link is not None and link.src == ids["l1"]
    assert stack.count() == n + 1
    assert scene.links[link].label == "(4, 5)"
    stack.undo()
    assert doc.graph.link_into(ids["act"], "a") is None


def test_cycle_is_refused_with_the_message_at_the_cursor(canvas):
    doc, stack, scene, view = canvas
    ids = two_layer(doc, stack)
    view.fit()
    before = doc.dump()
    n = stack.count()
    target = _port(scene, ids["l1"], "x", False)
    _drag(view, _port(scene, ids["l2"], "out", True), target)
    assert doc.dump() == before and stack.count() == n
    assert scene.toast.isVisible()
    assert "cycle" in scene.toast.text
    # shown where the user is looking: at the drop point
    assert (scene.toast.pos() - target).manhattanLength() < 20


def test_compatible_ports_light_up_while_dragging(canvas):
    doc, stack, scene, view = canvas
    ids = two_layer(doc, stack)
    view.fit()
    vp = view.viewport()
    start = _vp(view, _port(scene, ids["act"], "out", True))
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(vp, start + QPoint(30, 40))
    assert scene.nodes[ids["loss"]].inputs["target"].compatible is True
    assert scene.nodes[ids["l1"]].inputs["x"].compatible is False  # upstream: a cycle
    assert scene._wiring is not None
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start + QPoint(30, 40))
    assert scene._wiring is None
    assert scene.nodes[ids["loss"]].inputs["target"].compatible is None


def test_drop_on_occupied_input_replaces_in_one_step(canvas):
    doc, stack, scene, view = canvas
    ids = two_layer(doc, stack)
    stack.push(commands.AddNodeCommand(doc, "Input", {"shape": (4, 5)}, name="other", position=(300, 300)))
    other = doc.graph.find("other").id
    view.fit()
    before = doc.dump()
    _drag(view, _port(scene, other, "out", True), _port(scene, ids["act"], "a", False))
    assert doc.graph.link_into(ids["act"], "a").src == other
    assert len([l for l in doc.graph.links if l.dst == ids["act"]]) == 1
    stack.undo()
    assert doc.dump() == before


def test_lift_a_wire_off_an_input_and_drop_it_on_empty_canvas(canvas):
    doc, stack, scene, view = canvas
    ids = two_layer(doc, stack)
    view.fit()
    a = _port(scene, ids["act"], "a", False)
    _drag(view, a, a + QPointF(0, 260))
    assert doc.graph.link_into(ids["act"], "a") is None
    stack.undo()
    assert doc.graph.link_into(ids["act"], "a") is not None


def test_dragging_a_node_is_one_move(canvas):
    doc, stack, scene, view = canvas
    ids = two_layer(doc, stack)
    view.fit()
    item = scene.nodes[ids["act"]]
    start = item.scenePos() + QPointF(40, 10)  # on the header
    n = stack.count()
    _drag(view, start, start + QPointF(60, 90), steps=10)
    assert stack.count() == n + 1
    x, y = doc.node(ids["act"]).position
    assert x > 500 + 20 and y > 20
    # the wires followed
    link = doc.graph.link_into(ids["act"], "a")
    assert scene.links[link].path.pointAtPercent(1.0) == item.inputs["a"].scenePos()
    stack.undo()
    assert doc.node(ids["act"]).position == (500.0, 0.0)
    assert item.pos() == QPointF(500, 0)


def test_rubber_band_selects(canvas):
    doc, stack, scene, view = canvas
    ids = two_layer(doc, stack)
    view.fit()
    r = scene.nodes[ids["l1"]].sceneBoundingRect().united(scene.nodes[ids["act"]].sceneBoundingRect())
    _drag(view, r.topLeft() + QPointF(-20, -30), r.bottomRight() + QPointF(20, 30))
    assert set(scene.selected_node_ids()) >= {ids["l1"], ids["act"]}
    assert ids["loss"] not in scene.selected_node_ids()


def test_error_badge_and_incomplete(canvas):
    doc, stack, scene, view = canvas
    ids = two_layer(doc, stack)
    stack.push(commands.SetParamsCommand(doc, ids["l2"], {"out_features": 3}))
    assert "target" in scene.nodes[ids["loss"]].error or "shape" in scene.nodes[ids["loss"]].error.lower()
    stack.undo()
    assert scene.nodes[ids["loss"]].error == ""
    stack.push(commands.RemoveItemsCommand(doc, [], [doc.graph.link_into(ids["act"], "a")]))
    assert scene.nodes[ids["act"]].incomplete


def test_arrow_keys_nudge_the_selection_one_step_each(canvas):
    doc, stack, scene, view = canvas
    ids = two_layer(doc, stack)
    scene.select_nodes([ids["act"], ids["l2"]])
    view.setFocus()
    n = stack.count()
    QTest.keyClick(view, Qt.Key.Key_Right)
    QTest.keyClick(view, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    assert doc.node(ids["act"]).position == (508.0, 40.0) and doc.node(ids["l2"]).position == (758.0, 40.0)
    assert scene.nodes[ids["act"]].pos() == QPointF(508, 40)
    assert stack.count() == n + 2
    stack.undo()
    stack.undo()
    assert doc.node(ids["act"]).position == (500.0, 0.0)
