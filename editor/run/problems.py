"""The Problems list: NaN/Inf, vanishing and exploding gradients found in the pass, each naming
its node; activating one jumps there (opening composites on the way)."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from editor.run.controller import RunController
from editor.run.timeline import Path, Problem

_COLOURS = {"nan": "#ff3b30", "inf": "#ff3b30", "exploding": "#ff6a00", "vanishing": "#2b7bb9"}
_WORDS = {"nan": "NaN", "inf": "Inf", "exploding": "exploding", "vanishing": "vanishing"}


def _dot(colour: str) -> QIcon:
    pm = QPixmap(12, 12)
    pm.fill(QColor(colour))
    return QIcon(pm)


class ProblemsPanel(QWidget):
    """Lists the pass's problems; ``jump(path)`` shows and selects the node at ``path``."""

    def __init__(self, controller: RunController, jump: Callable[[Path, int], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.jump = jump
        col = QVBoxLayout(self)
        col.setContentsMargins(4, 4, 4, 4)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        col.addWidget(self.summary)
        self.list = QListWidget()
        self.list.setObjectName("problems_list")
        self.list.itemActivated.connect(self._activated)
        self.list.itemClicked.connect(self._activated)
        col.addWidget(self.list)
        self.problems: list[Problem] = []
        controller.problems_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        tl = self.controller.timeline
        self.problems = list(tl.problems) if tl is not None else []
        self.list.clear()
        for k, p in enumerate(self.problems):
            inside = f"  (inside: {' › '.join(self._names(p.path[:-1]))})" if len(p.path) > 1 else ""
            item = QListWidgetItem(_dot(_COLOURS.get(p.kind, "#888")), f"{_WORDS.get(p.kind, p.kind)} · {p.message}{inside}")
            item.setData(Qt.ItemDataRole.UserRole, k)
            item.setToolTip("Click to show this node")
            self.list.addItem(item)
        n = len(self.problems)
        if tl is None:
            self.summary.setText("No pass yet.")
        elif n == 0:
            self.summary.setText("No problems: every value and gradient is finite, and no weight's gradient vanishes "
                                 "(< 1e−7) or explodes (> 1e3)." if tl.finished else "No problems so far.")
        else:
            self.summary.setText(f"{n} problem{'s' if n != 1 else ''} in this pass; click one to show its node.")

    def _names(self, path: Path) -> list[str]:
        return [self.controller.labels.get(path[0], path[0])] + list(path[1:]) if path else []

    def _activated(self, item: QListWidgetItem) -> None:
        p = self.problems[item.data(Qt.ItemDataRole.UserRole)]
        self.jump(p.path, p.frame)
