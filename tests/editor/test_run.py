"""Watching backpropagation in the window: the run controls with real keys and clicks, the
numbers on the wires and in the Values panel (the engine's own), the slides' closed forms in
one-example mode, problems, stale values after an edit, Stop, the gradient check, composites
from the same pass, and ``screenshot --step --json``."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

import presets
from editor import commands, screenshot
from editor.items import LinkItem
from editor.run.overlay import Pulse
from editor.window import MainWindow
from engine import cli, feeds, kernels, serialize
from engine.graph import Graph

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints", "does not support raise", "grabbing the keyboard")

PASS_TIMEOUT = 120_000  # ms: a cold Numba cache compiles kernels on the first pass


@pytest.fixture
def win(shown_window):
    return shown_window


def load(w: MainWindow, name: str) -> None:
    assert w.files.load_path(presets.path(name), is_preset=True, remember=False)


def show_graph(w: MainWindow, graph: Graph) -> None:
    w.files.set_project(serialize.Project(graph), None)


def key(qtbot, w: MainWindow, k: Qt.Key, mod: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    QTest.keyClick(w.view, k, mod)


def wait_finished(qtbot, w: MainWindow) -> None:
    qtbot.waitUntil(lambda: w.run.timeline is not None and w.run.timeline.finished and not w.run.busy, timeout=PASS_TIMEOUT)


def node_id(w: MainWindow, name: str) -> str:
    return w.scene.doc.graph.find(name).id


def link_item(w: MainWindow, src: str, dst: str) -> LinkItem:
    a, b = node_id(w, src), node_id(w, dst)
    (item,) = [i for l, i in w.scene.links.items() if l.src == a and l.dst == b]
    return item


def click_node(qtbot, w: MainWindow, name: str) -> None:
    item = w.scene.nodes[node_id(w, name)]
    w.view.centerOn(item)
    pos = w.view.mapFromScene(item.mapToScene(QPointF(item.width / 2, 10)))
    QTest.mouseClick(w.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos)
    assert item.isSelected()


def running_marks(w: MainWindow) -> list[str]:
    return [nid for nid, m in w.run.installation.overlay.marks.items() if m.state.running]


def numbers_in(text: str) -> list[float]:
    return [float(t.replace("−", "-")) for t in re.findall(r"[−-]?\d+(?:\.\d+)?(?:e[−-]?\d+)?", text)]


# --- stepping -------------------------------------------------------------------------------------------


def test_step_visits_nodes_in_topological_then_reverse_order_and_values_are_the_engines(qtbot, win):
    load(win, "two_layer_net")
    win.run.set_one_example(False)
    setup = feeds.prepare(win.files.current_project())
    order = [s.node for s in setup.runtime.program.steps]
    seen = []
    for k in range(2 * len(order)):
        key(qtbot, win, Qt.Key.Key_F10)
        qtbot.waitUntil(lambda: win.run.frame() is not None and len(running_marks(win)) == 1
                        and win.run.position() == k + 1, timeout=PASS_TIMEOUT)
        (nid,) = running_marks(win)
        seen.append((win.run.frame().phase, nid))
    assert seen == [("forward", n) for n in order] + [("backward", n) for n in reversed(order)]
    # Shift+F10 steps back
    key(qtbot, win, Qt.Key.Key_F10, Qt.KeyboardModifier.ShiftModifier)
    assert running_marks(win) == [order[1]] and win.run.frame().phase == "backward"
    # the Values panel shows the engine's own numbers for the selected node
    with kernels.using(setup.ready().backend):  # the backend the window (and `run`) picks
        p = setup.runtime.forward_backward(setup.feeds, setup.loss)
    click_node(qtbot, win, "h")
    panel = win.run.installation.values
    h = node_id(win, "h")
    np.testing.assert_array_equal(panel.value_view.model.a, p.values[(h, "out")])
    np.testing.assert_array_equal(panel.grad_view.model.a, p.grads[(h, "out")])
    cell = panel.value_view.model.index(3, 2)
    assert panel.value_view.model.data(cell) == f"{p.values[(h, 'out')][3, 2]:.5g}".replace("-", "−")


def test_the_node_a_step_runs_stays_in_view(qtbot, win):
    """A small canvas (1280 × 800, the Train panel open) shows part of the lesson: each step,
    forward, backward and back, pans the least that shows the node it runs (a debugger's current line)."""
    win.resize(1280, 800)
    win.train.show_panel()
    load(win, "two_layer_net")
    QApplication.processEvents()
    win.view.show_graph()

    def seen(nid: str) -> bool:
        return win.view.mapToScene(win.view.viewport().rect()).boundingRect().contains(win.scene.nodes[nid].card_rect())

    def view() -> tuple:
        r = win.view.mapToScene(win.view.viewport().rect()).boundingRect()
        return round(r.x(), 3), round(r.y(), 3)

    assert not all(seen(nid) for nid in win.scene.nodes), "the test needs a lesson larger than its canvas"
    n, previous = len(win.scene.nodes), view()
    for k in range(2 * n):
        key(qtbot, win, Qt.Key.Key_F10)
        qtbot.waitUntil(lambda: win.run.frame() is not None and len(running_marks(win)) == 1
                        and win.run.position() == k + 1, timeout=PASS_TIMEOUT)
        (nid,) = running_marks(win)
        assert seen(nid), f"step {k + 1}: {win.scene.doc.graph.nodes[nid].name} is out of view"
        if k == 1:  # the second, an input too, is in view after the first: nothing moves
            assert view() == previous
        previous = view()
    for _ in range(n):
        key(qtbot, win, Qt.Key.Key_F10, Qt.KeyboardModifier.ShiftModifier)
        (nid,) = running_marks(win)
        assert seen(nid)


def test_the_apps_loss_is_the_loss_run_prints(qtbot, win, capsys):
    load(win, "two_layer_net")
    win.run.set_one_example(False)
    key(qtbot, win, Qt.Key.Key_F5)
    wait_finished(qtbot, win)
    assert cli.main(["run", str(presets.path("two_layer_net")), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])["loss"]
    assert win.run.timeline.loss == printed
    assert "loss = " + f"{printed:.4g}" in win.run.installation.overlay.hud.text()


def test_one_example_shows_the_slides_closed_forms_on_the_wires(qtbot, win):
    load(win, "two_layer_net")
    assert win.run.one_example and win.run.installation.controls.act_one.isChecked()  # on by default here
    key(qtbot, win, Qt.Key.Key_F6)  # the whole pass, backward included
    wait_finished(qtbot, win)
    qtbot.waitUntil(lambda: link_item(win, "w", "w_j·h_j").run_label is not None)
    tl = win.run.timeline
    fwd = {f.node: f for f in tl.frames if f.phase == "forward"}
    r = float(fwd[node_id(win, "residual")].outputs["out"][0])
    h = fwd[node_id(win, "h")].outputs["out"][0].astype(np.float64)
    w = fwd[node_id(win, "w")].outputs["out"].astype(np.float64)
    x = fwd[node_id(win, "φ(x)")].outputs["out"][0].astype(np.float64)
    # ∂Loss/∂w_j = 2·residual·h_j, written on the wire from w
    label = link_item(win, "w", "w_j·h_j").run_label
    assert label.grad.startswith("∇ [")
    np.testing.assert_allclose(numbers_in(label.grad), 2 * r * h, rtol=5e-3)
    # the residual and the loss are plain numbers on their wires, the gradient beneath
    res = link_item(win, "residual", "squared").run_label
    assert numbers_in(res.value) == pytest.approx([r], rel=1e-3)
    assert numbers_in(res.grad) == pytest.approx([2 * r], rel=1e-3)
    # ∂Loss/∂v_j = 2·residual·w_j·h_j(1 − h_j)·φ(x): V's gradient, in the Values panel
    closed = np.outer(x, 2 * r * w * h * (1 - h))
    vlabel = link_item(win, "V", "v_j·φ(x)").run_label
    assert numbers_in(vlabel.grad)[-1] == pytest.approx(np.linalg.norm(closed), rel=5e-3)
    click_node(qtbot, win, "V")
    np.testing.assert_allclose(win.run.installation.values.grad_view.model.a, closed, rtol=1e-4, atol=1e-7)


def test_local_derivatives_toggle_writes_them_on_scalar_wires(qtbot, win):
    load(win, "linear_regression")
    key(qtbot, win, Qt.Key.Key_F5)
    wait_finished(qtbot, win)
    item = link_item(win, "residual", "squared")
    assert item.run_label.note == ""
    win.run.installation.controls.act_local.trigger()
    r = numbers_in(item.run_label.value)[0]
    assert item.run_label.note.startswith("∂/∂in") and numbers_in(item.run_label.note)[-1] == pytest.approx(2 * r, rel=1e-3)
    assert numbers_in(link_item(win, "y", "residual").run_label.note) == [-1.0]


def test_play_animates_with_a_pulse_and_run_to_here_stops_at_the_node(qtbot, win):
    load(win, "linear_regression")
    c = win.run
    c.set_speed(16.0)
    click_node(qtbot, win, "residual")
    key(qtbot, win, Qt.Key.Key_F10, Qt.KeyboardModifier.ControlModifier)  # Run to Here
    qtbot.waitUntil(lambda: not c.playing and c.frame() is not None, timeout=PASS_TIMEOUT)
    assert c.frame().node == node_id(win, "residual") and c.frame().phase == "forward"
    key(qtbot, win, Qt.Key.Key_F10)  # one step: 'squared' runs, its value travels its output wire
    pulses = [i for i in win.scene.items() if isinstance(i, Pulse)]
    assert len(pulses) == 1 and pulses[0].path == link_item(win, "squared", "loss").path
    qtbot.waitUntil(lambda: not any(isinstance(i, Pulse) for i in win.scene.items()), timeout=3000)
    key(qtbot, win, Qt.Key.Key_F10, Qt.KeyboardModifier.ControlModifier)  # the backward visit
    qtbot.waitUntil(lambda: not c.playing and c.frame().phase == "backward", timeout=10000)
    assert c.frame().node == node_id(win, "residual")
    key(qtbot, win, Qt.Key.Key_F8)  # play to the end
    qtbot.waitUntil(lambda: not c.playing, timeout=10000)
    assert c.cursor == len(c.timeline) - 1


def test_the_scrubber_moves_through_the_pass(qtbot, win):
    load(win, "linear_regression")
    key(qtbot, win, Qt.Key.Key_F6)
    wait_finished(qtbot, win)
    slider = win.run.installation.controls.scrubber.slider
    assert slider.maximum() == len(win.run.timeline)
    slider.setValue(3)
    assert win.run.position() == 3 and win.run.frame().phase == "forward"
    slider.setValue(0)
    assert win.run.cursor == -1 and not running_marks(win)
    assert all(i.run_label is None for i in win.scene.links.values())  # nothing shown before the pass


# --- problems, edits, stop ------------------------------------------------------------------------------


def test_nan_in_a_weight_is_flagged_on_its_node_and_in_problems(qtbot, win):
    import dataclasses

    load(win, "two_layer_net")
    v = node_id(win, "V")
    setup = feeds.prepare(win.files.current_project())
    value = setup.runtime.weights[v]["value"].copy()
    value[1, 2] = np.nan
    win.files.project = dataclasses.replace(win.files.project, weights={v: {"value": value}})
    key(qtbot, win, Qt.Key.Key_F6)
    wait_finished(qtbot, win)
    marks = win.run.installation.overlay.marks
    assert "nan" in marks[v].state.problems
    assert marks[node_id(win, "φ(x)")].state.problems == ()
    panel = win.run.installation.problems
    button = win.run.installation.problems_button
    assert button.isVisible() and button.text().startswith("⚠ ")
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)
    assert win.run.installation.problems_dock.isVisible()
    texts = [panel.list.item(i).text() for i in range(panel.list.count())]
    assert texts and "'V'" in texts[0] and "NaN" in texts[0]
    win.scene.clearSelection()
    item = panel.list.item(0)
    panel.list.scrollToItem(item)
    QTest.mouseClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=panel.list.visualItemRect(item).center())
    assert win.scene.selected_node_ids() == [v]


