"""Navigation: wheel and key zoom, fit, middle-button and space-drag panning, the minimap,
and the pure auto-layout."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PySide6.QtCore import QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QUndoStack, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from editor.document import Document
from editor.layout import layered_positions
from editor.scene import GraphScene
from editor.view import GraphView
from editor.window import MainWindow
from tests.editor.helpers import shown_canvas, two_layer

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints")


@pytest.fixture
def canvas(qtbot):
    doc, stack, scene, view = shown_canvas(qtbot, 900, 600)
    ids = two_layer(doc, stack)
    return doc, stack, scene, view, ids


def _wheel(view: GraphView, at: QPoint, delta: int) -> None:
    event = QWheelEvent(QPointF(at), QPointF(view.viewport().mapToGlobal(at)), QPoint(0, 0), QPoint(0, delta),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), event)


def test_wheel_zooms_about_the_cursor(canvas):
    doc, stack, scene, view, ids = canvas
    view.reset_zoom()
    at = QPoint(300, 200)
    under = view.mapToScene(at)
    _wheel(view, at, 240)
    assert view.zoom() > 1.3
    after = view.mapToScene(at)
    assert abs(after.x() - under.x()) < 3 and abs(after.y() - under.y()) < 3
    _wheel(view, at, -480)
    assert view.zoom() < 1.0


def test_fit_shows_every_node(canvas):
    doc, stack, scene, view, ids = canvas
    view.set_zoom(3.0)
    view.fit()
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    for item in scene.nodes.values():
        assert visible.contains(item.sceneBoundingRect())
    assert view.zoom() <= 1.0


def test_middle_button_and_space_drag_pan(canvas):
    doc, stack, scene, view, ids = canvas
    view.reset_zoom()
    vp = view.viewport()
    before = view.mapToScene(QPoint(0, 0))
    QTest.mousePress(vp, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, QPoint(400, 300))
    QTest.mouseMove(vp, QPoint(350, 280))
    QTest.mouseMove(vp, QPoint(300, 260))
    QTest.mouseRelease(vp, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, QPoint(300, 260))
    after = view.mapToScene(QPoint(0, 0))
    assert after.x() - before.x() == pytest.approx(100, abs=2) and after.y() - before.y() == pytest.approx(40, abs=2)
    # space + left drag pans and does not rubber-band select or move nodes
    dump = doc.dump()
    view.setFocus()
    QTest.keyPress(view, Qt.Key.Key_Space)
    start = view.mapFromScene(scene.nodes[ids["act"]].sceneBoundingRect().center())
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    QTest.mouseMove(vp, start + QPoint(-60, 0))
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start + QPoint(-60, 0))
    QTest.keyRelease(view, Qt.Key.Key_Space)
    assert view.mapToScene(QPoint(0, 0)).x() - after.x() == pytest.approx(60, abs=2)
    assert doc.dump() == dump and stack.canUndo()


def test_zoom_keys_and_minimap(qtbot, tmp_path):
    w = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    w.resize(1000, 700)
    w.show()
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w)  # shortcuts go to the active window
    two_layer(w.doc, w.undo_stack)
    w.view.reset_zoom()
    w.view.setFocus()
    QTest.keyClick(w.view, Qt.Key.Key_Equal, Qt.KeyboardModifier.ControlModifier)
    assert w.view.zoom() == pytest.approx(1.25)
    QTest.keyClick(w.view, Qt.Key.Key_Minus, Qt.KeyboardModifier.ControlModifier)
    assert w.view.zoom() == pytest.approx(1.0)
    # zoomed in on a corner, the graph does not fit: the minimap appears; fit hides it
    w.view.set_zoom(3.0)
    w.minimap.rebuild()
    assert w.minimap.isVisible()
    QTest.keyClick(w.view, Qt.Key.Key_F)
    w.minimap.rebuild()
    assert not w.minimap.isVisible()
    # clicking the minimap moves the view there
    w.view.set_zoom(3.0)
    w.minimap.rebuild()
    centre_before = w.view.mapToScene(w.view.viewport().rect().center())
    QTest.mouseClick(w.minimap, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(10, w.minimap.height() // 2))
    centre_after = w.view.mapToScene(w.view.viewport().rect().center())
    assert centre_after.x() < centre_before.x()
    w.undo_stack.setClean()


def test_layered_layout_is_left_to_right(qapp):
    doc, stack = Document(), QUndoStack()
    ids = two_layer(doc, stack)
    pos = layered_positions(doc.graph, lambda nid: (100.0, 50.0), h_gap=20, v_gap=10)
    assert pos[ids["x"]][0] < pos[ids["l1"]][0] < pos[ids["act"]][0] < pos[ids["l2"]][0] < pos[ids["loss"]][0]
    # the target input sits in the column just before the loss that consumes it
    assert pos[ids["target"]][0] == pos[ids["l2"]][0]
    # no two nodes overlap
    boxes = [(x, y, x + 100, y + 50) for x, y in pos.values()]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_spread_pulls_apart_only_the_axis_that_needs_it():
    from editor.layout import spread_factor

    row = [(0.0, 0.0, 150.0, 60.0), (100.0, 0.0, 150.0, 60.0), (200.0, 10.0, 150.0, 60.0)]
    sx, sy = spread_factor(row, h_gap=50.0, v_gap=10.0)
    assert sx == pytest.approx(2.0) and sy == 1.0
    column = [(0.0, 0.0, 150.0, 60.0), (0.0, 35.0, 150.0, 60.0)]
    assert spread_factor(column, h_gap=50.0, v_gap=10.0) == (1.0, pytest.approx(2.0))
    roomy = [(0.0, 0.0, 150.0, 60.0), (400.0, 0.0, 150.0, 60.0), (0.0, 200.0, 150.0, 60.0)]
    assert spread_factor(roomy) == (1.0, 1.0)


def _spread_by_every_pair(boxes, h_gap=70.0, v_gap=16.0, cap=3.0):
    """spread_factor as first written: every pair in x order (the reference; quadratic)."""
    order = sorted(boxes)
    widest = max((b[2] for b in boxes), default=0.0) + h_gap
    sx = 1.0
    for i, (x1, y1, w1, h1) in enumerate(order):
        for x2, y2, w2, h2 in order[i + 1:]:
            dx = x2 - x1
            if dx > 0 and widest / dx <= sx:
                break
            top_h = h1 if y1 <= y2 else h2
            if dx > 0 and abs(y2 - y1) < top_h + v_gap:
                sx = max(sx, min(cap, (w1 + h_gap) / dx))
    sy = 1.0
    for i, (x1, y1, w1, h1) in enumerate(order):
        for x2, y2, w2, h2 in order[i + 1:]:
            if (x2 - x1) * sx >= w1 + h_gap:
                break
            dy = abs(y2 - y1)
            top_h = h1 if y1 <= y2 else h2
            if dy > 0:
                sy = max(sy, min(cap, (top_h + v_gap) / dy))
    return sx, sy


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from([80.0, 150.0, 220.0]),
                          st.sampled_from([40.0, 60.0, 90.0])), max_size=40, unique_by=lambda b: (b[0], b[1])),
       st.sampled_from([10.0, 20.0, 60.0]))
def test_spread_equals_looking_at_every_pair(raw, step):
    """Crowded, in rows, in columns, overlapping: the bounded search finds what every pair says."""
    from editor.layout import spread_factor

    boxes = [(x * step, y * step, w, h) for x, y, w, h in raw]
    got = spread_factor(boxes)
    assert got == pytest.approx(_spread_by_every_pair(boxes)), boxes


def test_spread_of_thousands_of_nodes_in_one_spot_or_one_column():
    """A file whose 20,000 nodes have no positions (all at the origin) or sit in one column: each
    pair used to be looked at (minutes); now it is one box, or neighbours only."""
    from editor.layout import spread_factor

    assert spread_factor([(0.0, 0.0, 150.0, 60.0)] * 20000) == (1.0, 1.0)
    column = [(0.0, 100.0 * k, 150.0, 60.0) for k in range(20000)]
    assert spread_factor(column) == (1.0, 1.0)
    tight = [(0.0, 50.0 * k, 150.0, 60.0) for k in range(20000)]
    assert spread_factor(tight) == (1.0, pytest.approx(76.0 / 50.0))
    # and crowded beyond any reason: bounded, as spread as allowed
    assert spread_factor([(k * 1e-3, 0.0, 150.0, 60.0) for k in range(20000)] +
                         [(0.0, k * 1e-3, 150.0, 60.0) for k in range(1, 20000)]) == (3.0, 3.0)


def test_a_long_chain_folds_into_a_snake_that_fits_the_view():
    from editor.layout import arrange
    from engine.graph import Graph

    g = Graph()
    prev = g.add_node("Input", {"shape": (2, 3)}, name="x")
    chain = [prev.id]
    for i in range(19):
        node = g.add_node("ReLU", name=f"r{i}")
        g.connect(prev.id, "out", node.id, "a")
        prev = node
        chain.append(node.id)
    flat = layered_positions(g, lambda nid: (100.0, 50.0))
    assert len({y for _, y in flat.values()}) == 1
    snake = arrange(g, lambda nid: (100.0, 50.0), viewport=(900.0, 700.0))
    assert snake.folds >= 2 and snake.zoom > arrange(g, lambda nid: (100.0, 50.0)).zoom * 0 + 0.5
    pos = snake.positions
    xs = sorted({x for x, _ in pos.values()})
    assert 3 <= len(xs) <= 6
    # every wire joins neighbours: the next card is right below/above, or beside it at a turn
    for a, b in zip(chain, chain[1:]):
        (xa, ya), (xb, yb) = pos[a], pos[b]
        assert (xa == xb and abs(ya - yb) < 50.0 + 70) or (xs.index(xb) == xs.index(xa) + 1 and ya == yb)
    # down one column, up the next
    first = [n for n in chain if pos[n][0] == xs[0]]
    second = [n for n in chain if pos[n][0] == xs[1]]
    assert [pos[n][1] for n in first] == sorted(pos[n][1] for n in first)
    assert [pos[n][1] for n in second] == sorted((pos[n][1] for n in second), reverse=True)


def test_rows_fold_to_fit_the_view_but_never_through_a_bypass(qapp):
    from editor.layout import arrange
    from engine import blocks

    # the two-layer net of the lecture, 8 columns: in a 4:3 view it folds into two rows
    import presets
    from engine import serialize

    g = serialize.load(presets.path("two_layer_net")).graph
    wide = arrange(g, lambda nid: (110.0, 60.0), viewport=(800.0, 620.0))
    assert wide.folds == 1 and wide.zoom >= 0.9
    loss = g.find("loss").id
    inputs = [g.find("φ(x)").id, g.find("V").id]
    assert all(wide.positions[i][1] < wide.positions[loss][1] for i in inputs), "inputs on the first row"
    assert all(wide.positions[i][0] < wide.positions[loss][0] for i in inputs), "the loss on the right"
    # a TransformerBlock's residual wires skip a column each: it stays one row of bypass lanes
    tb = blocks.create("TransformerBlock", dim=8, heads=2).build({"x": (2, 3, 8)})
    result = arrange(tb, lambda nid: (110.0, 60.0), viewport=(800.0, 620.0))
    assert result.folds == 0
    assert len({y for n, (x, y) in result.positions.items() if tb.nodes[n].type == "AddNorm"}) == 1


def test_a_skipping_wire_runs_in_a_lane_around_the_block_it_bypasses(qapp):
    from engine.graph import Graph

    g = Graph()
    x = g.add_node("Input", {"shape": (2, 3)}, name="x")
    f = g.add_node("ReLU", name="f")
    add = g.add_node("Add", name="add")
    g.connect(x.id, "out", f.id, "a")
    g.connect(f.id, "out", add.id, "a")
    g.connect(x.id, "out", add.id, "b")  # residual: skips f's column
    pos = layered_positions(g, lambda nid: (100.0, 60.0))
    assert pos[x.id][1] == pos[f.id][1], "the main path runs straight"
    scene = GraphScene(Document(g, read_only=True), None)
    scene.auto_layout_view()
    scene.arrange(reroute=True)
    residual = next(item for link, item in scene.links.items() if link.src == x.id and link.dst == add.id)
    assert residual.route, "routed, not a plain curve"
    card = scene.nodes[f.id].card_rect()
    path = residual.path
    assert not any(card.contains(path.pointAtPercent(i / 100)) for i in range(101))


def test_unrolled_rnn_draws_like_the_lecture():
    """A row of cells left to right, x_t below each cell, the states gathered above, and no wire
    longer than two cell widths but the input's and the output's."""
    from editor.layout import arrange, find_buses
    from engine import blocks

    g = blocks.create("SequenceRNN", cell="LSTM", hidden=4).build({"x": (1, 12, 3)})
    buses = find_buses(g)
    size = lambda nid: (150.0, 110.0) if g.nodes[nid].type == "RNNCell" else (110.0, 60.0)  # noqa: E731
    result = arrange(g, size, viewport=(800.0, 600.0), buses=buses)
    pos = result.positions
    by_name = {n.name: n.id for n in g.nodes.values()}
    assert buses == {by_name["x"]: "top", by_name["stack"]: "bottom"}
    cells = [by_name[f"cell_{t}"] for t in range(1, 13)]
    steps = [by_name[f"x_{t}"] for t in range(1, 13)]
    xs = [pos[c][0] for c in cells]
    assert xs == sorted(xs) and len(set(xs)) == 12, "cells run left to right"
    assert len({pos[c][1] for c in cells}) == 1, "in one row"
    row = pos[cells[0]][1]
    for t in range(12):
        assert pos[steps[t]][1] > row, "x_t below the cells"
        assert (xs[t - 1] if t else -1e9) <= pos[steps[t]][0] < xs[t], f"x_{t + 1} just left of cell_{t + 1}"
    assert pos[by_name["stack"]][1] < row < pos[by_name["x"]][1], "states above, the sequence below"
    # wire lengths between card edges (a bus wire: straight up or down to it)
    cell_w = 150.0

    def centre(n):
        w, h = size(n)
        return pos[n][0] + w / 2, pos[n][1] + h / 2

    for link in g.links:
        if link.src in buses or link.dst in buses or g.nodes[link.dst].type == "Output":
            continue
        (x1, y1), (x2, y2) = centre(link.src), centre(link.dst)
        assert abs(x2 - x1) <= 2 * cell_w and abs(y2 - y1) <= 2 * cell_w, (g.nodes[link.src].name, g.nodes[link.dst].name)


def _dots_one_by_one(view: GraphView, painter, rect) -> None:  # noqa: ANN001
    """The dot grid as it was drawn before it became one array of points: a QPointF per dot
    (the oracle of the test below)."""
    import math

    theme = view.graph_scene().theme
    painter.fillRect(rect, theme.background)
    zoom = view.zoom()
    step = 24.0
    while step * zoom < 14:
        step *= 4
    left, top = math.floor(rect.left() / step) * step, math.floor(rect.top() / step) * step
    xs, x = [], left
    while x < rect.right():
        xs.append(x)
        x += step
    points, y = [], top
    while y < rect.bottom():
        points.extend(QPointF(x, y) for x in xs)
        y += step
    painter.setPen(view.grid_pen())
    painter.drawPoints(points)


def _background(view: GraphView, draw) -> "QImage":  # noqa: ANN001, F821
    """The viewport's background as ``draw`` paints it, through the view's transform."""
    from PySide6.QtGui import QImage, QPainter

    vp = view.viewport()
    image = QImage(vp.width(), vp.height(), QImage.Format.Format_ARGB32_Premultiplied)
    painter = QPainter(image)
    painter.setRenderHints(view.renderHints())
    painter.setWorldTransform(view.viewportTransform())
    draw(painter, view.mapToScene(vp.rect()).boundingRect())
    painter.end()
    return image


def test_the_dot_grid_is_drawn_as_before_and_stays_on_the_scene_grid(canvas):
    # the canvas draws its dots as one array of points now: pixel for pixel what a QPointF per
    # dot drew, at every zoom (the dots thin out below 14 px apart) and after panning and zooming
    # with real events; and a dot sits where a scene grid point is on screen
    doc, stack, scene, view, ids = canvas
    vp = view.viewport()
    view.reset_zoom()
    for action in ("start", "pan", "zoom in", "zoom out far", "pan", "zoom in a little"):
        if action == "pan":
            QTest.mousePress(vp, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, QPoint(400, 300))
            QTest.mouseMove(vp, QPoint(337, 259))
            QTest.mouseRelease(vp, Qt.MouseButton.MiddleButton, Qt.KeyboardModifier.NoModifier, QPoint(337, 259))
        elif action != "start":
            _wheel(view, QPoint(123, 77), {"zoom in": 240, "zoom out far": -1400, "zoom in a little": 37}[action])
        new = _background(view, view.drawBackground)
        old = _background(view, lambda p, r: _dots_one_by_one(view, p, r))
        assert new == old, f"the dots differ after {action} (zoom {view.zoom():.3f})"
        # a grid point of the scene shows a dot, half a grid step away from it the background
        theme = scene.theme
        step = 24.0
        while step * view.zoom() < 14:
            step *= 4
        corner = view.mapToScene(QPoint(0, 0))
        for k in range(1, 4):
            sx = (int(corner.x() / step) + k) * step
            sy = (int(corner.y() / step) + k) * step
            at = view.mapFromScene(QPointF(sx, sy))
            between = view.mapFromScene(QPointF(sx + step / 2, sy + step / 2))
            assert new.pixelColor(at) != theme.background, (action, k)
            assert new.pixelColor(between) == theme.background, (action, k)
