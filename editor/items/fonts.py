"""Fonts for the canvas, sized in scene units (pixel sizes) so they zoom with the graph and look
the same on every screen density."""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtGui import QFont, QFontMetricsF


@lru_cache(maxsize=None)
def font(role: str) -> QFont:
    f = QFont()
    sizes = {"title": 12, "port": 11, "small": 10, "label": 10, "badge": 11, "toast": 12, "mono": 10}
    f.setPixelSize(sizes[role])
    if role in ("title", "badge"):
        f.setWeight(QFont.Weight.DemiBold)
    if role in ("label", "mono"):
        f.setFamily("DejaVu Sans Mono")
        f.setStyleHint(QFont.StyleHint.Monospace)
    return f


@lru_cache(maxsize=None)
def metrics(role: str) -> QFontMetricsF:
    return QFontMetricsF(font(role))
