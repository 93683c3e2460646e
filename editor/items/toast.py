"""A message shown where the user is looking (at the cursor), e.g. why a link was refused."""

from __future__ import annotations

from PySide6.QtCore import QObject, QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

from editor.items.fonts import font, metrics

MAX_WIDTH = 380.0


class Toast(QGraphicsItem):
    """Drawn at a constant screen size (ignores zoom); hides itself after a few seconds."""

    def __init__(self, owner: QObject | None = None) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self.setZValue(100)
        self.text = ""
        self.error = True
        self._rect = QRectF()
        # Owned by the scene: a pending timeout dies with it instead of firing on a deleted item.
        self._timer = QTimer(owner)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.hide()

    def show_message(self, text: str, at: QPointF, *, error: bool = True, msec: int = 4000) -> None:
        self.prepareGeometryChange()
        self.text = text
        self.error = error
        fm = metrics("toast")
        r = fm.boundingRect(QRectF(0, 0, MAX_WIDTH, 2000), int(Qt.TextFlag.TextWordWrap), text)
        self._rect = QRectF(14, 14, r.width() + 20, r.height() + 14)
        self.setPos(at)
        self.show()
        self.update()
        if msec > 0:
            self._timer.start(msec)
        else:
            self._timer.stop()

    @property
    def timed(self) -> bool:
        """True while a message with a time limit is showing (not a hover hint)."""
        return self._timer.isActive()

    def boundingRect(self) -> QRectF:
        return self._rect.adjusted(-2, -2, 2, 2)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        theme = self.scene().theme
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fill = QColor(theme.error if self.error else theme.label_bg)
        fill.setAlpha(240)
        painter.setPen(QPen(fill.darker(130), 1))
        painter.setBrush(fill)
        painter.drawRoundedRect(self._rect, 7, 7)
        painter.setPen(QColor("#ffffff") if self.error else theme.text)
        painter.setFont(font("toast"))
        painter.drawText(self._rect.adjusted(10, 7, -10, -7), int(Qt.TextFlag.TextWordWrap), self.text)
