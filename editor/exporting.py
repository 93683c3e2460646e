"""File › Export › to PyTorch… / to ONNX…: a dialog with the command line's options, then the engine's
:func:`engine.export.export` run off the GUI thread on a copy of the document, with a busy indicator in the status bar and, at the end, a
message saying what was written (or why nothing was). The window stays usable meanwhile; only the
export actions wait for the running export."""

from __future__ import annotations

import dataclasses
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem, QMenu, QProgressBar,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from engine.errors import EngineError

TITLES = {"torch": "PyTorch", "onnx": "ONNX"}
FILTERS = {"torch": "PyTorch module (*.py)", "onnx": "ONNX model (*.onnx)"}
TIPS = {
    "torch": "Write the graph as a PyTorch module (.py) with its weights (.safetensors), to train it with torch",
    "onnx": "Write the graph as an ONNX model (.onnx) for inference with onnxruntime and other runtimes",
}


@dataclass(frozen=True)
class Options:
    """The command line's export options (``-o``, ``--returns``, ``--dtype``, ``--seed``,
    ``--no-check``), as the dialog collects them."""

    path: Path
    returns: tuple[str, ...] = ()  # node names; empty: the graph's Output nodes (or its loss)
    dtype: str | None = None  # None: the file's
    seed: int | None = None  # None: the file's (only initial weights depend on it)
    check: bool = True


class OptionsDialog(QDialog):
    """Where to write and how: the file (Browse…), the values to return, the float type, the
    seed of the initial weights (an untrained graph only) and the check against the app."""

    def __init__(self, parent: QWidget | None, target: str, suggestion: str, nodes: list[str],
                 file_dtype: str, file_seed: int, trained: bool) -> None:
        super().__init__(parent)
        self.target = target
        self.setWindowTitle(f"Export to {TITLES[target]}")
        form = QFormLayout()
        self.path_edit = QLineEdit(suggestion)
        self.path_edit.setMinimumWidth(360)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)
        form.addRow("File:", row)
        self.returns = QListWidget()
        self.returns.setToolTip("Tick nodes to return their values instead of the graph's Output nodes")
        for name in nodes:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked)
            self.returns.addItem(item)
        self.returns.setMaximumHeight(140)
        form.addRow("Return:", self.returns)
        form.addRow("", QLabel("Nothing ticked: the Output nodes (or the loss)."))
        self.dtype = QComboBox()
        self.dtype.addItem(f"the file's ({file_dtype})", None)
        self.dtype.addItem("float32", "float32")
        self.dtype.addItem("float64", "float64")
        form.addRow("Float type:", self.dtype)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(file_seed)
        self.seed.setEnabled(not trained)
        self.seed.setToolTip("The exported weights are the trained ones" if trained
                             else "Seed of the initial weights, drawn as the app draws them")
        form.addRow("Seed:", self.seed)
        self._file_seed = file_seed
        self.check = QCheckBox("Run the result once against the app's forward pass")
        self.check.setChecked(True)
        form.addRow("", self.check)
        if target == "onnx":
            form.addRow("", QLabel("ONNX models are for inference: no gradients, no training."))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.ok = buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.path_edit.textChanged.connect(lambda text: self.ok.setEnabled(bool(text.strip())))
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, self.windowTitle(), self.path_edit.text(), FILTERS[self.target])
        if path:
            self.path_edit.setText(path)

    def options(self) -> Options:
        returns = tuple(self.returns.item(i).text() for i in range(self.returns.count())
                        if self.returns.item(i).checkState() == Qt.CheckState.Checked)
        seed = self.seed.value() if self.seed.isEnabled() and self.seed.value() != self._file_seed else None
        return Options(Path(self.path_edit.text().strip()), returns, self.dtype.currentData(), seed,
                       self.check.isChecked())


@dataclass(frozen=True)
class Outcome:
    """What one export did: the files written and notes, or the message of why it could not."""

    target: str
    paths: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()
    error: str = ""


def suggestion(project: Any, path: Path | None, directory: str, target: str) -> str:
    """Where the save dialog starts: beside the open file with its stem, else the project's name."""
    from engine.export import SUFFIXES

    if path is not None:
        return str(path.with_suffix(SUFFIXES[target]))
    stem = (project.name if project is not None and project.name else "model")
    # Lower case, runs of anything else as one "_": also a valid module name for the .py.
    stem = re.sub(r"[^0-9a-z]+", "_", stem.lower()).strip("_") or "model"
    return str(Path(directory or ".") / (stem + SUFFIXES[target]))


