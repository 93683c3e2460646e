"""Readable at first sight: every lesson, and every composite opened inside it, opens at a zoom of
at least 80 % with canvas text at least 9 px high, at the default window size and at 1280×800;
no wire text covers another or a card; no wire runs under a card; an unrolled RNN is a row of
cells with short wires; and the small things a first look catches."""

from __future__ import annotations

from typing import Iterator

import pytest
from PySide6.QtCore import QPointF, QRectF, QSettings
from PySide6.QtWidgets import QApplication

import presets
from editor.items.fonts import LEGIBLE_PX
from editor.screenshot import lesson_views
from editor.window import MainWindow

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise", "grabbing the keyboard")

SIZES = [(1600, 1000), (1280, 800)]


@pytest.fixture(scope="module")
def window(qapp, tmp_path_factory):
    settings = QSettings(str(tmp_path_factory.mktemp("readable") / "s.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings)
    w.prompts.error = lambda title, text: None  # type: ignore[method-assign]
    w.show()
    yield w
    w.undo_stack.setClean()
    w.close()


def _settle(w: MainWindow) -> None:
    for _ in range(2):
        QApplication.processEvents()
    w.view.show_graph()
    w.scene.arrange(reroute=True)


def _views(w: MainWindow, lesson: str) -> Iterator[str]:
    return lesson_views(w, lesson)


@pytest.mark.parametrize("size", SIZES, ids=["1600x1000", "1280x800"])
def test_every_lesson_and_composite_opens_legible(window, size):
    window.resize(*size)
    checked = []
    for lesson in presets.names():
        for view in _views(window, lesson):
            seen = window.view.legibility()
            assert window.width() <= size[0], (view, "the window grew to hold its contents", window.width())
            window.minimap.rebuild()
            if window.minimap.isVisible():
                box = window.minimap.geometry()
                for _nid, card in _card_rects(window):
                    assert not window.view.mapFromScene(card).boundingRect().intersects(box), (view, "minimap on a card")
            assert seen["zoom"] >= 0.8 and seen["min_text_px"] is not None and seen["min_text_px"] >= LEGIBLE_PX, \
                (view, size, seen)
            checked.append(view)
    assert len(checked) >= 2 * len(presets.names()), checked


def _card_rects(w: MainWindow) -> list[tuple[str, QRectF]]:
    return [(nid, item.card_rect()) for nid, item in w.scene.nodes.items() if item.isVisible()]


def test_wire_texts_never_cover_each_other_or_a_card_and_wires_keep_off_cards(window):
    window.resize(1600, 1000)
    shown = 0
    for lesson in presets.names():
        for view in _views(window, lesson):
            cards = _card_rects(window)
            labels = [label.scene_rect() for item in window.scene.links.values() if item.isVisible()
                      for label in item.labels.values() if label.isVisible()]
            shown += len(labels)
            for i, a in enumerate(labels):
                for b in labels[i + 1:]:
                    assert not a.intersects(b), (view, a, b)
                for nid, card in cards:
                    assert not a.intersects(card), (view, window.level.doc.node(nid).name, a)
            for link, item in window.scene.links.items():
                if not item.isVisible():
                    continue
                ends = {window.scene._stack_of.get(link.src, link.src), window.scene._stack_of.get(link.dst, link.dst)}
                bounds = item.path.boundingRect()
                near = [(nid, card) for nid, card in cards if nid not in ends and card.intersects(bounds)]
                if not near:
                    continue
                points = [item.path.pointAtPercent(i / 60) for i in range(1, 60)]
                for nid, card in near:
                    inner = card.adjusted(6, 2, -6, -2)
                    assert not any(inner.contains(p) for p in points), (view, "wire under", window.level.doc.node(nid).name)
    assert shown > 50, "wire texts are shown, not all dropped"


def test_unrolled_rnn_in_the_lesson_has_short_wires_only(window):
    window.resize(1600, 1000)
    assert window.files.load_path(presets.path("rnn_vs_lstm"), is_preset=True, remember=False)
    _settle(window)
    for name in ("SimpleRNN", "LSTM"):
        assert window.open_inside(window.doc.graph.find(name).id)
        _settle(window)
        g = window.level.doc.graph
        cells = [item for nid, item in window.scene.nodes.items() if g.nodes[nid].type == "RNNCell"]
        cell_w = max(item.width for item in cells)
        ys = {round(item.pos().y(), 1) for item in cells}
        assert len(ys) == 1, "the cells run in one row"
        for link, item in window.scene.links.items():
            src, dst = g.nodes[link.src], g.nodes[link.dst]
            if src.type == "Input" or dst.type == "Output":
                continue  # the input sequence and the outputs
            p1, p2 = item.path.pointAtPercent(0), item.path.pointAtPercent(1)
            assert abs(p2.x() - p1.x()) <= 2 * cell_w and abs(p2.y() - p1.y()) <= 2 * cell_w, \
                (name, src.name, dst.name)
        window.go_to_level(0)


def test_open_lesson_lists_the_lessons_titles(window):
    from engine import serialize

    titles = [a.text() for a in window.presets_menu.actions() if a.text()]
    for name in presets.names():
        title = serialize.load(presets.path(name)).name
        assert any(title.replace("&", "") in t.replace("&&", "&") for t in titles), (title, titles)


def test_small_defects(window, qtbot):
    from engine.graph import Graph

    g = Graph()
    x = g.add_node("Input", {"shape": (1, 1)}, name="x", position=(0, 0))
    mm = g.add_node("MatMul", name="MatMul", position=(250, 0))
    g.connect(x.id, "out", mm.id, "a")
    w = g.add_node("Parameter", {"shape": (3,)}, name="w", position=(0, 200))
    window.doc.set_graph(g)
    window.undo_stack.clear()
    # a connected input shows its shape even while another input is not connected yet
    window.inspector.set_node(mm.id)
    assert "(1, 1)" in window.inspector.shapes.text() and "unknown" not in window.inspector.shapes.text()
    # a Parameter's "values" shows only when init is "values"; "scale" only for random inits
    window.inspector.set_node(w.id)
    form = window.inspector.form
    rows = {form.itemAt(r, form.ItemRole.LabelRole).widget().text(): r for r in range(form.rowCount())}
    assert not form.isRowVisible(rows["values"]) and form.isRowVisible(rows["scale"])
    window.inspector.editors["init"].setCurrentText("values")
    assert form.isRowVisible(rows["values"]) and not form.isRowVisible(rows["scale"])
    # an error names the block once
    from engine.errors import ShapeError
    y = window.doc.graph.add_node("Input", {"shape": (5, 2)}, name="y")
    with pytest.raises(ShapeError) as err:
        window.doc.graph.connect(y.id, "out", mm.id, "b")
    assert str(err.value).startswith("MatMul: inner dimensions differ"), str(err.value)
    # the Insert popup is as tall as its results
    window.search.popup(window.view.viewport().mapToGlobal(window.view.viewport().rect().center()), QPointF(0, 0))
    full = window.search.height()
    from PySide6.QtTest import QTest
    QTest.keyClicks(window.search.edit, "maxpool")
    assert window.search.list.count() == 1
    assert window.search.height() < full / 2 and window.search.height() < window.height() / 3
    window.search.hide()
    window.undo_stack.setClean()


def test_an_error_note_shows_on_hover_or_selection_only(window):
    from engine.graph import Graph

    g = Graph()
    a = g.add_node("Input", {"shape": (4, 3)}, name="a", position=(0, 0))
    b = g.add_node("Input", {"shape": (4, 3)}, name="b", position=(0, 150))
    add = g.add_node("Add", name="add", position=(250, 0))
    below = g.add_node("ReLU", name="below", position=(250, 110))
    g.connect(a.id, "out", add.id, "a")
    g.connect(b.id, "out", add.id, "b")
    g.set_params(b.id, {"shape": (4, 7)})  # now broken: (4, 3) + (4, 7)
    window.doc.set_graph(g)
    window.undo_stack.clear()
    item = window.scene.nodes[add.id]
    assert item.error and not item.note_shown()
    assert item.zValue() <= window.scene.nodes[below.id].zValue()
    item.setSelected(True)
    assert item.note_shown() and item.zValue() > window.scene.nodes[below.id].zValue(), "the note is drawn on top"
    item.setSelected(False)
    window.undo_stack.setClean()


def test_the_minimap_moves_to_the_corner_it_is_dropped_in_and_toggles(window, qtbot):
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest

    window.resize(1280, 800)
    assert window.files.load_path(presets.path("rnn_vs_lstm"), is_preset=True, remember=False)
    _settle(window)
    assert window.open_inside(window.doc.graph.find("LSTM").id)
    window.view.set_zoom(1.6)  # far in: the graph does not fit
    window.view.centerOn(window.scene.items_bounding_rect().center())
    window.minimap.rebuild()
    mini = window.minimap
    if not mini.isVisible():  # every corner taken at this spot: look at an empty part
        window.view.centerOn(window.scene.items_bounding_rect().bottomRight() + QPointF(600, 600))
        mini.rebuild()
    assert mini.isVisible()
    before = mini.corner
    vp = window.view.viewport()
    grip = QPoint(mini.width() // 2, 4)
    QTest.mousePress(mini, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, grip)
    target = QPoint(40, 40) if before != "top-left" else QPoint(vp.width() - 40, vp.height() - 40)
    QTest.mouseMove(mini, mini.mapFromParent(target))
    QTest.mouseRelease(mini, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, mini.mapFromParent(target))
    assert mini.corner != before
    window.act_minimap.trigger()
    assert not mini.isVisible()
    window.act_minimap.trigger()
    window.go_to_level(0)


def test_canvas_text_follows_the_system_font_size(qapp):
    from PySide6.QtGui import QFont

    from editor.items import NodeItem, fonts
    from engine.graph import Graph

    g = Graph()
    node = g.add_node("MatMul", name="v_j·φ(x)")
    saved = QFont(qapp.font())
    try:
        small = NodeItem(node)
        assert fonts.px("title") == fonts.base_px() + 1 and fonts.smallest_px() >= fonts.MIN_PX
        big_font = QFont(saved)
        big_font.setPixelSize(18)  # a user who reads large text
        qapp.setFont(big_font)
        fonts.reset()
        assert fonts.base_px() == 18 and fonts.px("port") == 18
        big = NodeItem(node)
        assert big.width > small.width * 1.25 and big.height > small.height * 1.25, "cards grow with their text"
        assert fonts.readable_zoom() == pytest.approx(0.8)  # larger text stays legible further out
    finally:
        qapp.setFont(saved)
        fonts.reset()


def test_wire_texts_of_any_kind_share_the_wire_and_give_way(qapp):
    """The placement run-time values and gradients use too: several texts on one wire, placed
    apart; a text that does not fit shows its shorter variant, and one that cannot fit at all is
    dropped, lowest priority first."""
    from PySide6.QtGui import QUndoStack

    from editor.document import Document
    from editor.scene import GraphScene
    from engine.graph import Graph

    g = Graph()
    x = g.add_node("Input", {"shape": (64, 3)}, name="x", position=(0, 0))
    r = g.add_node("ReLU", name="r", position=(600, 0))
    link = g.connect(x.id, "out", r.id, "a")[0]
    scene = GraphScene(Document(g), QUndoStack())
    wire = scene.links[link]
    wire.set_label("value", ["value 0.1234567", "0.123"], where=0.3, priority=2)
    wire.set_label("grad", ["gradient −0.0004321", "−4.3e-4"], where=0.7, priority=1)
    scene.arrange(reroute=True)
    shown = [lb for lb in wire.labels.values() if lb.isVisible()]
    assert {lb.slot for lb in shown} == {"shape", "value", "grad"}
    rects = [lb.scene_rect() for lb in shown]
    assert not any(a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1:])
    assert wire.labels["value"].text == "value 0.1234567"
    # bring the cards close: the long texts give way to their short forms, then the least important go
    scene.doc.move(r.id, (230, 0))
    scene.arrange(reroute=True)
    value, grad, shape = wire.labels["value"], wire.labels["grad"], wire.labels["shape"]
    assert value.isVisible() and value.text == "0.123"
    assert not (grad.isVisible() and shape.isVisible()), "no room for all three"
    cards = [item.card_rect() for item in scene.nodes.values()]
    for lb in (value, grad, shape):
        if lb.isVisible():
            assert not any(lb.scene_rect().intersects(c) for c in cards)
    wire.clear_label("value")
    assert "value" not in wire.labels and value.scene() is None


def test_auto_layout_folds_an_edited_graph_to_the_view_in_one_undo_step(window):
    window.resize(1280, 800)
    src = presets.path("two_layer_net")
    assert window.files.load_path(src, is_preset=False, remember=False)  # as a file of the user's
    _settle(window)
    before = window.doc.dump()
    window.act_layout.trigger()
    assert window.undo_stack.count() == 1
    ys = sorted({round(window.doc.graph.nodes[n].position[1]) for n in window.doc.graph.nodes})
    rows = {window.doc.graph.find(name).position[1] for name in ("score", "residual", "squared", "loss")}
    assert len(rows) == 1 and min(rows) > window.doc.graph.find("φ(x)").position[1], "folded: the loss row below"
    seen = window.view.legibility()
    assert seen["zoom"] >= 0.9 and len(ys) > 2
    window.undo_stack.undo()
    assert window.doc.dump() == before
    window.undo_stack.setClean()


# --- what a pass or a training run draws on the canvas -------------------------------------------------


class _Recorder:
    """Stands in for the QPainter a run mark paints with: paints into an image through a real
    painter and records, in the mark's coordinates, every text's own rectangle and every chip or
    badge box drawn outside its card. (Independent of how the mark says it lays itself out.)"""

    def __init__(self, painter, card: QRectF) -> None:  # noqa: ANN001
        self.painter, self.card = painter, card
        self.texts: list[tuple[str, QRectF]] = []
        self.boxes: list[QRectF] = []

    def drawText(self, rect, flags, text, *rest):  # noqa: ANN001, ANN201, N802
        rect = QRectF(rect)
        if text:
            self.texts.append((text, self.painter.boundingRect(rect, int(flags), text)))
        return self.painter.drawText(rect, flags, text, *rest)

    def drawRoundedRect(self, rect, *rest):  # noqa: ANN001, ANN201, N802
        rect = QRectF(rect)
        if not rect.intersects(self.card):  # not the halo round the card nor the bar in it
            self.boxes.append(rect)
        return self.painter.drawRoundedRect(rect, *rest)

    def __getattr__(self, name):  # noqa: ANN001, ANN204
        return getattr(self.painter, name)


def _overlay_texts(w: MainWindow) -> list[tuple[str, QRectF]]:
    """Every text of the pass (or the training) on the canvas, in scene coordinates: the wire
    texts and, for each card, what its run mark draws (captions, value chips, Σ chips, badges)."""
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtWidgets import QStyleOptionGraphicsItem

    from editor.run.overlay import RunMark

    out = [(f"wire text {label.text!r}", label.scene_rect()) for item in w.scene.links.values() if item.isVisible()
           for label in item.labels.values() if label.isVisible() and label.text]
    image = QImage(1, 1, QImage.Format.Format_ARGB32)
    for nid, node in w.scene.nodes.items():
        if not node.isVisible():
            continue
        name = w.level.doc.node(nid).name
        for mark in [m for m in node.childItems() if isinstance(m, RunMark)]:
            painter = QPainter(image)
            rec = _Recorder(painter, QRectF(0, 0, node.width, node.height))
            mark.paint(rec, QStyleOptionGraphicsItem())
            painter.end()
            bounds = mark.boundingRect()
            for box in rec.boxes:
                assert bounds.contains(box), (name, "drawn outside its mark's bounds: cut off on screen", box)
                out.append((f"box of {name}", mark.mapRectToScene(box)))
            for text, rect in rec.texts:
                if any(box.contains(rect.center()) for box in rec.boxes):
                    continue  # the text of one of those boxes
                assert bounds.adjusted(-1, -1, 1, 1).contains(rect), (name, text, "cut off on screen")
                out.append((f"{text!r} under {name}", mark.mapRectToScene(rect)))
    return out


def _check_overlay(w: MainWindow, view: str) -> int:
    """No text of the pass covers another or a card; the headline over the canvas covers no card."""
    for _ in range(3):  # what the last step's signals bring (the headline, then the framing below it)
        QApplication.processEvents()
    w.scene.arrange()
    texts = _overlay_texts(w)
    cards = _card_rects(w)
    for i, (a_name, a) in enumerate(texts):
        for b_name, b in texts[i + 1:]:
            assert not a.intersects(b), (view, a_name, b_name)
        for nid, card in cards:
            assert not a.intersects(card), (view, a_name, "covers", w.level.doc.node(nid).name)
    hud = w.run.installation.overlay.hud
    if hud.isVisible():
        over = w.view.mapToScene(hud.geometry().adjusted(-2, -2, 2, 2)).boundingRect()
        for nid, card in cards:
            assert not over.intersects(card), (view, "the headline hides", w.level.doc.node(nid).name)
    return len(texts)


@pytest.mark.parametrize("size", SIZES, ids=["1600x1000", "1280x800"])
def test_the_numbers_of_a_pass_never_cover_each_other_a_card_or_the_headline(window, size):
    """Forward about half-way and backward to the end, on every lesson and inside each of its
    composites (and their stacks opened): every text the pass draws has room of its own."""
    from editor.run import scripted

    window.resize(*size)
    seen = 0
    for lesson in presets.names():
        for step in ("forward", "backward:end"):
            views = _views(window, lesson)
            next(views)
            if step == "forward":  # about half-way through the forward pass
                step = f"forward:{max(1, scripted.go_to(window.run, 'forward:1')['events'] // 4)}"
            scripted.go_to(window.run, step)
            _settle(window)
            seen += _check_overlay(window, f"{lesson} {step}")
            for view in views:  # inside the composites, the same pass
                seen += _check_overlay(window, f"{view} {step}")
    assert seen > 100


@pytest.mark.parametrize("size", SIZES, ids=["1600x1000", "1280x800"])
def test_a_trained_lessons_sparklines_and_headline_cover_nothing(window, size):
    from editor import screenshot

    window.resize(*size)
    assert window.files.load_path(presets.path("two_layer_net"), is_preset=True, remember=False)
    _settle(window)
    screenshot.train(window, 40)
    _settle(window)
    marks = [m for node in window.scene.nodes.values() for m in node.childItems() if hasattr(m, "state")]
    assert any(getattr(m.state, "spark", ()) for m in marks), "sparklines drawn"
    assert _check_overlay(window, "two_layer_net trained") > 5
    window.undo_stack.setClean()
