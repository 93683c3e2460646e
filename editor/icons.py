"""The editor's icons, by name: ``icons.icon("save")``.

One place maps an action's name to its picture, so menus, toolbars and buttons agree. The
pictures are our own SVGs in ``assets/icons`` (24 × 24, drawn with ``currentColor`` strokes in
one style), tinted when painted with the application palette's text colour: dark glyphs in the
light theme, light glyphs in the dark one, greyed when disabled. They are rendered at the size and
device-pixel ratio asked for, so they stay sharp on HiDPI screens.

Why our own SVGs and not qtawesome: no new dependency (qtawesome brings qtpy, which picks a Qt
binding at import time and must be told to use PySide6), the run controls need pictures no icon
font has (a forward pass, a backward pass, run to here, train), and following a theme is a
palette lookup at paint time rather than rebuilding every icon when the theme changes.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from PySide6.QtCore import QByteArray, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QIconEngine, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer

#: Every name the editor asks for; a test checks each has a picture in both themes.
NAMES: tuple[str, ...] = (
    # files and edits
    "new", "open", "save", "save-as", "recent", "lesson", "quit",
    "undo", "redo", "cut", "copy", "paste", "duplicate", "delete", "select-all", "rename",
    # the canvas
    "fit", "layout", "zoom-in", "zoom-out", "zoom-reset", "minimap", "theme",
    "insert", "open-inside", "expand", "back",
    # running (the run controls)
    "forward", "backward", "step", "step-back", "play", "pause", "stop", "reset", "run-to-here", "train",
    # training (the Train and Try panels)
    "try", "rollback", "best",
)


@lru_cache(maxsize=None)
def _svg(name: str) -> bytes | None:
    try:
        return resources.files("assets").joinpath("icons", f"{name}.svg").read_bytes()
    except (FileNotFoundError, OSError, ModuleNotFoundError):
        return None


def _colour(mode: QIcon.Mode) -> QColor:
    palette = QGuiApplication.palette()
    group = QPalette.ColorGroup.Disabled if mode == QIcon.Mode.Disabled else QPalette.ColorGroup.Active
    role = QPalette.ColorRole.HighlightedText if mode == QIcon.Mode.Selected else QPalette.ColorRole.ButtonText
    return palette.color(group, role)


class _TintedSvg(QIconEngine):
    """Paints one SVG in the palette's colour for the icon mode, at any size."""

    def __init__(self, name: str, svg: bytes, tinted: bool = True) -> None:
        super().__init__()
        self.name = name
        self.svg = svg
        self.tinted = tinted
        self._pixmaps: dict[tuple[Any, ...], QPixmap] = {}  # rendered, per size, mode, colour and scale

    def _renderer(self, mode: QIcon.Mode) -> QSvgRenderer:
        data = self.svg
        if self.tinted:
            data = data.replace(b"currentColor", _colour(mode).name().encode())
        return QSvgRenderer(QByteArray(data))

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode, state: QIcon.State) -> None:
        renderer = self._renderer(mode)
        side = min(rect.width(), rect.height())
        target = QRectF(rect.x() + (rect.width() - side) / 2, rect.y() + (rect.height() - side) / 2, side, side)
        renderer.render(painter, target)

    def pixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QPixmap:
        return self.scaledPixmap(size, mode, state, 1.0)

    def scaledPixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State, scale: float) -> QPixmap:  # noqa: N802
        # (a toolbar's buttons ask again at every enable or disable, e.g. when training starts
        # and stops: rendering the SVG once per look is enough)
        key = (size.width(), size.height(), mode, _colour(mode).rgba() if self.tinted else 0, scale)
        cached = self._pixmaps.get(key)
        if cached is not None:
            return cached
        pixmap = QPixmap(QSize(max(1, round(size.width() * scale)), max(1, round(size.height() * scale))))
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.paint(painter, QRect(0, 0, pixmap.width(), pixmap.height()), mode, state)
        painter.end()
        pixmap.setDevicePixelRatio(scale)
        if len(self._pixmaps) < 32:
            self._pixmaps[key] = pixmap
        return pixmap

    def actualSize(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QSize:  # noqa: N802
        return size

    def clone(self) -> QIconEngine:
        return _TintedSvg(self.name, self.svg, self.tinted)

    def key(self) -> str:
        return "backprop-studio-svg"

    def iconName(self) -> str:  # noqa: N802
        return self.name


def icon(name: str) -> QIcon:
    """The icon called ``name``, tinted for the current theme; an empty icon for an unknown name."""
    svg = _svg(name)
    if svg is None:
        return QIcon()
    return QIcon(_TintedSvg(name, svg))


def app_icon() -> QIcon:
    """The window and application icon (in its own colours, the same in both themes)."""
    svg = _svg("app")
    if svg is None:
        return QIcon()
    return QIcon(_TintedSvg("app", svg, tinted=False))
