"""Icons: every name the editor (and the run controls) ask for has a picture, drawn in the
theme's text colour, in the light and the dark theme; the window has its own icon."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSize
from PySide6.QtGui import QPalette

from editor import icons
from editor.theme import DARK, LIGHT, apply_palette

RUN_CONTROLS = ("forward", "backward", "step", "step-back", "play", "pause", "stop", "reset", "run-to-here", "train")


@pytest.fixture
def restore_palette(qapp):
    palette, style = qapp.palette(), qapp.style().name()
    yield
    qapp.setStyle(style)
    qapp.setPalette(palette)


@pytest.mark.parametrize("theme", [LIGHT, DARK], ids=["light", "dark"])
def test_every_icon_has_a_picture_in_the_theme_colour(qapp, restore_palette, theme):
    apply_palette(qapp, theme)
    ink = qapp.palette().color(QPalette.ColorGroup.Active, QPalette.ColorRole.ButtonText)
    assert set(RUN_CONTROLS) <= set(icons.NAMES)
    for name in icons.NAMES:
        icon = icons.icon(name)
        assert not icon.isNull(), name
        image = icon.pixmap(24, 24).toImage()
        assert not image.isNull(), name
        drawn = [image.pixelColor(x, y) for x in range(24) for y in range(24) if image.pixelColor(x, y).alpha() > 200]
        assert len(drawn) > 12, f"{name}: almost nothing drawn"
        assert all(abs(c.red() - ink.red()) + abs(c.green() - ink.green()) + abs(c.blue() - ink.blue()) < 60
                   for c in drawn), f"{name}: not in the theme's text colour"
    # sharp on a HiDPI screen: drawn at twice the pixels, not scaled up
    hidpi = icons.icon("save").pixmap(QSize(24, 24), 2.0)
    assert hidpi.width() == 48 and hidpi.devicePixelRatio() == 2.0
    assert icons.icon("no such icon").isNull()


def test_the_app_has_a_window_icon(qapp):
    icon = icons.app_icon()
    image = icon.pixmap(64, 64).toImage()
    colours = {image.pixelColor(x, y).name() for x in range(0, 64, 4) for y in range(0, 64, 4)}
    assert len(colours) > 5, "a picture in its own colours"


def test_the_toolbar_and_the_menus_show_icons(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from editor.window import MainWindow

    w = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    shown = [a for a in w.toolbar.actions() if not a.isSeparator()]
    for action in (w.act_new, w.act_open, w.act_save, w.act_undo, w.act_redo, w.act_fit, w.act_layout):
        assert action in shown and not action.icon().isNull(), action.text()
    assert "Ctrl+S" in w.act_save.toolTip()
    assert not w.windowIcon().isNull()
    file_menu = w.menuBar().actions()[0].menu()
    with_icons = [a for a in file_menu.actions() if not a.isSeparator() and not a.icon().isNull()]
    assert len(with_icons) >= 6
