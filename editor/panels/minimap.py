"""A minimap in the corner of the canvas: every node as a small coloured box, the visible part
as a frame; click or drag on it to move there. Cheap to draw (no text, no scene rendering), so
it costs nothing while panning big graphs. Shown only when the graph does not fit the view."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget

from editor.view import GraphView

SIZE = (220, 150)
MARGIN = 12


class Minimap(QWidget):
    def __init__(self, view: GraphView) -> None:
        super().__init__(view.viewport())
        self.view = view
        self.enabled_by_user = True
        self.resize(*SIZE)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self._rects: list[tuple[QRectF, QColor]] = []
        self._world = QRectF()
        self._pending = QTimer(self)
        self._pending.setSingleShot(True)
        self._pending.setInterval(30)
        self._pending.timeout.connect(self.rebuild)
        view.view_changed.connect(self._on_view_changed)
        self.hide()

    def schedule(self) -> None:
        """Coalesce many document changes into one rebuild."""
        self._pending.start()

    def rebuild(self) -> None:
        scene = self.view.graph_scene()
        if scene is None:
            return
        self._rects = [(item.sceneBoundingRect(), item.category_colour) for item in scene.nodes.values() if item.isVisible()]
        self._world = scene.items_bounding_rect()
        self._on_view_changed()

    def _visible_rect(self) -> QRectF:
        return self.view.mapToScene(self.view.viewport().rect()).boundingRect()

    def _on_view_changed(self) -> None:
        vp = self.view.viewport()
        self.move(vp.width() - self.width() - MARGIN, vp.height() - self.height() - MARGIN)
        big = not self._world.isEmpty() and not self._visible_rect().contains(self._world)
        self.setVisible(self.enabled_by_user and big and len(self._rects) > 1)
        if self.isVisible():
            self.update()

    def _frame(self) -> tuple[QRectF, float, QPointF]:
        world = self._world.united(self._visible_rect()).adjusted(-40, -40, 40, 40)
        inner = QRectF(self.rect()).adjusted(6, 6, -6, -6)
        scale = min(inner.width() / max(world.width(), 1), inner.height() / max(world.height(), 1))
        offset = QPointF(inner.left() + (inner.width() - world.width() * scale) / 2 - world.left() * scale,
                         inner.top() + (inner.height() - world.height() * scale) / 2 - world.top() * scale)
        return world, scale, offset

    def paintEvent(self, event: QPaintEvent) -> None:
        theme = self.view.graph_scene().theme
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        bg = QColor(theme.node_body)
        bg.setAlpha(225)
        p.setPen(QPen(theme.node_border, 1))
        p.setBrush(bg)
        p.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 8, 8)
        _, scale, off = self._frame()
        p.setPen(Qt.PenStyle.NoPen)
        for rect, colour in self._rects:
            p.setBrush(colour)
            p.drawRect(QRectF(rect.left() * scale + off.x(), rect.top() * scale + off.y(),
                              max(2.0, rect.width() * scale), max(2.0, rect.height() * scale)))
        vis = self._visible_rect()
        frame = QRectF(vis.left() * scale + off.x(), vis.top() * scale + off.y(), vis.width() * scale, vis.height() * scale)
        p.setPen(QPen(theme.selected, 1.5))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(frame)
        p.end()

    def _go(self, pos: QPointF) -> None:
        _, scale, off = self._frame()
        self.view.centerOn(QPointF((pos.x() - off.x()) / scale, (pos.y() - off.y()) / scale))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self._go(event.position())
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._go(event.position())
        event.accept()
