"""The block search popup (Tab or double-click on the canvas): type, arrow, Enter."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPoint, QPointF, Qt, Signal
from PySide6.QtGui import QGuiApplication, QKeyEvent
from PySide6.QtWidgets import QFrame, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from editor.panels.blockinfo import spec_tooltip
from editor.panels.palette import PARAMS_ROLE, TYPE_ROLE, rank
from engine import blocks

WIDTH = 300
MAX_ROWS = 12


class BlockSearch(QFrame):
    """A popup list of blocks filtered as you type; emits ``chosen(type_id, params, scene_pos)``."""

    chosen = Signal(str, dict, QPointF)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Popup)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("Insert block…")
        self.list = QListWidget()
        self.list.setUniformItemSizes(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        layout.addWidget(self.edit)
        layout.addWidget(self.list)
        self.resize(WIDTH, 320)
        self.scene_pos = QPointF()
        self._anchor = QPoint(0, 0)
        self.entries = blocks.palette()
        self.edit.textChanged.connect(self.filter)
        self.edit.returnPressed.connect(self.accept_current)
        self.list.itemActivated.connect(lambda _item: self.accept_current())
        self.edit.installEventFilter(self)

    def popup(self, global_pos: QPoint, scene_pos: QPointF) -> None:
        self.scene_pos = scene_pos
        self._anchor = global_pos
        self.edit.clear()
        self.filter("")
        self.show()
        self.edit.setFocus()

    def _fit(self) -> None:
        """As tall as its results (at most MAX_ROWS of them), and inside the screen."""
        rows = max(1, min(MAX_ROWS, self.list.count()))
        row_h = self.list.sizeHintForRow(0) if self.list.count() else self.list.fontMetrics().height() + 6
        list_h = rows * row_h + 2 * self.list.frameWidth() + 2
        self.list.setFixedHeight(list_h)
        self.layout().activate()  # the frame's minimum follows the list before it is resized
        margins = self.layout().contentsMargins()
        height = margins.top() + self.edit.sizeHint().height() + self.layout().spacing() + list_h + margins.bottom() + 2
        self.resize(WIDTH, height)
        screen = QGuiApplication.screenAt(self._anchor) or QGuiApplication.primaryScreen()
        area = screen.availableGeometry() if screen is not None else None
        x, y = self._anchor.x(), self._anchor.y()
        if area is not None:
            x = min(max(area.left(), x), area.right() - WIDTH)
            if y + height > area.bottom():
                y = max(area.top(), self._anchor.y() - height)  # open upwards near the bottom
        self.move(x, y)

    def filter(self, text: str) -> None:
        """Show the matching blocks, best first (a label starting with the text leads)."""
        ranked = []
        for i, entry in enumerate(self.entries):
            r = rank(text, entry.label, entry.type_id, entry.category.value)
            if r is not None:
                ranked.append((r, i, entry))
        ranked.sort(key=lambda t: (t[0], t[1]))
        self.list.clear()
        for _, _, entry in ranked:
            item = QListWidgetItem(entry.label)
            item.setData(TYPE_ROLE, entry.type_id)
            item.setData(PARAMS_ROLE, dict(entry.params))
            item.setToolTip(spec_tooltip(entry.spec, entry.label))
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)
        self._fit()

    def accept_current(self) -> None:
        item = self.list.currentItem()
        if item is None or item.isHidden():
            return
        self.hide()
        self.chosen.emit(item.data(TYPE_ROLE), dict(item.data(PARAMS_ROLE) or {}), self.scene_pos)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.edit and event.type() == QEvent.Type.KeyPress:
            key = QKeyEvent(event).key() if not isinstance(event, QKeyEvent) else event.key()
            if key in (Qt.Key.Key_Down, Qt.Key.Key_Up):
                step = 1 if key == Qt.Key.Key_Down else -1
                row = self.list.currentRow()
                n = self.list.count()
                r = row
                for _ in range(n):
                    r = (r + step) % n
                    if not self.list.item(r).isHidden():
                        self.list.setCurrentRow(r)
                        break
                return True
            if key == Qt.Key.Key_Escape:
                self.hide()
                return True
        return super().eventFilter(obj, event)
