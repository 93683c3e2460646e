"""Fonts for the canvas, sized in scene units (logical pixels) so they zoom with the graph.

They follow the system font: its family and its size (read as logical pixels, so a HiDPI screen,
which scales logical pixels, draws them sharp and at the same apparent size). Every role is a
step from that base, and none goes below :data:`MIN_PX`, so that text on the canvas is at least
``MIN_PX × zoom`` pixels high on screen: the view never opens below the zoom that keeps that at
:data:`LEGIBLE_PX` (see :func:`readable_zoom`).
"""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtGui import QFont, QFontInfo, QFontMetricsF, QGuiApplication

#: Smallest text height on screen (pixels) that we call legible.
LEGIBLE_PX = 9.0
#: No canvas text is smaller than this (scene units at 100 % zoom).
MIN_PX = 11
#: Steps from the system font's pixel size, per role.
_STEP = {"title": 1, "port": 0, "small": -1, "label": -1, "badge": -1, "toast": 0, "mono": -1}
_MONO = ("label", "mono")


@lru_cache(maxsize=None)
def base_px() -> int:
    """The system font's size in logical pixels (12 for the common 9 pt at 96 dpi)."""
    app = QGuiApplication.instance()
    if app is None:
        return 12
    return max(MIN_PX, QFontInfo(QGuiApplication.font()).pixelSize())


@lru_cache(maxsize=None)
def font(role: str) -> QFont:
    f = QFont(QGuiApplication.font()) if QGuiApplication.instance() is not None else QFont()
    f.setPixelSize(px(role))
    if role in ("title", "badge"):
        f.setWeight(QFont.Weight.DemiBold)
    if role in _MONO:
        f.setFamily("DejaVu Sans Mono")
        f.setStyleHint(QFont.StyleHint.Monospace)
        f.setFixedPitch(True)
    return f


def px(role: str) -> int:
    """The pixel size of ``role`` at 100 % zoom."""
    return max(MIN_PX, base_px() + _STEP[role])


def smallest_px() -> int:
    return min(px(role) for role in _STEP)


def readable_zoom() -> float:
    """The lowest zoom at which every canvas text is at least LEGIBLE_PX high (and never below
    80 %, where the cards' shapes stop reading as cards)."""
    return max(0.8, LEGIBLE_PX / smallest_px())


def comfortable_zoom() -> float:
    """The zoom a graph opens at when all of it cannot be shown readable (text about 10 px):
    legible with room to spare, and layouts fold to reach it."""
    return max(readable_zoom(), 0.9)


@lru_cache(maxsize=None)
def metrics(role: str) -> QFontMetricsF:
    return QFontMetricsF(font(role))


def reset() -> None:
    """Forget cached fonts (after the system font changed)."""
    for f in (base_px, font, metrics):
        f.cache_clear()