def test_editing_the_graph_mid_pass_greys_the_values(qtbot, win):
    load(win, "two_layer_net")
    for _ in range(4):
        key(qtbot, win, Qt.Key.Key_F10)
    qtbot.waitUntil(lambda: win.run.position() == 4, timeout=PASS_TIMEOUT)
    shown = [i for i in win.scene.links.values() if i.run_label is not None and i.run_label.value]
    assert shown and not any(i.run_label.stale for i in shown)
    win.push(commands.RenameCommand(win.doc, node_id(win, "h"), "hidden"))
    assert win.run.stale
    assert all(i.run_label.stale for i in shown)
    assert not running_marks(win)
    assert "changed" in win.run.installation.overlay.hud.text()
    key(qtbot, win, Qt.Key.Key_F10)  # a fresh pass, from the first node
    qtbot.waitUntil(lambda: not win.run.stale and win.run.position() == 1, timeout=PASS_TIMEOUT)
    assert not any(i.run_label is not None and i.run_label.stale for i in win.scene.links.values())


def _long_chain(n: int = 60, size: int = 300) -> Graph:
    g = Graph()
    x = g.add_node("Input", {"shape": (size, size)}, name="x", position=(0, 0))
    w = g.add_node("Parameter", {"shape": (size, size)}, name="W", position=(0, 200))
    prev = x.id
    for i in range(n):
        m = g.add_node("MatMul", name=f"m{i}", position=(200 * (i + 1), 0))
        g.connect(prev, "out", m.id, "a")
        g.connect(w.id, "out", m.id, "b")
        t = g.add_node("Tanh", name=f"t{i}", position=(200 * (i + 1) + 100, 0))
        g.connect(m.id, "out", t.id, "a")
        prev = t.id
    loss = g.add_node("Mean", name="loss", position=(200 * (n + 2), 0))
    g.connect(prev, "out", loss.id, "a")
    return g


