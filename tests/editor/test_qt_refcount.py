"""Guard against the PySide6 6.12.0 bug on CPython 3.11: every void-returning Qt method dropped a
reference to None, and after a few thousand calls the interpreter aborted (none_dealloc).
If a dependency upgrade brings it back, this fails loudly instead of crashing users."""

import sys

import pytest

QtWidgets = pytest.importorskip("PySide6.QtWidgets")


def test_void_qt_calls_keep_none_refcount(qapp):
    widget = QtWidgets.QWidget()
    label = QtWidgets.QLabel()
    before = sys.getrefcount(None)
    for i in range(300):
        widget.setWindowTitle(f"t{i}")  # void
        widget.resize(100 + i % 7, 80)  # void
        label.setText(str(i))  # void
        widget.update()  # void
    after = sys.getrefcount(None)
    # 1200 void calls: a leaking binding drops ~1200 references; allow small noise.
    assert abs(after - before) < 50, f"None refcount moved by {after - before} over 1200 void Qt calls"