def run_export(project: Any, target: str, options: Options, origin: str) -> Outcome:
    """Export and turn every failure into a message (this runs on a worker thread)."""
    from engine.export import export

    try:
        result = export(project, target, options.path, outputs=options.returns or None, seed=options.seed,
                        dtype=options.dtype, check=options.check, origin=origin)
    except (EngineError, OSError) as exc:
        return Outcome(target, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in an exporter must not take the window down
        return Outcome(target, error=f"unexpected error ({type(exc).__name__}: {exc}); please report this as a bug")
    return Outcome(target, result.paths, result.notes)


class Exporting(QObject):
    """The export actions of one window."""

    finished = Signal(object)  # Outcome, delivered on the GUI thread

    def __init__(self, window: Any, menu: QMenu, before: QAction | None) -> None:
        super().__init__(window)
        self.window = window
        self.actions: dict[str, QAction] = {}
        sub = QMenu("E&xport", window)
        sub.setObjectName("export_menu")
        for target in TITLES:
            a = QAction(f"to {TITLES[target]}…", window)
            a.setStatusTip(TIPS[target])
            a.setToolTip(TIPS[target])
            a.triggered.connect(lambda _=False, t=target: self.start(t))
            sub.addAction(a)
            self.actions[target] = a
        self.menu = sub
        if before is not None:
            menu.insertMenu(before, sub)
        else:
            menu.addMenu(sub)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(120)
        self.busy.setTextVisible(False)
        self.busy.hide()
        window.statusBar().addPermanentWidget(self.busy)
        self._thread: threading.Thread | None = None
        self.finished.connect(self._on_finished)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, target: str) -> bool:
        """Ask where, then export in the background; False if nothing was started."""
        from engine.export import MissingExtraError, require

        w = self.window
        if self.running:
            w.statusBar().showMessage("An export is still running", 4000)
            return False
        try:
            require(target)
        except MissingExtraError as exc:
            w.prompts.error(f"Export to {TITLES[target]}", str(exc))
            return False
        files = w.files
        start = suggestion(files.project, None if files.is_preset else files.path,
                           str(files.settings.value("last_dir", "")), target)
        project = files.current_project()  # a copy: editing on meanwhile cannot reach the export
        from engine.train import TrainingConfig

        try:
            config = TrainingConfig.from_dict(project.training)
        except EngineError:
            config = TrainingConfig()
        nodes = sorted(n.name for n in project.graph.nodes.values())
        chosen = w.prompts.export_options(self.target_dialog(target, start, nodes, config.dtype, config.seed,
                                                             project.weights is not None))
        if chosen is None:
            return False
        from engine.export import SUFFIXES

        path = chosen.path
        if path.suffix.lower() != SUFFIXES[target]:
            path = path.with_name(path.name + SUFFIXES[target])
        options = dataclasses.replace(chosen, path=path)
        origin = files.display_name()
        self._thread = threading.Thread(target=self._work, args=(project, target, options, origin),
                                        name=f"export-{target}", daemon=True)
        for a in self.actions.values():
            a.setEnabled(False)
        self.busy.setToolTip(f"Exporting to {TITLES[target]}: {path.name}")
        self.busy.show()
        w.statusBar().showMessage(f"Exporting to {TITLES[target]}: {path}… (the model is run once to check it)")
        self._thread.start()
        return True

    def target_dialog(self, target: str, start: str, nodes: list[str], dtype: str, seed: int,
                      trained: bool) -> OptionsDialog:
        return OptionsDialog(self.window, target, start, nodes, dtype, seed, trained)

    def _work(self, project: Any, target: str, options: Options, origin: str) -> None:
        self.finished.emit(run_export(project, target, options, origin))

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running export ends (tests, and closing the window)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _on_finished(self, outcome: Outcome) -> None:
        self.busy.hide()
        for a in self.actions.values():
            a.setEnabled(True)
        w = self.window
        title = f"Export to {TITLES[outcome.target]}"
        if outcome.error:
            w.statusBar().showMessage(f"Export to {TITLES[outcome.target]} failed", 6000)
            w.prompts.error(title, f"Nothing was exported.\n\n{outcome.error}")
            return
        written = "\n".join(f"• {p}" for p in outcome.paths)
        notes = "\n".join(f"• {n}" for n in outcome.notes)
        w.statusBar().showMessage(f"Exported {', '.join(p.name for p in outcome.paths)}", 6000)
        w.prompts.info(title, f"Wrote:\n{written}" + (f"\n\n{notes}" if notes else ""))


def install(window: Any, file_menu: QMenu, before: QAction | None) -> Exporting:
    return Exporting(window, file_menu, before)
