"""A holder that keeps a changing widget from laying out the window around it.

A label's new text calls ``updateGeometry``: its layout is invalidated, and every layout above it
is activated again up to the main window (Qt calls ``updateGeometry`` on each layout's widget
after activating it), where ``QMainWindow`` lays out its docks and toolbars again, with a
``QPropertyAnimation`` per dock. A label whose text changes at every training run (the Train
panel's summary, the status bar's trained state) costs that each time. Held by :class:`Steady`,
a widget with no layout, its new text repaints it and lays out nothing: the holder's size hint
does not follow the text (one line of the held widget's font, and a width that only grows).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize
from PySide6.QtWidgets import QLabel, QWidget


class Steady(QWidget):
    """Holds ``label`` (a label or a button: filling the holder) outside any layout. The holder's
    size hint: its size hint when held or last refitted (a label's at least one line of its
    font high) and, with ``grow``, as large as the largest it has been since :meth:`refit` (a
    wider text lays out once; a narrower one nothing). Without ``grow``, the label's width is
    the layout's to decide (``Ignored``). Show or hide the holder, not the label."""

    def __init__(self, label: QWidget, *, grow: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = label
        self.grow = grow
        label.setParent(self)
        self.setSizePolicy(label.sizePolicy())
        self._size = QSize(0, 0)
        self.refit()

    def refit(self) -> None:
        """Fit the holder to the label's text as it is now (narrower too): lays out once."""
        self._size = self._hint()
        self.updateGeometry()

    def _hint(self) -> QSize:
        hint = self.label.sizeHint()
        if isinstance(self.label, QLabel):
            m = self.label.contentsMargins()
            hint.setHeight(max(hint.height(), self.label.fontMetrics().height() + m.top() + m.bottom()))
        return hint

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(self._size)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        hint = self.sizeHint()
        return hint if self.grow else QSize(0, hint.height())

    def resizeEvent(self, event: QEvent) -> None:  # noqa: N802
        self.label.setGeometry(self.rect())
        super().resizeEvent(event)

    def event(self, event: QEvent) -> bool:
        # a new text posts a layout request to the label's parent (this holder, with no layout;
        # not while the holder is hidden: then when it shows): the holder grows when the text
        # is wider than it, and only then lays out around it
        if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Show) and self.grow:
            size = self._size.expandedTo(self._hint())
            if size != self._size:
                self._size = size
                self.updateGeometry()
        elif event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self.refit()
        return super().event(event)
