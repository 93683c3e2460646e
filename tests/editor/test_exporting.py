"""File › Export: the menu, the background export, its messages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt

from editor import exporting
from editor.window import MainWindow
from engine import blocks  # noqa: F401 - registers the blocks
from engine.export import MissingExtraError
from engine.graph import Graph
from engine.serialize import Project

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints")

HAVE_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "safetensors"))


class Told:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.infos: list[tuple[str, str]] = []
        self.dialogs: list = []
        self.answer = None  # a function of the dialog: None cancels


@pytest.fixture
def win(qtbot, tmp_path):
    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    told = Told()
    w.prompts.error = lambda title, text: told.errors.append((title, text))
    w.prompts.info = lambda title, text: told.infos.append((title, text))

    def ask(dialog):
        told.dialogs.append(dialog)
        return told.answer(dialog) if told.answer else None

    w.prompts.export_options = ask
    w.told = told
    qtbot.addWidget(w)
    yield w
    w.exporting.wait(120)
    w.undo_stack.setClean()


def _actions(win):
    return {a.text(): a for a in win.exporting.menu.actions()}


def test_file_menu_has_export_entries(win):
    file_menu = next(a.menu() for a in win.menuBar().actions() if a.text().replace("&", "") == "File")
    assert win.exporting.menu.menuAction() in file_menu.actions()
    assert set(_actions(win)) == {"to PyTorch…", "to ONNX…"}
    assert all(a.statusTip() for a in _actions(win).values())


def test_cancelled_dialog_starts_nothing(win):
    assert win.exporting.start("torch") is False or not HAVE_TORCH
    assert not win.exporting.running
    assert win.told.infos == []


def test_suggested_name_follows_the_file_or_the_project():
    p = Project(Graph(), name="Two-layer net: x → y")
    assert exporting.suggestion(p, None, "/tmp/d", "torch") == "/tmp/d/two_layer_net_x_y.py"
    assert exporting.suggestion(p, None, "", "onnx") == "two_layer_net_x_y.onnx"
    assert exporting.suggestion(Project(Graph(), name="→"), None, "", "torch") == "model.py"
    assert exporting.suggestion(p, Path("/w/net.bps"), "", "onnx") == "/w/net.onnx"


def test_missing_extra_is_a_message_with_the_install_command(win, monkeypatch):
    def missing(target):
        raise MissingExtraError('exporting to ONNX needs onnx; Install the \'export\' extra: pip install "backprop-studio[export]"')

    monkeypatch.setattr("engine.export.require", missing)
    assert win.exporting.start("onnx") is False
    assert win.told.dialogs == []  # not asked where to write what cannot be written
    (title, text), = win.told.errors
    assert "ONNX" in title and "pip install" in text


def test_a_failing_export_says_why_and_writes_nothing(win, qtbot, tmp_path, monkeypatch):
    from engine.export import ExportError

    def fails(*args, **kwargs):
        raise ExportError("cannot export 1 node: Weird: no torch equivalent")

    monkeypatch.setattr("engine.export.require", lambda target: None)
    monkeypatch.setattr("engine.export.export", fails)
    win.told.answer = lambda d: exporting.Options(tmp_path / "m.py")
    assert win.exporting.start("torch")
    qtbot.waitUntil(lambda: bool(win.told.errors), timeout=20000)
    (title, text), = win.told.errors
    assert "Nothing was exported" in text and "Weird" in text
    assert all(a.isEnabled() for a in _actions(win).values())
    assert not list(tmp_path.glob("m*"))


def test_a_bug_in_an_exporter_is_a_message_not_a_crash(monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise KeyError("slot")

    monkeypatch.setattr("engine.export.export", boom)
    outcome = exporting.run_export(Project(Graph()), "torch", exporting.Options(tmp_path / "m.py"), "x")
    assert "KeyError" in outcome.error and "report" in outcome.error


def test_dialog_offers_the_command_line_options(win, qtbot):
    assert win.files.open_preset("two_layer_net")
    win.told.answer = lambda d: None
    win.exporting.start("torch")
    d, = win.told.dialogs
    qtbot.addWidget(d)
    assert d.path_edit.text().endswith(".py")
    names = [d.returns.item(i).text() for i in range(d.returns.count())]
    assert "loss" in names or names  # every node can be returned
    assert d.options().returns == () and d.options().dtype is None and d.options().seed is None
    assert d.options().check
    d.returns.item(0).setCheckState(Qt.CheckState.Checked)
    d.dtype.setCurrentIndex(d.dtype.findData("float64"))
    d.seed.setValue(d.seed.value() + 3)
    d.check.setChecked(False)
    o = d.options()
    assert o.returns == (names[0],) and o.dtype == "float64" and o.seed is not None and not o.check
    assert d.seed.isEnabled()  # a lesson's initial weights depend on the seed
    d.path_edit.setText("  ")
    assert not d.ok.isEnabled()


@pytest.mark.skipif(not HAVE_TORCH, reason="needs the export extra (torch, safetensors)")
def test_export_the_open_lesson_to_pytorch_in_the_background(win, qtbot, tmp_path):
    assert win.files.open_preset("two_layer_net")
    seen = []

    def answer(d):
        seen.append(d.path_edit.text())
        d.path_edit.setText(str(tmp_path / "net"))  # no suffix typed: .py is added
        return d.options()

    win.told.answer = answer
    assert win.exporting.start("torch")
    assert win.exporting.busy.isVisibleTo(win)
    assert not any(a.isEnabled() for a in _actions(win).values())  # one export at a time
    qtbot.waitUntil(lambda: bool(win.told.infos or win.told.errors), timeout=120000)
    assert win.told.errors == []
    assert seen[0].endswith(".py")
    (title, text), = win.told.infos
    assert (tmp_path / "net.py").exists() and (tmp_path / "net.safetensors").exists()
    assert str(tmp_path / "net.py") in text and "checked" in text
    assert not win.exporting.busy.isVisibleTo(win)
    assert not win.isWindowModified()  # exporting is not an edit


@pytest.mark.skipif(not HAVE_TORCH, reason="needs the export extra (torch, safetensors)")
def test_export_options_reach_the_export(win, qtbot, tmp_path):
    assert win.files.open_preset("two_layer_net")

    def answer(d):
        return exporting.Options(tmp_path / "net.py", dtype="float64", check=False)

    win.told.answer = answer
    assert win.exporting.start("torch")
    qtbot.waitUntil(lambda: bool(win.told.infos or win.told.errors), timeout=120000)
    assert win.told.errors == []
    from safetensors.numpy import load_file

    assert {str(a.dtype) for a in load_file(str(tmp_path / "net.safetensors")).values()} == {"float64"}
    assert "checked" not in win.told.infos[0][1]