@pytest.fixture
def slow_nodes(monkeypatch):
    """Every node of a pass takes 50 ms longer (as on a slow machine, or while kernels compile),
    so a pass is long whatever this machine's speed."""
    from editor.run import worker as worker_mod

    class Slow(worker_mod.record.Recorder):
        def frames(self):
            for frame in super().frames():
                time.sleep(0.05)
                yield frame

    monkeypatch.setattr(worker_mod.record, "Recorder", Slow)


def test_stop_during_a_long_pass_returns_within_a_second(qtbot, win, slow_nodes):
    show_graph(win, _long_chain())
    c = win.run
    key(qtbot, win, Qt.Key.Key_F6)
    qtbot.waitUntil(lambda: c.timeline is not None and len(c.timeline) >= 3, timeout=PASS_TIMEOUT)
    assert c.busy
    t0 = time.perf_counter()
    key(qtbot, win, Qt.Key.Key_F5, Qt.KeyboardModifier.ShiftModifier)  # Stop
    answered = time.perf_counter() - t0
    qtbot.waitUntil(lambda: not c.busy, timeout=1000)
    assert c.worker.join(1.0)
    assert time.perf_counter() - t0 < 1.0 and answered < 0.1
    assert c.timeline.stopped and len(c.timeline) < 2 * 122


