"""Wires: a smooth cubic curve from an output port to an input port, coloured by what it carries,
with the tensor's shape written on it."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPainterPathStroker, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyle, QStyleOptionGraphicsItem, QWidget

from editor.items.fonts import font, metrics
from engine.blocks import Kind
from engine.graph import Link


MAX_LABEL_SCALE = 1.7


def wire_path(p1: QPointF, p2: QPointF) -> QPainterPath:
    """A horizontal-tangent cubic: leaves the output to the right, enters the input from the left."""
    dx = max(40.0, abs(p2.x() - p1.x()) * 0.5)
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
        if self.label and not self.path.isEmpty():
            mid = self.path.pointAtPercent(0.5)
            w = metrics("label").horizontalAdvance(self.label) + 10
            h = metrics("label").height() + 4
            self._label_rect = QRectF(mid.x() - w / 2, mid.y() - h / 2, w, h)
        else:
            self._label_rect = QRectF()
        grown = QRectF(self._label_rect)
        if not grown.isNull():
            # Labels grow up to MAX_LABEL_SCALE when zoomed out so shapes stay readable.
            c = grown.center()
            grown = QRectF(c.x() - grown.width() * MAX_LABEL_SCALE / 2, c.y() - grown.height() * MAX_LABEL_SCALE / 2,
                           grown.width() * MAX_LABEL_SCALE, grown.height() * MAX_LABEL_SCALE)
        self._bounds = self.path.boundingRect().adjusted(-4, -4, 4, 4).united(grown)

    def boundingRect(self) -> QRectF:
        return self._bounds

    def _pen(self, colour: QColor, width: float, dashed: bool = False) -> QPen:
        pen = QPen(colour, width)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        if dashed:
            pen.setStyle(Qt.PenStyle.DashLine)
        return pen


class LinkItem(_WireBase):
    """A document link. Holds the engine Link (ids and port names) only."""

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link
        self.known = False  # shape known (upstream works)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setZValue(0)
        self.setAcceptHoverEvents(True)
        self.hover = False

    def set_shape_label(self, label: str, kind: Kind, known: bool) -> None:
        if label == self.label and kind == self.kind and known == self.known:
            return
        self.prepareGeometryChange()
        self.label, self.kind, self.known = label, kind, known
        self._layout_label()
        self.setToolTip(f"{self.link.src_port} → {self.link.dst_port}" + (f"  shape {label}" if label else ""))
        self.update()

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(10)
        p = stroker.createStroke(self.path)
        if not self._label_rect.isNull():
            p.addRect(self._label_rect)
        return p

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
        if selected:
            colour = theme.selected
        if lod >= 0.35:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        width = 3.2 if (selected or self.hover) else 2.2
        painter.setPen(self._pen(colour, width, dashed=not self.known))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path)
        if self.label and lod >= 0.25:
            scale = min(MAX_LABEL_SCALE, max(1.0, 0.8 / lod))
            c = self._label_rect.center()
            painter.save()
            painter.translate(c)
            painter.scale(scale, scale)
            rect = self._label_rect.translated(-c)
            painter.setPen(self._pen(colour, 1.0))
            painter.setBrush(theme.label_bg)
            painter.drawRoundedRect(rect, 5, 5)
            painter.setPen(theme.label_text)
            painter.setFont(font("label"))
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, self.label)
            painter.restore()


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
        painter.drawPath(self.path)
