"""The inspector: the selected node's name, formula, params, ports and weights.

The form is generated from the block's param specs: spin boxes with the declared ranges, check
boxes, combo boxes for choices, text fields for shapes and tensors, and a slider for real
numbers whose drag merges into one undo step. Every change is a command on the undo stack; a
value the block refuses shows the engine's message under the form and nothing is pushed.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QUndoStack, QValidator
from PySide6.QtWidgets import (QAbstractSpinBox, QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame,
                               QHBoxLayout, QLabel, QLineEdit, QScrollArea, QSizePolicy, QSlider, QSpinBox,
                               QVBoxLayout, QWidget)

from editor import commands
from editor.document import Document
from editor.panels.blockinfo import first_paragraph, param_range
from editor.panels.lesson import LessonView
from editor.theme import CATEGORY_COLOURS
from engine import blocks
from engine.blocks import Param, ParamType
from engine.blocks._base import INT_LIMIT, shape_str
from engine.errors import EngineError
from engine.graph import short

SLIDER_STEPS = 1000
MAX_WEIGHT_ROWS = 8
SPIN_MIN, SPIN_MAX = -2**31, 2**31 - 1  # what a QSpinBox (a C int) holds


class GSpinBox(QDoubleSpinBox):
    """A double spin box that shows values compactly (1e-05, 0.1, 3) instead of fixed decimals."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDecimals(12)
        self.setKeyboardTracking(False)

    def textFromValue(self, value: float) -> str:
        return f"{value:.6g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:
        from PySide6.QtGui import QValidator
        t = text.strip()
        if t in ("", "-", "+", ".", "-.", "e", "E") or t.lower().endswith(("e", "e-", "e+")):
            return QValidator.State.Intermediate, text, pos
        try:
            float(t)
            return QValidator.State.Acceptable, text, pos
        except ValueError:
            return QValidator.State.Invalid, text, pos


class WideIntSpinBox(QAbstractSpinBox):
    """A spin box for whole numbers of any size (a QSpinBox holds a C int, ±2³¹: a data seed goes
    to 2⁶³−1). The same calls as QSpinBox: ``value``, ``setValue``, ``setRange``, ``minimum``,
    ``setSpecialValueText`` (shown at the minimum) and ``valueChanged``, which carries a Python
    int and, as with keyboard tracking off, fires on Enter, focus out or a step."""

    valueChanged = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._lo, self._hi, self._value = 0, 99, 0
        self._special = ""
        self.setKeyboardTracking(False)
        self.editingFinished.connect(self._take_text)
        self._show()

    def minimum(self) -> int:
        return self._lo

    def maximum(self) -> int:
        return self._hi

    def setRange(self, lo: int, hi: int) -> None:
        self._lo, self._hi = int(lo), max(int(lo), int(hi))
        self.setValue(self._value)

    def setSpecialValueText(self, text: str) -> None:
        self._special = text
        self._show()

    def value(self) -> int:
        return self._value

    def setValue(self, value: int) -> None:
        value = min(max(int(value), self._lo), self._hi)
        changed = value != self._value
        self._value = value
        self._show()
        if changed:
            self.valueChanged.emit(value)

    def text(self) -> str:
        return self.lineEdit().text()

    def _show(self) -> None:
        self.lineEdit().setText(self._special if self._special and self._value == self._lo else str(self._value))

    def _take_text(self) -> None:
        text = self.lineEdit().text().strip().replace(",", "").replace("_", "")
        if self._special and text == self._special:
            self.setValue(self._lo)
            return
        try:
            self.setValue(int(text))
        except ValueError:
            self._show()  # not a number: back to the value

    def stepBy(self, steps: int) -> None:
        self.setValue(self._value + steps)

    def stepEnabled(self) -> QAbstractSpinBox.StepEnabledFlag:
        flags = QAbstractSpinBox.StepEnabledFlag.StepNone
        if self._value > self._lo:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
        if self._value < self._hi:
            flags |= QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
        return flags

    def validate(self, text: str, pos: int) -> object:
        t = text.strip().replace(",", "").replace("_", "")
        if t in ("", "-", "+") or (self._special and self._special.startswith(t)):
            return QValidator.State.Intermediate, text, pos
        try:
            value = int(t)
        except ValueError:
            return QValidator.State.Invalid, text, pos
        if self._lo <= value <= self._hi:
            return QValidator.State.Acceptable, text, pos
        # a number on its way into the range (typing 5 towards 50 when the minimum is 10)
        return QValidator.State.Intermediate, text, pos


