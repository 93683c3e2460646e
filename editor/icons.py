"""The editor's icons, by name: ``icons.icon("save")``.

One place maps an action's name to its picture, so menus, toolbars and buttons agree and a new
icon set replaces them all at once. (First version: Qt's built-in standard icons; names without
one get an empty icon, which Qt draws as nothing.)
"""

from __future__ import annotations

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QStyle

SP = QStyle.StandardPixmap

_STANDARD: dict[str, QStyle.StandardPixmap] = {
    "new": SP.SP_FileIcon,
    "open": SP.SP_DialogOpenButton,
    "save": SP.SP_DialogSaveButton,
    "undo": SP.SP_ArrowBack,
    "redo": SP.SP_ArrowForward,
    "forward": SP.SP_MediaSeekForward,
    "backward": SP.SP_MediaSeekBackward,
    "step": SP.SP_MediaSkipForward,
    "step-back": SP.SP_MediaSkipBackward,
    "play": SP.SP_MediaPlay,
    "pause": SP.SP_MediaPause,
    "stop": SP.SP_MediaStop,
    "reset": SP.SP_BrowserReload,
    "run-to-here": SP.SP_ArrowRight,
    "train": SP.SP_MediaPlay,
}

#: Every name the editor asks for; a test checks each has a picture.
NAMES: tuple[str, ...] = tuple(_STANDARD)


def icon(name: str) -> QIcon:
    """The icon called ``name`` for the current theme; an empty icon for an unknown name."""
    pixmap = _STANDARD.get(name)
    app = QApplication.instance()
    if pixmap is None or app is None:
        return QIcon()
    return app.style().standardIcon(pixmap)  # type: ignore[union-attr]