# --- gradient check ---------------------------------------------------------------------------------------


def _check(qtbot, win, name: str):
    click_node(qtbot, win, name)
    panel = win.run.installation.values
    panel.last_check = None
    QTest.mouseClick(panel.check_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: getattr(panel, "last_check", None) is not None, timeout=30000)
    return panel.last_check, panel.check_result.text()


def test_gradient_check_button_passes_a_correct_block(qtbot, win):
    load(win, "two_layer_net")
    win.run.set_one_example(False)
    key(qtbot, win, Qt.Key.Key_F5)
    wait_finished(qtbot, win)
    result, text = _check(qtbot, win, "h")
    assert result.verdict == "correct" and result.worst < 1e-6 and "Correct" in text


def test_gradient_check_button_catches_a_broken_backward(qtbot, win, monkeypatch):
    from engine import blocks

    cls = blocks.block_class("Sigmoid")
    original = cls.vjp
    monkeypatch.setattr(cls, "vjp", lambda self, g, s, w: ({k: 3 * v for k, v in original(self, g, s, w)[0].items()}, {}))
    load(win, "two_layer_net")
    key(qtbot, win, Qt.Key.Key_F5)
    wait_finished(qtbot, win)
    result, text = _check(qtbot, win, "h")
    assert result.verdict == "wrong" and result.worst > 0.1 and "Wrong" in text


