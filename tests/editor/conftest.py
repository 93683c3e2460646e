"""Editor test set-up: settings and recovery files go to Qt's test locations, never the user's,
and no test can block on a modal dialog (the window's questions get scripted answers)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QStandardPaths


@pytest.fixture(autouse=True)
def _qt_test_paths(qapp, tmp_path, monkeypatch):
    QStandardPaths.setTestModeEnabled(True)
    # Each test's recovery files in its own folder: tests (and other people's test runs on this
    # machine) never see each other's unsaved work.
    monkeypatch.setenv("BACKPROP_STUDIO_RECOVERY_DIR", str(tmp_path / "recovery"))
    yield


@pytest.fixture(autouse=True)
def _no_modal_dialogs(monkeypatch):
    from editor.prompts import Prompts

    monkeypatch.setattr(Prompts, "save_changes", lambda self, name: "discard")
    monkeypatch.setattr(Prompts, "restore_recovery", lambda self, items: "later")
    monkeypatch.setattr(Prompts, "error", lambda self, title, text: None)
    monkeypatch.setattr(Prompts, "open_path", lambda self, directory: "")
    monkeypatch.setattr(Prompts, "save_path", lambda self, suggestion: "")
    monkeypatch.setattr(Prompts, "export_options", lambda self, dialog: None)
    monkeypatch.setattr(Prompts, "info", lambda self, title, text: None)
    yield


@pytest.fixture
def shown_window(qtbot, tmp_path):
    """A main window shown at 1400×900 and active (keys reach its shortcuts), with settings of
    its own; passes and training runs are stopped and the document left clean at the end."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from editor.window import MainWindow

    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w)
    yield w
    w.train.shutdown()
    w.run.shutdown()
    w.undo_stack.setClean()
