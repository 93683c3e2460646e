"""Tensor views for the inspector: a value or a gradient as numbers (a scrollable table), as a
heatmap with a diverging colour map centred on zero, and as a histogram; attention weights per
head with the tokens on the axes; a recurrent network's gradient norm over time as bars; a
convolution's filters as a grid of small images. Drawn with pyqtgraph.

Arrays with more than two dimensions are shown one 2-D slice at a time (spin boxes pick the
leading indices).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (QHBoxLayout, QHeaderView, QLabel, QSizePolicy, QSpinBox, QStackedWidget, QTabBar,
                               QTableView, QVBoxLayout, QWidget)

DIVERGING = "CET-D1"  # blue – white – red, centred
SEQUENTIAL = "viridis"
MAX_BINS = 40
PLOT_HEIGHT = 170


def _num(x: float) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.5g}".replace("-", "−")


class ArrayModel(QAbstractTableModel):
    """A 0-, 1- or 2-D array as a table (a vector as one column)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = np.zeros((0, 0))

    def set_array(self, a: np.ndarray) -> None:
        self.beginResetModel()
        a = np.asarray(a)
        self.a = a.reshape(1, 1) if a.ndim == 0 else (a.reshape(-1, 1) if a.ndim == 1 else a)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else self.a.shape[0]

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else self.a.shape[1]

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return _num(self.a[index.row(), index.column()].item())
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole:
            v = self.a[index.row(), index.column()]
            if np.issubdtype(self.a.dtype, np.floating) and not np.isfinite(v):
                return QColor("#e5484d")
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            return str(section)
        return None


def _plot(height: int = PLOT_HEIGHT) -> pg.PlotWidget:
    w = pg.PlotWidget(background=None)
    w.setMinimumHeight(height)
    w.setMaximumHeight(height + 60)
    w.setMenuEnabled(False)
    w.hideButtons()
    return w


def image_plot(title: str, height: int | None = PLOT_HEIGHT) -> tuple[pg.PlotWidget, pg.ImageItem]:
    """A titled plot holding one image (row-major, the diverging colour map, square pixels, rows
    downwards, no axes): filters, weights. ``height`` None: as tall as the layout gives it."""
    plot = _plot(height) if height is not None else pg.PlotWidget(background=None)
    plot.setMenuEnabled(False)
    plot.hideButtons()
    plot.setTitle(title, size="9pt")
    plot.invertY(True)
    plot.setAspectLocked(True)
    plot.hideAxis("left")
    plot.hideAxis("bottom")
    image = pg.ImageItem(axisOrder="row-major")
    image.setColorMap(pg.colormap.get(DIVERGING))
    plot.addItem(image)
    return plot, image


