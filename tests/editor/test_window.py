"""The main window: palette drops, search popup, clipboard, inspector, composites, files."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QGuiApplication
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from editor import commands
from editor.panels.palette import palette_mime
from editor.window import MainWindow
from engine import blocks, serialize
from engine.graph import Graph
from tests.editor.helpers import two_layer

# The offscreen platform cannot resize native windows for dock widgets, raise popups or grab the
# keyboard for them; harmless here.
pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise", "grabbing the keyboard")


class Answers:
    """Scripted answers to the window's questions, and a record of what was asked."""

    def __init__(self) -> None:
        self.save_changes = "discard"
        self.restore = "restore"
        self.errors: list[str] = []
        self.asked: list[str] = []
        self.open_path = ""
        self.save_path = ""

    def install(self, window: MainWindow) -> None:
        p = window.prompts
        p.save_changes = lambda name: (self.asked.append(f"save {name}"), self.save_changes)[1]
        p.restore_recovery = lambda items: (self.asked.append("restore"), self.restore)[1]
        p.error = lambda title, text: self.errors.append(text)
        p.open_path = lambda d: self.open_path
        p.save_path = lambda s: self.save_path


@pytest.fixture
def win(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings)
    answers = Answers()
    answers.install(w)
    w.answers = answers
    qtbot.addWidget(w)
    w.resize(1300, 800)
    w.show()
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w)  # shortcuts go to the active window
    yield w
    w.undo_stack.setClean()


def _send_drop(view, mime, at: QPoint) -> None:
    """What a real drag and drop delivers to the viewport: enter, move, drop. (A QDrag cannot be
    driven offscreen, so the test sends the events the drag would produce.)"""
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view.viewport(), QDragEnterEvent(at, *args))
    QApplication.sendEvent(view.viewport(), QDragMoveEvent(at, *args))
    QApplication.sendEvent(view.viewport(), QDropEvent(QPointF(at), *args))


def _drop_block(view, type_id, params, at: QPoint) -> None:
    _send_drop(view, palette_mime(type_id, params), at)


def test_drop_a_palette_entry_onto_the_canvas(win):
    entry = win.block_palette.find("LSTM")
    assert entry is not None
    mime = win.block_palette.tree.mimeData([entry])
    at = QPoint(400, 300)
    _send_drop(win.view, mime, at)
    nodes = list(win.doc.graph.nodes.values())
    assert len(nodes) == 1 and nodes[0].type == "SequenceRNN" and nodes[0].params["cell"] == "LSTM"
    item = win.scene.nodes[nodes[0].id]
    # dropped where the cursor was: the header's centre is at the drop point
    drop = win.view.mapToScene(at)
    assert abs(item.pos().x() + item.width / 2 - drop.x()) <= 1 and abs(item.pos().y() + 14 - drop.y()) <= 1
    assert win.modified and win.windowTitle().startswith("Untitled[*]") and win.isWindowModified()
    win.undo_stack.undo()
    assert not win.doc.graph.nodes and not win.isWindowModified()


def test_palette_search_and_tooltip(win):
    win.block_palette.search.setText("lnorm")
    labels = [i.text(0) for i in win.block_palette.visible_entries()]
    assert "LayerNorm" in labels and "Add" not in labels
    tip = win.block_palette.find("LayerNorm").toolTip(0)
    assert "gamma" in tip and "x" in tip  # formula / ports / weights from the spec
    win.block_palette.search.clear()
    assert len(win.block_palette.visible_entries()) == len(win.block_palette.entries())


def test_tab_opens_search_and_enter_inserts_at_cursor(win, qtbot):
    win.view.setFocus()
    QTest.mouseMove(win.view.viewport(), QPoint(300, 250))
    QTest.keyClick(win.view, Qt.Key.Key_Tab)
    assert win.search.isVisible()
    QTest.keyClicks(win.search.edit, "sigm")
    QTest.keyClick(win.search.edit, Qt.Key.Key_Return)
    assert not win.search.isVisible()
    assert [n.type for n in win.doc.graph.nodes.values()] == ["Sigmoid"]


