"""The training curve: the loss at every step, the evaluations (loss and the lesson's metric on a
second axis), the best evaluation and where a run failed. Drawn with pyqtgraph.

However long the run, a curve never holds more than :data:`MAX_POINTS` points: the history is
decimated per bucket of steps to its lowest and highest loss (:func:`decimate`), so a spike
stays visible and memory and drawing time stay flat over 10,000 steps and more. With
minibatches the raw loss is noisy: a smoothed curve (an exponential moving average) is drawn
over it. The log scale is computed here (log10 of the loss, clipped at :data:`LOG_FLOOR`) with
pyqtgraph's log axis for the ticks, so a loss of exactly 0 never reaches a log.

Redrawing during a run is kept cheap (issue 9: the GUI thread's time is taken from training):
the view's ranges stay put while the data stays inside them (x runs to the run's planned last
step, y grows by a margin only when a point leaves it), so a redraw repaints the curves but not
the axes and their grid (each axis keeps its painting in a cached pixmap, redrawn only when its
range changes); after a run the view fits the data exactly, as pyqtgraph's auto range does.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QGraphicsItem, QVBoxLayout, QWidget

from editor.theme import Theme
from engine import metrics

MAX_POINTS = 2000  # per curve, after decimation
#: Most evaluation (and metric) markers drawn: 5 px symbols across a plot a few hundred pixels wide
#: overlap beyond this many, and pyqtgraph looks up every marker's symbol in Python whenever the
#: evaluations change, up to a few times a second while training (after a few presses of Train
#: on the two-layer net, hundreds of markers: the largest Python cost of a drawing under
#: benchmarks/profile_train.py's cProfile, too small without it for bench_train.py to show).
#: Decimated as the curves are, so the extremes stay, and the cost no longer grows with them.
MAX_MARKERS = 120
LOG_FLOOR = 1e-12
SMOOTHING = 0.05  # the moving average's weight of a new step
Y_MARGIN = 0.25  # while running, a y range that data leaves grows by this share of the data's span
LEGEND_RIGHT = 4  # px between the legend (above the data) and the plot's right edge


def decimate(x: np.ndarray, y: np.ndarray, limit: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``limit`` points drawn as ``(x, y)`` would be: each bucket of consecutive points
    gives its lowest and its highest, in their order (the last, partial bucket as it is)."""
    n = len(x)
    if n <= limit:
        return x, y
    size = int(math.ceil(n / max(1, (limit - 2) // 2)))
    m = (n // size) * size
    xb, yb = x[:m].reshape(-1, size), y[:m].reshape(-1, size)
    lo, hi = np.argmin(yb, axis=1), np.argmax(yb, axis=1)
    first, second = np.minimum(lo, hi), np.maximum(lo, hi)
    rows = np.arange(len(xb))
    xs = np.stack([xb[rows, first], xb[rows, second]], axis=1).ravel()
    ys = np.stack([yb[rows, first], yb[rows, second]], axis=1).ravel()
    return np.concatenate([xs, x[m:]]), np.concatenate([ys, y[m:]])


def smooth(y: np.ndarray, alpha: float = SMOOTHING) -> np.ndarray:
    """An exponential moving average, started at the first value (no bias towards 0):
    ``s[0] = y[0]``, ``s[t] = (1 − α)·s[t−1] + α·y[t]``.

    Vectorised per block of :data:`_BLOCK` values (inside one, ``s[k] = β^k·(s₀ + α·Σ β^−j·y[j])``
    with β = 1 − α stays well within float64) rather than scipy.signal's filter, whose import
    would freeze the window for a second or two the first time a curve is drawn."""
    y = np.asarray(y, dtype=np.float64)
    if not len(y):
        return y
    beta = 1.0 - alpha
    out = np.empty_like(y)
    out[0] = y[0]
    powers = beta ** np.arange(1, _BLOCK + 1)
    previous = y[0]
    for start in range(1, len(y), _BLOCK):
        block = y[start:start + _BLOCK]
        k = len(block)
        out[start:start + k] = powers[:k] * (previous + alpha * np.cumsum(block / powers[:k]))
        previous = out[start + k - 1]
    return out


_BLOCK = 256  # β^−256 ≈ 5·10⁵ for α = 0.05: no overflow, rounding ≈ 10⁻¹⁰ of the values


def _hold_y(vb: pg.ViewBox, ys: Sequence[np.ndarray], refit: bool) -> None:
    """Set ``vb``'s y range to hold the finite values of ``ys`` only when one leaves it (or
    ``refit``): it then grows by a margin, geometrically, so that a falling loss moves the axis
    a few times a run rather than at each redraw."""
    values = [v[np.isfinite(v)] for v in ys if len(v)]
    values = [v for v in values if len(v)]
    if not values:
        return
    lo, hi = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
    vy0, vy1 = vb.viewRange()[1]
    if refit or lo < vy0 or hi > vy1:
        span = max(hi - lo, abs(hi) * 1e-3, 1e-9)
        if not refit:
            span = max(span, 2 * (vy1 - vy0))
        vb.setYRange(lo - (Y_MARGIN * span if lo < vy0 or refit else 0), hi + (Y_MARGIN * span if hi > vy1 or refit else 0),
                     padding=0.02)


class LossPlot(QWidget):
    """See the module docstring. :meth:`set_data` redraws (the panel calls it a few times a
    second at most)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        self.widget = pg.PlotWidget(background=None)
        self.widget.setObjectName("train_plot")
        self.widget.setMenuEnabled(False)
        self.widget.hideButtons()
        self.widget.setMinimumHeight(120)
        col.addWidget(self.widget)
        self.plot: pg.PlotItem = self.widget.getPlotItem()
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setLabel("bottom", "step")
        self.plot.setLabel("left", "loss")
        self.plot.showAxis("right")
        self.metric_box = pg.ViewBox()
        self.plot.scene().addItem(self.metric_box)
        self.plot.getAxis("right").linkToView(self.metric_box)
        self.metric_box.setXLink(self.plot)
        self.plot.vb.sigResized.connect(self._fit_metric_box)
        # the legend on one row above the data, where no curve or marker can pass behind it (in
        # the view's corner it hid where the curves end: a rising accuracy ends at the top right)
        self.legend = pg.LegendItem(labelTextSize="8pt", frame=False, horSpacing=8)
        self.legend.layout.setContentsMargins(0, 0, 0, 0)
        self.legend.setParentItem(self.plot)
        self.plot.legend = self.legend  # (the curves named below join it, as with addLegend)
        self.legend.anchor(itemPos=(1, 0), parentPos=(1, 0), offset=(-LEGEND_RIGHT, 1))
        self.raw = self.plot.plot([], [], name="loss (each step)")
        self.smoothed = self.plot.plot([], [], name="loss (smoothed)")
        self.evals = self.plot.plot([], [], name="evaluation loss", symbol="o", symbolSize=5)
        self.metric = pg.PlotDataItem([], [], symbol="s", symbolSize=5)
        self.metric_box.addItem(self.metric)
        self.legend.addItem(self.metric, "metric")
        self._tidy_legend()
        self.plot.layout.setRowFixedHeight(0, self.legend.boundingRect().height())  # (the title's row)
        self.best = pg.InfiniteLine(angle=90, movable=False)
        self.failed = pg.InfiniteLine(angle=90, movable=False)
        for line in (self.best, self.failed):
            line.hide()
            self.plot.addItem(line)
        self.log = False
        self.theme: Theme | None = None
        self.metric_kind: str | None = None
        self._legend_names: dict[int, tuple[str, Any]] = {}  # the text and colour each legend entry shows
        self.points = 0  # points drawn by the loss curves (a test reads it)
        self._metric_label = ""
        self._evals_key: tuple[Any, ...] | None = None  # what the evaluation points were drawn from
        self._ev_ys = np.zeros(0)
        self._metric_values = np.zeros(0)  # a metric drawn on its own (auto) scale, not a percentage
        for name in ("left", "bottom", "right"):
            # an axis repaints (ticks, labels, grid: tens of ms) only when its range or looks change
            self.plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        # ... and so do the evaluations' points and line (a few per run) and the legend, which
        # the curve's repaints a few times a second cover: drawn again from their pixmaps
        cached = [self.evals.scatter, self.evals.curve, self.metric.scatter, self.metric.curve, self.legend]
        for item in cached:
            item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def _fit_metric_box(self) -> None:
        self.metric_box.setGeometry(self.plot.vb.sceneBoundingRect())
        self.metric_box.linkedViewChanged(self.plot.vb, self.metric_box.XAxis)

    # --- looks ----------------------------------------------------------------------------------------

    def set_theme(self, theme: Theme) -> None:
        self.theme = theme
        text = theme.text_dim
        for name in ("left", "bottom", "right"):
            axis = self.plot.getAxis(name)
            axis.setPen(pg.mkPen(theme.grid))
            axis.setTextPen(pg.mkPen(text))
            axis.label.setDefaultTextColor(text)
        loss = QColor("#6ea8fe") if theme.dark else QColor("#2f6fd0")
        faint = QColor(loss)
        faint.setAlpha(90)
        metric = QColor("#f2a33a") if theme.dark else QColor("#d9480f")
        self.raw.setPen(pg.mkPen(faint, width=1))
        self.smoothed.setPen(pg.mkPen(loss, width=2))
        self.evals.setPen(None)
        self.evals.setSymbolBrush(pg.mkBrush(theme.text))
        self.evals.setSymbolPen(pg.mkPen(theme.background))
        self.metric.setPen(pg.mkPen(metric, width=1.5))
        self.metric.setSymbolBrush(pg.mkBrush(metric))
        self.metric.setSymbolPen(pg.mkPen(metric))
        self.best.setPen(pg.mkPen(QColor("#2f9e44") if not theme.dark else QColor("#69db7c"), width=1.5,
                                  style=Qt.PenStyle.DashLine))
        self.failed.setPen(pg.mkPen(QColor("#e5484d"), width=1.5, style=Qt.PenStyle.DashLine))
        # the legend on the theme's background (it sits above the data, where nothing passes
        # behind it)
        behind = QColor(theme.background)
        behind.setAlpha(215)
        self.legend.setBrush(pg.mkBrush(behind))
        for _sample, label in self.legend.items:
            label.setText(label.text, color=text)
        self._legend_names = {}
        self._evals_key = None
        font = QFont()
        font.setPointSizeF(max(7.5, font.pointSizeF() * 0.85))
        for name in ("left", "bottom", "right"):
            self.plot.getAxis(name).setStyle(tickFont=font)

    def set_log(self, on: bool) -> None:
        if on != self.log:
            self.log = on
            self.plot.getAxis("left").setLogMode(on)
            self.plot.vb.enableAutoRange()  # (the next drawing fits the view to the new scale)

    # --- data -----------------------------------------------------------------------------------------

    def _y(self, y: np.ndarray) -> np.ndarray:
        return np.log10(np.maximum(y, LOG_FLOOR)) if self.log else y

    def set_data(self, steps: np.ndarray, loss: np.ndarray, evaluations: Sequence[Any], metric_kind: str | None,
                 best_step: int | None, failed_step: int | None, minibatch: bool, x_end: float | None = None) -> None:
        """Draw the history. ``x_end``: the planned last step of a running run (the view's x range
        reaches it and stays put while the data fits); None fits the view to the data."""
        x = np.asarray(steps, dtype=np.float64)
        y = np.asarray(loss, dtype=np.float64)
        if minibatch and len(y) > 1:
            xs, ys = decimate(x, y)
            ys = self._y(ys)
            self.raw.setData(xs, ys, skipFiniteCheck=True)
            sx, sy = decimate(x, smooth(y))
            sy = self._y(sy)
            self.smoothed.setData(sx, sy, skipFiniteCheck=True)
            self.points = len(xs) + len(sx)
        else:
            if len(self.raw.xData if self.raw.xData is not None else ()):
                self.raw.setData([], [])
            xs, ys = decimate(x, y)
            ys = self._y(ys)
            self.smoothed.setData(xs, ys, skipFiniteCheck=True)
            self.points = len(xs)
        self._legend_entry(self.raw, "loss (each batch)" if minibatch else None)
        self._legend_entry(self.smoothed, "loss (smoothed)" if minibatch else "loss")
        # the evaluations change a few times a run: their points (and the metric's axis, which
        # repaints when its auto range is recomputed) are set again only then
        key = (self.log, metric_kind, len(evaluations),
               *((evaluations[0].step, evaluations[-1].step, evaluations[-1].loss, evaluations[-1].metric) if evaluations else ()))
        if key != self._evals_key:
            self._evals_key = key
            self._set_evaluations(evaluations, metric_kind)
        for line, at in ((self.best, best_step), (self.failed, failed_step)):
            line.setVisible(at is not None)
            if at is not None and line.value() != at:
                line.setValue(at)
        self._fit_view(xs, (ys, sy if minibatch and len(y) > 1 else ys, self._ev_ys), x_end)

    def _set_evaluations(self, evaluations: Sequence[Any], metric_kind: str | None) -> None:
        ev_x = np.array([e.step for e in evaluations], dtype=np.float64)
        ev_y = np.array([e.loss for e in evaluations], dtype=np.float64)
        finite = np.isfinite(ev_y)
        self._ev_ys = ev_ys = self._y(ev_y[finite])
        self.evals.setData(*decimate(ev_x[finite], ev_ys, MAX_MARKERS))  # (the lowest and highest of each stretch)
        self._legend_entry(self.evals, "evaluation loss" if len(ev_x) else None)
        kind = metric_kind
        self.metric_kind = kind
        if kind:
            m = np.array([e.metric if e.metric is not None else np.nan for e in evaluations], dtype=np.float64)
            ok = np.isfinite(m)
            if kind in ("accuracy", "exact_match"):
                m = 100.0 * m
            self.metric.setData(*decimate(ev_x[ok], m[ok], MAX_MARKERS))
            label = metrics.label(kind) + (" (%)" if kind in ("accuracy", "exact_match") else "")
            if label != self._metric_label:  # (setting a label lays the axis out again)
                self._metric_label = label
                self.plot.getAxis("right").setLabel(label)
            self.plot.getAxis("right").show()
            self._legend_entry(self.metric, metrics.label(kind) if ok.any() else None)
            if kind in ("accuracy", "exact_match") and (self.metric_box.state["autoRange"][1] is not False
                                                         or self.metric_box.viewRange()[1] != [-5.0, 105.0]):
                self.metric_box.setYRange(0, 100, padding=0.05)
            self._metric_values = m[ok] if kind not in ("accuracy", "exact_match") else np.zeros(0)
        else:
            self._metric_values = np.zeros(0)
            if self.metric.xData is not None and len(self.metric.xData):
                self.metric.setData([], [])
            self.plot.getAxis("right").hide()
            self._legend_entry(self.metric, None)

    def _fit_view(self, x: np.ndarray, ys: tuple[np.ndarray, ...], x_end: float | None) -> None:
        """While running (``x_end`` given), keep the view's ranges unless the data leaves them;
        otherwise let pyqtgraph fit the view to the data (the metric's y too, unless it is a
        percentage: 0–100 %)."""
        vb, metric = self.plot.vb, self.metric_box
        if x_end is None or not len(x):
            if not all(vb.state["autoRange"]):
                vb.enableAutoRange()
            if len(self._metric_values) and metric.state["autoRange"][1] is False:
                metric.enableAutoRange(axis=pg.ViewBox.YAxis)
            vb.updateAutoRange()
            metric.updateAutoRange()
        else:
            auto = any(vb.state["autoRange"])
            if auto:
                vb.disableAutoRange()
            x0, x1 = float(x[0]), max(float(x_end), float(x[-1]))
            vx0, vx1 = vb.viewRange()[0]
            if auto or x0 < vx0 or x1 > vx1 or x1 - x0 < 0.5 * (vx1 - vx0):
                vb.setXRange(x0, x1, padding=0.02)
            _hold_y(vb, ys, auto)
            if len(self._metric_values):
                auto = metric.state["autoRange"][1] is not False
                if auto:
                    metric.disableAutoRange(axis=pg.ViewBox.YAxis)
                _hold_y(metric, (self._metric_values,), auto)
        # NOTE: the new ranges take effect now, not when the repaint begins (pyqtgraph's way: the
        # fit and the view's transform are deferred to then): a view that changes in the middle of
        # a repaint marks its points again, and the plot was painted twice for each new range,
        # the first time in vain
        for box in (vb, metric):
            box.updateMatrix()

    def _legend_entry(self, item: Any, name: str | None) -> None:
        present = [label for sample, label in self.legend.items if sample.item is item]
        if name is None:
            if present:
                self.legend.removeItem(item)
                self._tidy_legend()
            return
        colour = self.theme.text_dim if self.theme is not None else None
        if not present:
            self.legend.addItem(item, name)
            present = [label for sample, label in self.legend.items if sample.item is item]
        elif self._legend_names.get(id(item)) == (name, colour):
            return  # (setting a label's text lays the legend out again: only when it changes)
        self._legend_names[id(item)] = (name, colour)
        for label in present:
            label.setText(name, **({"color": colour} if colour is not None else {}))
        self._tidy_legend()

    def _tidy_legend(self) -> None:
        """One row of entries, each as wide as its text (a label keeps the width of a longer text
        it had, and the legend sums the widths its entries have)."""
        legend = self.legend
        legend.setColumnCount(max(1, len(legend.items)))
        for _sample, label in legend.items:
            label.resize(label.minimumSize())
        legend.updateSize()