def _matrix(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(1, 1) if a.ndim == 0 else (a.reshape(1, -1) if a.ndim == 1 else a)


class TensorView(QWidget):
    """One array as numbers, heatmap or histogram (a tab bar picks)."""

    MODES = ("Numbers", "Heatmap", "Histogram")

    def __init__(self, title: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.full: np.ndarray | None = None
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(4)
        head = QHBoxLayout()
        self.title = QLabel(title)
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        head.addWidget(self.title, 1)
        col.addLayout(head)
        self.slicer = QWidget()
        self.slice_row = QHBoxLayout(self.slicer)
        self.slice_row.setContentsMargins(0, 0, 0, 0)
        self.spins: list[QSpinBox] = []
        col.addWidget(self.slicer)
        self.tabs = QTabBar()
        self.tabs.setExpanding(False)
        self.tabs.setDrawBase(False)
        self.tabs.setUsesScrollButtons(True)
        for m in self.MODES:
            self.tabs.addTab(m)
        col.addWidget(self.tabs)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.stack = QStackedWidget()
        self.table = QTableView()
        self.table.setObjectName("tensor_table")
        self.model = ArrayModel()
        self.table.setModel(self.model)
        mono = QFont("DejaVu Sans Mono")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        mono.setPointSizeF(max(7.0, mono.pointSizeF() - 1))
        self.table.setFont(mono)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(PLOT_HEIGHT)
        self.stack.addWidget(self.table)
        self._heat: pg.PlotWidget | None = None
        self._hist: pg.PlotWidget | None = None
        self.stack.addWidget(QWidget())
        self.stack.addWidget(QWidget())
        col.addWidget(self.stack)
        self.tabs.currentChanged.connect(self._show_mode)
        self.empty = QLabel()
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("color: gray")
        col.addWidget(self.empty)
        self.empty.hide()

    # --- data --------------------------------------------------------------------------------------

    def set_array(self, a: np.ndarray | None, title: str = "", why_missing: str = "") -> None:
        self.title.setText(title)
        self.full = None if a is None else np.asarray(a)
        missing = self.full is None
        self.empty.setText(why_missing)
        self.empty.setVisible(missing and bool(why_missing))
        self.tabs.setVisible(not missing)
        self.stack.setVisible(not missing)
        self._make_slicer()
        self._show_mode(self.tabs.currentIndex())

    def _make_slicer(self) -> None:
        for s in self.spins:
            s.deleteLater()
        while self.slice_row.count():
            item = self.slice_row.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.spins = []
        a = self.full
        if a is None or a.ndim <= 2:
            self.slicer.hide()
            return
        self.slice_row.addWidget(QLabel("slice"))
        for d in range(a.ndim - 2):
            spin = QSpinBox()
            spin.setRange(0, a.shape[d] - 1)
            spin.setToolTip(f"index along axis {d} (size {a.shape[d]})")
            spin.valueChanged.connect(lambda _v: self._show_mode(self.tabs.currentIndex()))
            self.slice_row.addWidget(spin)
            self.spins.append(spin)
        self.slice_row.addWidget(QLabel(", :, :"))
        self.slice_row.addStretch(1)
        self.slicer.show()

    def shown(self) -> np.ndarray | None:
        """The 2-D (or smaller) part of the array on screen."""
        a = self.full
        if a is None:
            return None
        if a.ndim > 2:
            a = a[tuple(s.value() for s in self.spins)]
        return a

    def _show_mode(self, index: int) -> None:
        a = self.shown()
        if a is None:
            return
        if index == 0:
            self.model.set_array(a)
            self.stack.setCurrentIndex(0)
        elif index == 1:
            self._heatmap(a)
            self.stack.setCurrentIndex(1)
        else:
            self._histogram(self.full)
            self.stack.setCurrentIndex(2)

    def _heatmap(self, a: np.ndarray) -> None:
        if self._heat is None:
            self._heat = _plot()
            self._heat.invertY(True)
            self._heat.setAspectLocked(False)
            self._image = pg.ImageItem(axisOrder="row-major")
            self._heat.addItem(self._image)
            self._bar = pg.ColorBarItem(colorMap=pg.colormap.get(DIVERGING), interactive=False, width=12)
            self._bar.setImageItem(self._image, insert_in=self._heat.getPlotItem())
            self.stack.removeWidget(self.stack.widget(1))
            self.stack.insertWidget(1, self._heat)
        m = _matrix(a)
        finite = m[np.isfinite(m)]
        top = float(np.max(np.abs(finite))) if finite.size else 1.0
        top = top or 1.0
        self._image.setImage(np.nan_to_num(m, nan=0.0), levels=(-top, top))
        self._bar.setLevels((-top, top))  # centred on zero: white is 0
        self._heat.getPlotItem().setRange(xRange=(0, m.shape[1]), yRange=(0, m.shape[0]), padding=0.02)

    def _histogram(self, a: np.ndarray) -> None:
        if self._hist is None:
            self._hist = _plot()
            self._hist.setLabel("bottom", "value")
            self._hist.setLabel("left", "count")
            self._hist_curve = pg.PlotDataItem(stepMode="center", fillLevel=0, brush=(90, 120, 200, 150),
                                               pen=pg.mkPen((60, 90, 170), width=1))
            self._hist.addItem(self._hist_curve)
            self.stack.removeWidget(self.stack.widget(2))
            self.stack.insertWidget(2, self._hist)
        flat = np.asarray(a, dtype=np.float64).reshape(-1)
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            self._hist_curve.setData([0, 1], [0])
            return
        bins = max(1, min(MAX_BINS, int(math.sqrt(flat.size)) + 1))
        lo, hi = float(flat.min()), float(flat.max())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(flat, bins=bins, range=(lo, hi))
        self._hist_curve.setData(edges, counts)


class AttentionView(QWidget):
    """Attention weights of one example: one head at a time, large, with the tokens on both axes
    (row: the query token, column: the token it attends to), or every head small ("All")."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        self.heads = QTabBar()
        self.heads.setExpanding(False)
        self.heads.setDrawBase(False)
        self.heads.setUsesScrollButtons(True)
        self.heads.currentChanged.connect(lambda _i: self._draw())
        col.addWidget(self.heads)
        self.grid = QVBoxLayout()
        col.addLayout(self.grid)
        self.plots: list[pg.PlotWidget] = []
        self.a = np.zeros((0, 0, 0))
        self.tokens_q: list[str] = []
        self.tokens_k: list[str] = []

    def set_attention(self, attn: np.ndarray, tokens_q: Sequence[str], tokens_k: Sequence[str], example: int = 0) -> None:
        """``attn`` is (B, H, Lq, Lk)."""
        self.a = np.asarray(attn, dtype=np.float64)[example]
        self.tokens_q, self.tokens_k = [str(t) for t in tokens_q], [str(t) for t in tokens_k]
        current = self.heads.currentIndex()
        self.heads.blockSignals(True)
        while self.heads.count():
            self.heads.removeTab(0)
        for h in range(self.a.shape[0]):
            self.heads.addTab(f"head {h + 1}")
        if self.a.shape[0] > 1:
            self.heads.addTab("All")
        self.heads.setCurrentIndex(max(0, min(current, self.heads.count() - 1)))
        self.heads.blockSignals(False)
        self._draw()

    def _draw(self) -> None:
        for p in self.plots:
            p.deleteLater()
        self.plots = []
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.layout() is not None:
                while item.layout().count():
                    sub = item.layout().takeAt(0)
                    if sub.widget() is not None:
                        sub.widget().deleteLater()
        heads = self.a.shape[0]
        if heads == 0:
            return
        k = self.heads.currentIndex()
        if k < heads:
            self._plot_head(k, 230, labels=True, row=None)
            return
        row: QHBoxLayout | None = None
        for h in range(heads):
            if h % 2 == 0:
                row = QHBoxLayout()
                self.grid.addLayout(row)
            self._plot_head(h, 130, labels=False, row=row)

    def _plot_head(self, h: int, height: int, labels: bool, row: QHBoxLayout | None) -> None:
        w = _plot(height)
        w.setTitle(f"head {h + 1}", size="9pt")
        w.invertY(True)
        img = pg.ImageItem(axisOrder="row-major")
        img.setColorMap(pg.colormap.get(SEQUENTIAL))
        img.setImage(self.a[h], levels=(0.0, 1.0))
        w.addItem(img)
        for axis, tokens in (("bottom", self.tokens_k), ("left", self.tokens_q)):
            ticks = [(i + 0.5, t if labels else "") for i, t in enumerate(tokens)]
            w.getAxis(axis).setTicks([ticks])
        w.getPlotItem().setRange(xRange=(0, self.a.shape[2]), yRange=(0, self.a.shape[1]), padding=0)
        if row is None:
            self.grid.addWidget(w)
        else:
            row.addWidget(w)
        self.plots.append(w)


class BarsView(QWidget):
    """Bars over time steps (‖∂loss/∂h_t‖ for t = 1 … L), several series side by side, log scale."""

    COLOURS = ((200, 60, 90), (40, 110, 200), (30, 150, 90), (200, 140, 20))

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        self.plot = _plot(180)
        self.plot.setLabel("bottom", "time step t")
        self.plot.setLabel("left", "‖∂loss/∂h_t‖")
        self.plot.getAxis("left").enableAutoSIPrefix(False)  # decades as they are, not "×0.001"
        self.legend = self.plot.addLegend(offset=(-10, 10))
        col.addWidget(self.plot)
        self.series: list[tuple[str, np.ndarray]] = []

    def set_series(self, series: Sequence[tuple[str, Sequence[float]]]) -> None:
        self.plot.clear()
        self.legend.clear()
        self.series = [(name, np.asarray(v, dtype=np.float64)) for name, v in series]
        n = max(1, len(self.series))
        width = 0.8 / n
        positive = np.concatenate([v[v > 0] for _, v in self.series]) if self.series else np.zeros(0)
        # a log scale drawn by hand: bars rise from a decade below the smallest value, and the
        # axis is labelled in powers of ten
        floor = 10.0 ** math.floor(math.log10(float(positive.min()))) if positive.size else 1e-12
        top = float(positive.max()) if positive.size else 1.0
        for k, (name, v) in enumerate(self.series):
            t = np.arange(1, len(v) + 1) + (k - (n - 1) / 2) * width
            logv = np.log10(np.maximum(v, floor))
            bars = pg.BarGraphItem(x=t, y0=math.log10(floor), height=logv - math.log10(floor), width=width,
                                   brush=self.COLOURS[k % len(self.COLOURS)], pen=None)
            self.plot.addItem(bars)
            self.legend.addItem(bars, name)
        lo, hi = int(math.log10(floor)), int(math.ceil(math.log10(top)))
        step = max(1, (hi - lo) // 6)
        self.plot.getAxis("left").setTicks([[(e, f"1e{e}".replace("-", "−") if e else "1") for e in range(lo, hi + 1, step)]])
        self.plot.setYRange(lo, hi, padding=0.02)


class FiltersView(QWidget):
    """Conv2d filters W (C_out, C_in, K, K) as a grid of small images, a row per output channel,
    and beside them their gradients ∂loss/∂W when the backward pass has brought them."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.plots: list[pg.PlotWidget] = []
        self.images: list[pg.ImageItem] = []
        for title in ("filters W", "∂loss/∂W"):
            plot, image = image_plot(title, 200)
            row.addWidget(plot)
            self.plots.append(plot)
            self.images.append(image)
        col.addLayout(row)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: gray")
        self.note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        col.addWidget(self.note)
        self.tiled: np.ndarray | None = None

    @staticmethod
    def tile(w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        c_out, c_in, kh, kw = w.shape
        gap = 1
        tiled = np.full((c_out * (kh + gap) - gap, c_in * (kw + gap) - gap), np.nan)
        for o in range(c_out):
            for i in range(c_in):
                tiled[o * (kh + gap):o * (kh + gap) + kh, i * (kw + gap):i * (kw + gap) + kw] = w[o, i]
        return tiled

    def set_filters(self, w: np.ndarray, grad: np.ndarray | None = None) -> None:
        for k, (image, plot, a) in enumerate(zip(self.images, self.plots, (w, grad))):
            plot.setVisible(a is not None)
            if a is None:
                continue
            tiled = self.tile(a)
            if k == 0:
                self.tiled = tiled
            finite = tiled[np.isfinite(tiled)]
            top = float(np.max(np.abs(finite))) if finite.size else 1.0
            image.setImage(tiled, levels=(-(top or 1.0), top or 1.0))
        c_out, c_in, kh, kw = np.shape(w)
        self.note.setText(f"{c_out} output channels (rows) × {c_in} input channels, {kh}×{kw} each; blue negative, "
                          "red positive, white 0 (each picture on its own scale)")
