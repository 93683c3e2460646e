"""``backprop-studio screenshot``: a real PNG of the window, in both themes."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QColor, QImage

from editor import screenshot
from editor.theme import CATEGORY_COLOURS, DARK, LIGHT
from engine import serialize
from engine.blocks import Category
from engine.graph import Graph

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints")


def _has_colour(image: QImage, colour: QColor, step: int = 3) -> bool:
    target = colour.rgb() & 0xFFFFFF
    for y in range(0, image.height(), step):
        for x in range(0, image.width(), step):
            if image.pixel(x, y) & 0xFFFFFF == target:
                return True
    return False


@pytest.mark.parametrize("theme", [LIGHT, DARK], ids=["light", "dark"])
def test_screenshot_renders_the_graph(qapp, tmp_path, theme):
    g = Graph()
    x = g.add_node("Input", {"shape": (4, 3)}, name="x", position=(0, 0))
    lin = g.add_node("Linear", {"out_features": 2}, name="lin", position=(260, 0))
    g.connect(x.id, "out", lin.id, "x")
    path = tmp_path / "g.json"
    serialize.save(serialize.Project(g, "tiny"), path)
    out = tmp_path / "shot.png"
    assert screenshot.main(str(path), str(out), 900, 600, theme=theme.name) == 0
    image = QImage(str(out))
    assert (image.width(), image.height()) == (900, 600)
    # the canvas background of the theme, and the Data and Dense header colours are in the picture
    assert _has_colour(image, theme.background)
    assert _has_colour(image, QColor(CATEGORY_COLOURS[Category.DATA]))
    assert _has_colour(image, QColor(CATEGORY_COLOURS[Category.DENSE]))


def test_screenshot_of_a_broken_file_fails_cleanly(qapp, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    assert screenshot.main(str(bad), str(tmp_path / "x.png")) == 1
    assert "bad.json" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_screenshot_json_reports_zoom_and_smallest_text(qapp, tmp_path, capsys):
    import json

    from editor.main import main

    out = tmp_path / "inside.png"
    code = main(["screenshot", "bert", str(out), "--width", "1280", "--height", "800", "--json",
                 "--open", "BERT/block1"])
    assert code == 0 and out.exists()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["zoom"] >= 0.8 and report["min_text_px"] >= 9.0
    assert report["view"].endswith("block1 (TransformerBlock)")
    image = QImage(str(out))
    assert (image.width(), image.height()) == (1280, 800)
