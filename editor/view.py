"""The canvas view: zoom (wheel, keys, fit), pan (middle button or space-drag), rubber-band
selection, a dot grid, drops from the palette and from the file manager, and a minimap."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, QTimer, Signal
import shiboken6
from PySide6.QtGui import QKeyEvent, QMouseEvent, QPainter, QPen, QPolygonF, QWheelEvent
from PySide6.QtWidgets import QGraphicsView, QWidget

from editor.items.fonts import comfortable_zoom, px as font_px, readable_zoom
from editor.layout import FRAME
from editor.scene import GraphScene

PALETTE_MIME = "application/x-backprop-studio-block"
GRID = 24.0
MIN_ZOOM, MAX_ZOOM = 0.08, 4.0


class GraphView(QGraphicsView):
    """Shows a :class:`GraphScene`. Emits requests; the window decides what to do with them."""

    block_dropped = Signal(str, dict, QPointF)  # type id, params, scene position
    files_dropped = Signal(list)  # local paths
    search_requested = Signal(QPointF)  # scene position (Tab, double-click on the canvas)
    zoom_changed = Signal(float)
    context_requested = Signal(QPointF, QPoint)  # scene position, global position
    view_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontSavePainterState, True)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setRubberBandSelectionMode(Qt.ItemSelectionMode.IntersectsItemShape)
        self.setAcceptDrops(True)
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._pan_from: QPointF | None = None
        self._space = False
        self._auto_framed = False  # framed by show_graph and not touched since: frame again on resize
        self.minimap: Any = None
        self._top_reserve = 0  # viewport pixels at the top a line over the canvas takes (the run's)
        self._reframe = QTimer(self)
        self._reframe.setSingleShot(True)
        self._reframe.setInterval(0)
        self._reframe.timeout.connect(self._frame_again)

    def reserve_top(self, pixels: int) -> None:
        """Keep the top ``pixels`` of the canvas (where a line is drawn over it: the pass's or the
        training's headline) free of cards when framing the graph; framed as opened and not
        touched since, frame it again now."""
        pixels = max(0, int(pixels))
        if pixels == self._top_reserve:
            return
        self._top_reserve = pixels
        if self._auto_framed:
            self._reframe.start()  # soon: not in the middle of whatever showed the line

    def _frame_again(self) -> None:
        if self._auto_framed and self.graph_scene() is not None:
            self.show_graph()

    def _reserved(self) -> int:
        """The top reserve, at most a third of the canvas (a small window keeps its graph)."""
        return min(self._top_reserve, self.viewport().height() // 3)

    def graph_scene(self) -> GraphScene:
        return self.scene()  # type: ignore[return-value]

    # --- zoom and pan ---------------------------------------------------------------------------

    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom to ``factor``, keeping the scene point under ``anchor`` (a viewport position;
        the centre when None) where it is."""
        factor = min(MAX_ZOOM, max(MIN_ZOOM, factor))
        self._auto_framed = False
        ratio = factor / self.zoom()
        if abs(ratio - 1) < 1e-9:
            return
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        if anchor is None:
            self.scale(ratio, ratio)
        else:
            point = anchor.toPoint()
            before = self.mapToScene(point)
            self.scale(ratio, ratio)
            after = self.mapToScene(point)
            shift = (before - after) * self.zoom()
            self.pan_by(shift.x(), shift.y())
        self.zoom_changed.emit(self.zoom())
        self.view_changed.emit()

    def zoom_in(self) -> None:
        self.set_zoom(self.zoom() * 1.25)

    def zoom_out(self) -> None:
        self.set_zoom(self.zoom() / 1.25)

    def reset_zoom(self) -> None:
        self.set_zoom(1.0)

    def show_graph(self) -> None:
        """Frame a graph just opened: all of it when that can be read (every text at least
        ``LEGIBLE_PX`` high), else a readable zoom on the start of the data flow (its inputs on
        the left), leaving the rest to panning, the minimap and Fit. Framing again on resize until
        the user zooms or pans."""
        scene = self.graph_scene()
        if scene is None:
            return
        vp = self.viewport().rect()
        readable = readable_zoom()
        if self.isVisible():  # before the first show the viewport's size means nothing
            scene.view_size = (float(vp.width()), float(vp.height()))
            scene.adapt_to_view(comfortable_zoom(), readable)
        rect = scene.items_bounding_rect()
        if rect.isNull() or rect.isEmpty():
            self.fit()
            self._auto_framed = True
            return
        rect = rect.adjusted(-FRAME, -FRAME, FRAME, FRAME)
        fits = min(vp.width() / rect.width(), (vp.height() - self._reserved()) / rect.height(), 1.0)
        if fits >= readable:
            self.fit()
        else:
            self._frame_start(rect, comfortable_zoom())
        self._auto_framed = True

    def _frame_start(self, rect: QRectF, zoom: float) -> None:
        """Zoom to ``zoom`` with the graph's left edge at the view's left edge, centred vertically
        on the inputs seen there."""
        scene = self.graph_scene()
        self.resetTransform()
        self.scale(zoom, zoom)
        vp = self.viewport().rect()
        reserve = self._reserved() / zoom
        w, h = vp.width() / zoom, vp.height() / zoom - reserve
        sources = scene.source_cards()
        firsts = [r for r in sources if r.left() < rect.left() + w * 0.6] or sources
        cy = sum(r.center().y() for r in firsts) / len(firsts) if firsts else rect.center().y()
        if rect.height() <= h:
            top = rect.center().y() - h / 2
        else:
            top = min(max(cy - h / 2, rect.top()), rect.bottom() - h)
        left = rect.left() if rect.width() > w else rect.center().x() - w / 2
        if rect.height() > h:  # a card cut by the top edge (or under the line there) starts the view
            cut = [r.top() for item in scene.nodes.values() if item.isVisible() for r in [item.card_rect()]
                   if r.top() < top + 2 < r.bottom() and r.right() > left and r.left() < left + w]
            if cut:
                top = min(cut) - 12
        self.centerOn(QPointF(left + w / 2, top + h / 2 - reserve / 2))
        self.zoom_changed.emit(self.zoom())
        self.view_changed.emit()

    def legibility(self) -> dict[str, float | None]:
        """The zoom and the smallest on-screen height (pixels) of the canvas text in view:
        node titles, port names, params and wire texts. Text a card does not draw at this zoom
        (too far away) counts as 0: it has vanished."""
        scene = self.graph_scene()
        zoom = self.zoom()
        seen = self.mapToScene(self.viewport().rect()).boundingRect()
        heights: list[float] = []
        for item in scene.nodes.values():
            if not item.isVisible() or not item.card_rect().intersects(seen):
                continue
            for role in item.text_roles():
                drawn = zoom >= (0.35 if role in ("title", "badge") else 0.4)
                heights.append(font_px(role) * zoom if drawn else 0.0)
        for link in scene.links.values():
            for label in link.labels.values():
                if label.isVisible() and label.text and label.scene_rect().intersects(seen):
                    heights.append(font_px("label") * zoom if zoom >= 0.25 else 0.0)
        return {"zoom": round(zoom, 4), "min_text_px": round(min(heights), 2) if heights else None}

    def fit(self, rect: QRectF | None = None) -> None:
        """Fit the whole graph (or ``rect``), never zooming in past 100 %."""
        scene = self.graph_scene()
        self._auto_framed = False
        rect = rect if rect is not None else scene.items_bounding_rect()
        if rect.isNull() or rect.isEmpty():
            self.resetTransform()
            self.centerOn(0, 0)
            self.zoom_changed.emit(1.0)
            return
        rect = rect.adjusted(-FRAME, -FRAME, FRAME, FRAME)
        vp = self.viewport().rect()
        reserve = self._reserved()
        factor = min(vp.width() / rect.width(), (vp.height() - reserve) / rect.height(), 1.0)
        self.resetTransform()
        factor = min(MAX_ZOOM, max(MIN_ZOOM, factor))
        self.scale(factor, factor)
        self.centerOn(rect.center() - QPointF(0, reserve / 2 / factor))
        self.zoom_changed.emit(self.zoom())
        self.view_changed.emit()

    def reveal(self, rect: QRectF, margin: float = 24.0) -> None:
        """Pan the least that shows ``rect`` (scene coordinates) whole, below the headline, as a
        debugger keeps its current line in view; nothing moves when it is seen already. It does
        not count as the user's pan (a resize still frames the graph again)."""
        zoom = self.zoom()
        m, top = margin / zoom, self._reserved() / zoom
        inner = self.mapToScene(self.viewport().rect()).boundingRect().adjusted(m, m + top, -m, -m)
        if inner.isEmpty() or inner.contains(rect):
            return

        def shift(lo: float, hi: float, inner_lo: float, inner_hi: float) -> float:
            if hi - lo > inner_hi - inner_lo or lo < inner_lo:
                return lo - inner_lo
            return max(0.0, hi - inner_hi)

        dx = shift(rect.left(), rect.right(), inner.left(), inner.right())
        dy = shift(rect.top(), rect.bottom(), inner.top(), inner.bottom())
        h, v = self.horizontalScrollBar(), self.verticalScrollBar()
        h.setValue(h.value() + int(round(dx * zoom)))
        v.setValue(v.value() + int(round(dy * zoom)))

    def pan_by(self, dx: float, dy: float) -> None:
        """Pan by a number of viewport pixels."""
        self._auto_framed = False
        h, v = self.horizontalScrollBar(), self.verticalScrollBar()
        h.setValue(h.value() + int(round(dx)))
        v.setValue(v.value() + int(round(dy)))

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        if self._auto_framed:
            self.show_graph()

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        self.view_changed.emit()

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y() or event.angleDelta().x()
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier and not event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.pan_by(-delta, 0)
            return
        self.set_zoom(self.zoom() * math.pow(1.0015, delta), anchor=event.position())
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.MiddleButton or (
                event.button() == Qt.MouseButton.LeftButton and self._space):
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.pan_by(-delta.x(), -delta.y())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            self._pan_from = None
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor if self._space else Qt.CursorShape.ArrowCursor)
            event.accept()
            return
        super().mouseReleaseEvent(event)
        # The release ending a rubber band is "ignored" by QGraphicsView; it was handled.
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            event.accept()
            return
        if event.key() == Qt.Key.Key_Tab and not event.modifiers():
            self.request_search()
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self._pan_from = None
            self.viewport().setCursor(Qt.CursorShape.ArrowCursor)
            event.accept()
            return
        super().keyReleaseEvent(event)

    def focusNextPrevChild(self, next: bool) -> bool:
        # Tab opens the block search on the canvas instead of moving the focus.
        return False

    def request_search(self) -> None:
        pos = self.mapFromGlobal(self.cursor().pos())
        if not self.viewport().rect().contains(pos):
            pos = self.viewport().rect().center()
        self.search_requested.emit(self.mapToScene(pos))

    def contextMenuEvent(self, event: Any) -> None:
        self.context_requested.emit(self.mapToScene(event.pos()), event.globalPos())
        event.accept()

    # --- drops ----------------------------------------------------------------------------------

    def dragEnterEvent(self, event: Any) -> None:
        mime = event.mimeData()
        if mime.hasFormat(PALETTE_MIME) or mime.hasUrls():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: Any) -> None:
        mime = event.mimeData()
        if mime.hasFormat(PALETTE_MIME) or mime.hasUrls():
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event: Any) -> None:
        mime = event.mimeData()
        if mime.hasFormat(PALETTE_MIME):
            data = _palette_data(bytes(mime.data(PALETTE_MIME)))
            if data is None:  # not what our palette writes (another program's drag): not ours to drop
                event.ignore()
                return
            self.block_dropped.emit(data[0], data[1], self.mapToScene(event.position().toPoint()))
            event.acceptProposedAction()
            return
        if mime.hasUrls():
            paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
            if paths:
                self.files_dropped.emit(paths)
                event.acceptProposedAction()
                return
        super().dropEvent(event)

    # --- background -----------------------------------------------------------------------------

    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:
        scene = self.graph_scene()
        theme = scene.theme
        painter.fillRect(rect, theme.background)
        zoom = self.zoom()
        step = GRID
        while step * zoom < 14:  # keep dots at least 14 px apart on screen
            step *= 4
        # the dots of the grid in the exposed rect, as one array of points (a QPointF made in
        # Python per dot costs ~1 µs each, and a canvas repaints a few times a second while
        # training: thousands of dots on a large window)
        xs = np.arange(math.floor(rect.left() / step) * step, rect.right(), step)
        ys = np.arange(math.floor(rect.top() / step) * step, rect.bottom(), step)
        points = _polygon(np.tile(xs, len(ys)), np.repeat(ys, len(xs)))
        painter.setPen(self.grid_pen())
        painter.drawPoints(points)

    def grid_pen(self) -> QPen:
        """The pen of the background's dots at the current zoom."""
        zoom = self.zoom()
        pen = QPen(self.graph_scene().theme.grid, max(1.6 / zoom, 1.0) if zoom < 1 else 1.8)
        pen.setCosmetic(zoom >= 1)
        return pen


def _polygon(x: np.ndarray, y: np.ndarray) -> QPolygonF:
    """The points ``(x[i], y[i])`` as a QPolygonF, written through its buffer (a QPointF made
    in Python per point costs ~1 µs). NOTE: not pyqtgraph's ``arrayToQPolygonF``: importing
    pyqtgraph here would add it to the editor's start-up, which loads it only for the plots."""
    poly = QPolygonF()
    n = len(x)
    if n:
        poly.resize(n)
        xy = np.frombuffer(shiboken6.VoidPtr(poly.data(), n * 16, True), np.float64).reshape(n, 2)
        xy[:, 0], xy[:, 1] = x, y
    return poly


def _palette_data(raw: bytes) -> tuple[str, dict] | None:
    """(block type, params) from a palette drag's data, or None when it is not that (the drag
    may come from any program): parsed within the bounds every JSON from outside gets."""
    from engine import serialize
    from engine.errors import FileFormatError

    try:
        data = serialize.parse_json(raw.decode("utf-8", errors="replace"))
    except FileFormatError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("type_id"), str):
        return None
    params = data.get("params", {})
    return (data["type_id"], dict(params)) if isinstance(params, dict) else None
