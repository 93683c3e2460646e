"""The block palette: every registered block (and variant), grouped by category, with a search
box and the spec as a tooltip. Entries drag onto the canvas or insert on double-click."""

from __future__ import annotations

import json
from typing import Any, Mapping

from PySide6.QtCore import QMimeData, QPoint, Qt, Signal
from PySide6.QtGui import QColor, QDrag, QFont, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout,
                               QWidget)

from editor.panels.blockinfo import spec_tooltip
from editor.theme import CATEGORY_COLOURS
from editor.view import PALETTE_MIME
from engine import blocks

TYPE_ROLE = Qt.ItemDataRole.UserRole
PARAMS_ROLE = Qt.ItemDataRole.UserRole + 1


def palette_mime(type_id: str, params: Mapping[str, Any]) -> QMimeData:
    """The mime data a palette drag carries (and what a test sends in a QDropEvent)."""
    mime = QMimeData()
    mime.setData(PALETTE_MIME, json.dumps({"type_id": type_id, "params": dict(params)}).encode("utf-8"))
    mime.setText(type_id)
    return mime


def _swatch(colour: str) -> QIcon:
    pm = QPixmap(12, 12)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor(colour))
    p.drawRoundedRect(1, 1, 10, 10, 3, 3)
    p.end()
    return QIcon(pm)


def rank(query: str, label: str, *texts: str) -> int | None:
    """How well a block matches the query (lower is better), or None: label prefix, then a word
    of the label/type/category, then the query's letters in order in the label."""
    q = query.strip().lower()
    if not q:
        return 0
    lab = label.lower()
    if lab.startswith(q):
        return 0
    if q in lab:
        return 1
    if matches(query, label, *texts):
        hay = " ".join((label,) + texts).lower()
        return 2 if all(word in hay for word in q.split()) else 3
    return None


def matches(query: str, *texts: str) -> bool:
    """Case-insensitive: every word of the query is in one of the texts, or the query's letters
    appear in order in the label (so "lnorm" finds LayerNorm)."""
    q = query.strip().lower()
    if not q:
        return True
    hay = " ".join(texts).lower()
    if all(word in hay for word in q.split()):
        return True
    label = texts[0].lower() if texts else ""
    it = iter(label)
    return all(ch in it for ch in q.replace(" ", ""))


def _drag_pixmap(label: str, category: str, ratio: float) -> QPixmap:
    """A small node header under the cursor while dragging a block from the palette."""
    colour = next((c for cat, c in CATEGORY_COLOURS.items() if cat.value == category), "#607080")
    w, h = 140, 26
    pm = QPixmap(int(w * ratio), int(h * ratio))
    pm.setDevicePixelRatio(ratio)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(Qt.PenStyle.NoPen)
    fill = QColor(colour)
    fill.setAlpha(225)
    p.setBrush(fill)
    p.drawRoundedRect(0, 0, w, h, 7, 7)
    p.setPen(QColor("#ffffff"))
    font = p.font()
    font.setBold(True)
    p.setFont(font)
    p.drawText(10, 0, w - 16, h, int(Qt.AlignmentFlag.AlignVCenter), label)
    p.end()
    return pm


class _Tree(QTreeWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHeaderHidden(True)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setIndentation(12)
        self.setRootIsDecorated(True)
        self.setUniformRowHeights(True)
        self.setAnimated(True)

    def mimeData(self, items: list[QTreeWidgetItem]) -> QMimeData:
        item = items[0]
        return palette_mime(item.data(0, TYPE_ROLE), item.data(0, PARAMS_ROLE) or {})

    def mimeTypes(self) -> list[str]:
        return [PALETTE_MIME]

    def startDrag(self, actions: Any) -> None:
        item = self.currentItem()
        if item is None or item.data(0, TYPE_ROLE) is None:
            return
        drag = QDrag(self)
        drag.setMimeData(self.mimeData([item]))
        drag.setPixmap(_drag_pixmap(item.text(0), item.parent().text(0) if item.parent() else "", self.devicePixelRatioF()))
        drag.setHotSpot(QPoint(60, 12))
        drag.exec(Qt.DropAction.CopyAction)


class Palette(QWidget):
    """Search box + grouped tree. ``activated(type_id, params)`` on double-click / Enter."""

    activated = Signal(str, dict)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search blocks…")
        self.search.setClearButtonEnabled(True)
        self.tree = _Tree()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(6)
        layout.addWidget(self.search)
        layout.addWidget(self.tree)
        self.search.textChanged.connect(self.filter)
        self.search.returnPressed.connect(self._activate_first)
        self.tree.itemActivated.connect(self._on_activated)
        self.categories: dict[str, QTreeWidgetItem] = {}
        self.populate()

    def populate(self) -> None:
        self.tree.clear()
        self.categories.clear()
        bold = QFont()
        bold.setBold(True)
        for entry in blocks.palette():
            cat = entry.category.value
            group = self.categories.get(cat)
            if group is None:
                group = QTreeWidgetItem([cat])
                group.setFont(0, bold)
                group.setFlags(Qt.ItemFlag.ItemIsEnabled)
                group.setIcon(0, _swatch(CATEGORY_COLOURS.get(entry.category, "#607080")))
                self.tree.addTopLevelItem(group)
                self.categories[cat] = group
            item = QTreeWidgetItem([entry.label])
            item.setData(0, TYPE_ROLE, entry.type_id)
            item.setData(0, PARAMS_ROLE, dict(entry.params))
            item.setToolTip(0, spec_tooltip(entry.spec, entry.label))
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsDragEnabled)
            group.addChild(item)
        self.tree.expandAll()

    def entries(self) -> list[QTreeWidgetItem]:
        out = []
        for group in self.categories.values():
            out.extend(group.child(i) for i in range(group.childCount()))
        return out

    def find(self, label: str) -> QTreeWidgetItem | None:
        for item in self.entries():
            if item.text(0) == label:
                return item
        return None

    def filter(self, text: str) -> None:
        for group in self.categories.values():
            shown = 0
            for i in range(group.childCount()):
                item = group.child(i)
                ok = matches(text, item.text(0), item.data(0, TYPE_ROLE), group.text(0))
                item.setHidden(not ok)
                shown += ok
            group.setHidden(shown == 0)
        self.tree.expandAll()

    def visible_entries(self) -> list[QTreeWidgetItem]:
        return [i for i in self.entries() if not i.isHidden() and not i.parent().isHidden()]

    def _activate_first(self) -> None:
        visible = self.visible_entries()
        if visible:
            self._on_activated(visible[0])

    def _on_activated(self, item: QTreeWidgetItem, column: int = 0) -> None:
        type_id = item.data(0, TYPE_ROLE)
        if type_id:
            self.activated.emit(type_id, dict(item.data(0, PARAMS_ROLE) or {}))
