"""Wires: a smooth curve from an output port to an input port, coloured by what it carries, with
texts written on it (the tensor's shape, and whatever else a feature wants to show; while a pass
is shown, :meth:`LinkItem.set_run` writes its value and gradient and colours the wire).

A wire is a cubic between its ends unless :mod:`editor.items.placement` routes it around the
cards in its way (then it runs along a lane, with rounded corners). Texts on a wire are
:class:`WireLabel` items, one per *slot*, set through :meth:`LinkItem.set_label`; the scene's
placer puts each one where it touches no card and no other label, tries its shorter variants
when the full text does not fit, and hides it when none does (the wire's tooltip still has it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPainterPathStroker, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsScene, QStyle, QStyleOptionGraphicsItem, QWidget

from editor.items.fonts import font, metrics
from engine.blocks import Kind
from engine.graph import Link

CORNER = 12.0  # radius of a routed wire's corners
RIGHT, LEFT = QPointF(1.0, 0.0), QPointF(-1.0, 0.0)
RUN_SLOT = "run"  # the slot of a pass's numbers (see LinkItem.set_run)


@dataclass(frozen=True)
class RunLabel:
    """What a wire says while a pass is shown: its forward value, its gradient beneath (in
    ``grad_colour``), an optional dimmed note (the local derivative), and shorter forms for a
    crowded canvas; ``stale`` greys it all (the graph changed after the pass), ``bad`` marks
    NaN/Inf. An empty ``value``: not reached yet (the wire shows nothing)."""

    value: str
    grad: str = ""
    note: str = ""
    grad_colour: QColor | None = None
    stale: bool = False
    bad: bool = False
    value_short: str = ""
    grad_short: str = ""
    value_tiny: str = ""
    grad_tiny: str = ""

    def lines(self) -> list[str]:
        return [t for t in (self.value, self.grad, self.note) if t]

    def variants(self) -> list[str]:
        """The texts to try, longest first: everything; value and gradient; their shorter forms;
        tiny ones; the gradient alone (after the backward pass it is the news)."""
        def join(*lines: str) -> str:
            return "\n".join(t for t in lines if t)
        out = [join(*self.lines()), join(self.value, self.grad),
               join(self.value_short or self.value, self.grad_short or self.grad),
               join(self.value_tiny, self.grad_tiny)]
        if self.grad_tiny:
            out.append(self.grad_tiny)
        unique: list[str] = []
        for t in out:
            if t and t not in unique:
                unique.append(t)
        return unique


@dataclass(frozen=True)
class RunStyle:
    """How a wire is drawn while a pass is shown: colour and width (the gradient norm on a log
    scale), dashed for a problem (NaN/Inf, a vanishing gradient) or no gradient at all."""

    colour: QColor
    width: float
    dashed: bool = False


def wire_path(p1: QPointF, p2: QPointF, d1: QPointF = RIGHT, d2: QPointF = LEFT) -> QPainterPath:
    """A cubic leaving ``p1`` in direction ``d1`` and entering ``p2`` against ``d2`` (``d2`` is the
    direction that leaves the destination: LEFT for an input on a card's left side). A wire
    going backwards keeps a short swing so it does not loop far outside the graph."""
    span_x, span_y = p2.x() - p1.x(), abs(p2.y() - p1.y())
    if d1.y() or d2.y():
        k1 = max(30.0, (span_y if d1.y() else abs(span_x)) * 0.5)
        k2 = max(30.0, (span_y if d2.y() else abs(span_x)) * 0.5)
    elif span_x >= 0:
        k1 = k2 = max(40.0, span_x * 0.5)
    else:
        k1 = k2 = min(150.0, 50.0 + 0.25 * span_y)
    path = QPainterPath(p1)
    path.cubicTo(p1 + d1 * k1, p2 + d2 * k2, p2)
    return path


def polyline_path(points: Sequence[QPointF], radius: float = CORNER) -> QPainterPath:
    """Straight segments through ``points`` with rounded corners."""
    path = QPainterPath(points[0])
    for i in range(1, len(points) - 1):
        a, b, c = points[i - 1], points[i], points[i + 1]
        ab = ((b.x() - a.x()) ** 2 + (b.y() - a.y()) ** 2) ** 0.5
        bc = ((c.x() - b.x()) ** 2 + (c.y() - b.y()) ** 2) ** 0.5
        r = min(radius, ab / 2, bc / 2)
        if r < 0.5:
            path.lineTo(b)
            continue
        before = b + (a - b) * (r / ab)
        after = b + (c - b) * (r / bc)
        path.lineTo(before)
        path.quadTo(b, after)
    path.lineTo(points[-1])
    return path


class _WireBase(QGraphicsItem):
    def __init__(self) -> None:
        super().__init__()
        self.path = QPainterPath()
        self.kind = Kind.FLOAT
        self.label = ""
        self.route: list[QPointF] | None = None  # waypoints when routed around cards
        self._bounds = QRectF()
        self.geometry: tuple = ()  # the ends, directions and waypoints the path was made from
        self._length: float | None = None

    def set_ends(self, p1: QPointF, p2: QPointF, d1: QPointF = RIGHT, d2: QPointF = LEFT,
                 via: Sequence[QPointF] | None = None) -> bool:
        """Draw the wire between these ends (through ``via``); True when that changed it."""
        geometry = (p1.x(), p1.y(), p2.x(), p2.y(), d1.x(), d1.y(), d2.x(), d2.y(),
                    tuple((q.x(), q.y()) for q in via or ()))
        if geometry == self.geometry:
            return False  # the same wire: nothing to rebuild or repaint
        self.geometry = geometry
        self.prepareGeometryChange()
        self.route = list(via) if via else None
        self.path = polyline_path([p1, *via, p2]) if via else wire_path(p1, p2, d1, d2)
        self._bounds = self.path.boundingRect().adjusted(-6, -6, 6, 6)
        self._length = None
        return True

    def length(self) -> float:
        if self._length is None:
            self._length = self.path.length()  # NOTE: dear (it flattens the curve): once per path
        return self._length

    def boundingRect(self) -> QRectF:
        return self._bounds

    def _pen(self, colour: QColor, width: float, dashed: bool = False) -> QPen:
        pen = QPen(colour, width)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        if dashed:
            pen.setStyle(Qt.PenStyle.DashLine)
        return pen


class WireLabel(QGraphicsItem):
    """One text on a wire. It is a separate item above every wire (so crossing wires never hide
    it) and below the cards; the scene's placer positions it (see
    :func:`editor.items.placement.place_labels`).

    ``variants`` are the texts to try, longest first; ``where`` is the preferred spot along the
    wire (0 at the output, 1 at the input); a higher ``priority`` is placed first; ``colour``
    is the frame's colour (None: the colour of what the wire carries)."""

    def __init__(self, link_item: "LinkItem", slot: str) -> None:
        super().__init__()
        self.link_item = link_item
        self.slot = slot
        self.variants: tuple[str, ...] = ()
        self.where = 0.5
        self.priority = 0
        self.colour: QColor | None = None
        # per line (None: the theme's label text), for every variant or per variant (a dict)
        self.text_colours: Sequence[QColor | None] | dict[str, Sequence[QColor | None]] = ()
        self.chosen = -1  # index of the variant shown; -1: not placed (hidden)
        self.spot: Any = None  # where the placer put it and why (placement.Spot)
        self._bounds: tuple[tuple, QRectF] | None = None  # (what it depends on, boundingRect)
        self.setZValue(0.5)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        # Text is the dearest thing to draw: repaint from a cached pixmap unless the text changed
        # (a running pass animates pulses and halos over texts many times a second).
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.setVisible(False)

    @property
    def text(self) -> str:
        return self.variants[self.chosen] if 0 <= self.chosen < len(self.variants) else ""

    def configure(self, variants: Sequence[str], where: float, priority: int, colour: QColor | None,
                  text_colours: Sequence[QColor | None] | dict[str, Sequence[QColor | None]] = ()) -> None:
        variants = tuple(v for v in variants if v)
        if variants != self.variants:
            self.prepareGeometryChange()  # the shown text (and so the bounds) may change
        self.variants = variants
        self.where, self.priority, self.colour = where, priority, colour
        self.text_colours = dict(text_colours) if isinstance(text_colours, dict) else tuple(text_colours)
        self.update()

    @staticmethod
    def size_of(text: str) -> tuple[float, float]:
        """Width and height of a text; a text may have several lines ("\n")."""
        return _text_size(text, id(metrics("label")))

    @staticmethod
    def size_key() -> int:
        """Changes when the texts' sizes may have (the canvas fonts were reset)."""
        return id(metrics("label"))

    def rect_for(self, text: str) -> QRectF:
        w, h = self.size_of(text)
        return QRectF(-w / 2, -h / 2, w, h)

    def show_variant(self, index: int, at: QPointF | None) -> bool:
        """Show variant ``index`` centred at ``at``, or hide (index -1); True when that changed
        what is shown."""
        visible = index >= 0 and self.link_item.isVisible()
        if index == self.chosen and visible == self.isVisible() and (at is None or at == self.pos()):
            return False  # as it is: no repaint
        if index != self.chosen:
            self.prepareGeometryChange()
            self.chosen = index
        if index >= 0 and at is not None:
            self.setPos(at)
        self.setVisible(visible)
        self.update()
        return True

    def scene_rect(self) -> QRectF:
        return self.rect_for(self.text).translated(self.pos()) if self.text else QRectF()

    def boundingRect(self) -> QRectF:
        # Kept while its text and the fonts stay (see NodeItem.boundingRect).
        key = (self.chosen, self.variants, self.size_key())
        kept = self._bounds
        if kept is None or kept[0] != key:
            text = self.text
            kept = self._bounds = (key, self.rect_for(text).adjusted(-1, -1, 1, 1) if text else QRectF())
        return kept[1]

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        text = self.text
        if not text:
            return
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        if lod < 0.25:
            return
        theme = self.scene().theme
        link = self.link_item
        colour = self.colour or (theme.kind(link.kind) if link.known else theme.link)
        if link.isSelected():
            colour = theme.selected
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.rect_for(text)
        painter.setPen(QPen(colour, 1.0))
        painter.setBrush(theme.label_bg)
        painter.drawRoundedRect(rect, 5, 5)
        painter.setFont(font("label"))
        lines = text.split("\n")
        colours = self.text_colours.get(text, ()) if isinstance(self.text_colours, dict) else self.text_colours
        if len(lines) == 1 and not colours:
            painter.setPen(theme.label_text)
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
            return
        fm = metrics("label")
        y = rect.top() + 2
        for k, line in enumerate(lines):
            pen = colours[k] if k < len(colours) else None
            painter.setPen(pen or theme.label_text)
            painter.drawText(QRectF(rect.left(), y, rect.width(), fm.height()), Qt.AlignmentFlag.AlignCenter, line)
            y += fm.height()


