"""Wires: a smooth cubic curve from an output port to an input port, coloured by what it carries,
with the tensor's shape written on it. While a pass is shown (:mod:`editor.run`), the run
overlay gives a wire a :class:`RunLabel` (its value, and its gradient beneath) and a
:class:`RunStyle` (colour and width from the gradient's norm) through :meth:`LinkItem.set_run`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPainterPathStroker, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyle, QStyleOptionGraphicsItem, QWidget

from editor.items.fonts import font, metrics
from engine.blocks import Kind
from engine.graph import Link


MAX_LABEL_SCALE = 1.7


@dataclass(frozen=True)
class RunLabel:
    """What a wire says while a pass is shown: its forward value, its gradient beneath (in
    ``grad_colour``), an optional dimmed note (the local derivative); ``stale`` greys it all
    (the graph changed after the pass), ``bad`` marks NaN/Inf."""

    value: str
    grad: str = ""
    note: str = ""
    grad_colour: QColor | None = None
    stale: bool = False
    bad: bool = False

    def lines(self) -> list[str]:
        return [t for t in (self.value, self.grad, self.note) if t]


@dataclass(frozen=True)
class RunStyle:
    """How a wire is drawn while a pass is shown: colour and width (the gradient norm on a log
    scale), dashed for a problem (NaN/Inf, a vanishing gradient)."""

    colour: QColor
    width: float
    dashed: bool = False


def wire_path(p1: QPointF, p2: QPointF) -> QPainterPath:
    """A horizontal-tangent cubic: leaves the output to the right, enters the input from the left.
    A wire going backwards (to a folded row, or drawn by the user) keeps a short swing so it does
    not loop far outside the graph."""
    span = p2.x() - p1.x()
    dx = max(40.0, span * 0.5) if span >= 0 else min(150.0, 50.0 + 0.25 * abs(p2.y() - p1.y()))
    path = QPainterPath(p1)
    path.cubicTo(QPointF(p1.x() + dx, p1.y()), QPointF(p2.x() - dx, p2.y()), p2)
    return path


class _WireBase(QGraphicsItem):
    def __init__(self) -> None:
        super().__init__()
        self.path = QPainterPath()
        self.kind = Kind.FLOAT
        self.label = ""
        self._label_rect = QRectF()
        self._bounds = QRectF()

    def set_ends(self, p1: QPointF, p2: QPointF) -> None:
        self.prepareGeometryChange()
        self.path = wire_path(p1, p2)
        self._layout_label()

    def _layout_label(self) -> None:
        self._bounds = self.path.boundingRect().adjusted(-4, -4, 4, 4)

    def boundingRect(self) -> QRectF:
        return self._bounds

    def _pen(self, colour: QColor, width: float, dashed: bool = False) -> QPen:
        pen = QPen(colour, width)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        if dashed:
            pen.setStyle(Qt.PenStyle.DashLine)
        return pen


class ShapeLabel(QGraphicsItem):
    """The shape written on a wire: a separate item above every wire (so crossing wires never
    hide it) and below the nodes (so it never hides a node's text). It grows up to
    MAX_LABEL_SCALE when zoomed out, but never wider than the gap its wire spans."""

    def __init__(self, link_item: "LinkItem") -> None:
        super().__init__()
        self.link_item = link_item
        self.text = ""
        self._rect = QRectF()
        self.room = 1e9  # horizontal length of the wire: a label does not grow past it
        self.run: RunLabel | None = None
        self.setZValue(0.5)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        # Text is the dearest thing to draw: repaint from a cached pixmap unless the label changed
        # (a pass animates pulses and halos over labels many times a second).
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def set_text(self, text: str) -> None:
        self.text = text
        self._relayout()

    def set_run(self, run: RunLabel | None) -> None:
        """Show a pass's numbers instead of the shape (None: back to the shape)."""
        if run == self.run:
            return
        self.run = run
        self._relayout()

    def _relayout(self) -> None:
        self.prepareGeometryChange()
        lines = self.run.lines() if self.run is not None else ([self.text] if self.text else [])
        fm = metrics("label")
        w = max((fm.horizontalAdvance(t) for t in lines), default=0) + 10
        h = fm.height() * len(lines) + 4
        self._rect = QRectF(-w / 2, -h / 2, w, h) if lines else QRectF()
        self.update()

    def boundingRect(self) -> QRectF:
        r = self._rect
        return QRectF(r.left() * MAX_LABEL_SCALE - 1, r.top() * MAX_LABEL_SCALE - 1,
                      r.width() * MAX_LABEL_SCALE + 2, r.height() * MAX_LABEL_SCALE + 2)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        if self._rect.isEmpty():
            return
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        if lod < 0.25:
            return
        theme = self.scene().theme
        link = self.link_item
        colour = theme.kind(link.kind) if link.known else theme.link
        run = self.run
        if run is not None and link.run_style is not None:
            colour = link.run_style.colour
        if link.isSelected():
            colour = theme.selected
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fit = (self.room - 8) / max(self._rect.width(), 1.0)
        scale = min(MAX_LABEL_SCALE, max(1.0, min(0.8 / lod, fit)))
        painter.scale(scale, scale)
        painter.setPen(QPen(colour, 1.0 if run is None else 1.4))
        painter.setBrush(theme.label_bg)
        painter.drawRoundedRect(self._rect, 5, 5)
        painter.setFont(font("label"))
        if run is None:
            painter.setPen(theme.label_text)
            painter.drawText(self._rect, Qt.AlignmentFlag.AlignCenter, self.text)
            return
        fm = metrics("label")
        y = self._rect.top() + 2
        rows = [(run.value, theme.error if run.bad else theme.label_text),
                (run.grad, run.grad_colour or theme.label_text), (run.note, theme.text_dim)]
        for text, pen in rows:
            if not text:
                continue
            if run.stale:
                pen = theme.text_dim
            painter.setPen(pen)
            painter.drawText(QRectF(self._rect.left(), y, self._rect.width(), fm.height()), Qt.AlignmentFlag.AlignCenter, text)
            y += fm.height()


class LinkItem(_WireBase):
    """A document link. Holds the engine Link (ids and port names) only."""

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link
        self.known = False  # shape known (upstream works)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemSendsGeometryChanges)
        self.setZValue(0)
        self.setAcceptHoverEvents(True)
        self.hover = False
        self.run_style: RunStyle | None = None
        self.label_item = ShapeLabel(self)

    def set_ends(self, p1: QPointF, p2: QPointF) -> None:
        super().set_ends(p1, p2)
        if not self.path.isEmpty():
            self.label_item.setPos(self.path.pointAtPercent(0.5))
            self.label_item.room = abs(p2.x() - p1.x())

    def _layout_label(self) -> None:
        # a wide run style must not leave paint outside the bounds
        super()._layout_label()
        if self.run_style is not None:
            m = self.run_style.width / 2 + 2
            self._bounds = self._bounds.adjusted(-m, -m, m, m)

    def set_run(self, label: RunLabel | None, style: RunStyle | None) -> None:
        """What a pass shows on this wire (both None: the plain wire with its shape). Only a
        change repaints."""
        if style != self.run_style:
            self.prepareGeometryChange()
            self.run_style = style
            self._layout_label()
            self.update()
        self.label_item.set_run(label)

    def set_shape_label(self, label: str, kind: Kind, known: bool) -> None:
        if label == self.label and kind == self.kind and known == self.known:
            return
        self.label, self.kind, self.known = label, kind, known
        self.label_item.set_text(label)
        self.setToolTip(f"{self.link.src_port} → {self.link.dst_port}" + (f"  shape {label}" if label else ""))
        self.update()

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:
        if change == QGraphicsItem.GraphicsItemChange.ItemVisibleHasChanged:
            self.label_item.setVisible(bool(value))
        elif change == QGraphicsItem.GraphicsItemChange.ItemSelectedHasChanged:
            self.label_item.update()
        return super().itemChange(change, value)

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(10)
        return stroker.createStroke(self.path)

    def hoverEnterEvent(self, event: Any) -> None:
        self.hover = True
        self.update()

    def hoverLeaveEvent(self, event: Any) -> None:
        self.hover = False
        self.update()

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        theme = self.scene().theme
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        colour = theme.kind(self.kind) if self.known else theme.link
        width = 3.2 if (selected or self.hover) else 2.2
        dashed = not self.known
        run = self.run_style
        if run is not None:
            colour, width, dashed = run.colour, run.width + (1.0 if self.hover else 0.0), run.dashed
        if selected:
            colour = theme.selected
        if lod >= 0.35:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(self._pen(colour, width, dashed=dashed))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path)


class DragWire(_WireBase):
    """The live curve that follows the cursor while wiring."""

    def __init__(self, kind: Kind) -> None:
        super().__init__()
        self.kind = kind
        self.ok: bool | None = None  # over a port: can it connect?
        self.setZValue(5)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        theme = self.scene().theme
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        colour = theme.kind(self.kind)
        if self.ok is True:
            colour = theme.compatible
        elif self.ok is False:
            colour = theme.error
        painter.setPen(self._pen(colour, 2.6, dashed=self.ok is None))
        painter.setBrush(Qt.BrushStyle.NoBrush)  # the view does not save painter state between items
        painter.drawPath(self.path)