def test_the_context_menu_checks_a_nodes_gradient(qtbot, win):
    load(win, "linear_regression")
    key(qtbot, win, Qt.Key.Key_F5)
    wait_finished(qtbot, win)
    item = win.scene.nodes[node_id(win, "squared")]
    menu = win.context_menu(item.sceneBoundingRect().center())
    (action,) = [a for a in menu.actions() if a.text() == "Check Gradient"]
    panel = win.run.installation.values
    panel.last_check = None
    action.trigger()
    qtbot.waitUntil(lambda: getattr(panel, "last_check", None) is not None, timeout=30000)
    assert panel.last_check.verdict == "correct"


# --- inside composites, RNNs, fan-out ------------------------------------------------------------------------


def test_inside_a_composite_the_inner_nodes_show_the_same_pass(qtbot, win):
    load(win, "language_model")
    key(qtbot, win, Qt.Key.Key_F6)
    wait_finished(qtbot, win)
    outer = win.run.timeline
    tb = node_id(win, "SequenceModel")
    assert win.open_inside(tb)
    assert win.run.level == (tb,)
    marks = win.run.installation.overlay.marks
    assert marks["attn"].state.done == "backward"
    labels = [i.run_label for i in win.scene.links.values() if i.run_label is not None and i.run_label.value]
    assert labels and all(l.grad for l in labels if "ids" not in l.value)
    # the inner Output's value is the composite's output value in the same pass
    inner_out = next(f for f in outer.frames if f.path == (tb, "out") and f.phase == "forward")
    comp = next(f for f in outer.frames if f.path == (tb,) and f.phase == "forward")
    np.testing.assert_array_equal(inner_out.outputs["out"], comp.outputs["out"])
    # stepping inside visits the inner nodes
    win.run.reset()
    key(qtbot, win, Qt.Key.Key_F10)
    assert win.run.frame().path[:-1] == (tb,)
    # the attention node shows its heads with the words as axis labels
    win.run.backward()
    click_node(qtbot, win, "attn")
    panel = win.run.installation.values
    assert panel.attention.isVisible() and panel.attention.heads.count() == 5 and len(panel.attention.plots) == 1
    ticks = panel.attention.plots[0].getAxis("bottom")._tickLevels[0]
    vocab = set(win.run.installation.values.vocab)
    assert all(t in vocab for _, t in ticks)
    win.go_up()
    assert win.run.level == ()


def _bert(layers: int = 3) -> Graph:
    g = Graph()
    ids = g.add_node("Input", {"shape": (2, 5), "dtype": "ids"}, name="ids")
    bert = g.add_node("BERT", {"vocab": 7, "dim": 8, "heads": 2, "layers": layers, "hidden": 8, "max_len": 5}, name="BERT",
                      position=(250, 0))
    col = g.add_node("Collapse", name="col", position=(500, 0))
    lin = g.add_node("Linear", {"out_features": 3}, name="lin", position=(700, 0))
    tgt = g.add_node("Input", {"shape": (2,), "dtype": "ids"}, name="target", position=(700, 200))
    loss = g.add_node("CrossEntropy", name="loss", position=(900, 0))
    for a, b, port in ((ids, bert, "ids"), (bert, col, "x"), (col, lin, "x"), (lin, loss, "logits"), (tgt, loss, "target")):
        g.connect(a.id, "out", b.id, port)
    return g


