"""Widgets that change without laying out the window: the toolbar's icon-only buttons (an action's
new icon, text, tip or enabled state repaints its button, a new visibility still lays the bar out)
and :class:`editor.panels.steady.Steady` (a held label's new text repaints it; a wider one grows
the holder)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication, QHBoxLayout, QLabel, QMainWindow, QWidget

from editor.icons import icon
from editor.panels.steady import Steady
from editor.toolbar import ToolBar

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints")


class Layouts(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def eventFilter(self, obj, event):  # noqa: N802
        if event.type() == QEvent.Type.LayoutRequest:
            self.n += 1
        return False


def settle() -> None:
    for _ in range(4):
        QApplication.processEvents()


def test_a_toolbar_action_changing_repaints_its_button_and_lays_out_nothing(qtbot):
    w = QMainWindow()
    qtbot.addWidget(w)
    bar = ToolBar("t", w)
    w.addToolBar(bar)
    a, b = QAction(icon("train"), "&Train", w), QAction(icon("stop"), "S&top", w)
    bar.addAction(a)
    bar.addAction(b)
    w.setCentralWidget(QWidget())
    w.show()
    settle()
    button = bar.widgetForAction(a)
    size = button.size()
    layouts = Layouts()
    w.installEventFilter(layouts)
    bar.installEventFilter(layouts)
    a.setIcon(icon("pause"))
    a.setText("&Pause Training")
    a.setToolTip("Pause training")
    a.setEnabled(False)
    settle()
    assert layouts.n == 0
    assert not button.isEnabled() and button.toolTip() == "Pause training" and button.size() == size
    assert button.icon().cacheKey() == a.icon().cacheKey()  # the button follows its action
    b.setVisible(False)  # a button that goes: the bar lays out again, and the button is hidden
    settle()
    assert layouts.n > 0 and not bar.widgetForAction(b).isVisible()
    b.setVisible(True)
    settle()
    assert bar.widgetForAction(b).isVisible()


def test_a_held_label_repaints_and_grows_only_when_wider(qtbot):
    top = QWidget()
    qtbot.addWidget(top)
    row = QHBoxLayout(top)
    label = QLabel("short")
    holder = Steady(label, grow=True)
    row.addWidget(holder)
    row.addStretch(1)
    top.show()
    settle()
    layouts = Layouts()
    top.installEventFilter(layouts)
    label.setText("shirt")  # a new text no wider: nothing laid out
    settle()
    assert layouts.n == 0 and label.width() >= label.sizeHint().width()
    label.setText("a much longer text than before")  # wider: the holder grows, once
    settle()
    assert layouts.n >= 1 and label.width() >= label.sizeHint().width()
    wide = holder.width()
    label.setText("short")
    settle()
    assert holder.width() == wide  # (no narrower: nothing laid out)
    holder.refit()  # a new start: as wide as its text
    settle()
    assert holder.width() < wide
    holder.hide()
    label.setText("a text set while the holder was hidden, and longer")
    holder.show()
    settle()
    assert label.width() >= label.sizeHint().width()  # shown whole
