"""A node: rounded body, a header coloured by category, typed ports, a few key params, and a red
badge with the reason when its shapes do not work."""

from __future__ import annotations

import html
import math
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen, QTextOption
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsItem, QStyle, QStyleOptionGraphicsItem, QWidget

from editor.items.fonts import font, metrics
from engine import blocks
from engine.blocks import Kind, ParamType
from engine.graph import Node, short


PORT_R = 5.0
MIN_WIDTH = 104.0
RADIUS = 8.0
BADGE_LINES = 3
PAD = 10.0  # the card's inner margin, left and right


class Geometry:
    """Card measures from the canvas fonts (so cards follow the system font size)."""

    def __init__(self) -> None:
        self.header = round(metrics("title").height() + 11)
        self.row = round(metrics("port").height() + 5)
        self.summary_row = round(metrics("small").height() + 2)


_GEOMETRY: dict[int, Geometry] = {}  # per base font size: computed once the application (and its font) exists


def geometry() -> Geometry:
    from editor.items.fonts import base_px
    key = base_px()
    if key not in _GEOMETRY:
        _GEOMETRY[key] = Geometry()
    return _GEOMETRY[key]


_PORT_BOUNDS = QRectF(-PORT_R - 5, -PORT_R - 5, 2 * PORT_R + 10, 2 * PORT_R + 10)


class PortItem(QGraphicsEllipseItem):
    """A port dot. Holds (node id, port name, direction); the scene does the wiring.

    An ellipse item only for its bounding rectangle, which Qt then reads in C++ (a Python
    ``boundingRect`` is called for every port of every card at every repaint)."""

    def __init__(self, parent: "NodeItem", name: str, is_output: bool, kind: Kind, optional: bool) -> None:
        super().__init__(_PORT_BOUNDS, parent)
        self.setPen(Qt.PenStyle.NoPen)
        self.node_id = parent.node_id
        self.name = name
        self.is_output = is_output
        self.kind = kind
        self.optional = optional
        self.connected = False
        self.hover = False
        # None: not wiring; True/False: compatible or not with the wire being dragged.
        self.compatible: bool | None = None
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setZValue(2)
        self._tip = ""

    def set_tip(self, text: str) -> None:
        """The tooltip (set only when it changed: the scene re-reads every port after each edit)."""
        if text != self._tip:
            self._tip = text
            self.setToolTip(text)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addEllipse(QPointF(0, 0), PORT_R + 4, PORT_R + 4)  # generous hit area
        return path

    def node_item(self) -> "NodeItem":
        return self.parentItem()  # type: ignore[return-value]

    def hoverEnterEvent(self, event: Any) -> None:
        self.hover = True
        self.update()

    def hoverLeaveEvent(self, event: Any) -> None:
        self.hover = False
        self.update()

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        theme = self.scene().theme
        colour = theme.kind(self.kind)
        r = PORT_R * (1.3 if self.hover else 1.0)
        if self.compatible is True:
            painter.setPen(Qt.PenStyle.NoPen)
            glow = QColor(theme.compatible)
            glow.setAlpha(90)
            painter.setBrush(glow)
            painter.drawEllipse(QPointF(0, 0), r + 5, r + 5)
        elif self.compatible is False:
            colour = QColor(colour)
            colour.setAlpha(70)
        painter.setPen(QPen(theme.node_body if not self.hover else theme.text, 1.5))
        hollow = not self.is_output and not self.connected
        if hollow:
            # An unconnected input: a ring, dashed when the input is optional.
            pen = QPen(colour, 2.0)
            if self.optional:
                pen.setStyle(Qt.PenStyle.DotLine)
            painter.setPen(pen)
            painter.setBrush(theme.node_body)
        else:
            painter.setBrush(colour)
        painter.drawEllipse(QPointF(0, 0), r, r)


