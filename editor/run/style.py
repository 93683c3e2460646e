"""How run state looks: number formatting for wires, the gradient colour, and the log-scale
colour and width that encode a gradient's norm (with its legend). One place, so the wires, the
legend, the stack strips and the panels agree."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtGui import QColor

from editor.run.timeline import EXPLODING, VANISHING
from editor.theme import Theme
from engine.runtime import TensorStats

LOG_LO, LOG_HI = math.log10(VANISHING), math.log10(EXPLODING)  # the legend spans 1e-7 … 1e3
MIN_WIDTH, MAX_WIDTH = 1.6, 7.0
SMALL = 4  # a tensor with at most this many numbers is written out in full

# A perceptual ramp (plasma), cut before its pale yellow end on light backgrounds.
_PLASMA = ["#0d0887", "#5302a3", "#8b0aa5", "#b83289", "#db5c68", "#f48849", "#febd2a", "#f0f921"]


def gradient_colour(theme: Theme) -> QColor:
    """The colour gradients are written in (the slides write them in red)."""
    return QColor("#ff7aa2") if theme.dark else QColor("#c2185b")


def forward_colour(theme: Theme) -> QColor:
    return QColor("#f2c14e") if theme.dark else QColor("#e09a00")


def problem_colour(kind: str, theme: Theme) -> QColor:
    return {"nan": QColor("#ff3b30"), "inf": QColor("#ff3b30"), "exploding": QColor("#ff6a00"),
            "vanishing": QColor("#5aa9e6") if theme.dark else QColor("#2b7bb9")}.get(kind, theme.error)


def norm_fraction(norm: float) -> float:
    """Where a gradient norm sits on the legend's log scale, 0 … 1."""
    if not norm > 0:
        return 0.0
    return min(1.0, max(0.0, (math.log10(norm) - LOG_LO) / (LOG_HI - LOG_LO)))


def ramp(t: float, theme: Theme) -> QColor:
    stops = _PLASMA if theme.dark else _PLASMA[:-2]
    t = min(1.0, max(0.0, t)) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    a, b = QColor(stops[i]), QColor(stops[i + 1])
    f = t - i
    return QColor.fromRgbF(a.redF() + (b.redF() - a.redF()) * f, a.greenF() + (b.greenF() - a.greenF()) * f,
                           a.blueF() + (b.blueF() - a.blueF()) * f)


def norm_colour(norm: float, theme: Theme) -> QColor:
    # The bottom of the ramp is too dark to read on the dark canvas: start a little up.
    t = norm_fraction(norm)
    return ramp(0.12 + 0.88 * t if theme.dark else t, theme)


def norm_width(norm: float) -> float:
    return MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * norm_fraction(norm)


def kind_of(t: TensorStats) -> str:
    """"nan", "inf", "vanishing", "exploding" or "" for a gradient's statistics."""
    if t.nan:
        return "nan"
    if t.inf:
        return "inf"
    if t.norm < VANISHING:
        return "vanishing"
    if t.norm > EXPLODING:
        return "exploding"
    return ""


def num(x: float, digits: int = 4) -> str:
    """A number as a person reads it: ``digits`` significant digits, a real minus sign."""
    if isinstance(x, (int, np.integer)):
        return str(int(x)).replace("-", "−")
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    text = f"{x:.{digits}g}"
    if "e" in text:
        mant, exp = text.split("e")
        text = f"{mant}e{int(exp)}"
    return text.replace("-", "−")


def numbers(a: np.ndarray) -> str:
    """A small array written out: ``0.5213`` or ``[0.1, −2, 3.41]`` (3 digits in a list)."""
    flat = np.asarray(a).reshape(-1)
    if flat.size == 1:
        return num(flat[0].item())
    return "[" + ", ".join(num(v.item(), 3) for v in flat) + "]"


def shape_text(shape: tuple[int, ...], compact: bool = False) -> str:
    sep = "," if compact else ", "
    return "(" + sep.join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def value_text(a: np.ndarray | None, t: TensorStats) -> str:
    """A wire's forward value: the numbers when there are at most :data:`SMALL`, else its shape
    and norm."""
    if t.nan or t.inf:
        bad = "NaN" if t.nan else "Inf"
        return f"{bad} in {shape_text(t.shape, True)}" if t.shape else bad
    size = math.prod(t.shape) if t.shape else 1
    if a is not None and size <= SMALL:
        return numbers(a)
    if a is not None and not np.issubdtype(a.dtype, np.floating):
        return f"{shape_text(t.shape, True)} ids"  # the norm of token ids means nothing
    return f"{shape_text(t.shape, True)} ‖{num(t.norm, 3)}‖"


def grad_text(a: np.ndarray | None, t: TensorStats) -> str:
    """A wire's gradient, written beneath its value."""
    size = math.prod(t.shape) if t.shape else 1
    if t.nan or t.inf:
        return "∇ " + ("NaN" if t.nan else "Inf")
    if a is not None and size <= SMALL:
        return "∇ " + numbers(a)
    return f"∇ ‖{num(t.norm, 3)}‖"


def short_text(a: np.ndarray | None, t: TensorStats, grad: bool = False, digits: int = 0) -> str:
    """The shorter form of a wire's text when the canvas is crowded: a single number stays, a
    few numbers and a tensor become their norm; ``digits`` makes it tinier still (that many
    significant digits, no space after ∇)."""
    size = math.prod(t.shape) if t.shape else 1
    mark = ("∇" if digits else "∇ ") if grad else ""
    if t.nan or t.inf:
        return mark + ("NaN" if t.nan else "Inf")
    if a is not None and size == 1:
        return mark + (num(np.asarray(a).reshape(-1)[0].item(), digits) if digits else numbers(a))
    if a is not None and not np.issubdtype(a.dtype, np.floating):
        return "ids"
    return mark + f"‖{num(t.norm, digits or 3)}‖"