def test_copy_paste_and_duplicate_keep_internal_links(win):
    ids = two_layer(win.doc, win.undo_stack)
    win.scene.select_nodes([ids["l1"], ids["act"], ids["l2"]])
    QTest.keyClick(win.view, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    clip = json.loads(QGuiApplication.clipboard().mimeData().text())
    assert len(clip["nodes"]) == 3 and len(clip["links"]) == 2
    QTest.keyClick(win.view, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert len(win.doc.graph.nodes) == 9 and len(win.doc.graph.links) == 7
    pasted = set(win.scene.selected_node_ids())
    assert len(pasted) == 3 and not pasted & set(ids.values())
    QTest.keyClick(win.view, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier)
    assert len(win.doc.graph.nodes) == 12 and len(win.doc.graph.links) == 9
    # cut is one step
    n = win.undo_stack.count()
    win.scene.select_nodes([ids["act"]])
    QTest.keyClick(win.view, Qt.Key.Key_X, Qt.KeyboardModifier.ControlModifier)
    assert ids["act"] not in win.doc.graph.nodes and win.undo_stack.count() == n + 1
    win.undo_stack.undo()
    assert ids["act"] in win.doc.graph.nodes


def test_delete_key_removes_node_with_links(win):
    ids = two_layer(win.doc, win.undo_stack)
    win.scene.select_nodes([ids["act"]])
    win.view.setFocus()
    QTest.keyClick(win.view, Qt.Key.Key_Delete)
    assert ids["act"] not in win.doc.graph.nodes
    assert not [l for l in win.doc.graph.links if ids["act"] in (l.src, l.dst)]
    QTest.keyClick(win.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert ids["act"] in win.doc.graph.nodes and len(win.doc.graph.links) == 5


def test_inspector_edits_params_and_name(win):
    ids = two_layer(win.doc, win.undo_stack)
    win.scene.select_nodes([ids["l1"]])
    spin = win.inspector.editors["out_features"]
    n = win.undo_stack.count()
    spin.setValue(9)
    assert win.doc.node(ids["l1"]).params["out_features"] == 9
    assert win.doc.report().shapes[(ids["l1"], "out")] == (4, 9)
    assert win.undo_stack.count() == n + 1
    win.undo_stack.undo()
    assert spin.value() == 5  # the form follows the document
    check = win.inspector.editors["bias"]
    check.setChecked(False)
    assert win.doc.node(ids["l1"]).params["bias"] is False
    win.inspector.name_edit.setText("hidden")
    win.inspector.name_edit.editingFinished.emit()
    assert win.doc.node(ids["l1"]).name == "hidden"
    assert "(4, 5)" in win.inspector.shapes.text()


def test_inspector_slider_drag_is_one_step(win):
    win.insert_block("Scale", {}, QPointF(0, 0))
    nid = next(iter(win.doc.graph.nodes))
    win.scene.select_nodes([nid])
    slider = win.inspector.editors["factor"].slider
    n = win.undo_stack.count()
    before = win.doc.node(nid).params["factor"]
    slider.setSliderDown(True)
    win.inspector._merge_key = "drag"
    for v in (600, 700, 800, 900):
        slider.setValue(v)
    slider.setSliderDown(False)
    assert win.undo_stack.count() == n + 1
    assert win.doc.node(nid).params["factor"] != before
    win.undo_stack.undo()
    assert win.doc.node(nid).params["factor"] == before


def test_inspector_refuses_bad_values_with_the_message(win):
    win.insert_block("Input", {}, QPointF(0, 0))
    nid = next(iter(win.doc.graph.nodes))
    win.scene.select_nodes([nid])
    edit = win.inspector.editors["shape"]
    n = win.undo_stack.count()
    edit.setText("4, 0")
    edit.editingFinished.emit()
    assert win.undo_stack.count() == n
    assert "shape" in win.inspector.error.text()
    edit.setText("4, 7")
    edit.editingFinished.emit()
    assert win.doc.node(nid).params["shape"] == (4, 7)


def test_open_composite_read_only_with_breadcrumb_and_expand(win):
    nid = win.insert_block("BERT", {"vocab": 50, "dim": 16, "heads": 2, "layers": 6}, QPointF(0, 0))
    n = win.undo_stack.count()
    assert win.open_inside(nid)
    assert len(win.levels) == 2 and win.scene.read_only
    inner = win.level.doc.graph
    assert sum(1 for x in inner.nodes.values() if x.type == "TransformerBlock") == 6
    # six identical blocks draw as one compact stack until opened
    assert any(item.stack_count == 6 for item in win.scene.nodes.values())
    visible = [i for i in win.scene.nodes.values() if i.isVisible()]
    assert len(visible) < len(inner.nodes)
    # read-only: dropping a block does nothing
    _drop_block(win.view, "ReLU", {}, QPoint(200, 200))
    assert len(inner.nodes) == len(win.level.doc.graph.nodes) and win.undo_stack.count() == n
    head = next(i for i in win.scene.nodes.values() if i.stack_count == 6)
    assert head.title.endswith("block6") and " … " in head.title
    assert head.inputs["x"].connected
    win.scene.open_stack(head.node_id)
    assert all(i.isVisible() for i in win.scene.nodes.values())
    # a TransformerBlock opens one level deeper; the breadcrumb goes back
    tb = next(x.id for x in inner.nodes.values() if x.type == "TransformerBlock")
    assert win.open_inside(tb) and len(win.levels) == 3
    win.go_to_level(0)
    assert len(win.levels) == 1 and not win.scene.read_only
    # expand replaces BERT by its inner nodes: one undo step
    before = win.doc.dump()
    win.scene.select_nodes([nid])
    win.expand_selected()
    assert nid not in win.doc.graph.nodes and len(win.doc.graph.nodes) > 6
    assert win.undo_stack.count() == n + 1
    # the canvas still follows the document after visiting the inner views (laid out, not piled up)
    for node_id, item in win.scene.nodes.items():
        assert item.pos() == QPointF(*win.doc.node(node_id).position)
    xs = sorted(item.pos().x() for item in win.scene.nodes.values())
    assert len(set(xs)) > 6
    win.undo_stack.undo()
    assert win.doc.dump() == before


def test_save_reopen_compare(win, tmp_path):
    two_layer(win.doc, win.undo_stack)
    path = tmp_path / "net.json"
    win.answers.save_path = str(path)
    assert win.files.save()
    assert not win.isWindowModified() and win.windowTitle().startswith("net.json")
    saved = serialize.graph_to_dict(win.doc.graph)
    assert str(path.resolve()) in win.files.recent_files()
    assert win.files.open_path(path)
    assert serialize.graph_to_dict(win.doc.graph) == saved
    assert win.undo_stack.count() == 0 and not win.modified


def test_corrupted_file_leaves_the_document_intact(win, tmp_path):
    two_layer(win.doc, win.undo_stack)
    before = win.doc.dump()
    bad = tmp_path / "broken.json"
    bad.write_text('{"format": "backprop-studio.graph", "version": 1, "nodes": [{"id": 3', encoding="utf-8")
    assert not win.files.open_path(bad)
    assert win.answers.errors and "broken.json" in win.answers.errors[0]
    assert not win.answers.asked, "a file that cannot be opened must not ask about unsaved changes first"
    assert win.doc.dump() == before and win.modified
    truncated = tmp_path / "truncated.bps"
    truncated.write_bytes(b"PK\x03\x04garbage")
    assert not win.files.load_path(truncated)
    assert win.doc.dump() == before


def test_an_unexpected_failure_on_open_is_one_message_and_the_document_stays(win, tmp_path, monkeypatch):
    """Whatever escapes the loader, or breaks while the loaded graph is shown, the user gets one
    line naming the file and asking for a bug report; the open document and its unsaved edits stay."""
    two_layer(win.doc, win.undo_stack)
    before = win.doc.dump()
    good = tmp_path / "good.json"
    serialize.save(serialize.Project(Graph()), good)

    def explode(path):
        raise RuntimeError("boom " + "x" * 5000)

    monkeypatch.setattr(serialize, "load", explode)
    assert not win.files.open_path(good)
    assert len(win.answers.errors) == 1 and not win.answers.asked
    message = win.answers.errors[0]
    assert "good.json" in message and "RuntimeError" in message and "bug" in message and len(message) < 400
    assert win.doc.dump() == before and win.modified
    monkeypatch.undo()
    # it loads, but showing it fails after the user agreed to drop the document: the old one comes back
    shown = win.files._show
    calls = []

    def show_fails_once(project):
        calls.append(project)
        if len(calls) == 1:
            raise ValueError("cannot draw this")
        shown(project)

    monkeypatch.setattr(win.files, "_show", show_fails_once)
    win.answers.errors.clear()
    assert not win.files.open_path(good)
    assert len(win.answers.asked) == 1 and win.answers.asked[0].startswith("save"), "it loaded, so it asked first"
    assert len(win.answers.errors) == 1 and "ValueError" in win.answers.errors[0]
    assert win.doc.dump() == before
    assert win.modified, "the unsaved edits are still unsaved work"


def test_a_recent_file_that_is_gone_leaves_the_menu_and_a_drop_of_many_says_so(win, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p in (a, b):
        serialize.save(serialize.Project(Graph()), p)
    assert win.files.open_path(a)
    assert str(a.resolve()) in win.files.recent_files()
    a.unlink()
    assert not win.files.open_path(a)
    assert len(win.answers.errors) == 1 and str(a.resolve()) not in win.files.recent_files()
    said = []
    win.files.message.connect(lambda text, ms: said.append(text))
    win.files.open_dropped([str(tmp_path / "notes.txt"), str(b)])
    assert win.files.path == b
    assert said and "b.json only" in said[-1] and "1 more file dropped" in said[-1]


def test_closing_with_unsaved_changes_asks(win, tmp_path):
    two_layer(win.doc, win.undo_stack)
    win.answers.save_changes = "cancel"
    assert not win.close()
    assert win.answers.asked and win.isVisible()
    win.answers.save_changes = "save"
    win.answers.save_path = str(tmp_path / "kept.json")
    assert win.close()
    assert (tmp_path / "kept.json").exists()


def test_new_asks_then_clears(win):
    two_layer(win.doc, win.undo_stack)
    win.answers.save_changes = "discard"
    win.files.new_document()
    assert not win.doc.graph.nodes and not win.modified


def test_autosave_and_recovery(win, qtbot, tmp_path):
    ids = two_layer(win.doc, win.undo_stack)
    assert win.files.autosave()
    assert win.files.recovery_path.exists()
    saved = serialize.graph_to_dict(win.doc.graph)
    # "crash": the window's lock goes as its process would (tests/editor/test_recovery.py kills a
    # real second process); a new window finds the recovery file and offers it
    win.files._recovery_lock.unlock()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    other = MainWindow(settings)
    qtbot.addWidget(other)
    answers = Answers()
    answers.install(other)
    assert other.files.offer_recovery()
    assert answers.asked == ["restore"]
    assert serialize.graph_to_dict(other.doc.graph) == saved
    assert other.modified  # restored work is unsaved work
    other.undo_stack.setClean()
    win.undo_stack.setClean()
    assert ids


def test_drop_a_file_on_the_window_opens_it(win, tmp_path):
    g = Graph()
    g.add_node("ReLU", name="only")
    path = tmp_path / "dropped.json"
    serialize.save(serialize.Project(g, "dropped"), path)
    from PySide6.QtCore import QMimeData, QUrl
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    _send_drop(win.view, mime, QPoint(300, 300))
    assert [n.name for n in win.doc.graph.nodes.values()] == ["only"]


def test_theme_switch_repaints(win):
    win.set_theme("dark")
    assert win.scene.theme.dark
    win.set_theme("light")
    assert not win.scene.theme.dark
    assert win.settings.value("theme") == "light"


def test_auto_layout_is_one_undo_step(win):
    ids = two_layer(win.doc, win.undo_stack)
    for nid in ids.values():
        win.undo_stack.push(commands.MoveNodesCommand(win.doc, {nid: (win.doc.node(nid).position, (0.0, 0.0))}))
    before = win.doc.dump()
    n = win.undo_stack.count()
    win.auto_layout()
    assert win.undo_stack.count() == n + 1
    xs = [win.doc.node(ids[k]).position[0] for k in ("x", "l1", "act", "l2", "loss")]
    assert xs == sorted(xs) and len(set(xs)) == 5
    win.undo_stack.undo()
    assert win.doc.dump() == before


def test_tightly_placed_files_open_without_overlaps_and_unchanged(win, tmp_path):
    import shutil

    import presets

    source = tmp_path / "mine.json"  # a file of the user's: its layout is never changed
    shutil.copy(presets.path("rnn_vs_lstm"), source)
    assert win.files.load_path(source)
    win.view.show_graph()
    rects = [item.card_rect() for item in win.scene.nodes.values()]
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert not a.intersects(b)
    assert not win.modified
    # positions in the document are the file's: saving writes the same graph back
    out = tmp_path / "copy.json"
    win.answers.save_path = str(out)
    assert win.files.save_as()
    assert serialize.graph_to_dict(serialize.load(out).graph) == serialize.graph_to_dict(serialize.load(source).graph)


def test_a_lesson_too_wide_for_the_window_is_laid_out_for_it(win, tmp_path):
    import presets

    win.resize(1280, 800)
    assert win.files.load_path(presets.path("two_layer_net"), is_preset=True)
    win.view.show_graph()
    seen = win.view.legibility()
    assert seen["zoom"] >= 0.9 and seen["min_text_px"] >= 9.0
    visible = win.view.mapToScene(win.view.viewport().rect()).boundingRect()
    assert all(visible.contains(item.card_rect()) for item in win.scene.nodes.values()), "all of it in view"
    assert not win.modified, "laying out a lesson for the window is not an edit"
    # the first edit ends it: the layout then stays as the user left it
    nid = next(iter(win.doc.graph.nodes))
    win.scene.select_nodes([nid])
    win.view.setFocus()
    QTest.keyClick(win.view, Qt.Key.Key_Right)
    assert win.undo_stack.count() == 1
    before = {n: node.position for n, node in win.doc.graph.nodes.items()}
    win.resize(1600, 1000)
    win.view.show_graph()
    assert {n: node.position for n, node in win.doc.graph.nodes.items()} == before


def test_a_training_setting_does_not_end_a_lessons_layout_for_the_window(win):
    """Steps changed before the window first shows the lesson (as ``screenshot --train N``
    does): it is still laid out for the window, a training setting not being an edit of the graph."""
    import presets

    win.hide()
    win.resize(1280, 800)
    assert win.files.load_path(presets.path("two_layer_net"), is_preset=True)
    win.train.panel.steps.setValue(200)
    assert win.undo_stack.count() == 1 and win.train.controller.training()["steps"] == 200
    win.show()
    QApplication.processEvents()
    win.view.show_graph()
    seen = win.view.legibility()
    assert seen["zoom"] >= 0.9 and seen["min_text_px"] >= 9.0
    visible = win.view.mapToScene(win.view.viewport().rect()).boundingRect()
    assert all(visible.contains(item.card_rect()) for item in win.scene.nodes.values()), "all of it in view"


def test_app_opens_the_default_lesson(qtbot, tmp_path):
    import presets
    from editor.app import build_window

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    w = build_window(None, settings=settings)
    qtbot.addWidget(w)
    expected = serialize.load(presets.path(presets.DEFAULT))
    assert serialize.graph_to_dict(w.doc.graph) == serialize.graph_to_dict(expected.graph)
    assert not w.modified and w.windowTitle().startswith(expected.name)
    # a file that fails to load still gives a working editor on the default lesson
    bad = tmp_path / "bad.json"
    bad.write_text("not json", encoding="utf-8")
    w2 = build_window(str(bad), settings=settings)
    qtbot.addWidget(w2)
    assert w2.doc.graph.nodes and not w2.modified


def test_wire_dropped_on_empty_canvas_offers_a_block_and_connects_it(win):
    from tests.editor.test_scene import _drag, _port

    ids = two_layer(win.doc, win.undo_stack)
    win.view.fit()
    start = _port(win.scene, ids["act"], "out", True)
    n = win.undo_stack.count()
    _drag(win.view, start, start + QPointF(60, 220))
    assert win.search.isVisible()
    QTest.keyClicks(win.search.edit, "tanh")
    QTest.keyClick(win.search.edit, Qt.Key.Key_Return)
    tanh = next(n for n in win.doc.graph.nodes.values() if n.type == "Tanh")
    assert win.doc.graph.link_into(tanh.id, "a").src == ids["act"]
    assert win.undo_stack.count() == n + 1  # insert and connect: one step
    win.undo_stack.undo()
    assert all(n.type != "Tanh" for n in win.doc.graph.nodes.values())
    # a later Tab search does not connect anything
    win.view.setFocus()
    QTest.keyClick(win.view, Qt.Key.Key_Tab)
    QTest.keyClicks(win.search.edit, "tanh")
    QTest.keyClick(win.search.edit, Qt.Key.Key_Return)
    tanh = next(n for n in win.doc.graph.nodes.values() if n.type == "Tanh")
    assert win.doc.graph.link_into(tanh.id, "a") is None


def test_context_menus_and_port_tooltips(win):
    ids = two_layer(win.doc, win.undo_stack)
    nid = win.insert_block("TransformerBlock", {"dim": 8, "heads": 2}, QPointF(0, 600))
    centre = win.scene.nodes[nid].sceneBoundingRect().center()
    texts = [a.text() for a in win.context_menu(centre).actions()]
    assert "Open Inside" in texts and "&Expand Composite" in texts and "&Delete" in texts
    assert win.scene.selected_node_ids() == [nid]
    link = win.doc.graph.link_into(ids["act"], "a")
    texts = [a.text() for a in win.context_menu(win.scene.links[link].path.pointAtPercent(0.2)).actions()]
    assert texts == ["Delete Link"] and win.scene.selected_links() == [link]
    texts = [a.text() for a in win.context_menu(QPointF(-5000, -5000)).actions()]
    assert "Insert Block…" in texts and "Auto-&Layout" in texts
    tip = win.scene.nodes[ids["act"]].inputs["a"].toolTip()
    assert "(4, 5)" in tip and "float" in tip
    assert "(4, 2)" in win.scene.nodes[ids["l2"]].outputs["out"].toolTip()


def test_search_ranks_label_prefixes_first(win):
    win._show_search(QPointF(0, 0))
    QTest.keyClicks(win.search.edit, "li")
    assert win.search.list.currentItem().text() == "Linear"
    QTest.keyClick(win.search.edit, Qt.Key.Key_Down)
    second = win.search.list.currentItem().text()
    assert second != "Linear"
    win.search.hide()


def test_click_a_wire_and_delete_it(win):
    ids = two_layer(win.doc, win.undo_stack)
    win.view.fit()
    link = win.doc.graph.link_into(ids["loss"], "target")
    item = win.scene.links[link]
    at = win.view.mapFromScene(item.path.pointAtPercent(0.3))
    QTest.mouseClick(win.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at)
    assert win.scene.selected_links() == [link]
    win.view.setFocus()
    QTest.keyClick(win.view, Qt.Key.Key_Delete)
    assert link not in win.doc.graph.links and len(win.doc.graph.nodes) == 6
    win.undo_stack.undo()
    assert link in win.doc.graph.links


def test_unknown_block_types_open_as_placeholders(win, tmp_path):
    text = json.dumps({
        "format": "backprop-studio.graph", "version": 1, "name": "future",
        "nodes": [{"id": "a", "type": "Input", "name": "x", "params": {"shape": [2, 3]}, "position": [0, 0]},
                  {"id": "b", "type": "QuantumLayer", "name": "q", "params": {"qubits": 5}, "position": [300, 0]}],
        "links": [{"from": ["a", "out"], "to": ["b", "x"]}],
    })
    path = tmp_path / "future.json"
    path.write_text(text, encoding="utf-8")
    assert win.files.open_path(path), win.answers.errors
    item = win.scene.nodes["b"]
    assert item.placeholder and "QuantumLayer" in item.error
    win.scene.select_nodes(["b"])
    assert "unknown" in win.inspector.doc_label.text()
    assert not win.inspector.editors  # nothing to edit
    out = tmp_path / "again.json"
    win.answers.save_path = str(out)
    assert win.files.save_as()
    again = json.loads(out.read_text(encoding="utf-8"))
    assert next(n for n in again["nodes"] if n["id"] == "b")["params"] == {"qubits": 5}


@pytest.mark.parametrize("type_id", [t for t in blocks.names() if blocks.spec(t).composite])
def test_every_composite_opens_read_only_and_expands(win, type_id):
    params = dict(blocks.spec(type_id).examples[0].params)
    nid = win.insert_block(type_id, params, QPointF(0, 0))
    assert win.open_inside(nid)
    inner = win.level.doc.graph
    assert inner.nodes and win.scene.read_only
    assert {n.type for n in inner.nodes.values()} & {"Output"}
    win.go_up()
    before = win.doc.dump()
    win.scene.select_nodes([nid])
    win.expand_selected()
    assert nid not in win.doc.graph.nodes
    assert all(n.type != "Output" for n in win.doc.graph.nodes.values())
    win.undo_stack.undo()
    assert win.doc.dump() == before


def test_inspector_nullable_int_means_auto(win):
    nid = win.insert_block("FeedForward", {}, QPointF(0, 0))
    win.scene.select_nodes([nid])
    spin = win.inspector.editors["hidden"]
    assert spin.text() == "auto" and win.doc.node(nid).params["hidden"] is None
    spin.setValue(12)
    assert win.doc.node(nid).params["hidden"] == 12
    spin.setValue(spin.minimum())
    assert win.doc.node(nid).params["hidden"] is None
    win.undo_stack.undo()
    assert win.doc.node(nid).params["hidden"] == 12 and spin.value() == 12


def _front_tab(win, title):
    """The title of the tab in front, among the dock tabs that include ``title``."""
    from PySide6.QtWidgets import QTabBar

    for bar in win.findChildren(QTabBar):
        if title in [bar.tabText(i) for i in range(bar.count())]:
            return bar.tabText(bar.currentIndex())
    return None


def test_the_lesson_text_stays_in_sight_while_nodes_are_selected(win, qtbot):
    import presets

    assert win.files.load_path(presets.path("two_layer_net"), is_preset=True)
    project = serialize.load(presets.path("two_layer_net"))
    text = win.lesson.toPlainText()
    assert project.name in text and "XOR" in project.description and "XOR" in text
    qtbot.waitUntil(lambda: _front_tab(win, "Lesson") == "Lesson")  # in front of the palette's tab
    assert win.lesson.isVisible()
    node = next(iter(win.doc.graph.nodes))
    win.scene.nodes[node].setSelected(True)
    QApplication.processEvents()
    assert win.inspector.section.isVisibleTo(win.inspector) and win.lesson.isVisible()
    win.files.new_document()  # no text: the palette comes to the front
    qtbot.waitUntil(lambda: _front_tab(win, "Lesson") == "Blocks")
    assert "XOR" not in win.lesson.toPlainText()


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU"])
def test_double_click_opens_a_sequence_rnn_unrolled_through_time(win, cell):
    nid = win.insert_block("SequenceRNN", {"cell": cell, "hidden": 4}, QPointF(0, 0))
    win.view.fit()
    item = win.scene.nodes[nid]
    header = item.mapToScene(QPointF(item.width / 2, 8))
    QTest.mouseDClick(win.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                      win.view.mapFromScene(header))
    assert len(win.levels) == 2 and win.scene.read_only
    inner = win.level.doc.graph
    cells = [n for n in inner.nodes.values() if n.type == "RNNCell"]
    assert len(cells) >= 2 and all(c.params["cell"] == cell for c in cells)
    assert sum(1 for c in cells if not c.params["tie_to"]) == 1, "one cell owns the weights, the rest share them"
    assert inner.infer().ok


def test_the_window_keeps_qt_palette_and_its_blocks_panel_apart(win):
    """``MainWindow.palette`` is Qt's colour palette (features read it); the Blocks panel is
    ``block_palette``."""
    from PySide6.QtGui import QPalette

    from editor.panels.palette import Palette

    assert isinstance(win.palette(), QPalette) and isinstance(win.block_palette, Palette)
