"""Editor test set-up: settings and recovery files go to Qt's test locations, never the user's,
and no test can block on a modal dialog (the window's questions get scripted answers)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QStandardPaths


@pytest.fixture(autouse=True)
def _qt_test_paths(qapp):
    QStandardPaths.setTestModeEnabled(True)
    yield


@pytest.fixture(autouse=True)
def _no_modal_dialogs(monkeypatch):
    from editor.prompts import Prompts

    monkeypatch.setattr(Prompts, "save_changes", lambda self, name: "discard")
    monkeypatch.setattr(Prompts, "restore_recovery", lambda self, when: False)
    monkeypatch.setattr(Prompts, "error", lambda self, title, text: None)
    monkeypatch.setattr(Prompts, "open_path", lambda self, directory: "")
    monkeypatch.setattr(Prompts, "save_path", lambda self, suggestion: "")
    monkeypatch.setattr(Prompts, "export_options", lambda self, dialog: None)
    monkeypatch.setattr(Prompts, "info", lambda self, title, text: None)
    yield
