"""The window's toolbar and the icons on its menus.

The toolbar holds the common actions as icons (new, open, save · undo, redo · fit, auto-layout,
zoom · the lessons); the run controls join it after its last separator (``RUN_GROUP``: add them
with ``window.toolbar.addActions(...)``). Menu items get the same icons, where desktop
applications show them (files, edits, the view).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QToolBar, QToolButton

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

    bar = QToolBar("Toolbar", window)
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