@functools.lru_cache(maxsize=8192)
def _text_size(text: str, fonts: int) -> tuple[float, float]:
    """(``fonts``: which canvas fonts measured it, see :meth:`WireLabel.size_key`.)"""
    fm = metrics("label")
    lines = text.split("\n")
    return max(fm.horizontalAdvance(t) for t in lines) + 10.0, fm.height() * len(lines) + 4.0


#: Kept for code that names the shape label's class.
ShapeLabel = WireLabel


def compact_shape(text: str) -> str:
    """``(64, 4)`` → ``64×4``: the shorter variant of a shape label."""
    inner = text.strip("()").rstrip(",")
    return "×".join(part.strip() for part in inner.split(",")) if inner else text


class LinkItem(_WireBase):
    """A document link. Holds the engine Link (ids and port names) only.

    Texts on the wire go through :meth:`set_label` (one per slot: ``"shape"`` is the tensor's
    shape, set by the scene; a run can add ``"value"`` and ``"grad"``)."""

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link
        self.known = False  # shape known (upstream works)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setZValue(0)
        self.setAcceptHoverEvents(True)
        self.hover = False
        self.labels: dict[str, WireLabel] = {}
        self.run_label: RunLabel | None = None
        self.run_style: RunStyle | None = None
        self._shape_variants: tuple[str, ...] | None = None  # the shape's texts, hidden while a pass shows numbers
        self.ends: tuple[QPointF, QPointF, QPointF, QPointF] | None = None  # p1, d1, p2, d2
        self.route_memo: tuple[tuple, Any] | None = None  # (ends key, placement.Route): see GraphScene.arrange
        self.bus_ends = (False, False)  # which ends attach along a bus edge (drawn as dots)
        self.shown_report: object | None = None  # the shape report its label shows (the scene's)
        self.setToolTip(f"{link.src_port} → {link.dst_port}")  # until a shape is known (set_shape_label)

    # --- texts on the wire ----------------------------------------------------------------------------

    def set_label(self, slot: str, variants: str | Sequence[str], *, where: float = 0.5, priority: int = 0,
                  colour: QColor | None = None,
                  text_colours: Sequence[QColor | None] | dict[str, Sequence[QColor | None]] = ()) -> WireLabel:
        """Show a text on this wire in ``slot`` (replacing that slot's text). ``variants`` is the
        text, or several, longest first: the placer shows the first that fits, or none. A text
        may have several lines; ``text_colours`` colours them one by one."""
        label = self.labels.get(slot)
        if label is None:
            label = WireLabel(self, slot)
            self.labels[slot] = label
            if self.scene() is not None:
                self.scene().addItem(label)
        label.configure([variants] if isinstance(variants, str) else list(variants), where, priority, colour,
                        text_colours)
        self._request_placement()
        return label

    # --- a pass shown on the wire --------------------------------------------------------------------

    def set_run(self, label: RunLabel | None, style: RunStyle | None) -> None:
        """What a pass shows on this wire: its numbers (in place of the shape, which comes back
        with ``label`` None) and how the wire is drawn (``style`` None: as usual). Only a change
        repaints or asks for placement."""
        if style != self.run_style:
            self.run_style = style
            self.update()
        if label == self.run_label:
            return
        self.run_label = label
        shape = self.labels.get("shape")
        if label is None:
            self.clear_label(RUN_SLOT)
            if shape is not None and self._shape_variants is not None:
                shape.configure(self._shape_variants, shape.where, shape.priority, shape.colour)
                self._request_placement()
            self._shape_variants = None
            self.setToolTip(f"{self.link.src_port} → {self.link.dst_port}" + (f"  shape {self.label}" if self.label else ""))
            return
        if shape is not None and self._shape_variants is None:
            self._shape_variants = shape.variants  # the run's numbers say it (and more) meanwhile
            shape.configure((), shape.where, shape.priority, shape.colour)
        if not label.value:
            self.clear_label(RUN_SLOT)
            return
        dim = QColor(128, 128, 128)
        first = dim if label.stale else (QColor("#e5484d") if label.bad else None)
        grad = dim if label.stale else label.grad_colour
        variants = label.variants()
        # each line in its colour: the gradient's lines (∇ …) in the gradient colour
        colours = {v: tuple(grad if line.startswith("∇") else (dim if line.startswith("∂") else first)
                            for line in v.split("\n")) for v in variants}
        self.set_label(RUN_SLOT, variants, priority=1, colour=self.run_style.colour if self.run_style else None,
                       text_colours=colours)
        tip = [f"{self.link.src_port} → {self.link.dst_port}", f"value {label.value}"]
        if label.grad:
            tip.append(f"gradient {label.grad.removeprefix('∇ ')}")
        if label.note:
            tip.append(label.note)
        self.setToolTip("<br>".join(tip))

    def clear_label(self, slot: str) -> None:
        label = self.labels.pop(slot, None)
        if label is not None and label.scene() is not None:
            label.scene().removeItem(label)
        self._request_placement()

    def _request_placement(self) -> None:
        scene = self.scene()
        if scene is not None and hasattr(scene, "schedule_arrange"):
            scene.schedule_arrange()

    @property
    def label_item(self) -> WireLabel | None:
        """The shape label (None before a shape is known)."""
        return self.labels.get("shape")

    def set_shape_label(self, label: str, kind: Kind, known: bool) -> None:
        if label == self.label and kind == self.kind and known == self.known:
            return
        self.label, self.kind, self.known = label, kind, known
        if label:
            short = compact_shape(label)
            variants = [label, short] if short != label else [label]
            if self._shape_variants is not None:  # a pass's numbers stand in for it: update what comes back
                self._shape_variants = tuple(variants)
                variants = []
            self.set_label("shape", variants)
        else:
            self.clear_label("shape")
        self.setToolTip(f"{self.link.src_port} → {self.link.dst_port}" + (f"  shape {label}" if label else ""))
        self.update()

    def set_ends(self, p1: QPointF, p2: QPointF, d1: QPointF = RIGHT, d2: QPointF = LEFT,
                 via: Sequence[QPointF] | None = None) -> bool:
        self.ends = (p1, d1, p2, d2)
        return super().set_ends(p1, p2, d1, d2, via)

    def follow_labels(self) -> None:
        """Keep the shown texts on the wire while it moves (no collision check: that waits for
        the scene's next placement)."""
        for label in self.labels.values():
            if label.chosen >= 0 and not self.path.isEmpty():
                label.setPos(self.path.pointAtPercent(min(0.9, max(0.1, label.where))))

    # NOTE: no itemChange: Qt would call it from C++ for every change of every wire (four times
    # for each wire a delete or its undo takes away or brings back). Its texts go into and out of
    # the scene with it (:meth:`add_to`, :meth:`remove_from`), show and hide with it
    # (:meth:`setVisible`), and repaint when it is selected or not (the scene tells them).

    def add_to(self, scene: QGraphicsScene) -> None:
        """Put the wire and its texts into ``scene``."""
        scene.addItem(self)
        for label in self.labels.values():
            scene.addItem(label)

    def remove_from(self, scene: QGraphicsScene) -> None:
        """Take the wire and its texts out of ``scene``."""
        for label in self.labels.values():
            if label.scene() is scene:
                scene.removeItem(label)
        scene.removeItem(self)

    def setVisible(self, visible: bool) -> None:
        super().setVisible(visible)
        for label in self.labels.values():
            label.setVisible(bool(visible) and label.chosen >= 0)

    def show(self) -> None:
        self.setVisible(True)

    def hide(self) -> None:
        self.setVisible(False)

    def selection_shown(self) -> None:
        """Its selection changed: its texts are framed in the selection colour, or not."""
        for label in self.labels.values():
            label.update()

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
        if run is not None:  # a pass: the gradient's norm on a log scale (editor.run)
            colour, width, dashed = run.colour, run.width + (1.0 if self.hover else 0.0), run.dashed
        if selected:
            colour = theme.selected
        if lod >= 0.35:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(self._pen(colour, width, dashed=dashed))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path)
        if self.ends is not None and any(self.bus_ends):
            # A wire on a bus edge draws its own port dot there.
            painter.setPen(QPen(theme.node_body, 1.5))
            painter.setBrush(colour)
            for is_bus, point in zip(self.bus_ends, (self.ends[0], self.ends[2])):
                if is_bus:
                    painter.drawEllipse(point, 4.5, 4.5)


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