class NodeItem(QGraphicsItem):
    """The picture of one document node. ``refresh`` re-reads the node from the document.

    A card sized to its text: the header holds the name (and the block type, dimmed, when the
    name differs), the body one row per port and up to three non-default params. A read-only view
    may turn a node into a *bus* (:meth:`set_bus`): a wide bar whose wires attach along its top or
    bottom edge, under or over each other end (an unrolled RNN's sequence in and states out)."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node_id = node.id
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsMovable)
        # Repaint from a cached pixmap while panning; HiDPI-safe because it is device-space.
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setAcceptHoverEvents(True)
        self.setZValue(1)
        self.inputs: dict[str, PortItem] = {}
        self.outputs: dict[str, PortItem] = {}
        self.error = ""
        self.incomplete = False
        self.hover = False
        self.stack_count = 1  # > 1: drawn as a compact stack of identical blocks
        self.title = ""
        self.title_override = ""  # a compact stack shows "first … last"
        self.subtitle = ""
        self.summary: list[str] = []
        self.category_colour = QColor("#607080")
        self.composite = False
        self.placeholder = False
        self.bus = ""  # "", "top" (outputs attach along the top edge) or "bottom" (inputs along the bottom)
        self.g = geometry()
        self._bounds: tuple[tuple, QRectF] | None = None  # (what it depends on, boundingRect)
        self.width = MIN_WIDTH
        self.height = self.g.header
        self._node = node
        self.refresh(node)  # the scene places it (it knows the spread)

    @property
    def node(self) -> Node:
        """The document node this card last showed."""
        return self._node

    # --- model → picture -----------------------------------------------------------------------

    def refresh(self, node: Node) -> None:
        """Rebuild ports and texts from the node (after add, params change, rename)."""
        self.prepareGeometryChange()
        self._node = node
        self.shown_report: object | None = None  # the shape report its ports show (the scene's)
        g = self.g
        self.title = self.title_override or short(node.name) or node.type  # a huge name: a card, not a wall
        self.placeholder = node.is_placeholder
        spec = None if node.is_placeholder else blocks.spec(node.type)
        self.subtitle = node.type if not self.title.startswith(node.type) else ""
        if node.is_placeholder:
            self.subtitle = f"unknown block {node.type}"
        self.composite = bool(spec and spec.composite)
        self.summary = _summary(node, spec)
        ins = node.input_ports()
        outs = node.output_ports()
        title_w = PAD + metrics("title").horizontalAdvance(self.title) + PAD + self._header_extras()
        port_w = max((metrics("port").horizontalAdvance(p.name) for p in ins), default=0) + \
            max((metrics("port").horizontalAdvance(p.name) for p in outs), default=0) + 2 * (PORT_R + 6) + 16
        sum_w = max((metrics("small").horizontalAdvance(s) for s in self.summary), default=0) + 2 * PAD
        self.width = float(math.ceil(max(MIN_WIDTH, title_w, port_w, sum_w)))
        rows = max(len(ins), len(outs))
        if self.bus:
            rows = 0 if self.bus == "top" else len(outs)
        self.height = g.header + 4 + rows * g.row + len(self.summary) * g.summary_row + 6
        if self.bus:
            self.width = max(self.width, self._bus_width)
        for item in list(self.inputs.values()) + list(self.outputs.values()):
            item.setParentItem(None)
            if item.scene() is not None:
                item.scene().removeItem(item)
        self.inputs, self.outputs = {}, {}
        top = g.header + 4 + g.row / 2
        for i, p in enumerate(ins):
            port = PortItem(self, p.name, False, p.kind, p.optional)
            port.setPos(0, top + i * g.row)
            if self.bus == "bottom":
                port.setVisible(False)  # the wires draw their own ends along the edge
            self.inputs[p.name] = port
        for i, p in enumerate(outs):
            kind = node.output_kind(p.name)
            port = PortItem(self, p.name, True, kind, False)
            port.setPos(self.width, top + i * g.row)
            if self.bus == "top":
                port.setVisible(False)
            self.outputs[p.name] = port
        if spec is not None:
            from editor.theme import CATEGORY_COLOURS
            self.category_colour = QColor(CATEGORY_COLOURS.get(spec.category, "#607080"))
        else:
            self.category_colour = QColor("#7a7a7a")
        self.setToolTip(self._tooltip(node))
        self.update()

    def _header_extras(self) -> float:
        """Room the header needs right of the title: the type, the stack chip, the open glyph."""
        extra = 0.0
        if self.subtitle:
            extra += metrics("small").horizontalAdvance(self.subtitle) + 10
        if self.stack_count > 1:
            extra += metrics("badge").horizontalAdvance(f"×{self.stack_count}") + 16
        elif self.composite:
            extra += 20
        return extra

    _bus_width = 0.0

    def set_bus(self, side: str, width: float = 0.0) -> None:
        """Draw this node as a bus of ``width`` (``side`` "top" or "bottom"), or as a card ("")."""
        self.bus = side
        self._bus_width = width if side else 0.0
        self.refresh(self._node)

    def text_roles(self) -> set[str]:
        """The canvas font roles this card draws at full detail (for the legibility measure)."""
        roles = {"title"}
        if self.subtitle or self.summary:
            roles.add("small")
        if (self.inputs or self.outputs) and not self.bus:
            roles.add("port")
        if self.stack_count > 1:
            roles.add("badge")
        return roles

    def set_status(self, error: str, incomplete: bool) -> None:
        if error == self.error and incomplete == self.incomplete:
            return
        self.prepareGeometryChange()
        self.error = error
        self.incomplete = incomplete
        self.update()

    def _tooltip(self, node: Node) -> str:
        if node.is_placeholder:
            return f"{html.escape(short(node.name))}: unknown block type {html.escape(short(node.type))}"
        spec = blocks.spec(node.type)
        return f"<b>{html.escape(short(node.name))}</b> ({node.type})<br><code>{spec.formula}</code>" + \
            ("<br><i>double-click to open its inner graph</i>" if spec.composite else "")

    # --- geometry ------------------------------------------------------------------------------

    def port_scene_pos(self, name: str, is_output: bool) -> QPointF:
        ports = self.outputs if is_output else self.inputs
        item = ports.get(name)
        if item is None:  # a link to a port that no longer exists: anchor at the node's edge
            return self.mapToScene(QPointF(self.width if is_output else 0.0, self.g.header / 2))
        return item.scenePos()

    def anchor(self, name: str, is_output: bool, toward: QPointF) -> tuple[QPointF, QPointF]:
        """Where a wire of port ``name`` attaches, and the direction it leaves the node in.
        ``toward`` is the wire's other end: a bus attaches each wire straight under or over it."""
        if (self.bus == "top" and is_output) or (self.bus == "bottom" and not is_output):
            local_x = min(max(self.mapFromScene(toward).x(), RADIUS + PORT_R), self.width - RADIUS - PORT_R)
            if self.bus == "top":
                return self.mapToScene(QPointF(local_x, 0.0)), QPointF(0.0, -1.0)
            return self.mapToScene(QPointF(local_x, self.height)), QPointF(0.0, 1.0)
        return self.port_scene_pos(name, is_output), QPointF(1.0 if is_output else -1.0, 0.0)

    def _badge_rect(self) -> QRectF:
        """The error note under the card (drawn while the card is hovered or selected)."""
        if not self.error:
            return QRectF()
        fm = metrics("small")
        width = max(self.width, 240.0)
        text_rect = fm.boundingRect(QRectF(0, 0, width - 16, 1000), int(Qt.TextFlag.TextWordWrap), self.error)
        h = min(text_rect.height(), fm.lineSpacing() * BADGE_LINES) + 10
        return QRectF(0, self.height + 6, width, h)

    def note_shown(self) -> bool:
        return bool(self.error) and (self.hover or self.isSelected())

    def boundingRect(self) -> QRectF:
        # Kept while what it depends on stays: Qt asks for it for every card at every repaint and
        # after every change (with thousands of cards, building it each time showed in every edit).
        key = (self.width, self.height, self.stack_count, self.error, id(metrics("small")) if self.error else 0)
        kept = self._bounds
        if kept is not None and kept[0] == key:
            return kept[1]
        rect = QRectF(-PORT_R - 6, -12, self.width + 2 * PORT_R + 12, self.height + 16 + 8 * (self.stack_count > 1))
        if self.error:
            rect = rect.united(self._badge_rect().adjusted(-2, -2, 2, 2))
        self._bounds = (key, rect)
        return rect

    def card_rect(self) -> QRectF:
        """The card in scene coordinates, port dots and stacked shadows included: what wires
        and wire labels keep clear of."""
        pos = self.scenePos()
        extra = 8.0 if self.stack_count > 1 else (4.0 if self.composite else 0.0)
        return QRectF(pos.x() - PORT_R - 1, pos.y(), self.width + 2 * PORT_R + 2 + extra, self.height + extra)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRoundedRect(QRectF(0, 0, self.width, self.height), RADIUS, RADIUS)
        return path

    # NOTE: no itemChange: Qt would call it from C++ for every change of every card (four times
    # for each card a delete or its undo takes away or brings back). The scene moves cards and
    # follows a drag (its wires follow: GraphScene.node_item_moved), and tells a card when its
    # selection changed (selection_shown).

    def selection_shown(self) -> None:
        """Its selection changed: the error note shows under it, or not."""
        if self.error:
            self._raise_for_note()

    def hoverEnterEvent(self, event: Any) -> None:
        self.hover = True
        self._raise_for_note()
        super().hoverEnterEvent(event)

    def hoverLeaveEvent(self, event: Any) -> None:
        self.hover = False
        self._raise_for_note()
        super().hoverLeaveEvent(event)

    def _raise_for_note(self) -> None:
        # The error note shows under a hovered or selected card, above its neighbours; at rest
        # the red border and the "!" say there is a problem without covering the next node.
        self.setZValue(3 if self.note_shown() else 1)
        self.update()

    # --- painting ------------------------------------------------------------------------------

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        theme = self.scene().theme
        g = self.g
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        body = QRectF(0, 0, self.width, self.height)
        header_colour = self.category_colour
        if lod < 0.35:
            # Far away: a coloured block is all the eye can use, and it is cheap.
            painter.setPen(QPen(theme.selected, 3) if selected else Qt.PenStyle.NoPen)
            painter.setBrush(theme.node_body)
            painter.drawRect(body)
            painter.fillRect(QRectF(0, 0, self.width, g.header), header_colour)
            if self.error:
                painter.fillRect(QRectF(self.width - 24, 0, 24, g.header), theme.error)
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self.stack_count > 1:
            for k in (2, 1):
                painter.setPen(QPen(theme.node_border, 1))
                painter.setBrush(theme.node_body.darker(100 + 12 * k))
                painter.drawRoundedRect(body.translated(4 * k, 4 * k), RADIUS, RADIUS)
        elif self.composite:
            painter.setPen(QPen(theme.node_border, 1))
            painter.setBrush(theme.node_body.darker(112))
            painter.drawRoundedRect(body.translated(4, 4), RADIUS, RADIUS)
        # body
        border = QPen(theme.selected, 2.5) if selected else QPen(theme.node_border, 1.2)
        if self.error and not selected:
            border = QPen(theme.error, 1.8)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(theme.node_body)
        painter.drawRoundedRect(body, RADIUS, RADIUS)
        # header: rounded on top only
        header = QPainterPath()
        header.addRoundedRect(QRectF(0, 0, self.width, g.header + RADIUS), RADIUS, RADIUS)
        clip = QPainterPath()
        clip.addRect(QRectF(0, 0, self.width, g.header))
        painter.setBrush(header_colour)
        painter.drawPath(header.intersected(clip))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(border)
        painter.drawRoundedRect(body, RADIUS, RADIUS)
        # title on the left, the block type (when the name differs) dimmed on the right
        painter.setPen(theme.header_text)
        painter.setFont(font("title"))
        right = PAD + (24 if self.error else 0)
        if self.stack_count > 1:
            chip = f"×{self.stack_count}"
            painter.setFont(font("badge"))
            w = metrics("badge").horizontalAdvance(chip) + 10
            r = QRectF(self.width - w - right, 4, w, g.header - 8)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(0, 0, 0, 70))
            painter.drawRoundedRect(r, 6, 6)
            painter.setPen(theme.header_text)
            painter.drawText(r, Qt.AlignmentFlag.AlignCenter, chip)
            right += w + 6
        elif self.composite:
            # a small "open" glyph: this block has an inside
            r = QRectF(self.width - right - 12, g.header / 2 - 6, 12, 12)
            painter.setPen(QPen(QColor(255, 255, 255, 200), 1.3))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(r, 2, 2)
            painter.drawRoundedRect(r.adjusted(3, 3, -3, -3), 1, 1)
            right += 20
        if self.subtitle:
            painter.setFont(font("small"))
            sub = QColor(theme.header_text)
            sub.setAlpha(200)
            painter.setPen(sub)
            sw = metrics("small").horizontalAdvance(self.subtitle)
            painter.drawText(QRectF(self.width - right - sw, 0, sw, g.header),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, self.subtitle)
            right += sw + 10
        painter.setPen(theme.header_text)
        painter.setFont(font("title"))
        title_rect = QRectF(PAD, 0, self.width - PAD - right, g.header)
        title = metrics("title").elidedText(self.title, Qt.TextElideMode.ElideRight, title_rect.width())
        painter.drawText(title_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, title)
        y = g.header + 4
        if lod >= 0.4:
            painter.setFont(font("port"))
            painter.setPen(theme.text)
            for port in self.inputs.values():
                if not port.isVisible():
                    continue
                r = QRectF(PORT_R + 6, port.y() - g.row / 2, self.width / 2, g.row)
                painter.drawText(r, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, port.name)
            for port in self.outputs.values():
                if not port.isVisible():
                    continue
                r = QRectF(self.width / 2 - PORT_R - 6, port.y() - g.row / 2, self.width / 2, g.row)
                painter.drawText(r, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, port.name)
            if self.summary:
                rows = max(len(self.inputs), len(self.outputs))
                if self.bus:
                    rows = 0 if self.bus == "top" else len(self.outputs)
                sy = y + rows * g.row
                painter.setFont(font("small"))
                painter.setPen(theme.text_dim)
                for line in self.summary:
                    painter.drawText(QRectF(PAD, sy, self.width - 2 * PAD, g.summary_row),
                                     Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                                     metrics("small").elidedText(line, Qt.TextElideMode.ElideRight, self.width - 2 * PAD))
                    sy += g.summary_row
        if self.error:
            self._paint_badge(painter, theme)

    def _paint_badge(self, painter: QPainter, theme: Any) -> None:
        # The "!" dot on the header, and the reason under the node while hovered or selected.
        centre = QPointF(self.width - 16, self.g.header / 2)
        painter.setPen(QPen(QColor("#ffffff"), 1.5))
        painter.setBrush(theme.error)
        painter.drawEllipse(centre, 8, 8)
        painter.setFont(font("badge"))
        painter.drawText(QRectF(centre.x() - 8, centre.y() - 8, 16, 16), Qt.AlignmentFlag.AlignCenter, "!")
        if not self.note_shown():
            return
        rect = self._badge_rect()
        painter.setPen(Qt.PenStyle.NoPen)
        fill = QColor(theme.error)
        fill.setAlpha(240)
        painter.setBrush(fill)
        painter.drawRoundedRect(rect, 6, 6)
        painter.setPen(QColor("#ffffff"))
        painter.setFont(font("small"))
        opt = QTextOption()
        opt.setWrapMode(QTextOption.WrapMode.WordWrap)
        painter.save()
        painter.setClipRect(rect.adjusted(8, 5, -8, -5))
        painter.drawText(rect.adjusted(8, 5, -8, -5), self.error, opt)
        painter.restore()


def _summary(node: Node, spec: Any) -> list[str]:
    """Up to three "name value" lines, non-default params first: what a glance needs."""
    if spec is None:
        return []
    lines: list[tuple[int, str]] = []
    for i, p in enumerate(spec.params):
        if p.type in (ParamType.TENSOR,) or not p.applies(node.params):
            continue
        value = node.params.get(p.name)
        if p.type is ParamType.NODE:
            if not value:
                continue
            value = value[:8]
        if isinstance(value, (tuple, list)):
            text = "(" + ", ".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif value is None:
            text = "auto"
        elif isinstance(value, float):
            text = f"{value:g}"
        else:
            text = str(value)
        default = value == p.default or (isinstance(value, tuple) and isinstance(p.default, (tuple, list))
                                         and list(value) == list(p.default))
        if not default:
            lines.append((i, f"{p.name}  {text}"))
    return [text for _, text in lines[:3]]
