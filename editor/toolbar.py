"""The window's toolbar and the icons on its menus.

The toolbar holds the common actions as icons (new, open, save · undo, redo · fit, auto-layout,
zoom · the lessons); the run controls join it after its last separator (``RUN_GROUP``: add them
with ``window.toolbar.addActions(...)``). Menu items get the same icons, where desktop
applications show them (files, edits, the view).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QActionEvent
from PySide6.QtWidgets import QToolBar, QToolButton, QWidget, QWidgetAction

from editor.icons import app_icon, icon

#: window attribute → icon name
MENU_ICONS = {
    "act_new": "new", "act_open": "open", "act_save": "save", "act_save_as": "save-as", "act_quit": "quit",
    "act_undo": "undo", "act_redo": "redo", "act_cut": "cut", "act_copy": "copy", "act_paste": "paste",
    "act_duplicate": "duplicate", "act_delete": "delete", "act_select_all": "select-all", "act_rename": "rename",
    "act_zoom_in": "zoom-in", "act_zoom_out": "zoom-out", "act_fit": "fit", "act_zoom_reset": "zoom-reset",
    "act_layout": "layout", "act_minimap": "minimap", "act_insert": "insert", "act_open_inside": "open-inside",
    "act_expand": "expand", "act_back": "back",
}
ICON_SIZE = 20
QWIDGETSIZE_MAX = (1 << 24) - 1  # (Qt's: no maximum size)


class ToolBar(QToolBar):
    """A toolbar that lays itself out again only when its buttons can change size.

    A ``QToolBar`` lays itself out again at each change of one of its actions (its icon, text,
    tip, enabled state), and then the whole window: ``QMainWindow`` lays out its docks and
    toolbars with an animation per dock. Training changes Train's icon, text and tip and
    disables the run buttons at each start and end of a run (a few ms of the GUI thread each
    time). Here an icon-only button has a fixed size (its size hint's: its icon's and its style's,
    pinned again when they change), so a change of its action only repaints it (the button
    follows its action itself); a change of an action's visibility still lays the bar out.
    """

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self._visible: dict[QAction, bool] = {}
        self.iconSizeChanged.connect(lambda _size: self._pin_all())
        self.toolButtonStyleChanged.connect(lambda _style: self._pin_all())

    def _steady(self, action: QAction) -> bool:
        return (self.toolButtonStyle() == Qt.ToolButtonStyle.ToolButtonIconOnly and not isinstance(action, QWidgetAction)
                and isinstance(self.widgetForAction(action), QToolButton))

    def _pin(self, action: QAction) -> None:
        button = self.widgetForAction(action)
        if not isinstance(button, QToolButton) or isinstance(action, QWidgetAction):
            return
        if self.toolButtonStyle() == Qt.ToolButtonStyle.ToolButtonIconOnly:
            button.setFixedSize(button.sizeHint())
        else:  # (its text may change its size: the bar lays out again, as QToolBar does)
            button.setMinimumSize(0, 0)
            button.setMaximumSize(QWIDGETSIZE_MAX, QWIDGETSIZE_MAX)

    def _pin_all(self) -> None:
        for action in self.actions():
            self._pin(action)

    def actionEvent(self, event: QActionEvent) -> None:  # noqa: N802
        action = event.action()
        kind = event.type()
        if kind == QEvent.Type.ActionChanged and self._visible.get(action) == action.isVisible() and self._steady(action):
            return  # its button, of a fixed size, follows the action by itself: nothing to lay out
        super().actionEvent(event)
        if kind == QEvent.Type.ActionRemoved:
            self._visible.pop(action, None)
            return
        self._visible[action] = action.isVisible()
        if kind == QEvent.Type.ActionAdded:
            self._pin(action)

    def event(self, event: QEvent) -> bool:
        if event.type() in (QEvent.Type.StyleChange, QEvent.Type.FontChange):
            QTimer.singleShot(0, self, self._pin_all)  # (once the buttons have their new style)
        return super().event(event)


def _tip(action: Any) -> None:
    """Tooltips name the action and its shortcut ("Save (Ctrl+S)")."""
    text = action.text().replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip("…")
    keys = action.shortcut().toString(action.shortcut().SequenceFormat.NativeText)
    action.setToolTip(f"{text} ({keys})" if keys else text)


def install(window: Any) -> QToolBar:
    """Put icons on the window's menus and build its toolbar; returns the toolbar."""
    window.setWindowIcon(app_icon())
    for attr, name in MENU_ICONS.items():
        action = getattr(window, attr, None)
        if action is not None:
            action.setIcon(icon(name))
            _tip(action)
    window.recent_menu.setIcon(icon("recent"))
    window.presets_menu.setIcon(icon("lesson"))

    bar = ToolBar("Toolbar", window)
    bar.setObjectName("main_toolbar")
    bar.setMovable(False)
    bar.setFloatable(False)
    bar.setIconSize(QSize(ICON_SIZE, ICON_SIZE))
    bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
    bar.setContextMenuPolicy(Qt.ContextMenuPolicy.PreventContextMenu)
    for group in (("act_new", "act_open", "act_save"), ("act_undo", "act_redo"),
                  ("act_fit", "act_layout", "act_zoom_out", "act_zoom_in")):
        for attr in group:
            bar.addAction(getattr(window, attr))
        bar.addSeparator()
    lessons = QToolButton(bar)
    lessons.setIcon(icon("lesson"))
    lessons.setText("Lessons")
    lessons.setToolTip("Open a lesson")
    lessons.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    lessons.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
    lessons.setMenu(window.presets_menu)
    bar.addWidget(lessons)
    bar.addSeparator()  # RUN_GROUP: the run controls go after this
    window.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
    return bar
