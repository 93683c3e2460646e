"""A learned node's weights before training and now, side by side on one colour scale: a
convolution's filters as small images (the ConvNet's first filters, from noise to bar
detectors), a matrix as a heatmap, a vector as bars. "Before" is what the file's seed draws
(:func:`engine.runtime.init_weights`, the weights a run starts from); "now" is the document's
trained state."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from editor.panels.tensorview import FiltersView, image_plot

MAX_SIDE = 256  # a larger matrix shows its first rows and columns


def _picture(w: np.ndarray) -> np.ndarray:
    """A 2-D picture of an array: filters tiled, a matrix as it is, a vector as one row."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 4:
        return FiltersView.tile(w)
    if w.ndim == 3:
        return w.reshape(-1, w.shape[-1])[:MAX_SIDE, :MAX_SIDE]
    if w.ndim == 2:
        return w[:MAX_SIDE, :MAX_SIDE]
    return w.reshape(1, -1)[:, :MAX_SIDE * 4]


def default_weight(names: list[str], shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The weight to show first: the first filters (4-D), else the first matrix, else the first."""
    for ndim in (4, 2):
        for n in names:
            if len(shapes[n]) == ndim:
                return n
    return names[0] if names else None


class WeightsView(QWidget):
    """See the module docstring; :meth:`set_weights` shows a node."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        col = QVBoxLayout(self)
        col.setContentsMargins(4, 2, 4, 2)
        col.setSpacing(4)
        top = QHBoxLayout()
        self.header = QLabel()
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setWordWrap(True)
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        top.addWidget(self.header, 1)
        self.combo = QComboBox()
        self.combo.setObjectName("train_weight")
        self.combo.setToolTip("Which of the node's weights to show")
        self.combo.currentTextChanged.connect(lambda _t: self._draw())
        top.addWidget(self.combo)
        col.addLayout(top)
        row = QHBoxLayout()
        self.plots: list[pg.PlotWidget] = []
        self.images: list[pg.ImageItem] = []
        for title in ("before training", "now"):
            plot, image = image_plot(title, None)
            row.addWidget(plot)
            self.plots.append(plot)
            self.images.append(image)
        col.addLayout(row, 1)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        col.addWidget(self.note)
        self.before: dict[str, np.ndarray] = {}
        self.now: dict[str, np.ndarray] = {}
        self.step = 0
        self.node_label = ""
        self.empty("")

    def empty(self, why: str) -> None:
        self.before, self.now = {}, {}
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.blockSignals(False)
        self.combo.hide()
        for plot in self.plots:
            plot.hide()
        self.header.setText(why or "<i>Select a node with learned weights (a Parameter, a Linear, a Conv2d, a composite "
                                   "such as the ConvNet…) to see its weights before training and now.</i>")
        self.note.clear()

    def set_weights(self, label: str, before: Mapping[str, np.ndarray], now: Mapping[str, np.ndarray], step: int) -> None:
        """Show a node's weights: ``before`` (the seed's) and ``now`` (after ``step`` steps)."""
        names = [n for n in before if n in now and np.shape(before[n]) == np.shape(now[n]) and np.size(before[n])]
        if not names:
            self.empty(f"<b>{label}</b> has no learned weights.")
            return
        keep = self.combo.currentText() if label == self.node_label else None
        self.node_label, self.step = label, step
        self.before = {n: np.asarray(before[n]) for n in names}
        self.now = {n: np.asarray(now[n]) for n in names}
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(names)
        choice = keep if keep in names else default_weight(names, {n: np.shape(before[n]) for n in names})
        self.combo.setCurrentText(choice or names[0])
        self.combo.blockSignals(False)
        self.combo.setVisible(len(names) > 1)
        for plot in self.plots:
            plot.show()
        self._draw()

    def _draw(self) -> None:
        name = self.combo.currentText()
        if name not in self.before:
            return
        b, a = self.before[name], self.now[name]
        pictures = [_picture(b), _picture(a)]
        finite = np.concatenate([p[np.isfinite(p)] for p in pictures])
        top = float(np.max(np.abs(finite))) if finite.size else 1.0
        for image, picture in zip(self.images, pictures):
            image.setImage(picture, levels=(-(top or 1.0), top or 1.0))
        self.plots[1].setTitle(f"after {self.step:,} steps" if self.step else "now (untrained)", size="9pt")
        change = float(np.linalg.norm((a - b).astype(np.float64)))
        base = float(np.linalg.norm(b.astype(np.float64))) or 1.0
        shape = "×".join(str(d) for d in b.shape) or "a number"
        what = "filters (rows: output channels, columns: input channels)" if b.ndim == 4 else \
            ("a matrix" if b.ndim == 2 else ("a vector" if b.ndim == 1 else "values"))
        cut = " (the first 256 rows and columns)" if any(d > MAX_SIDE for d in b.shape[-2:]) and b.ndim in (2, 3) else ""
        self.header.setText(f"<b>{self.node_label}</b> weight <b>{name}</b> ({shape}): {what}{cut}")
        self.note.setText(f"Training changed it by {100 * change / base:.0f} % (‖now − before‖ / ‖before‖). One colour "
                          "scale for both: blue negative, red positive, white 0." if self.step else
                          "Not trained yet: both pictures are the weights the seed draws.")

    def picture(self, which: int = 1) -> np.ndarray | None:
        """The array drawn on the ``which`` side (0 before, 1 now), for tests."""
        return self.images[which].image

    def names(self) -> list[str]:
        return [self.combo.itemText(i) for i in range(self.combo.count())]

    @staticmethod
    def current_of(before: Mapping[str, Any]) -> str | None:
        return default_weight(list(before), {n: np.shape(v) for n, v in before.items()})
