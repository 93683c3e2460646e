"""Cards and wires tell the scene nothing by themselves (Qt calling a Python ``itemChange`` for
every change of every item cost a delete or an undo of thousands of items a large share of its
time): the scene moves cards and follows a drag, tells items when their selection changed, and a
wire takes its texts into and out of the scene and shows and hides them with itself. Driven by
real mouse and keyboard events."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from editor import commands
from editor.items import LinkItem, NodeItem, PortItem
from editor.items.link import WireLabel
from editor.view import GraphView
from tests.editor.helpers import shown_canvas, two_layer


@pytest.fixture
def canvas(qtbot):
    doc, stack, scene, view = shown_canvas(qtbot)
    ids = two_layer(doc, stack)
    view.fit()
    scene.arrange()
    QApplication.processEvents()
    return doc, stack, scene, view, ids


def _at(view: GraphView, scene_pos: QPointF) -> QPoint:
    return view.mapFromScene(scene_pos)


def test_the_wires_of_a_dragged_card_follow_it_while_it_moves(canvas):
    doc, stack, scene, view, ids = canvas
    item = scene.nodes[ids["act"]]
    into = scene.links[doc.graph.link_into(ids["act"], "a")]
    out = scene.links[doc.graph.link_into(ids["l2"], "x")]
    vp = view.viewport()
    start = _at(view, item.scenePos() + QPointF(40, 10))  # on the header
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for k in range(1, 8):
        QTest.mouseMove(vp, start + QPoint(9 * k, 12 * k))
        # before the release: the wires' ends are on the moving card's ports
        assert into.path.pointAtPercent(1.0) == item.inputs["a"].scenePos()
        assert out.path.pointAtPercent(0.0) == item.outputs["out"].scenePos()
    assert item.pos() != QPointF(500, 0)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start + QPoint(63, 84))
    assert doc.node(ids["act"]).position != (500.0, 0.0)
    stack.undo()  # the document moves it back: the scene moves the card, and its wires follow
    assert item.pos() == QPointF(500, 0)
    assert into.path.pointAtPercent(1.0) == item.inputs["a"].scenePos()


def test_selecting_a_card_with_an_error_raises_its_note_over_its_neighbours(canvas):
    doc, stack, scene, view, ids = canvas
    stack.push(commands.SetParamsCommand(doc, ids["l2"], {"out_features": 3}))
    card = scene.nodes[ids["loss"]]
    assert card.error and card.zValue() == 1
    vp = view.viewport()
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, _at(view, card.scenePos() + QPointF(30, 10)))
    assert card.isSelected() and card.zValue() == 3, "its note shows under it, above the next card"
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, _at(view, QPointF(300, 500)))
    assert not card.isSelected() and card.zValue() == 1
    scene.select_nodes([ids["loss"]])  # a selection made in one batch tells the card too
    assert card.zValue() == 3


def test_a_wire_lifted_off_its_input_hides_its_text_and_shows_it_when_put_back(canvas):
    doc, stack, scene, view, ids = canvas
    wire = scene.links[doc.graph.link_into(ids["l2"], "x")]
    label = wire.label_item
    assert label.isVisible() and label.text
    vp = view.viewport()
    port = _at(view, scene.nodes[ids["l2"]].inputs["x"].scenePos())
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, port)
    QTest.mouseMove(vp, port + QPoint(40, 60))
    assert not wire.isVisible() and not label.isVisible()
    QTest.keyClick(vp, Qt.Key.Key_Escape)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, port + QPoint(40, 60))
    assert wire.isVisible() and label.isVisible()


def test_a_selected_wire_repaints_its_text_in_the_selection_colour(canvas):
    """A text is drawn from a cached picture: it must be told when its wire's selection changes
    (by a click, a rubber band, a select-all, a clear)."""
    doc, stack, scene, view, ids = canvas
    wire = scene.links[doc.graph.link_into(ids["act"], "a")]
    label = wire.label_item
    repaints = []
    label.update = lambda *args: repaints.append(wire.isSelected())  # what selection_shown asks
    vp = view.viewport()
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, _at(view, wire.path.pointAtPercent(0.2)))
    assert wire.isSelected() and repaints == [True]
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, _at(view, QPointF(300, 500)))
    assert not wire.isSelected() and repaints == [True, False]
    with scene.selection_batch():
        wire.setSelected(True)
        scene.clearSelection()
        wire.setSelected(True)
    assert repaints == [True, False, True], "once per batch that changed it"


def test_deleted_cards_wires_and_texts_leave_the_scene_and_come_back_with_the_undo(canvas):
    doc, stack, scene, view, ids = canvas
    shown = {lb for item in scene.links.values() for lb in item.labels.values() if lb.isVisible()}
    assert shown
    where = {nid: item.sceneBoundingRect().center() for nid, item in scene.nodes.items()}
    scene.select_nodes(list(doc.graph.nodes))
    stack.push(commands.RemoveItemsCommand(doc, scene.selected_node_ids()))
    QApplication.processEvents()
    kinds = (NodeItem, LinkItem, WireLabel, PortItem)
    assert not [item for item in scene.items() if isinstance(item, kinds)], "nothing of them is left in the scene"
    assert not scene.selectedItems()
    assert all(scene._node_at(p) is None for p in where.values()), "nor under the mouse"
    stack.undo()
    QApplication.processEvents()
    assert {lb for item in scene.links.values() for lb in item.labels.values() if lb.isVisible()} == shown
    assert all(lb.scene() is scene for lb in shown)
    assert {scene._node_at(p).node_id for p in where.values()} == set(doc.graph.nodes)
    assert set(scene.selected_node_ids()) == set(doc.graph.nodes), "they come back selected, as they went"
