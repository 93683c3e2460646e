"""Colours and the application palette. Colours live here, never in the document.

Two themes, light and dark; "system" follows ``QStyleHints.colorScheme()``. The scene reads the
current :class:`Theme` when painting, so switching theme is a repaint, not a rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from engine.blocks import Category, Kind

CATEGORY_COLOURS: dict[Category, str] = {
    Category.DATA: "#3a7bd5",
    Category.MATH: "#5f6f86",
    Category.LOSSES: "#d0532a",
    Category.DENSE: "#7b4fd6",
    Category.SEQUENCE: "#1f9d6c",
    Category.ATTENTION: "#d08a12",
    Category.CONVOLUTION: "#1592a8",
    Category.COMPOSITE: "#c23b7a",
}


@dataclass(frozen=True)
class Theme:
    name: str
    background: QColor
    grid: QColor
    node_body: QColor
    node_border: QColor
    selected: QColor
    text: QColor
    text_dim: QColor
    header_text: QColor
    link: QColor
    label_bg: QColor
    label_text: QColor
    error: QColor
    ok: QColor
    compatible: QColor
    kinds: dict[Kind, QColor] = field(default_factory=dict)

    def category(self, category: Category) -> QColor:
        return QColor(CATEGORY_COLOURS.get(category, "#607080"))

    def kind(self, kind: Kind) -> QColor:
        return self.kinds.get(kind, self.text_dim)

    @property
    def dark(self) -> bool:
        return self.name == "dark"


DARK = Theme(
    name="dark",
    background=QColor("#1d1f23"),
    grid=QColor("#3a3e45"),
    node_body=QColor("#2b2e34"),
    node_border=QColor("#15171a"),
    selected=QColor("#ffb84d"),
    text=QColor("#e8eaed"),
    text_dim=QColor("#9aa0a8"),
    header_text=QColor("#ffffff"),
    link=QColor("#8d949e"),
    label_bg=QColor(20, 22, 25, 220),
    label_text=QColor("#cfd3d8"),
    error=QColor("#ef4444"),
    ok=QColor("#34c759"),
    compatible=QColor("#5ee08a"),
    kinds={Kind.FLOAT: QColor("#f2c14e"), Kind.IDS: QColor("#4fc3f7"), Kind.ANY: QColor("#b0b6be")},
)

LIGHT = Theme(
    name="light",
    background=QColor("#f3f4f6"),
    grid=QColor("#c6cad1"),
    node_body=QColor("#ffffff"),
    node_border=QColor("#b9bec6"),
    selected=QColor("#f08c00"),
    text=QColor("#1f2328"),
    text_dim=QColor("#5f6670"),
    header_text=QColor("#ffffff"),
    link=QColor("#7d8590"),
    label_bg=QColor(255, 255, 255, 235),
    label_text=QColor("#30363d"),
    error=QColor("#dc2626"),
    ok=QColor("#1a7f37"),
    compatible=QColor("#1faa55"),
    kinds={Kind.FLOAT: QColor("#d49a00"), Kind.IDS: QColor("#0b8fd1"), Kind.ANY: QColor("#7d8590")},
)


def system_prefers_dark() -> bool:
    app = QGuiApplication.instance()
    if app is None:
        return False
    scheme = QGuiApplication.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    # Unknown (offscreen, plain X11): light, the Fusion style's own default.
    return False


def resolve(choice: str) -> Theme:
    """``"light"``, ``"dark"`` or ``"system"`` → a Theme."""
    if choice == "dark":
        return DARK
    if choice == "light":
        return LIGHT
    return DARK if system_prefers_dark() else LIGHT


def apply_palette(app: QApplication, theme: Theme) -> None:
    """Fusion style with a palette matching the theme, so widgets and canvas agree."""
    app.setStyle("Fusion")
    p = QPalette()
    if theme.dark:
        base, window, text = QColor("#202226"), QColor("#26292e"), QColor("#e8eaed")
        p.setColor(QPalette.ColorRole.Window, window)
        p.setColor(QPalette.ColorRole.WindowText, text)
        p.setColor(QPalette.ColorRole.Base, base)
        p.setColor(QPalette.ColorRole.AlternateBase, QColor("#2b2e34"))
        p.setColor(QPalette.ColorRole.Text, text)
        p.setColor(QPalette.ColorRole.Button, QColor("#2f3238"))
        p.setColor(QPalette.ColorRole.ButtonText, text)
        p.setColor(QPalette.ColorRole.ToolTipBase, QColor("#2b2e34"))
        p.setColor(QPalette.ColorRole.ToolTipText, text)
        p.setColor(QPalette.ColorRole.PlaceholderText, QColor("#8a9099"))
        p.setColor(QPalette.ColorRole.Highlight, QColor("#3d6fb6"))
        p.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
        p.setColor(QPalette.ColorRole.Mid, QColor("#3a3e45"))
        p.setColor(QPalette.ColorRole.Dark, QColor("#17191c"))
        p.setColor(QPalette.ColorRole.Light, QColor("#454a52"))
        p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor("#6b7079"))
        p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor("#6b7079"))
        p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText, QColor("#6b7079"))
    else:
        p = app.style().standardPalette()
        p.setColor(QPalette.ColorRole.Window, QColor("#eceef1"))
        p.setColor(QPalette.ColorRole.Base, QColor("#ffffff"))
        p.setColor(QPalette.ColorRole.AlternateBase, QColor("#f5f6f8"))
        p.setColor(QPalette.ColorRole.Highlight, QColor("#2f6fd0"))
        p.setColor(QPalette.ColorRole.ToolTipBase, QColor("#ffffff"))
        p.setColor(QPalette.ColorRole.ToolTipText, QColor("#1f2328"))
    app.setPalette(p)
