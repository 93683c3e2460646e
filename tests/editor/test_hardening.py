"""Hostile or damaged input in the editor: every refusal is one clear message where the user is
looking, nothing the user made is lost, and huge names never make huge messages."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from engine import blocks
from engine.blocks import Param, ParamType
from engine.blocks.math import ReLU
from tests.editor import test_window

win = test_window.win  # the window fixture, with scripted answers to its questions

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise", "grabbing the keyboard")


# --- params: refused where the user is looking ----------------------------------------------------


def test_a_tie_to_the_wrong_node_is_refused_in_the_inspector(win):
    relu = win.insert_block("ReLU", {}, QPointF(0, 0))
    gen = win.insert_block("GenerateToken", {"vocab": 7}, QPointF(300, 0))
    win.scene.select_nodes([gen])
    combo = win.inspector.editors["tie_to"]
    assert combo.findData(relu) >= 0 and combo.findData(gen) < 0  # never itself
    n = win.undo_stack.count()
    assert combo.findData(relu) == 1  # "(none)", then the ReLU
    combo.setFocus()
    QTest.keyClick(combo, Qt.Key.Key_Down)  # the user picks the ReLU
    assert win.undo_stack.count() == n, "refused: nothing on the stack whose redo could fail"
    assert win.doc.node(gen).params["tie_to"] == ""
    message = win.inspector.error.text()
    assert "tie_to" in message and "no weight 'E'" in message and win.inspector.error.isVisibleTo(win.inspector)
    assert combo.currentData() == "", "the form shows the document again"


def test_an_int_param_beyond_32_bits_gets_an_editor_that_holds_it(win, monkeypatch):
    class WideSeed(ReLU):
        """ReLU with a seed up to 2⁶³−1 (a test block). Example: a (2, 3) → out (2, 3)."""

        type_id = "WideSeed"
        params = (Param("seed", ParamType.INT, 0, "a seed", minimum=0, maximum=2**63 - 1),
                  Param("count", ParamType.INT, 3, "no declared range"))

    monkeypatch.setitem(blocks._REGISTRY, "WideSeed", WideSeed)
    big = 2**63 - 5
    nid = win.insert_block("WideSeed", {"seed": big}, QPointF(0, 0))
    win.scene.select_nodes([nid])  # OverflowError here before: a QSpinBox holds ±2³¹ only
    seed, count = win.inspector.editors["seed"], win.inspector.editors["count"]
    assert seed.value() == big and seed.text() == str(big)
    assert count.maximum() == 2**31 - 1, "no declared range: the engine's bound, which a QSpinBox holds"
    seed.setFocus()
    QTest.keyClick(seed, Qt.Key.Key_Up)
    assert win.doc.node(nid).params["seed"] == big + 1
    seed.lineEdit().selectAll()
    QTest.keyClicks(seed, str(2**62 + 7))
    QTest.keyClick(seed, Qt.Key.Key_Return)
    assert win.doc.node(nid).params["seed"] == 2**62 + 7
    seed.lineEdit().selectAll()
    QTest.keyClicks(seed, str(2**64))  # beyond the declared range: the most it allows, never more
    QTest.keyClick(seed, Qt.Key.Key_Return)
    assert win.doc.node(nid).params["seed"] == 2**63 - 1
    win.undo_stack.undo()
    count.setFocus()
    count.lineEdit().selectAll()
    QTest.keyClicks(count, str(2**40))
    QTest.keyClick(count, Qt.Key.Key_Return)
    assert win.doc.node(nid).params["count"] <= 2**31 - 1
    win.undo_stack.undo()
    seed.setFocus()
    seed.lineEdit().selectAll()
    QTest.keyClicks(seed, "x")  # refused by the validator: the text stays a number
    assert seed.text().lstrip("-").isdigit() or seed.text() == ""
    win.undo_stack.undo()
    assert seed.value() == big + 1  # the form follows the document


# --- the clipboard ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    '{"nodes": ' + "[" * 200_000 + "]" * 200_000 + "}",  # RecursionError in json before
    '{"nodes": [{"id": "a", "type": "ReLU", "params": {"x": ' + "[" * 500 + "]" * 500 + "}}]}",
    '{"nodes": [' + "1," * 4_500_000 + "1]}",
    '{"nodes": [' + "1," * 30_000 + "1]}",
], ids=["deep", "deep-param", "too-many-values", "too-many-nodes"])
def test_hostile_clipboard_text_gets_one_clear_line_and_pastes_nothing(win, text):
    from PySide6.QtGui import QGuiApplication

    two = win.insert_block("ReLU", {}, QPointF(0, 0))
    before, n = win.doc.dump(), win.undo_stack.count()
    QGuiApplication.clipboard().setText(text)
    win.view.setFocus()
    QTest.keyClick(win.view, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    message = win.statusBar().currentMessage()
    assert message.startswith("Cannot paste: ") and " it " in message, message
    assert len(message) < 300 and "\n" not in message
    assert win.doc.dump() == before and win.undo_stack.count() == n and two in win.doc.graph.nodes
    QGuiApplication.clipboard().clear()


def test_ordinary_text_on_the_clipboard_is_not_a_graph_and_says_nothing(win):
    from PySide6.QtGui import QGuiApplication

    QGuiApplication.clipboard().setText("just a sentence, not a graph")
    win.statusBar().clearMessage()
    win.view.setFocus()
    QTest.keyClick(win.view, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert not win.doc.graph.nodes and win.statusBar().currentMessage() == ""
    QGuiApplication.clipboard().clear()


# --- huge names ---------------------------------------------------------------------------------------


def test_a_megabyte_name_never_makes_a_megabyte_message(win, tmp_path):
    from engine import serialize
    from engine.graph import Graph

    huge = "n" * 10**6
    g = Graph()
    a = g.add_node("Input", {"shape": (2, 3)}, name=huge)
    b = g.add_node("ReLU", name="b" + huge)
    g.connect(a.id, "out", b.id, "a")
    path = tmp_path / "huge.json"
    serialize.save(serialize.Project(g, "p" * 10**6), path)
    assert win.files.open_path(path)
    texts = [win.windowTitle()]
    card = win.scene.nodes[a.id]
    assert card.width < 1000, "a card, not a wall"
    texts += [card.toolTip(), card.title]
    win.scene.select_nodes([b.id])
    win.open_selected()  # a single block: the status bar says so, naming it
    texts.append(win.statusBar().currentMessage())
    assert "single block" in texts[-1]
    win.inspector.name_edit.setText("c" + huge)
    win.inspector.name_edit.editingFinished.emit()  # rename: the History panel shows the command
    win.scene.select_nodes([a.id])
    win.inspector.editors["shape"].setText("2, 0")
    win.inspector.editors["shape"].editingFinished.emit()  # refused: the inspector says why
    texts += [win.undo_stack.text(i) for i in range(win.undo_stack.count())]
    texts += [win.inspector.error.text(), win.statusBar().currentMessage()]
    assert texts[-2], "the refusal was shown"
    assert all(len(t) < 400 for t in texts), [len(t) for t in texts]
    renamed = win.doc.node(b.id).name
    assert renamed.startswith("cnnn") and len(renamed) > 30_000, "the name itself is kept (as long as a line edit holds)"


def test_nested_text_typed_into_a_tensor_param_is_refused_in_the_inspector(win):
    nid = win.insert_block("Constant", {}, QPointF(0, 0))
    win.scene.select_nodes([nid])
    edit = win.inspector.editors["value"]
    n = win.undo_stack.count()
    edit.setText("[" * 100_000 + "]" * 100_000)  # RecursionError out of a Qt slot before
    edit.editingFinished.emit()
    assert win.undo_stack.count() == n
    assert "nested too deeply" in win.inspector.error.text()
    edit.setText("[[1, 2], [3, 4]]")
    edit.editingFinished.emit()
    assert win.doc.node(nid).params["value"] == [[1.0, 2.0], [3.0, 4.0]]


# --- memory: the estimate in the status bar, and a warning before a run would be refused ------------


def test_the_status_bar_shows_the_memory_a_pass_needs_and_warns_over_the_limit(win, monkeypatch):
    from engine.memory import LIMIT_ENV

    monkeypatch.setenv(LIMIT_ENV, "64M")
    big = win.insert_block("Input", {"shape": (1000, 1000)}, QPointF(0, 0))
    label = win.status_memory
    # 1000×1000 float32 values and their gradient: 8,000,000 bytes
    assert label.text() == "≈ 7.6 MiB per pass", label.text()
    assert "float32" in label.toolTip() and "Runs are refused above 64 MiB" in label.toolTip(), label.toolTip()
    win.insert_block("ReLU", {}, QPointF(300, 0))  # not wired: its shapes are not known yet
    assert label.text() == "≈ 7.6 MiB per pass so far", label.text()
    # a size that would be refused: the warning is there, with the engine's reason, before anyone presses Run
    monkeypatch.setenv(LIMIT_ENV, "1M")
    win.insert_block("Input", {"shape": (10, 10)}, QPointF(0, 300))
    assert "over the memory limit" in label.text(), label.text()
    tip = label.toolTip()
    assert tip.startswith("A run would be refused: this graph needs about 7.6 MiB"), tip
    assert f"{win.doc.graph.nodes[big].label} (Input) alone needs 3.8 MiB" in tip and "limit of 1 MiB (set by" in tip, tip
    # an empty graph says nothing
    win.files.new_document()
    assert label.text() == "" and label.toolTip() == ""