def test_a_bert_card_shows_a_gradient_strip_per_layer(qtbot, win):
    show_graph(win, _bert())
    key(qtbot, win, Qt.Key.Key_F6)
    wait_finished(qtbot, win)
    assert win.run.note.startswith("random inputs")
    bert = node_id(win, "BERT")
    strip = win.run.installation.overlay.marks[bert].state.strip
    tl = win.run.timeline
    expect = [next(f for f in tl.frames if f.path == (bert, f"block{i}") and f.phase == "backward").event.outputs["out"].norm
              for i in (1, 2, 3)]
    assert [n for _, n in strip] == pytest.approx(expect)
    assert win.open_inside(bert)
    head = win.scene.stacks and next(iter(win.scene.stacks))
    assert head and [n for _, n in win.run.installation.overlay.marks[head].state.strip] == pytest.approx(expect)
    win.scene.open_stack(head)
    win.run.changed.emit()
    assert all(win.run.installation.overlay.marks[f"block{i}"].state.done == "backward" for i in (1, 2, 3))


def _two_rnns() -> Graph:
    g = Graph()
    x = g.add_node("Input", {"shape": (2, 6, 3)}, name="x")
    add = g.add_node("Add", name="sum", position=(600, 0))
    for k, cell in enumerate(("SimpleRNN", "LSTM")):
        r = g.add_node("SequenceRNN", {"cell": cell, "hidden": 4}, name=cell, position=(250, 200 * k))
        m = g.add_node("Mean", name=f"mean {cell}", position=(450, 200 * k))
        g.connect(x.id, "out", r.id, "x")
        g.connect(r.id, "last", m.id, "a")
        g.connect(m.id, "out", add.id, "ab"[k])
    return g


def test_two_rnns_show_their_gradients_over_time_side_by_side(qtbot, win):
    show_graph(win, _two_rnns())
    key(qtbot, win, Qt.Key.Key_F6)
    wait_finished(qtbot, win)
    for name in ("SimpleRNN", "LSTM"):
        win.scene.nodes[node_id(win, name)].setSelected(True)
    panel = win.run.installation.values
    assert panel.bars.isVisible()
    assert [n for n, _ in panel.bars.series] == ["SimpleRNN", "LSTM"]
    assert all(len(v) == 6 for _, v in panel.bars.series)
    strip = win.run.installation.overlay.marks[node_id(win, "LSTM")].state.strip
    np.testing.assert_allclose([n for _, n in strip], panel.bars.series[1][1], rtol=1e-4)


def test_a_fan_out_shows_its_contributions_arriving_and_summing(qtbot, win):
    g = Graph()
    x = g.add_node("Input", {"shape": ()}, name="x")
    add = g.add_node("Add", name="add", position=(500, 0))
    for k, f in enumerate((2.0, 3.0)):
        s = g.add_node("Scale", {"factor": f}, name=f"s{k}", position=(250, 150 * k))
        g.connect(x.id, "out", s.id, "a")
        g.connect(s.id, "out", add.id, "ab"[k])
    show_graph(win, g)
    win.run.overrides = {x.id: np.array(1.5)}
    key(qtbot, win, Qt.Key.Key_F6)
    wait_finished(qtbot, win)
    assert "typed by hand" in win.run.note
    tl = win.run.timeline
    mark = win.run.installation.overlay.marks[x.id]
    s1 = tl.frame_of((), node_id(win, "s1"), "backward")
    win.run.seek(s1)
    assert mark.state.fanout == (("out", 1, 2, "so far 3"),)
    win.run.seek(tl.frame_of((), node_id(win, "s0"), "backward"))
    assert mark.state.fanout == (("out", 2, 2, "= 5"),)


def test_a_built_graph_runs_on_random_inputs_and_takes_typed_ones(qtbot, win):
    from tests.editor.helpers import two_layer

    ids = two_layer(win.doc, win.undo_stack)
    key(qtbot, win, Qt.Key.Key_F5)
    wait_finished(qtbot, win)
    assert "random inputs" in win.run.note
    click_node(qtbot, win, "x")
    panel = win.run.installation.values
    assert panel.typed_box.isVisible()
    panel.typed_edit.setText("[[1, 2]]")
    QTest.keyClick(panel.typed_edit, Qt.Key.Key_Return)
    assert "shape (4, 3)" in panel.typed_error.text()
    typed = [[1, 2, 3], [0, 0, 0], [-1, 0.5, 2], [4, 4, 4]]
    panel.typed_edit.setText(json.dumps(typed))
    QTest.keyClick(panel.typed_edit, Qt.Key.Key_Return)
    assert win.run.stale
    key(qtbot, win, Qt.Key.Key_F5)
    wait_finished(qtbot, win)
    f = next(f for f in win.run.timeline.frames if f.node == ids["x"])
    np.testing.assert_array_equal(f.outputs["out"], np.array(typed, np.float32))