def int_editor(lo: int, hi: int) -> QSpinBox | WideIntSpinBox:
    """A spin box for whole numbers in [lo, hi]: a QSpinBox where a C int holds the range, else a
    :class:`WideIntSpinBox`."""
    w: QSpinBox | WideIntSpinBox = QSpinBox() if SPIN_MIN <= lo and hi <= SPIN_MAX else WideIntSpinBox()
    w.setKeyboardTracking(False)
    w.setRange(lo, hi)
    return w


class Inspector(QWidget):
    """Shows and edits one node of a document."""

    message = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc: Document | None = None
        self.stack: QUndoStack | None = None
        self.node_id: str | None = None
        self.editors: dict[str, QWidget] = {}
        self._setters: dict[str, Callable[[Any], None]] = {}
        self._merge_key = ""
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        # No node selected: how to start (the lesson's own text is in the Lesson panel).
        self.empty = LessonView()
        outer.addWidget(self.empty)
        scroll = QScrollArea()
        self.scroll = scroll
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        body = QWidget()
        scroll.setWidget(body)
        self.layout_ = QVBoxLayout(body)
        self.layout_.setContentsMargins(10, 10, 10, 10)
        self.layout_.setSpacing(8)
        # node section
        self.section = QWidget()
        sec = QVBoxLayout(self.section)
        sec.setContentsMargins(0, 0, 0, 0)
        sec.setSpacing(8)
        self.chip = QLabel()
        self.chip.setTextFormat(Qt.TextFormat.RichText)
        sec.addWidget(self.chip)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("name")
        self.name_edit.editingFinished.connect(self._rename)
        name_row = QFormLayout()
        name_row.addRow("Name", self.name_edit)
        sec.addLayout(name_row)
        self.formula = QLabel()
        self.formula.setWordWrap(True)
        self.formula.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        mono = QFont("DejaVu Sans Mono")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.formula.setFont(mono)
        self.formula.setFrameShape(QFrame.Shape.StyledPanel)
        self.formula.setContentsMargins(6, 4, 6, 4)
        # Long formulas must wrap inside the dock, not widen it.
        self.formula.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        sec.addWidget(self.formula)
        self.doc_label = QLabel()
        self.doc_label.setWordWrap(True)
        self.doc_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        sec.addWidget(self.doc_label)
        self.params_title = QLabel("<b>Parameters</b>")
        sec.addWidget(self.params_title)
        self.form_host = QWidget()
        self.form = QFormLayout(self.form_host)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        sec.addWidget(self.form_host)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #e5484d;")
        self.error.hide()
        sec.addWidget(self.error)
        self.shapes = QLabel()
        self.shapes.setWordWrap(True)
        self.shapes.setTextFormat(Qt.TextFormat.RichText)
        self.shapes.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        sec.addWidget(self.shapes)
        self.layout_.addWidget(self.section)
        self.layout_.addStretch(1)
        self.section.hide()
        self.scroll.hide()

    # --- target ----------------------------------------------------------------------------------

    def set_document(self, doc: Document | None, stack: QUndoStack | None) -> None:
        if self.doc is not None:
            for sig, slot in self._connections():
                try:
                    sig.disconnect(slot)
                except (RuntimeError, TypeError):
                    pass
        self.doc, self.stack = doc, stack
        self.node_id = None
        if doc is not None:
            for sig, slot in self._connections():
                sig.connect(slot)
        self._rebuild()

    def _connections(self) -> list[tuple[Any, Callable]]:
        d = self.doc
        return [(d.params_changed, self._on_changed), (d.node_renamed, self._on_changed),
                (d.node_removed, self._on_removed), (d.shapes_changed, self._refresh_shapes),
                (d.graph_reset, self._on_reset)]

    def set_node(self, node_id: str | None) -> None:
        if node_id == self.node_id:
            return
        self.node_id = node_id
        self._rebuild()

    def _on_changed(self, node_id: str) -> None:
        if node_id == self.node_id:
            self._load_values()

    def _on_removed(self, node_id: str) -> None:
        if node_id == self.node_id:
            self.set_node(None)

    def _on_reset(self) -> None:
        self.set_node(None)

    @property
    def read_only(self) -> bool:
        return self.doc is None or self.doc.read_only or self.stack is None

    # --- building the form --------------------------------------------------------------------------

    def _rebuild(self) -> None:
        self._params: tuple[Param, ...] = ()
        while self.form.rowCount():
            self.form.removeRow(0)
        self.editors.clear()
        self._setters.clear()
        self.error.hide()
        node = None
        if self.doc is not None and self.node_id is not None and self.node_id in self.doc.graph.nodes:
            node = self.doc.node(self.node_id)
        self.section.setVisible(node is not None)
        self.scroll.setVisible(node is not None)
        self.empty.setVisible(node is None)
        if node is None:
            return
        spec = None if node.block is None else blocks.spec(node.type)
        colour = CATEGORY_COLOURS.get(spec.category, "#777") if spec else "#777"
        category = spec.category.value if spec else "unknown"
        self.chip.setText(f"<span style='background:{colour}; color:white; padding:2px 6px;'>&nbsp;{category}&nbsp;</span>"
                          f"&nbsp; <b>{node.type}</b>")
        self.formula.setText(spec.formula if spec else "")
        self.formula.setVisible(bool(spec and spec.formula))
        self.doc_label.setText(first_paragraph(spec.doc) if spec else
                               f"Block type {node.type!r} is unknown to this version; it is kept as it is.")
        self.name_edit.setReadOnly(self.read_only)
        params = spec.params if spec else ()
        self.params_title.setVisible(bool(params))
        self._params = params
        for p in params:
            editor = self._make_editor(p)
            editor.setToolTip(p.doc + (f"\nrange: {param_range(p)}" if param_range(p) else ""))
            label = QLabel(p.name)
            label.setToolTip(editor.toolTip())
            self.form.addRow(label, editor)
            editor.setEnabled(not self.read_only)
        self._load_values()

    def _make_editor(self, p: Param) -> QWidget:
        name = p.name
        t = p.type
        if t is ParamType.BOOL:
            w = QCheckBox()
            w.toggled.connect(lambda v, n=name: self._commit(n, bool(v)))
            self._setters[name] = lambda v, w=w: w.setChecked(bool(v))
        elif t is ParamType.CHOICE:
            w = QComboBox()
            w.addItems(list(p.choices))
            w.currentTextChanged.connect(lambda v, n=name: self._commit(n, v))
            self._setters[name] = lambda v, w=w: w.setCurrentText(str(v))
        elif t is ParamType.INT:
            # The declared range, else the engine's bound for whole numbers without one.
            lo = int(p.minimum) if p.minimum is not None else -INT_LIMIT
            hi = int(p.maximum) if p.maximum is not None else INT_LIMIT
            if p.nullable:
                # One below the minimum stands for None ("auto", e.g. hidden = 4·d).
                w = int_editor(lo - 1, hi)
                w.setSpecialValueText("auto")
                w.valueChanged.connect(lambda v, n=name, lo=lo: self._commit(n, None if v < lo else int(v)))
                self._setters[name] = lambda v, w=w, lo=lo: w.setValue(lo - 1 if v is None else int(v))
            else:
                w = int_editor(lo, hi)
                w.valueChanged.connect(lambda v, n=name: self._commit(n, int(v)))
                self._setters[name] = lambda v, w=w: w.setValue(int(v))
        elif t is ParamType.FLOAT:
            w = self._float_editor(p)
        elif t is ParamType.NODE:
            w = QComboBox()
            w.activated.connect(lambda _i, n=name, w=w: self._commit(n, w.currentData() or ""))
            self._setters[name] = lambda v, w=w: self._fill_nodes(w, v)
        else:  # STR, SHAPE, INTS, TENSOR: text
            w = QLineEdit()
            placeholder = {ParamType.SHAPE: "e.g. 4, 3", ParamType.INTS: "e.g. 0, 1 (empty: all)",
                           ParamType.TENSOR: "e.g. [[1, 2], [3, 4]]"}.get(t, "")
            w.setPlaceholderText(placeholder)
            w.editingFinished.connect(lambda n=name, w=w, p=p: self._commit_text(p, w.text()))
            self._setters[name] = lambda v, w=w, p=p: w.setText(_to_text(p, v))
        self.editors[name] = w
        return w

    def _float_editor(self, p: Param) -> QWidget:
        host = QWidget()
        row = QHBoxLayout(host)
        row.setContentsMargins(0, 0, 0, 0)
        spin = GSpinBox()
        lo = p.minimum if p.minimum is not None else -1e12
        hi = p.maximum if p.maximum is not None else 1e12
        spin.setRange(lo, hi)
        spin.setSingleStep(0.1)
        slider = QSlider(Qt.Orientation.Horizontal)
        slider.setRange(0, SLIDER_STEPS)
        host.spin, host.slider = spin, slider  # type: ignore[attr-defined]
        name = p.name

        def slider_span(value: float) -> tuple[float, float]:
            # A scrub range: the declared range when there is one, else around the value.
            a = p.minimum if p.minimum is not None else -max(1.0, 2 * abs(value), 2 * abs(float(p.default or 0)))
            b = p.maximum if p.maximum is not None else max(1.0, 2 * abs(value), 2 * abs(float(p.default or 0)))
            return float(a), float(b)

        def set_value(v: Any) -> None:
            spin.setValue(float(v))
            a, b = slider_span(float(v)) if not slider.isSliderDown() else host.span  # type: ignore[attr-defined]
            host.span = (a, b)  # type: ignore[attr-defined]
            slider.setValue(round((float(v) - a) / (b - a) * SLIDER_STEPS) if b > a else 0)

        host.span = slider_span(float(p.default or 0))  # type: ignore[attr-defined]
        spin.valueChanged.connect(lambda v: self._commit(name, float(v)))

        def on_slider(pos: int) -> None:
            if not slider.isSliderDown():
                return
            a, b = host.span  # type: ignore[attr-defined]
            value = a + (b - a) * pos / SLIDER_STEPS
            self._commit(name, float(f"{value:.4g}"), merge=True)

        def pressed() -> None:
            self._merge_key = uuid.uuid4().hex  # one drag, one undo step

        slider.sliderPressed.connect(pressed)
        slider.valueChanged.connect(on_slider)
        row.addWidget(spin, 2)
        row.addWidget(slider, 3)
        self._setters[name] = set_value
        return host

    def _fill_nodes(self, combo: QComboBox, value: str) -> None:
        combo.clear()
        combo.addItem("(none)", "")
        for n in self.doc.graph.nodes.values():
            if n.id != self.node_id:
                combo.addItem(short(n.name or n.id[:8]), n.id)
        index = combo.findData(value or "")
        combo.setCurrentIndex(max(0, index))

    def _load_values(self) -> None:
        if self.doc is None or self.node_id not in self.doc.graph.nodes:
            return
        node = self.doc.node(self.node_id)
        self._loading = True
        try:
            if not self.name_edit.hasFocus():
                self.name_edit.setText(node.name)
            for name, setter in self._setters.items():
                w = self.editors[name]
                widgets = [w] + [c for c in w.findChildren(QWidget)]
                for x in widgets:
                    x.blockSignals(True)
                try:
                    setter(node.params.get(name))
                finally:
                    for x in widgets:
                        x.blockSignals(False)
        finally:
            self._loading = False
        # a param that has no effect with the others' values (Parameter's values unless init is
        # "values") is hidden rather than shown unexplained
        for row, p in enumerate(self._params):
            if row < self.form.rowCount():
                self.form.setRowVisible(row, p.applies(node.params))
        self._refresh_shapes()

    # --- edits -------------------------------------------------------------------------------------------

    def _commit(self, name: str, value: Any, merge: bool = False) -> None:
        if self.read_only or getattr(self, "_loading", False) or self.node_id is None:
            return
        node = self.doc.node(self.node_id)
        if node.params.get(name) == value:
            return
        try:
            cmd = commands.SetParamsCommand(self.doc, self.node_id, {name: value},
                                            merge_key=self._merge_key if merge else "")
        except EngineError as exc:
            self._show_error(str(exc))
            self._load_values()
            return
        self.error.hide()
        self.stack.push(cmd)

    def _commit_text(self, p: Param, text: str) -> None:
        try:
            value = _from_text(p, text)
        except ValueError as exc:
            self._show_error(f"{p.name}: {exc}")
            return
        self._commit(p.name, value)

    def _rename(self) -> None:
        if self.read_only or self.node_id is None:
            return
        name = self.name_edit.text().strip()
        if name and name != self.doc.node(self.node_id).name:
            self.stack.push(commands.RenameCommand(self.doc, self.node_id, name))

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()
        self.message.emit(text)

    def focus_name(self) -> None:
        self.name_edit.setFocus()
        self.name_edit.selectAll()

    # --- shapes ---------------------------------------------------------------------------------------------

    def _refresh_shapes(self) -> None:
        if self.doc is None or self.node_id not in self.doc.graph.nodes:
            return
        g = self.doc.graph
        node = g.node(self.node_id)
        report = self.doc.report()
        rows = []
        for p in node.input_ports():
            # each input on its own: one unconnected input does not make the others unknown
            link = g.link_into(self.node_id, p.name)
            shape = report.shapes.get((link.src, link.src_port)) if link is not None else None
            state = shape_str(shape) if shape is not None else ("not connected" if link is None else "unknown")
            rows.append(f"<tr><td>in&nbsp;</td><td><b>{p.name}</b></td><td>&nbsp;{state}</td></tr>")
        for p in node.output_ports():
            shape = report.shapes.get((self.node_id, p.name))
            rows.append(f"<tr><td>out&nbsp;</td><td><b>{p.name}</b></td><td>&nbsp;{shape_str(shape) if shape else '—'}</td></tr>")
        weights = g.weight_shapes(self.node_id, report)
        count = 0
        groups: dict[str, list[int]] = {}
        for name, shape in weights.items():
            n = 1
            for s in shape:
                n *= s
            count += n
            # A composite's weights are "inner/…/w": list them per inner node, not one by one.
            head = name.split("/", 1)[0] if "/" in name else ""
            groups.setdefault(head or name, []).append(n)
            if not head:
                rows.append(f"<tr><td>w&nbsp;</td><td><b>{name}</b></td><td>&nbsp;{shape_str(shape)}</td></tr>")
        inner = [(k, v) for k, v in groups.items() if k not in weights]
        for k, v in inner[:MAX_WEIGHT_ROWS]:
            rows.append(f"<tr><td>w&nbsp;</td><td><b>{k}/…</b></td><td>&nbsp;{len(v)} tensors, {sum(v):,}</td></tr>")
        if len(inner) > MAX_WEIGHT_ROWS:
            rest = inner[MAX_WEIGHT_ROWS:]
            rows.append(f"<tr><td></td><td colspan=2>… {len(rest)} more inner nodes, "
                        f"{sum(sum(v) for _, v in rest):,} parameters</td></tr>")
        html = "<b>Shapes</b><table>" + "".join(rows) + "</table>"
        if weights:
            html += f"<p>{count:,} parameters</p>"
        err = report.errors.get(self.node_id)
        if err:
            html += f"<p style='color:#e5484d'>{err}</p>"
        elif self.node_id in report.incomplete:
            html += "<p>Connect every required input to see its shapes.</p>"
        self.shapes.setText(html)


def _to_text(p: Param, value: Any) -> str:
    if value is None:
        return ""
    if p.type in (ParamType.SHAPE, ParamType.INTS):
        return ", ".join(str(v) for v in value)
    if p.type is ParamType.TENSOR:
        return json.dumps(value)
    return str(value)


def _from_text(p: Param, text: str) -> Any:
    text = text.strip()
    if p.type in (ParamType.SHAPE, ParamType.INTS):
        if not text:
            if p.nullable:
                return None
            return ()
        try:
            return tuple(int(t) for t in text.replace("(", "").replace(")", "").replace(" ", ",").split(",") if t)
        except ValueError:
            raise ValueError("write whole numbers separated by commas, e.g. 4, 3") from None
    if p.type is ParamType.TENSOR:
        from engine import serialize
        from engine.errors import FileFormatError
        try:
            return serialize.parse_json(text)  # bounded: a paste of 10⁵ brackets is refused, not a crash
        except FileFormatError as exc:
            if "nested too deeply" in str(exc) or "too large" in str(exc) or "too many values" in str(exc):
                raise ValueError(str(exc)) from None
            raise ValueError("write a number or nested lists, e.g. [[1, 2], [3, 4]]") from None
    return text
