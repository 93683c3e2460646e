"""Editor test set-up: settings and recovery files go to Qt's test locations, never the user's."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QStandardPaths


@pytest.fixture(autouse=True)
def _qt_test_paths(qapp):
    QStandardPaths.setTestModeEnabled(True)
    yield