def test_the_run_menu_and_toolbar_have_keys_icons_and_tips(win):
    controls = win.run.installation.controls
    acts = [controls.act_forward, controls.act_backward, controls.act_step, controls.act_step_back, controls.act_play,
            controls.act_stop, controls.act_reset, controls.act_run_to]
    for a in acts:
        assert not a.icon().isNull() and a.shortcut().toString() and "<b>" in a.toolTip()
        assert a in controls.menu.actions() and a in win.toolbar.actions()
    assert controls.menu.title() == "&Run" and controls.menu.menuAction() in win.menuBar().actions()


# --- screenshot ------------------------------------------------------------------------------------------------


def test_screenshot_step_and_json(qapp, tmp_path, capsys):
    out = tmp_path / "fwd.png"
    assert screenshot.main("linear_regression", str(out), 900, 600, step="forward:3", as_json=True) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (info["phase"], info["step"], info["events"]) == ("forward", 3, 14)
    one = feeds.prepare(serialize.load(presets.path("linear_regression")), one_example=True)
    assert info["loss"] == float(one.runtime.forward(one.feeds).values[one.loss])  # one example: on by default here
    assert out.exists()
    assert screenshot.main("linear_regression", str(tmp_path / "b.png"), 900, 600, step="backward:end", as_json=True) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (info["phase"], info["step"]) == ("backward", 7)
    assert screenshot.main("linear_regression", str(tmp_path / "c.png"), 900, 600, step="sideways:2") == 1
    assert "PHASE:N" in capsys.readouterr().err



def test_weights_and_their_gradients_show_in_the_values_panel(qtbot, win):
    from tests.editor.helpers import two_layer

    ids = two_layer(win.doc, win.undo_stack)
    key(qtbot, win, Qt.Key.Key_F6)
    wait_finished(qtbot, win)
    setup = feeds.prepare(win.files.current_project())
    p = setup.runtime.forward_backward(setup.feeds, setup.loss)
    click_node(qtbot, win, "l1")
    panel = win.run.installation.values
    assert panel.which.currentIndex() == 1  # the gradient has arrived: it is what is shown
    panel.port_combo.setCurrentText("weight W")
    np.testing.assert_array_equal(panel.value_view.model.a, setup.runtime.weights[ids["l1"]]["W"])
    np.testing.assert_array_equal(panel.grad_view.model.a, p.weight_grads[ids["l1"]]["W"])
    assert win.run.installation.overlay.marks[ids["l1"]].state.weight_grad == pytest.approx(
        max(np.linalg.norm(g) for g in p.weight_grads[ids["l1"]].values()), rel=1e-5)


def test_a_slow_first_pass_says_kernels_compile_once(qtbot, win, monkeypatch, slow_nodes):
    from editor.run import controller as controller_mod

    show_graph(win, _long_chain(n=10, size=20))
    c = win.run
    monkeypatch.setattr(controller_mod, "SLOW_SECONDS", 0.0)
    monkeypatch.setattr(c.worker, "compiling", lambda: 3)
    messages = []
    c.message.connect(lambda text, msec: messages.append(text))
    key(qtbot, win, Qt.Key.Key_F6)
    qtbot.waitUntil(lambda: any("compiling fast kernels" in m for m in messages), timeout=5000)
    text = next(m for m in messages if "compiling fast kernels" in m)
    assert "once" in text and "Stop" in text
    assert win.run.installation.progress.isVisible() or not c.busy
    c.stop()
    qtbot.waitUntil(lambda: not c.busy, timeout=5000)


