"""The pass on the canvas: what the run controller's cursor means for the items of the shown
scene. Items only render the state they are given:

- wires get a :class:`~editor.items.link.RunLabel` (value, gradient beneath in the gradient
  colour, optionally the local derivative) and a :class:`~editor.items.link.RunStyle` (colour
  and width from the gradient norm on a log scale; dashed for NaN/Inf and vanishing);
- each node gets a :class:`RunMark` child: a halo while it runs, problem badges, a bar for its
  weights' gradient, the value of outputs that feed nothing, a Σ chip where a fan-out's
  contributions arrive and sum, and a per-layer gradient strip on stacks and composites;
- a pulse travels the wires of the node that just ran (forward along its outputs, backward
  along its inputs, in reverse);
- widgets on the viewport: a legend of the colour scale, and a heads-up line saying where in the
  pass we are (and, in yellow, that the graph changed after the pass).

While a model trains and no pass is shown, the controller's :class:`TrainingView` is drawn
instead: each wire coloured by the gradient it carried back in the latest traced training step
(its shape label stays), and under each learned node a sparkline of its recent weight-gradient
norms.

Only items whose state changed repaint.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import shiboken6
from PySide6.QtCore import QElapsedTimer, QObject, QPoint, QPointF, QRect, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QLinearGradient, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QGraphicsItem, QLabel, QStyleOptionGraphicsItem, QWidget

from editor.items.fonts import font, metrics
from editor.items.link import LinkItem, RunLabel, RunStyle
from editor.items.node import NodeItem, RADIUS
from editor.run import style
from editor.run.controller import RunController
from editor.run.timeline import Path, Timeline, TrainingView
from editor.theme import Theme

STRIP_H = 12.0
STRIP_TEXT = 230.0  # the strip's caption may run past a narrow card
_PLUMBING = frozenset({"Input", "Output", "TimeStep", "StackSteps", "Constant"})  # not layers of a strip
HALO = 7.0
PULSE_MS = 420


@dataclass(frozen=True)
class SinkChip:
    port: str
    value: str
    grad: str = ""


@dataclass(frozen=True)
class MarkState:
    """What one node shows of the pass."""

    running: str = ""  # "forward" | "backward" | ""
    stale: bool = False
    problems: tuple[str, ...] = ()  # kinds: nan, inf, vanishing, exploding
    problem_tip: str = ""
    weight_grad: float | None = None  # the largest weight-gradient norm, once backward reached it
    strip: tuple[tuple[str, float], ...] = ()  # (name, gradient norm) per layer / time step
    strip_title: str = ""
    strip_caption: bool = True  # room under the card to write the strip's caption
    sinks: tuple[SinkChip, ...] = ()
    fanout: tuple[tuple[str, int, int, str], ...] = ()  # (port, arrived, total, text)
    done: str = ""  # "forward" | "backward": the last phase that reached this node
    spark: tuple[float, ...] = ()  # training: recent weight-gradient norms, oldest first


def _alive(item: QGraphicsItem) -> bool:
    """Whether the C++ item behind ``item`` still exists (a card deleted with its scene takes
    its mark with it)."""
    return shiboken6.isValid(item)


class RunMark(QGraphicsItem):
    """Run state drawn around one node (a child of its NodeItem, so it moves with it)."""

    def __init__(self, node: NodeItem) -> None:
        super().__init__(node)
        self.state = MarkState()
        self.grad_colour = QColor("#c2185b")
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.setZValue(3)
        # Redrawn only when its state changes, not each time a pulse or a label passes by.
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._bounds = QRectF()
        self.caption_shown = False  # set by the scene when it places the wire texts
        self.fanout_fit: tuple[int, ...] = ()  # per Σ chip, the form shown (see fanout_options)
        self._relayout()

    @property
    def node(self) -> NodeItem:
        # The card is the parent item, never an attribute: a Python reference from the mark to
        # its card let the mark's own deallocation free a removed card, and with it the mark
        # being deallocated (a segfault when a reopened lesson replaced its cards mid-run).
        return self.parentItem()  # type: ignore[return-value]

    def set_state(self, state: MarkState) -> None:
        if state == self.state:
            return
        self.prepareGeometryChange()
        before = self.placement_key()
        self.state = state
        self._relayout()
        if self.placement_key() != before:
            scene = self.scene()
            if scene is not None and hasattr(scene, "invalidate_cards"):
                scene.invalidate_cards()  # wires and their texts keep clear of what it draws
        tip = state.problem_tip
        if state.strip:
            rows = "".join(f"<tr><td>{n}</td><td align=right>&nbsp;{style.num(v, 3)}</td></tr>" for n, v in state.strip)
            tip = (tip + "<br>" if tip else "") + f"<b>‖∂loss/∂out‖ of each layer (or time step)</b><table>{rows}</table>"
        self.setToolTip(tip)
        self.update()

    def caption_room(self) -> bool:
        """Whether the strip's (or sparkline's) caption is written: the scene decides, when it
        places the wire texts, that it covers no card, no other caption or badge and no wire
        text (:meth:`editor.scene.GraphScene.card_grid`); else the tooltip has it."""
        return self.caption_shown

    def caption_text(self) -> str:
        s = self.state
        if s.strip:
            return s.strip_title if s.strip_caption else ""
        return "weight gradient, recent steps" if s.spark else ""

    def caption_rect(self) -> QRectF | None:
        """Where the caption goes (the node's coordinates): under the strip, as wide as its text
        (in steps of 24 px, so a new number rarely moves anything), at most ``STRIP_TEXT``."""
        text = self.caption_text()
        if not text:
            return None
        room = max(self.node.width - 8, STRIP_TEXT)
        width = min(room, 24.0 * math.ceil((metrics("small").horizontalAdvance(text) + 4) / 24.0))
        return QRectF(4, self.node.height + 3 + STRIP_H, width, 14)

    def obstacles(self) -> list[QRectF]:
        """What this mark draws outside its card that must stay clear of wires, wire texts and
        other marks (the node's coordinates), its caption aside (:meth:`caption_rect`): the
        strip or sparkline, the value chips and the problem badges. (The Σ chips have forms to
        choose from: :meth:`fanout_options`.)"""
        s = self.state
        w, h = self.node.width, self.node.height
        out = []
        if s.strip or s.spark:
            out.append(QRectF(0, h + 2, w, STRIP_H + 1))
        out += [self._chip_rect(chip) for chip in s.sinks]
        out += [r for r, _kind, _text in self._badge_rects()]
        return out

    def placement_key(self) -> tuple:
        """Changes exactly when :meth:`obstacles` or :meth:`caption_rect` do."""
        def key(r: QRectF | None) -> tuple:
            return () if r is None else (round(r.x()), round(r.y()), round(r.width()), round(r.height()))
        return (key(self.caption_rect()), tuple(key(r) for r in self.obstacles()),
                tuple(tuple(key(r) for r, _label in forms) for forms in self.fanout_options()), self.node.width, self.node.height)

    def _chip_rect(self, chip: SinkChip) -> QRectF:
        """Under the node, at its right edge (inside the view's fit margin): an output that feeds
        nothing, such as the loss."""
        fm = metrics("label")
        lines = [t for t in (chip.value, chip.grad) if t]
        w = max(fm.horizontalAdvance(t) for t in lines) + 12
        h = fm.height() * len(lines) + 6
        k = [c.port for c in self.state.sinks].index(chip.port) if chip in self.state.sinks else 0
        top = self.node.height + 6 + (STRIP_H + 4 + (14 if self.state.strip_caption else 0) if self.state.strip else 0) + k * (h + 4)
        return QRectF(self.node.width - w, top, w, h)

    def follow_card(self) -> None:
        """The card changed size (the scene tells when it takes the cards' rectangles again)."""
        if self._size != (self.node.width, self.node.height):
            self.prepareGeometryChange()
            self._relayout()
            self.update()

    def _relayout(self) -> None:
        w, h = self.node.width, self.node.height
        self._size = (w, h)
        r = QRectF(-HALO - 2, -HALO - 2, w + 2 * HALO + 4, h + 2 * HALO + 4)
        if self.state.strip or self.state.spark:
            r = r.united(QRectF(0, h + 2, max(w, STRIP_TEXT + 8), STRIP_H + 18))
        for chip in self.state.sinks:
            r = r.united(self._chip_rect(chip).adjusted(-2, -2, 2, 2))
        for rect in self.obstacles() + [forms[0][0] for forms in self.fanout_options()]:
            r = r.united(rect.adjusted(-2, -2, 2, 2))
        caption = self.caption_rect()
        if caption is not None:
            r = r.united(caption)
        self._bounds = r

    def boundingRect(self) -> QRectF:
        return self._bounds

    def shape(self) -> QPainterPath:
        """Only what it adds (the strip, the chips, the badges): the node under it stays the
        thing clicked and hovered."""
        path = QPainterPath()
        w, h = self.node.width, self.node.height
        if self.state.strip or self.state.spark:
            path.addRect(QRectF(0, h + 2, w, STRIP_H + (16 if self.state.strip_caption else 2)))
        for chip in self.state.sinks:
            path.addRect(self._chip_rect(chip))
        for r, _kind, _text in self._badge_rects():
            path.addRect(r)
        return path

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        s = self.state
        scene = self.scene()
        if scene is None:
            return
        theme: Theme = scene.theme
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.node.width, self.node.height
        if s.running and not s.stale:
            colour = style.forward_colour(theme) if s.running == "forward" else style.gradient_colour(theme)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            for k, alpha, width in ((HALO - 2.5, 90, 5.0), (2.0, 255, 2.5)):
                c = QColor(colour)
                c.setAlpha(alpha)
                painter.setPen(QPen(c, width))
                painter.drawRoundedRect(QRectF(-k, -k, w + 2 * k, h + 2 * k), RADIUS + k, RADIUS + k)
        if s.weight_grad is not None:
            c = theme.text_dim if s.stale else style.norm_colour(s.weight_grad, theme)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(c)
            painter.drawRoundedRect(QRectF(6, h - 5, w - 12, 4), 2, 2)
        if s.strip:
            self._paint_strip(painter, theme)
        elif s.spark:
            self._paint_spark(painter, theme)
        for chip in s.sinks:
            self._paint_chip(painter, theme, chip)
        if s.fanout:
            self._paint_fanout(painter, theme)
        if s.problems:
            self._paint_problems(painter, theme)

    def _paint_strip(self, painter: QPainter, theme: Theme) -> None:
        """A small bar chart under the card: one bar per layer (or time step), its height the
        gradient norm on a log scale between the smallest and the largest, its colour the
        canvas-wide scale of the legend."""
        s = self.state
        w, h = self.node.width, self.node.height
        n = len(s.strip)
        top = h + 3
        cell = (w - 8) / n
        norms = [v for _, v in s.strip if v > 0]
        lo, hi = (math.log10(min(norms)), math.log10(max(norms))) if norms else (0.0, 0.0)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(theme.grid)
        painter.drawRect(QRectF(4, top + STRIP_H - 0.5, w - 8, 1))
        for i, (_, norm) in enumerate(s.strip):
            c = theme.text_dim if s.stale else style.norm_colour(norm, theme)
            frac = 0.0 if norm <= 0 else (1.0 if hi - lo < 1e-9 else (math.log10(norm) - lo) / (hi - lo))
            bh = 2 + (STRIP_H - 2) * frac
            painter.setBrush(c)
            painter.drawRect(QRectF(4 + i * cell, top + STRIP_H - bh, max(cell - (1 if cell > 4 else 0), 1), bh))
        self._paint_caption(painter, theme)

    def _paint_caption(self, painter: QPainter, theme: Theme) -> None:
        r = self.caption_rect()
        if r is None or not self.caption_room():
            return  # no room: the caption is in the tooltip
        painter.setFont(font("small"))
        painter.setPen(theme.text_dim)
        painter.drawText(r, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         metrics("small").elidedText(self.caption_text(), Qt.TextElideMode.ElideRight, int(r.width())))

    def _paint_spark(self, painter: QPainter, theme: Theme) -> None:
        """Training: a sparkline under the card of the node's weight-gradient norm over the
        recent steps (log scale between its own smallest and largest), in the colour of the
        latest norm on the legend's scale, and the latest norm written beside it."""
        s = self.state
        w, h = self.node.width, self.node.height
        top = h + 3
        norms = [v for v in s.spark if v > 0 and math.isfinite(v)]
        fm = metrics("small")
        last = s.spark[-1]
        text = f"‖∇w‖ {style.num(last, 2)}" if math.isfinite(last) else "‖∇w‖ NaN"
        tw = fm.horizontalAdvance(text) + 6
        right = w - 4 - (tw if w - 8 - tw > 30 else 0)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(theme.grid)
        painter.drawRect(QRectF(4, top + STRIP_H - 0.5, right - 4, 1))
        colour = style.norm_colour(last, theme) if math.isfinite(last) else style.problem_colour("nan", theme)
        if len(norms) >= 2:
            lo, hi = math.log10(min(norms)), math.log10(max(norms))
            span = max(hi - lo, 0.5)  # a flat line stays flat, not noise blown up
            mid = (hi + lo) / 2
            n = len(s.spark)
            path = QPainterPath()
            started = False
            for i, v in enumerate(s.spark):
                if not (v > 0 and math.isfinite(v)):
                    started = False
                    continue
                x = 4 + (right - 4) * (i / max(n - 1, 1))
                y = top + STRIP_H / 2 - (STRIP_H - 2) * (math.log10(v) - mid) / span
                if started:
                    path.lineTo(x, y)
                else:
                    path.moveTo(x, y)
                    started = True
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(colour, 1.6))
            painter.drawPath(path)
        painter.setFont(font("small"))
        painter.setPen(theme.text_dim)
        if right < w - 4:
            painter.drawText(QRectF(right + 4, top, tw, STRIP_H), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text)
        self._paint_caption(painter, theme)

    def _paint_chip(self, painter: QPainter, theme: Theme, chip: SinkChip) -> None:
        r = self._chip_rect(chip)
        painter.setPen(QPen(theme.text_dim, 1.0))
        painter.setBrush(theme.label_bg)
        painter.drawRoundedRect(r, 5, 5)
        fm = metrics("label")
        painter.setFont(font("label"))
        y = r.top() + 3
        for text, pen in ((chip.value, theme.label_text), (chip.grad, self.grad_colour)):
            if not text:
                continue
            painter.setPen(theme.text_dim if self.state.stale else pen)
            painter.drawText(QRectF(r.left(), y, r.width(), fm.height()), Qt.AlignmentFlag.AlignCenter, text)
            y += fm.height()

    def fanout_options(self) -> list[list[tuple[QRectF, str]]]:
        """For each Σ chip (beside an output port where a fan-out's gradients arrive and sum),
        its forms, longest first: with the sum, then the count alone. The scene keeps the first
        that covers nothing (:attr:`fanout_fit`). Widths in steps of 16 px, so a new number
        rarely moves anything."""
        fm = metrics("small")
        out = []
        for port, arrived, total, text in self.state.fanout:
            p = self.node.outputs.get(port)
            if p is None:
                continue
            forms = []
            for label in dict.fromkeys((f"Σ {arrived}/{total}" + (f"  {text}" if text else ""), f"Σ {arrived}/{total}")):
                tw = 16.0 * math.ceil((fm.horizontalAdvance(label) + 10) / 16.0)
                forms.append((QRectF(self.node.width + 8, p.y() - 22, tw, fm.height() + 4), label))
            out.append(forms)
        return out

    def _fanout_rects(self) -> list[tuple[QRectF, str]]:
        """The Σ chips drawn: the form the scene chose for each (none: no room; the Values panel
        of the node has the sum)."""
        fit = self.fanout_fit
        return [forms[fit[i] if i < len(fit) else 0] for i, forms in enumerate(self.fanout_options())
                if (fit[i] if i < len(fit) else 0) < len(forms)]

    def _paint_fanout(self, painter: QPainter, theme: Theme) -> None:
        painter.setFont(font("small"))
        for (r, label), (_port, arrived, total, _text) in zip(self._fanout_rects(), self.state.fanout):
            done = arrived == total
            c = QColor(self.grad_colour)
            painter.setPen(QPen(c, 1.2))
            fill = QColor(c)
            fill.setAlpha(40 if not done else 70)
            painter.setBrush(fill)
            painter.drawRoundedRect(r, 4, 4)
            painter.setPen(theme.text if not self.state.stale else theme.text_dim)
            painter.drawText(r, Qt.AlignmentFlag.AlignCenter, label)

    def _badge_rects(self) -> list[tuple[QRectF, str, str]]:
        """The problem badges, right to left from the card's top-right corner, above it."""
        glyphs = {"nan": "NaN", "inf": "Inf", "vanishing": "≈0", "exploding": "≫1e3"}
        fm = metrics("badge")
        x = self.node.width + 2
        out = []
        for kind in self.state.problems:
            text = glyphs.get(kind, "!")
            tw = fm.horizontalAdvance(text) + 10
            out.append((QRectF(x - tw, -HALO - 14, tw, 18), kind, text))
            x -= tw + 4
        return out

    def _paint_problems(self, painter: QPainter, theme: Theme) -> None:
        painter.setFont(font("badge"))
        for r, kind, text in self._badge_rects():
            c = theme.text_dim if self.state.stale else style.problem_colour(kind, theme)
            painter.setPen(QPen(QColor("#ffffff"), 1.5))
            painter.setBrush(c)
            painter.drawRoundedRect(r, 6, 6)
            painter.drawText(r, Qt.AlignmentFlag.AlignCenter, text)


class Pulse(QGraphicsItem):
    """A glowing dot travelling along one wire: the value (forward) or the gradient (backward)."""

    def __init__(self, path: QPainterPath, colour: QColor, reverse: bool) -> None:
        super().__init__()
        self.path = QPainterPath(path)
        self.colour = colour
        self.reverse = reverse
        self.setZValue(4)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.set_t(0.0)

    def set_t(self, t: float) -> None:
        t = min(1.0, max(0.0, t))
        self.setPos(self.path.pointAtPercent(1.0 - t if self.reverse else t))

    def boundingRect(self) -> QRectF:
        return QRectF(-9, -9, 18, 18)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        glow = QColor(self.colour)
        glow.setAlpha(80)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(glow)
        painter.drawEllipse(QPointF(0, 0), 8, 8)
        painter.setBrush(self.colour)
        painter.drawEllipse(QPointF(0, 0), 4.5, 4.5)


class Legend(QWidget):
    """The colour scale of gradient norms, in a corner of the canvas."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.theme: Theme | None = None
        self.wanted = False  # a pass with gradients is shown (it still hides when no corner is free)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.resize(440, 66)
        self.hide()

    def paintEvent(self, event: Any) -> None:
        if self.theme is None:
            return
        theme = self.theme
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        bg = QColor(theme.label_bg)
        p.setPen(QPen(theme.node_border, 1))
        p.setBrush(bg)
        p.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 6, 6)
        p.setFont(font("small"))
        p.setPen(theme.text)
        p.drawText(QRectF(10, 4, self.width() - 20, 14), Qt.AlignmentFlag.AlignLeft, "gradient norm ‖∇‖ on each wire (log scale)")
        bar = QRectF(18, 22, self.width() - 36, 9)
        grad = QLinearGradient(bar.topLeft(), bar.topRight())
        for k in range(11):
            t = k / 10
            grad.setColorAt(t, style.ramp(0.12 + 0.88 * t if theme.dark else t, theme))
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(grad)
        p.drawRoundedRect(bar, 3, 3)
        p.setPen(theme.text_dim)
        for exp in (-7, -5, -3, -1, 1, 3):
            t = (exp - style.LOG_LO) / (style.LOG_HI - style.LOG_LO)
            x = bar.left() + t * bar.width()
            p.drawLine(QPointF(x, bar.bottom()), QPointF(x, bar.bottom() + 3))
            text = f"1e{exp}".replace("-", "−") if exp not in (0, 1) else ("10" if exp == 1 else "1")
            p.drawText(QRectF(x - 20, bar.bottom() + 3, 40, 12), Qt.AlignmentFlag.AlignHCenter, text)
        y = bar.bottom() + 18
        x = 10.0
        for kind, text in (("zero", "none (0)"), ("vanishing", "vanishing < 1e−7"), ("exploding", "exploding > 1e3"),
                           ("nan", "NaN, Inf")):
            pen = QPen(theme.text_dim if kind == "zero" else style.problem_colour(kind, theme), 1.2 if kind == "zero" else 2.2)
            if kind != "exploding":
                pen.setStyle(Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.drawLine(QPointF(x, y + 5), QPointF(x + 18, y + 5))
            p.setPen(theme.text_dim)
            tw = metrics("small").horizontalAdvance(text)
            p.drawText(QRectF(x + 22, y - 1, tw + 4, 13), Qt.AlignmentFlag.AlignLeft, text)
            x += 22 + tw + 10
        p.end()


class Hud(QLabel):
    """One line at the top of the canvas: where in the pass we are, or that it is stale."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        # Filled with an opaque colour (square corners): a new text repaints this label only,
        # not the canvas under it.
        self.setAutoFillBackground(True)
        self.setFrameShape(QLabel.Shape.Box)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setMargin(5)
        self.hide()

    def show_text(self, html: str, theme: Theme, warn: bool = False) -> None:
        look = (theme.name, warn)
        if look != getattr(self, "_look", None):
            self._look = look
            if warn:
                bg, fg, border = QColor("#fff3bf"), QColor("#5c4400"), QColor("#e0b400")
            else:
                bg, fg, border = theme.node_body, theme.text, theme.node_border
            pal = self.palette()
            pal.setColor(QPalette.ColorRole.Window, bg)
            pal.setColor(QPalette.ColorRole.WindowText, fg)
            pal.setColor(QPalette.ColorRole.Dark, border)
            pal.setColor(QPalette.ColorRole.Light, border)
            pal.setColor(QPalette.ColorRole.Mid, border)
            self.setPalette(pal)
        if html != self.text():
            self.setText(html)
            self.adjustSize()
        self.show()


@dataclass
class _Link:
    item: LinkItem
    label: RunLabel | None = None
    style: RunStyle | None = None


class RunOverlay(QObject):
    """Projects the controller's state onto one scene at a time (:meth:`attach`)."""

    def __init__(self, controller: RunController, view: Any) -> None:
        super().__init__(controller)
        self.controller = controller
        self.view = view
        self.scene: Any = None
        self.marks: dict[str, RunMark] = {}
        self.pulses: list[Pulse] = []
        self.legend = Legend(view.viewport())
        self.hud = Hud(view.viewport())
        self._last_cursor = -1
        self._link_cache: dict[Any, tuple[Any, bool]] = {}
        self._plans: dict[Any, Any] = {}
        self._problems_here: dict[str, list[Any]] = {}
        self._hud_state: Any = None
        self._training_shown: tuple[Any, ...] | None = None  # what _show_training last drew on the items
        self._placed: tuple[Any, ...] | None = None  # the headline's and the legend's looks when last placed
        self._clock = QElapsedTimer()
        self._timer = QTimer(self)
        self._timer.setInterval(16)
        self._timer.timeout.connect(self._animate)
        self._pulse_ms = PULSE_MS
        controller.changed.connect(self.refresh)
        view.view_changed.connect(self._place_widgets)

    # --- scenes -----------------------------------------------------------------------------------

    def attach(self, scene: Any) -> None:
        if scene is self.scene:
            self.refresh()
            return
        self._clear_scene()
        self.scene = scene
        self._link_cache.clear()
        self._last_cursor = self.controller.cursor
        self.refresh()

    def _clear_scene(self) -> None:
        self._stop_pulses()
        scene = self.scene
        if scene is None:
            return
        # Marks stay children of their nodes (the nodes own them and delete them with the
        # scene); a scene left for another level just stops showing the pass.
        try:
            for item in scene.links.values():
                item.set_run(None, None)
            for mark in self.marks.values():
                mark.set_state(MarkState())
        except RuntimeError:  # the scene is already gone (closing the window)
            pass
        self.marks.clear()
        self._training_shown = None

    # --- state → items ------------------------------------------------------------------------------

    def refresh(self) -> None:
        scene = self.scene
        if scene is None:
            return
        c = self.controller
        tl = c.timeline
        theme: Theme = scene.theme
        if tl is None and c.training_view is not None:
            self._show_training(c.training_view, theme)
            return
        self._training_shown = None
        self._place_widgets()
        if tl is None or c.cursor < 0:
            self._link_cache.clear()
            for item in scene.links.values():
                item.set_run(None, None)
            for mark in list(self.marks.values()):
                mark.set_state(MarkState())
            self.legend.wanted = False
            self.legend.hide()
            self._hud(tl, theme)
            self._place_widgets()
            self._stop_pulses()
            self._last_cursor = c.cursor
            return
        level, cursor, stale = c.level, c.cursor, c.stale
        running = tl.running(level, cursor)
        grad_colour = style.gradient_colour(theme)
        any_grad = False
        # wires
        consumers: dict[tuple[str, str], list[Any]] = {}
        for link, item in scene.links.items():
            if not item.isVisible():
                continue
            consumers.setdefault((link.src, link.src_port), []).append(link)
            # A wire changes only when its source's value or its own gradient arrives (or the
            # pass goes stale, the theme or the local-derivative toggle changes).
            idx = tl.level(level)
            vf, gf = idx.forward.get(link.src, -1), idx.backward.get(link.dst, -1)
            key = (vf if vf <= cursor else -1, gf if gf <= cursor else -1, stale, self.controller.show_local,
                   theme.name, id(tl))
            cached = self._link_cache.get(link)
            if cached is not None and cached[0] == key:
                any_grad |= cached[1]
                continue
            label, st, has_grad = self._link_state(tl, level, cursor, link, stale, theme, grad_colour)
            self._link_cache[link] = (key, has_grad)
            any_grad |= has_grad
            item.set_run(label, st)
        # problems, by the node of this level they are at or inside
        self._problems_here: dict[str, list[Any]] = {}
        n = len(level)
        for p in tl.problems_until(cursor):
            if p.origin and len(p.path) > n and p.path[:n] == level:
                self._problems_here.setdefault(p.path[n], []).append(p)
        # nodes
        present = set()
        for nid, node in scene.nodes.items():
            if not node.isVisible():
                continue
            present.add(nid)
            mark = self._mark(nid, node)
            mark.grad_colour = grad_colour
            mark.set_state(self._node_state(tl, level, cursor, nid, running, stale, consumers))
        for nid in list(self.marks):
            if nid not in present:
                mark = self.marks.pop(nid)
                if _alive(mark) and scene.nodes.get(nid) is mark.node:  # (else its card is gone, and the mark with it)
                    mark.set_state(MarkState())
        self._show_legend(any_grad, theme)
        self._hud(tl, theme)
        self._place_widgets()
        moved = cursor != self._last_cursor
        step_on = moved and tl.previous_visible(level, cursor) == self._last_cursor
        step_back = moved and cursor >= 0 and tl.previous_visible(level, self._last_cursor) == cursor
        if running is not None and (step_on or step_back) and not stale:  # a step's node stays in view (not a jump's)
            card = scene.nodes.get(scene._stack_of.get(running[0], running[0]))
            if card is not None and card.isVisible():
                self.view.reveal(card.card_rect())
        # a pulse for a single step forward
        if not stale and step_on and running is not None and tl.frames[cursor].path[:-1] == level:
            self._start_pulses(tl.frames[cursor], consumers, theme)
        elif moved:
            self._stop_pulses()
        self._last_cursor = cursor

    def _show_legend(self, wanted: bool, theme: Theme) -> None:
        """The gradient legend, in the theme's colours, when some wire carries a gradient."""
        if self.legend.theme is not theme:
            self.legend.theme = theme
            self.legend.update()
        self.legend.wanted = wanted
        if not wanted:
            self.legend.hide()

    def _mark(self, nid: str, node: NodeItem) -> "RunMark":
        """The mark of card ``node``: the one kept, unless the card was replaced (a reopened or
        rebuilt scene), then the card's own or a new one."""
        mark = self.marks.get(nid)
        if mark is None or not _alive(mark) or mark.node is not node:
            mark = next((m for m in node.childItems() if isinstance(m, RunMark)), None) or RunMark(node)
            self.marks[nid] = mark
        return mark

    def _show_training(self, view: TrainingView, theme: Theme) -> None:
        """The latest training step's gradients: wires coloured as in a pass (their shape labels
        stay), weight bars and gradient sparklines on the learned nodes. Top level only."""
        scene = self.scene
        self._stop_pulses()
        self._link_cache.clear()
        top = self.controller.level == ()
        # A view that differs from the one drawn only by its headline (the step and the loss of a
        # run, renewed a few times a second between two traced steps) changes the headline only.
        shown = (view.wires, view.weight_norms, view.sparks, view.problems, theme.name, top, len(scene.links),
                 len(scene.nodes))
        last = self._training_shown
        if last is not None and all(a is b if isinstance(a, dict) else a == b for a, b in zip(last, shown)) and \
                all(_alive(m) and scene.nodes.get(nid) is m.node for nid, m in self.marks.items()):  # (the same cards)
            self.hud.show_text(view.headline, theme)
            self._place_training_widgets()
            return
        self._training_shown = shown
        any_grad = False
        for link, item in scene.links.items():
            t = view.wires.get((link.dst, link.dst_port)) if top and item.isVisible() else None
            if t is None:
                item.set_run(None, None)
                continue
            any_grad = True
            kind = style.kind_of(t)
            if kind in ("nan", "inf"):
                st = RunStyle(style.problem_colour(kind, theme), 3.5, dashed=True)
            elif t.norm == 0:
                st = RunStyle(theme.text_dim, 1.2, dashed=True)
            elif kind == "vanishing":
                st = RunStyle(style.problem_colour(kind, theme), style.MIN_WIDTH, dashed=True)
            else:
                # in steps of an eighth of a decade: a wire repaints when its gradient moves, not
                # at every small wiggle
                norm = 10 ** (round(8 * math.log10(t.norm)) / 8)
                st = RunStyle(style.norm_colour(norm, theme), style.norm_width(norm))
            item.set_run(None, st)
        for nid, node in scene.nodes.items():
            mark = self._mark(nid, node)
            if not top or not node.isVisible():
                mark.set_state(MarkState())
                continue
            mark.set_state(MarkState(problems=view.problems.get(nid, ()), weight_grad=view.weight_norms.get(nid),
                                     spark=view.sparks.get(nid, ())))
        self._show_legend(any_grad, theme)
        self.hud.show_text(view.headline, theme)
        self._place_training_widgets()
        self._last_cursor = -1

    def _place_training_widgets(self) -> None:
        """Place the headline and the legend again only when one of them changed size or
        visibility (a run renews them a few times a second; the view's moves place them anyway)."""
        placed = (self.hud.geometry(), self.hud.isHidden(), self.legend.wanted, self.legend.isHidden())
        if placed != self._placed:
            self._place_widgets()
            self._placed = (self.hud.geometry(), self.hud.isHidden(), self.legend.wanted, self.legend.isHidden())

    def _link_state(self, tl: Timeline, level: Path, cursor: int, link: Any, stale: bool, theme: Theme,
                    grad_colour: QColor) -> tuple[RunLabel | None, RunStyle | None, bool]:
        src_f = tl.value_frame(level, link.src, cursor)
        if src_f is None or link.src_port not in src_f.event.outputs:
            # not reached yet: an empty wire (the document's shape may not be the pass's, e.g.
            # with one example), filled in when its value arrives
            return RunLabel("", stale=stale), None, False
        t = src_f.event.outputs[link.src_port]
        value = style.value_text(src_f.outputs.get(link.src_port), t)
        grad = note = ""
        g_arr, gt = None, None
        st = None
        has_grad = False
        bad = t.nan or t.inf
        dst_b = tl.grad_frame(level, link.dst, cursor)
        if dst_b is not None and link.dst_port in dst_b.event.inputs:
            g_arr = dst_b.inputs.get(link.dst_port)
            gt = dst_b.event.inputs[link.dst_port]  # the engine's statistics of this wire's gradient
            grad = style.grad_text(g_arr, gt)
            kind = style.kind_of(gt)
            has_grad = True
            bad = bad or kind in ("nan", "inf")
            if stale:
                st = RunStyle(theme.text_dim, 2.2)
            elif kind in ("nan", "inf"):
                st = RunStyle(style.problem_colour(kind, theme), 3.5, dashed=True)
            elif gt.norm == 0:
                st = RunStyle(theme.text_dim, 1.2, dashed=True)  # no gradient flows here (exactly 0)
            elif kind == "vanishing":
                st = RunStyle(style.problem_colour(kind, theme), style.MIN_WIDTH, dashed=True)
            else:
                st = RunStyle(style.norm_colour(gt.norm, theme), style.norm_width(gt.norm))
        elif bad and not stale:
            st = RunStyle(style.problem_colour("nan", theme), 3.0, dashed=True)
        if self.controller.show_local:
            dst_f = tl.value_frame(level, link.dst, cursor)
            if dst_f is not None and link.dst_port in dst_f.local:
                note = f"∂/∂in {style.num(dst_f.local[link.dst_port])}"
        v_arr = src_f.outputs.get(link.src_port)
        value_short = style.short_text(v_arr, t)
        grad_short = style.short_text(g_arr, gt, grad=True) if grad else ""
        value_tiny = style.short_text(v_arr, t, digits=3)
        grad_tiny = style.short_text(g_arr, gt, grad=True, digits=3) if grad else ""
        return RunLabel(value, grad, note, grad_colour, stale, bad, value_short, grad_short, value_tiny,
                        grad_tiny), st, has_grad

    def _node_state(self, tl: Timeline, level: Path, cursor: int, nid: str, running: tuple[str, str] | None,
                    stale: bool, consumers: dict[tuple[str, str], list[Any]]) -> MarkState:
        scene = self.scene
        members = scene.stacks.get(nid, [nid])
        last = members[-1]
        run = ""
        if running is not None and running[0] in members and not stale:
            run = running[1]
        # problems at or inside these nodes, up to the cursor
        kinds: list[str] = []
        tips: list[str] = []
        for m in members:
            for p in self._problems_here.get(m, ()):
                if p.kind not in kinds:
                    kinds.append(p.kind)
                if len(tips) < 6:
                    tips.append(p.message)
        # weight gradients (own, or the stack's)
        wnorm = None
        for m in members:
            bf = tl.grad_frame(level, m, cursor)
            if bf is not None and bf.event.weights:
                n = max(t.norm for t in bf.event.weights.values())
                wnorm = n if wnorm is None else max(wnorm, n)
        strip, title = self._strip(tl, level, cursor, members)
        sinks = []
        node_item = scene.nodes[nid]
        vf = tl.value_frame(level, last, cursor)
        bf = tl.grad_frame(level, last, cursor)
        terminal = not any(consumers.get((last, port)) for port in node_item.outputs)
        # a node that feeds nothing (the loss): its value under it (an Output marker's is on its wire)
        if vf is not None and terminal and vf.event.type != "Output":
            for port in node_item.outputs:
                t = vf.event.outputs.get(port)
                if t is None:
                    continue
                g = ""
                if bf is not None and port in bf.event.outputs:
                    g = style.grad_text(bf.outputs.get(port), bf.event.outputs[port])
                sinks.append(SinkChip(port, "= " + style.value_text(vf.outputs.get(port), t), g))
        fan = []
        for port in node_item.outputs:
            links = consumers.get((last, port), [])
            if len(links) < 2:
                continue
            arrived = [tl.grad_frame(level, l.dst, cursor) for l in links]
            got = [(f, l) for f, l in zip(arrived, links) if f is not None and l.dst_port in f.event.inputs]
            if not got:
                continue
            parts = [f.inputs.get(l.dst_port) for f, l in got]
            text = ""
            if all(p is not None for p in parts):
                total = np.sum(np.stack([np.asarray(p, np.float64) for p in parts]), axis=0)
                text = ("= " if len(got) == len(links) else "so far ") + (
                    style.numbers(total) if total.size <= style.SMALL else f"‖{style.num(float(np.linalg.norm(total)))}‖")
            fan.append((port, len(got), len(links), text))
        done = "backward" if bf is not None else ("forward" if vf is not None else "")
        return MarkState(run, stale, tuple(kinds), "<br>".join(tips), wnorm, strip, title, True, tuple(sinks),
                         tuple(fan), done)

    def _strip(self, tl: Timeline, level: Path, cursor: int, members: list[str]) -> tuple[tuple[tuple[str, float], ...], str]:
        """Per-layer gradient norms: the members of a compact stack, or the repeated inner blocks
        of a composite (BERT's 24 blocks, an RNN's time steps)."""
        if len(members) > 1:
            names = members
            frames = [tl.grad_frame(level, m, cursor) for m in names]
            labels = [self.scene.doc.node(m).name for m in names]
            title = "‖∂loss/∂out‖ per block"
        else:
            plan = self._strip_plan(tl, level + (members[0],))
            if plan is None:
                return (), ""
            inner, names, title = plan
            frames = [tl.grad_frame(inner, n, cursor) for n in names]
            labels = names
        if not any(frames):
            return (), title
        out = []
        for name, f in zip(labels, frames):
            if f is None or not f.event.outputs:
                out.append((name, 0.0))
            else:
                out.append((name, next(iter(f.event.outputs.values())).norm))
        known = [(n, v) for n, v in out if v > 0]
        if known:
            short = "‖∇h‖" if "h_t" in title else "‖∇‖"
            title = f"{short} {known[0][0]} {style.num(known[0][1], 2)} … {known[-1][0]} {style.num(known[-1][1], 2)}"
        return tuple(out), title

    def _strip_plan(self, tl: Timeline, inner: Path) -> tuple[Path, list[str], str] | None:
        """Which inner nodes of a composite make its strip: those of its most repeated block
        type (3 or more), in order. Worked out once per pass (and once the forward is in)."""
        key = (id(tl), inner)
        if key in self._plans:
            return self._plans[key]
        idx = tl.levels.get(inner)
        plan = None
        if idx is not None and idx.forward:
            types = Counter(tl.frames[i].event.type for i in idx.forward.values()
                            if tl.frames[i].event.type not in _PLUMBING)
            kind, count = types.most_common(1)[0] if types else ("", 0)
            if count >= 3:
                names = [n for n, i in sorted(idx.forward.items(), key=lambda kv: kv[1]) if tl.frames[i].event.type == kind]
                title = "‖∂loss/∂h_t‖ per step" if kind == "RNNCell" else f"‖∂loss/∂out‖ per {kind}"
                plan = (inner, names, title)
        if tl.finished or tl.forward_end() is not None:
            self._plans[key] = plan
        return plan

    # --- pulses ------------------------------------------------------------------------------------------

    def _start_pulses(self, frame: Any, consumers: dict[tuple[str, str], list[Any]], theme: Theme) -> None:
        self._stop_pulses()
        scene = self.scene
        node = frame.node
        forward = frame.phase == "forward"
        if forward:
            links = [l for (src, _), ls in consumers.items() if src == node for l in ls]
            colour = style.forward_colour(theme)
        else:
            head = scene._stack_of.get(node, node) if hasattr(scene, "_stack_of") else node
            links = [l for l, item in scene.links.items() if item.isVisible() and l.dst in (node, head)
                     and l.dst_port in frame.event.inputs]
            colour = style.gradient_colour(theme)
        for link in links:
            item = scene.links.get(link)
            if item is None or item.path.isEmpty():
                continue
            pulse = Pulse(item.path, colour, reverse=not forward)
            scene.addItem(pulse)
            self.pulses.append(pulse)
        if self.pulses:
            c = self.controller
            self._pulse_ms = min(PULSE_MS, int(0.8 * 1000 / c.speed)) if c.playing else PULSE_MS
            self._clock.start()
            self._timer.start()

    def _animate(self) -> None:
        t = self._clock.elapsed() / max(1, self._pulse_ms)
        if t >= 1.0:
            self._stop_pulses()
            return
        eased = 1 - (1 - t) ** 2
        for p in self.pulses:
            p.set_t(eased)

    def _stop_pulses(self) -> None:
        self._timer.stop()
        for p in self.pulses:
            if p.scene() is not None:
                p.scene().removeItem(p)
        self.pulses.clear()

    # --- viewport widgets --------------------------------------------------------------------------------

    def _place_widgets(self) -> None:
        self._placed = None
        self.hud.move(12, 10)
        # the headline is drawn over the canvas: the view frames the graph below it
        self.view.reserve_top(self.hud.geometry().bottom() + 8 if not self.hud.isHidden() else 0)
        if self.legend.wanted:
            # the first corner where it covers no card (nor the minimap), as the minimap does
            spot = self._legend_spot()
            if spot is not None:
                self.legend.move(spot)
            self.legend.setVisible(spot is not None)

    def _legend_spot(self) -> QPoint | None:
        vp = self.view.viewport()
        w, h, m = self.legend.width(), self.legend.height(), 12
        hud = self.hud.geometry() if self.hud.isVisible() else QRect()
        minimap = getattr(self.view, "minimap", None)
        if minimap is not None:
            minimap.settle()  # it takes its corner for this view first (it, too, follows the view)
        taken = minimap.geometry() if minimap is not None and minimap.isVisible() else QRect()
        scene = self.view.graph_scene()
        for x, y in ((m, vp.height() - h - m), (vp.width() - w - m, vp.height() - h - m),
                     (vp.width() - w - m, m + 40), (m, m + 40)):
            spot = QRect(x, y, w, h)
            if spot.intersects(taken) or spot.intersects(hud):
                continue
            area = self.view.mapToScene(spot.adjusted(-2, -2, 2, 2)).boundingRect()
            if scene is None or not hasattr(scene, "card_grid") or not scene.card_grid().hits(area):
                return spot.topLeft()
        return None

    def _hud(self, tl: Timeline | None, theme: Theme) -> None:
        c = self.controller
        if tl is None:
            if c.busy:
                self.hud.show_text("Starting the pass…", theme)
            else:
                self.hud.hide()
            return
        if c.stale:
            self.hud.show_text("<b>The graph changed after this pass</b>: the grey numbers are from before your edit. "
                               "Run again: Forward (F5) or Step (F10).", theme, warn=True)
            return
        if tl.error:
            self.hud.show_text(f"<b>Cannot run this graph</b>: {_html(tl.error)}", theme, warn=True)
            return
        order = tl.visible(c.level)
        f = c.frame()
        parts = []
        if c.cursor < 0:
            parts.append(f"<b>Ready</b>: {len(order)} steps at this level · Step (F10) or Play (F8)")
        elif f is not None and not (len(f.path) > len(c.level) and f.path[:len(c.level)] == c.level):
            # the pass is at a node outside this view
            done = [i for i in order if i <= c.cursor]
            where = f.event.label if f.depth == 0 else "another block"
            phase = tl.frames[done[-1]].phase if done else "forward"
            parts.append(f"{'Backward' if phase == 'backward' else 'Forward'} {'done' if done else 'not started'} "
                         f"here · the pass is at {_html(where)}, outside this view")
        elif f is not None:
            phase = "Forward" if f.phase == "forward" else "Backward"
            colour = style.forward_colour(theme) if f.phase == "forward" else style.gradient_colour(theme)
            name = self.scene.doc.node(f.path[len(c.level)]).name if len(f.path) > len(c.level) and \
                f.path[len(c.level)] in self.scene.doc.graph.nodes else f.event.label.strip("'")
            inside = " (inside)" if len(f.path) > len(c.level) + 1 else ""
            in_phase = [i for i in order if tl.frames[i].phase == f.phase]
            k = sum(1 for i in in_phase if i <= c.cursor)
            more = "" if tl.finished or f.phase == "backward" and tl.finished else "+"
            top = f.path[len(c.level)]
            hint = " · double-click it to watch inside" if inside == "" and c.level + (top,) in tl.levels else ""
            parts.append(f"<b style='color:{colour.name()}'>{phase}</b> {k} of {len(in_phase)}{more} · "
                         f"<b>{_html(name)}</b>{inside} ({f.event.type}){hint}")
        at = tl.frame_of((), tl.loss_node, "forward") if tl.loss_node else None
        if tl.loss is not None and at is not None and c.cursor >= at:
            parts.append(f"loss = {style.num(tl.loss)}")
        if c.one_example:
            parts.append("<i>one example</i>")
        seen = sum(1 for p in tl.problems_until(c.cursor))
        if seen:
            parts.append(f"<span style='color:#d9480f'>⚠ {seen} problem{'s' if seen != 1 else ''} (status bar)</span>")
        self.hud.show_text(" · ".join(parts), theme)


def _html(text: str) -> str:
    import html
    return html.escape(text, quote=False)
