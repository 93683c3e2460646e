"""The Values panel: the selected node's (or wire's) numbers at the shown point of the pass.

The value and the gradient of each output, and every weight with its gradient, as a table, a
heatmap centred on zero or a histogram; an Attention node's weights per head with the tokens on
the axes; a SequenceRNN's ‖∂loss/∂h_t‖ over time (several selected RNNs side by side); a
Conv2d's filters as a grid of images. A button checks the node's gradient by finite
differences; an Input takes values typed by hand.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFrame, QHBoxLayout, QLabel, QLineEdit, QPushButton, QScrollArea, QSizePolicy,
                               QStackedWidget, QTabBar, QVBoxLayout, QWidget)

from editor.panels.tensorview import AttentionView, BarsView, FiltersView, TensorView
from editor.run import style
from editor.run.controller import RunController
from engine import nodecheck
from engine.runtime import TensorStats


class _CheckSignals(QObject):
    done = Signal(int, object)


class ValuesPanel(QWidget):
    """See the module docstring. ``scene`` returns the shown scene (its document has the nodes)."""

    def __init__(self, controller: RunController, scene: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.scene = scene
        self.nodes: list[str] = []
        self.link: Any = None
        self.vocab: list[str] | None = None
        self._key: Any = None
        self._check_token = 0
        self._signals = _CheckSignals(self)
        self._signals.done.connect(self._on_checked)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        body = QWidget()
        body.setMinimumWidth(0)
        scroll.setWidget(body)
        col = QVBoxLayout(body)
        col.setContentsMargins(10, 8, 10, 8)
        col.setSpacing(8)
        self.header = QLabel()
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        col.addWidget(self.header)
        # what the block is about first (attention heads, gradients over time, filters) ...
        self.special_title = QLabel()
        self.special_title.setTextFormat(Qt.TextFormat.RichText)
        self.special_title.setWordWrap(True)
        self.special_title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        col.addWidget(self.special_title)
        self.attention = AttentionView()
        self.bars = BarsView()
        self.filters = FiltersView()
        for w in (self.attention, self.bars, self.filters):
            w.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            col.addWidget(w)
            w.hide()
        # ... then the numbers: the value or the gradient of one output or weight
        self.tensors = QWidget()
        tcol = QVBoxLayout(self.tensors)
        tcol.setContentsMargins(0, 0, 0, 0)
        self.port_combo = QComboBox()
        self.port_combo.setToolTip("Which output (or weight) to show")
        self.port_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.port_combo.setMinimumContentsLength(8)
        self.port_combo.currentIndexChanged.connect(lambda _i: self._show_port())
        tcol.addWidget(self.port_combo)
        row = QHBoxLayout()
        self.which = QTabBar()
        self.which.setObjectName("values_which")
        self.which.setExpanding(False)
        self.which.setDrawBase(False)
        self.which.addTab("Value")
        self.which.addTab("Gradient")
        self.which.setTabToolTip(1, "∂loss/∂(this): what backpropagation brings back to it")
        row.addWidget(self.which)
        row.addStretch(1)
        tcol.addLayout(row)
        self.views = QStackedWidget()
        self.value_view = TensorView()
        self.value_view.setObjectName("values_value")
        self.grad_view = TensorView()
        self.grad_view.setObjectName("values_gradient")
        self.views.addWidget(self.value_view)
        self.views.addWidget(self.grad_view)
        self.which.currentChanged.connect(self.views.setCurrentIndex)
        tcol.addWidget(self.views)
        col.addWidget(self.tensors)
        # gradient check
        row = QHBoxLayout()
        self.check_button = QPushButton("Check Gradient")
        self.check_button.setObjectName("values_check")
        self.check_button.setToolTip("Compare this node's backward with finite differences of its forward, on the "
                                     "values it had in this pass (float64)")
        self.check_button.clicked.connect(self.check_gradient)
        row.addWidget(self.check_button)
        row.addStretch(1)
        col.addLayout(row)
        self.check_result = QLabel()
        self.check_result.setObjectName("values_check_result")
        self.check_result.setWordWrap(True)
        self.check_result.setTextFormat(Qt.TextFormat.RichText)
        self.check_result.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        col.addWidget(self.check_result)
        # inputs typed by hand
        self.typed_box = QWidget()
        typed = QVBoxLayout(self.typed_box)
        typed.setContentsMargins(0, 0, 0, 0)
        typed.addWidget(QLabel("<b>Type this input's values</b> (nested lists, e.g. [[1, 2, 3]]):"))
        self.typed_edit = QLineEdit()
        self.typed_edit.setObjectName("values_typed")
        self.typed_edit.setPlaceholderText("[[0.5, -1.0, 2.0]]")
        self.typed_edit.returnPressed.connect(self._apply_typed)
        typed.addWidget(self.typed_edit)
        buttons = QHBoxLayout()
        apply = QPushButton("Use These Values")
        apply.clicked.connect(self._apply_typed)
        clear = QPushButton("Back to the Data")
        clear.clicked.connect(self._clear_typed)
        buttons.addWidget(apply)
        buttons.addWidget(clear)
        buttons.addStretch(1)
        typed.addLayout(buttons)
        self.typed_error = QLabel()
        self.typed_error.setStyleSheet("color: #e5484d")
        self.typed_error.setWordWrap(True)
        typed.addWidget(self.typed_error)
        col.addWidget(self.typed_box)
        col.addStretch(1)
        controller.changed.connect(self.refresh)
        self.refresh()

    # --- what is shown -------------------------------------------------------------------------------

    def set_selection(self, nodes: list[str], link: Any = None) -> None:
        if nodes == self.nodes and link == self.link:
            return
        self.nodes, self.link = list(nodes), link
        self.check_result.clear()
        self._check_token += 1
        self._key = None
        self.refresh()

    def _scene(self) -> Any:
        return self.scene()

    def _frames(self, node: str) -> tuple[Any, Any]:
        c = self.controller
        tl = c.timeline
        if tl is None:
            return None, None
        scene = self._scene()
        members = scene.stacks.get(node, [node]) if scene is not None else [node]
        last = members[-1]
        return tl.value_frame(c.level, last, c.cursor), tl.grad_frame(c.level, last, c.cursor)

    def refresh(self) -> None:
        if not self.isVisible() and self._key is not None:
            return
        c = self.controller
        scene = self._scene()
        nodes = [n for n in self.nodes if scene is not None and n in scene.doc.graph.nodes]
        frames = tuple(self._frames(n) for n in nodes)
        key = (tuple(nodes), self.link, id(c.timeline), c.stale, c.level,
               tuple((id(v), id(g)) for v, g in frames), self.port_combo.count())
        if key == self._key:
            return
        self._key = key
        self.typed_box.setVisible(len(nodes) == 1 and scene.doc.node(nodes[0]).type == "Input" and c.level == ())
        self.check_button.setVisible(len(nodes) == 1 and scene.doc.node(nodes[0]).block is not None)
        for w in (self.attention, self.bars, self.filters):
            w.hide()
        self.special_title.hide()
        if self.link is not None and not nodes:
            self._show_link(scene)
            return
        if not nodes:
            self.header.setText("<i>Select a node or a wire to see its numbers.</i>" if c.timeline is not None else
                                "<i>No pass yet. Press Step (F10) to run the graph node by node, or Forward (F5).</i>")
            self._fill_ports([])
            return
        if len(nodes) > 1:
            self._show_many(scene, nodes)
            return
        nid = nodes[0]
        node = scene.doc.node(nid)
        vf, gf = frames[0]
        state = []
        if c.stale:
            state.append("<span style='color:#b58900'>stale: the graph changed after this pass</span>")
        state.append("forward done" if vf is not None else "forward not reached yet")
        if gf is not None:
            state.append("gradient arrived")
        elif vf is not None and c.timeline is not None:
            state.append("no gradient yet")
        self.header.setText(f"<b>{_esc(node.name)}</b> ({node.type}) · " + " · ".join(state))
        ports = [f"output {p}" for p in (vf.event.outputs if vf is not None else ())]
        ports += [f"weight {w}" for w in (vf.weights if vf is not None else ())]
        self._fill_ports(ports)
        self._special(node, vf, gf)

    def _fill_ports(self, items: list[str]) -> None:
        current = self.port_combo.currentText()
        self.port_combo.blockSignals(True)
        self.port_combo.clear()
        self.port_combo.addItems(items)
        if current in items:
            self.port_combo.setCurrentText(current)
        self.port_combo.blockSignals(False)
        self.port_combo.setVisible(len(items) > 1)
        self._show_port()
        if len(self.nodes) == 1 and not self.controller.stale:
            # after the backward pass reaches it, the gradient is the news
            _, gf = self._frames(self.nodes[0])
            self.which.setCurrentIndex(1 if gf is not None else 0)

    def _show_port(self) -> None:
        if len(self.nodes) != 1:
            if self.link is None:
                self.value_view.set_array(None)
                self.grad_view.set_array(None)
                self.tensors.hide()
            return
        self.tensors.show()
        vf, gf = self._frames(self.nodes[0])
        text = self.port_combo.currentText()
        if not text:
            self.value_view.set_array(None, "", "No values yet at this point of the pass.")
            self.grad_view.set_array(None)
            return
        kind, name = text.split(" ", 1)
        if kind == "output":
            t = vf.event.outputs[name]
            self.value_view.set_array(vf.outputs.get(name), f"<b>value</b> of {name} {_shape(t)}", _too_big(t))
            if gf is not None and name in gf.event.outputs:
                g = gf.event.outputs[name]
                self.grad_view.set_array(gf.outputs.get(name), f"<b style='color:#c2185b'>gradient</b> ∂loss/∂{name} {_shape(g)}", _too_big(g))
            else:
                self.grad_view.set_array(None, "<b>gradient</b>", "Not reached yet: the gradient arrives in the backward pass.")
        else:
            w = vf.weights.get(name)
            self.value_view.set_array(w, f"<b>weight</b> {name} {_shape(TensorStats.of(w)) if w is not None else ''}",
                                      "Too large to keep a copy.")
            if gf is not None and name in gf.event.weights:
                g = gf.event.weights[name]
                self.grad_view.set_array(gf.weights.get(name), f"<b style='color:#c2185b'>gradient</b> ∂loss/∂{name} {_shape(g)}", _too_big(g))
            else:
                self.grad_view.set_array(None, "<b>gradient</b>", "Not reached yet: the gradient arrives in the backward pass.")

    def _show_link(self, scene: Any) -> None:
        c = self.controller
        link = self.link
        tl = c.timeline
        src, dst = scene.doc.node(link.src), scene.doc.node(link.dst)
        self.header.setText(f"wire <b>{_esc(src.name)}</b>.{link.src_port} → <b>{_esc(dst.name)}</b>.{link.dst_port}")
        self.port_combo.hide()
        self.tensors.show()
        if tl is None:
            self.value_view.set_array(None, "", "No pass yet.")
            self.grad_view.set_array(None)
            return
        vf = tl.value_frame(c.level, link.src, c.cursor)
        gf = tl.grad_frame(c.level, link.dst, c.cursor)
        if vf is None or link.src_port not in vf.event.outputs:
            self.value_view.set_array(None, "<b>value</b>", "Not computed yet at this point of the pass.")
        else:
            t = vf.event.outputs[link.src_port]
            self.value_view.set_array(vf.outputs.get(link.src_port), f"<b>value</b> {_shape(t)}", _too_big(t))
        if gf is None or link.dst_port not in gf.event.inputs:
            self.grad_view.set_array(None, "<b>gradient</b>", "Not reached yet: the gradient arrives in the backward pass.")
        else:
            g = gf.inputs.get(link.dst_port)
            self.grad_view.set_array(g, "<b style='color:#c2185b'>gradient</b> this wire carries back "
                                        f"{_shape(gf.event.inputs[link.dst_port])}", "Too large to keep a copy.")

    def _show_many(self, scene: Any, nodes: list[str]) -> None:
        kinds = {scene.doc.node(n).type for n in nodes}
        self.port_combo.hide()
        self.tensors.hide()
        if kinds == {"SequenceRNN"}:
            self.header.setText(f"{len(nodes)} recurrent networks side by side")
            self._rnn_bars(scene, nodes)
        else:
            self.header.setText(f"{len(nodes)} nodes selected: select one to see its numbers "
                                "(several SequenceRNNs show their gradients over time side by side).")

    # --- special views --------------------------------------------------------------------------------

    def _special(self, node: Any, vf: Any, gf: Any) -> None:
        if node.type == "Attention" and vf is not None and vf.outputs.get("attn") is not None:
            attn = vf.outputs["attn"]
            example = self._example(attn.shape[2])
            self.special_title.setText(f"<b>attention weights</b> of example {example + 1} (of {attn.shape[0]}), "
                                       f"{attn.shape[1]} head(s): row = a token, column = the token it attends to")
            self.special_title.show()
            self.attention.set_attention(attn, self._tokens(attn.shape[2], example), self._tokens(attn.shape[3], example),
                                         example)
            self.attention.show()
        elif node.type == "SequenceRNN":
            self._rnn_bars(self._scene(), [node.id])
        elif node.type == "Conv2d" and vf is not None and vf.weights.get("W") is not None:
            grad = gf.weights.get("W") if gf is not None else None
            self.filters.set_filters(vf.weights["W"], grad)
            self.special_title.setText("<b>filters</b>" + (" and their gradients" if grad is not None else ""))
            self.special_title.show()
            self.filters.show()

    def _rnn_bars(self, scene: Any, nodes: list[str]) -> None:
        series = []
        for n in nodes:
            _, gf = self._frames(n)
            if gf is not None and "time_grad_norms" in gf.event.extras:
                series.append((scene.doc.node(n).name, gf.event.extras["time_grad_norms"]))
        self.special_title.setText("<b>‖∂loss/∂h_t‖ over time</b> (log scale): how much of the loss's gradient "
                                   "reaches each step" if series else
                                   "<b>‖∂loss/∂h_t‖ over time</b> shows once the backward pass reaches this network.")
        self.special_title.show()
        if series:
            self.bars.set_series(series)
            self.bars.show()

    def _ids(self, length: int) -> np.ndarray | None:
        """The token ids (B, L) of a top-level ids Input of this length, when there is one."""
        c = self.controller
        tl = c.timeline
        if tl is None:
            return None
        for i in tl.level(()).forward.values():
            f = tl.frames[i]
            if f.event.type != "Input" or i > c.cursor:
                continue
            v = f.outputs.get("out")
            if v is not None and np.issubdtype(v.dtype, np.integer) and v.ndim == 2 and v.shape[1] == length:
                return v
        return None

    def _example(self, length: int) -> int:
        """The example worth looking at: the one with the most different tokens (the first
        examples of a lesson are often mostly padding)."""
        ids = self._ids(length)
        if ids is None:
            return 0
        return int(np.argmax([len(set(row.tolist())) for row in ids]))

    def _tokens(self, length: int, example: int = 0) -> list[str]:
        """Words (or ids) of one example's tokens."""
        ids = self._ids(length)
        if ids is None:
            return [str(i) for i in range(length)]
        row = [int(t) for t in ids[example]]
        if self.vocab:
            return [self.vocab[t] if 0 <= t < len(self.vocab) else str(t) for t in row]
        return [str(t) for t in row]

    # --- gradient check -------------------------------------------------------------------------------

    def check_gradient(self) -> None:
        """Check the selected node's gradient on the values it had in this pass (in a thread)."""
        c = self.controller
        scene = self._scene()
        if len(self.nodes) != 1 or scene is None:
            return
        nid = self.nodes[0]
        node = scene.doc.node(nid)
        tl = c.timeline
        members = scene.stacks.get(nid, [nid])
        nid = members[-1] if len(members) == 1 else members[0]
        node = scene.doc.node(nid)
        if tl is None or c.stale:
            self.check_result.setText("Run the pass first (Forward, F5): the check uses the values this node had.")
            return
        i = tl.frame_of(c.level, nid, "forward")
        if i is None:
            self.check_result.setText("This node has not run yet in this pass; run the forward pass first (F5).")
            return
        vf = tl.frames[i]
        inputs = {}
        for port in node.input_ports():
            link = scene.doc.graph.link_into(nid, port.name)
            if link is None:
                continue
            j = tl.frame_of(c.level, link.src, "forward")
            arr = tl.frames[j].outputs.get(link.src_port) if j is not None else None
            if arr is None:
                self.check_result.setText(f"Input {port.name} is too large to have been kept; cannot check here.")
                return
            inputs[port.name] = arr
        weights = dict(vf.weights)
        if any(v is None for v in weights.values()):
            self.check_result.setText("Some weights are too large to have been kept; cannot check here.")
            return
        self._check_token += 1
        token = self._check_token
        self.check_result.setText(f"Checking {_esc(node.name)} by finite differences…")
        self.check_button.setEnabled(False)
        block = node.block

        def work() -> None:
            try:
                result = nodecheck.check_node(block, inputs, weights)
            except Exception as exc:  # noqa: BLE001 - say what failed, keep the window
                result = exc
            try:
                self._signals.done.emit(token, result)
            except RuntimeError:  # the window closed while checking
                pass

        threading.Thread(target=work, name="gradcheck", daemon=True).start()

    def _on_checked(self, token: int, result: Any) -> None:
        self.check_button.setEnabled(True)
        if token != self._check_token:
            return
        if isinstance(result, Exception):
            self.check_result.setText(f"<span style='color:#e5484d'>The check could not run: {_esc(str(result))}</span>")
            return
        colour = {"correct": "#1a7f37", "kink": "#b58900", "wrong": "#e5484d"}.get(result.verdict, "gray")
        rows = "".join(f"<tr><td>{_esc(ch.what)}&nbsp;</td><td align=right>{ch.error:.1e}</td></tr>" for ch in result.checks[:12])
        self.check_result.setText(f"<span style='color:{colour}'><b>{_esc(result.message)}</b></span>"
                                  f"<table><tr><td><i>checked</i></td><td><i>relative error</i></td></tr>{rows}</table>")
        self.last_check = result

    # --- typed inputs -----------------------------------------------------------------------------------

    def _apply_typed(self) -> None:
        if len(self.nodes) != 1:
            return
        text = self.typed_edit.text().strip()
        try:
            value = np.asarray(json.loads(text), dtype=np.float64)
        except (json.JSONDecodeError, ValueError, TypeError):
            self.typed_error.setText("Write numbers as nested lists, e.g. [[0.5, -1.0, 2.0]].")
            return
        node = self._scene().doc.node(self.nodes[0])
        want = tuple(node.params["shape"])
        if value.shape != want:
            self.typed_error.setText(f"{node.name} takes shape {style.shape_text(want)}; these values have shape "
                                     f"{style.shape_text(value.shape)}.")
            return
        if node.params.get("dtype") == "ids":
            if not np.all(value == np.round(value)):
                self.typed_error.setText(f"{node.name} takes token ids: whole numbers.")
                return
            value = value.astype(np.int64)
        self.typed_error.clear()
        self.controller.set_override(node.id, value)
        self.controller.message.emit(f"{node.name} now takes the values you typed; run the pass again (F5 or F10).", 6000)

    def _clear_typed(self) -> None:
        if len(self.nodes) == 1:
            self.controller.set_override(self.nodes[0], None)
            self.typed_edit.clear()
            self.typed_error.clear()


def _shape(t: TensorStats) -> str:
    return f"{style.shape_text(t.shape)}, norm {style.num(t.norm)}"


def _too_big(t: TensorStats) -> str:
    return f"Too large to keep a copy ({style.shape_text(t.shape)}); norm {style.num(t.norm)}, " \
           f"min {style.num(t.min)}, max {style.num(t.max)}."


def _esc(text: str) -> str:
    import html
    return html.escape(text)