def test_a_nan_inside_a_composite_is_found_and_problems_jump_inside(qtbot, win):
    g = _bert()
    bert = g.find("BERT").id
    show_graph(win, g)
    setup = feeds.prepare(win.files.current_project())
    weights = {bert: {k: v.copy() for k, v in setup.runtime.weights[bert].items()}}
    weights[bert]["block2/attn/Wq"][0, 0] = np.nan
    win.files.project = serialize.Project(win.doc.graph.copy(), weights=weights)
    key(qtbot, win, Qt.Key.Key_F6)
    wait_finished(qtbot, win)
    problems = win.run.timeline.problems
    assert problems[0].path == (bert, "block2", "attn") and "Wq" in problems[0].message
    assert sum("weight" in p.message for p in problems) == 1  # told once, at the inner node
    assert "nan" in win.run.installation.overlay.marks[bert].state.problems  # and marked on the card
    win.run.installation.problems.list.setCurrentRow(0)
    win.run.installation.problems._activated(win.run.installation.problems.list.item(0))
    assert win.run.level == (bert, "block2")
    assert win.scene.selected_node_ids() == ["attn"]


def test_a_graph_that_cannot_run_says_why_on_the_canvas(qtbot, win):
    g = Graph()
    x = g.add_node("Input", {"shape": (2, 3)}, name="x")
    add = g.add_node("Add", name="sum", position=(250, 0))
    g.connect(x.id, "out", add.id, "a")  # 'b' is left unconnected
    show_graph(win, g)
    key(qtbot, win, Qt.Key.Key_F10)
    wait_finished(qtbot, win)
    hud = win.run.installation.overlay.hud
    assert hud.isVisible() and "Cannot run this graph" in hud.text() and "'b' is not connected" in hud.text()
    assert "'b' is not connected" in win.statusBar().currentMessage()
    assert win.run.cursor == -1 and not running_marks(win)


def test_the_gradient_check_says_not_differentiable_at_a_kink(qtbot, win):
    g = Graph()
    x = g.add_node("Input", {"shape": (1, 3)}, name="x")
    relu = g.add_node("ReLU", name="relu", position=(250, 0))
    total = g.add_node("Sum", name="total", position=(500, 0))
    g.connect(x.id, "out", relu.id, "a")
    g.connect(relu.id, "out", total.id, "a")
    show_graph(win, g)
    win.run.set_override(x.id, np.array([[0.0, 1.0, -2.0]]))  # ReLU exactly at its kink
    key(qtbot, win, Qt.Key.Key_F5)
    wait_finished(qtbot, win)
    result, text = _check(qtbot, win, "relu")
    assert result.verdict == "kink" and "Not differentiable here" in text and "FAIL" not in text.upper()


def test_closing_the_window_while_a_pass_runs_stops_it(qtbot, win, slow_nodes):
    show_graph(win, _long_chain())
    key(qtbot, win, Qt.Key.Key_F6)
    qtbot.waitUntil(lambda: win.run.busy and win.run.timeline is not None, timeout=PASS_TIMEOUT)
    t0 = time.perf_counter()
    win.undo_stack.setClean()
    assert win.close()
    assert win.run.worker.join(1.0) and time.perf_counter() - t0 < 1.5


def test_reopening_a_lesson_while_its_pass_is_shown_replaces_the_marks_safely(qtbot, win):
    """A mark never holds its card in Python (the card is its parent item): before, a reopened
    lesson's old cards were freed by their marks' deallocation, a segfault at a random moment."""
    import gc

    from editor.run.overlay import RunMark

    load(win, "two_layer_net")
    key(qtbot, win, Qt.Key.Key_F6)
    qtbot.waitUntil(lambda: win.run.frame() is not None and win.run.frame().phase == "backward", timeout=PASS_TIMEOUT)
    marks = [m for n in win.scene.nodes.values() for m in n.childItems() if isinstance(m, RunMark)]
    assert marks and all("node" not in vars(m) for m in marks)
    assert all(m.node is m.parentItem() for m in marks)
    for _ in range(3):  # the cards are replaced while the old marks are still kept
        load(win, "two_layer_net")
        key(qtbot, win, Qt.Key.Key_F6)
        qtbot.waitUntil(lambda: win.run.frame() is not None and win.run.frame().phase == "backward",
                        timeout=PASS_TIMEOUT)
        gc.collect()
        QApplication.processEvents()
    overlay = win.run.installation.overlay
    assert all(m.node is win.scene.nodes[nid] for nid, m in overlay.marks.items())
