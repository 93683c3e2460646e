"""A minimap in a corner of the canvas: every node as a small coloured box, the visible part as a
frame; click or drag on it to move there. Cheap to draw (no text, no scene rendering), so it
costs nothing while panning big graphs.

It never covers a node: it shows only while the graph does not fit the view, in the first corner
(the user's choice first) where no card is under it, and hides when every corner is taken. Drag
its grip (the top strip) to another corner to move it; View ▸ Minimap (M) toggles it.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, QRect, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget

from editor.view import GraphView

SIZE = (220, 150)
MARGIN = 12
GRIP = 12  # the strip along the top that moves the minimap
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


class Minimap(QWidget):
    def __init__(self, view: GraphView) -> None:
        super().__init__(view.viewport())
        self.view = view
        view.minimap = self  # the canvas's other corner widgets (the run's legend) keep off it
        self.enabled_by_user = True
        self.corner = "bottom-right"  # where the user put it (tried first)
        self.resize(*SIZE)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Click or drag to move the view; drag the top strip to another corner")
        self._rects: list[tuple[QRectF, QColor]] = []
        self._world = QRectF()
        self._moving: QPoint | None = None
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
        self._rects = [(item.card_rect(), item.category_colour) for item in scene.nodes.values() if item.isVisible()]
        self._world = scene.items_bounding_rect()
        self._on_view_changed()

    def _visible_rect(self) -> QRectF:
        return self.view.mapToScene(self.view.viewport().rect()).boundingRect()

    def _spot(self, corner: str) -> QRect:
        vp = self.view.viewport()
        x = MARGIN if corner.endswith("left") else vp.width() - self.width() - MARGIN
        y = MARGIN if corner.startswith("top") else vp.height() - self.height() - MARGIN
        return QRect(x, y, self.width(), self.height())

    def _covers_a_card(self, spot: QRect) -> bool:
        scene = self.view.graph_scene()
        if scene is None:
            return False
        area = self.view.mapToScene(QRectF(spot).adjusted(-2, -2, 2, 2).toRect()).boundingRect()
        return scene.card_grid().hits(area)  # a spatial index: cheap every frame

    def settle(self) -> None:
        """Take the corner it would take for the view as it is now (other corner widgets ask
        first, to keep off it)."""
        self._on_view_changed()

    def _on_view_changed(self) -> None:
        if self._moving is not None:
            return
        big = not self._world.isEmpty() and not self._visible_rect().contains(self._world)
        show = self.enabled_by_user and big and len(self._rects) > 1
        if show:
            order = [self.corner] + [c for c in CORNERS if c != self.corner]
            free = next((c for c in order if not self._covers_a_card(self._spot(c))), None)
            if free is None:
                show = False
            else:
                self.move(self._spot(free).topLeft())
        self.setVisible(show)
        if show:
            self.update()

    def _frame(self) -> tuple[QRectF, float, QPointF]:
        world = self._world.united(self._visible_rect()).adjusted(-40, -40, 40, 40)
        inner = QRectF(self.rect()).adjusted(6, GRIP, -6, -6)
        scale = min(inner.width() / max(world.width(), 1), inner.height() / max(world.height(), 1))
        offset = QPointF(inner.left() + (inner.width() - world.width() * scale) / 2 - world.left() * scale,
                         inner.top() + (inner.height() - world.height() * scale) / 2 - world.top() * scale)
        return world, scale, offset

    def paintEvent(self, event: QPaintEvent) -> None:
        theme = self.view.graph_scene().theme
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        bg = QColor(theme.node_body)
        bg.setAlpha(235)
        p.setPen(QPen(theme.node_border, 1))
        p.setBrush(bg)
        p.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 8, 8)
        # the grip: three short lines centred in the top strip
        p.setPen(QPen(theme.text_dim, 1.2))
        cx = self.width() / 2
        for dy in (4.0, 7.0):
            p.drawLine(QPointF(cx - 12, dy), QPointF(cx + 12, dy))
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
        if event.position().y() < GRIP:
            self._moving = event.position().toPoint()
            self.setCursor(Qt.CursorShape.SizeAllCursor)
        else:
            self._go(event.position())
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._moving is not None:
            self.move(self.mapToParent(event.position().toPoint() - self._moving))
        elif event.buttons() & Qt.MouseButton.LeftButton:
            self._go(event.position())
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._moving is not None:
            # settle in the corner nearest to where it was dropped
            self._moving = None
            self.setCursor(Qt.CursorShape.PointingHandCursor)
            centre = self.geometry().center()
            vp = self.view.viewport()
            self.corner = ("top" if centre.y() < vp.height() / 2 else "bottom") + "-" + \
                ("left" if centre.x() < vp.width() / 2 else "right")
            self._on_view_changed()
        event.accept()
