"""Files for one window: new, open, save, recent files, autosave and crash recovery.

:class:`Files` owns what the open document was loaded from (the project, its path, whether it is
a shipped lesson) and every read and write of it. The window shows what it is given through one
callback and listens to :attr:`Files.changed` for its title; it never touches a file itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QSettings, QStandardPaths, Signal
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import QMenu

from editor.document import Document
from editor.prompts import Prompts
from engine.errors import EngineError
from engine.graph import Graph

MAX_RECENT = 10


def lesson_title(name: str) -> str:
    """A shipped lesson's title (its file's "name"), read without loading the lesson; the file
    name when it has none or cannot be read."""
    fallback = name.replace("_", " ")
    try:
        import presets
        path = presets.path(name)
        if path.suffix != ".json":
            return fallback
        with open(path, encoding="utf-8") as fh:
            title = json.load(fh).get("name")
    except (OSError, ValueError, KeyError, AttributeError):
        return fallback
    return title.strip() if isinstance(title, str) and title.strip() else fallback


def recovery_path() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base) / "recovery.json"


class Files(QObject):
    """Open, save and recover the window's document.

    ``show`` is called with each project to display (the window resets its views there);
    ``changed`` fires when the path, the project or the saved state changes; ``message`` carries
    a status-bar line and how long to show it."""

    changed = Signal()
    message = Signal(str, int)
    loaded = Signal(str)

    def __init__(self, doc: Document, undo_stack: QUndoStack, settings: QSettings, prompts: Prompts,
                 show: Callable[[Any], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.undo_stack = undo_stack
        self.settings = settings
        self.prompts = prompts
        self._show = show
        self.project: Any = None
        self.path: Path | None = None
        self.is_preset = False
        self.recent_menu: QMenu | None = None
        self.presets_menu: QMenu | None = None

    # --- state -----------------------------------------------------------------------------------

    @property
    def modified(self) -> bool:
        return not self.undo_stack.isClean()

    def display_name(self) -> str:
        if self.path is not None and not self.is_preset:
            return self.path.name
        return (self.project.name if self.project is not None and self.project.name else None) or "Untitled"

    def set_project(self, project: Any, path: Path | None, *, is_preset: bool = False) -> None:
        """Show a loaded project (not undoable: the stack starts clean)."""
        self.project = project
        self.path = path
        self.is_preset = is_preset
        self._show(project)
        self.changed.emit()

    def maybe_save(self) -> bool:
        """True when it is fine to drop the current document (saved, discarded, or unchanged)."""
        if not self.modified:
            return True
        answer = self.prompts.save_changes(self.display_name())
        if answer == "save":
            return self.save()
        return answer == "discard"

    # --- opening ---------------------------------------------------------------------------------

    def new_document(self) -> None:
        if not self.maybe_save():
            return
        from engine.serialize import Project
        self.set_project(Project(Graph()), None)

    def _read(self, path: Path) -> Any:
        """The project in ``path``, or None after telling the user why it cannot be opened."""
        from engine.serialize import load
        try:
            return load(path)
        except (EngineError, OSError) as exc:
            self.prompts.error("Cannot open file", str(exc))
            return None

    def load_path(self, path: str | Path, *, is_preset: bool = False, remember: bool = True) -> bool:
        """Load a file; on failure show the loader's message and leave the document untouched."""
        p = Path(path)
        project = self._read(p)
        if project is None:
            return False
        self._adopt(project, p, is_preset=is_preset, remember=remember)
        return True

    def _adopt(self, project: Any, path: Path, *, is_preset: bool, remember: bool) -> None:
        self.set_project(project, path, is_preset=is_preset)
        if remember and not is_preset:
            self._remember(path)
        self.loaded.emit(str(path))

    def open_path(self, path: str | Path, *, is_preset: bool = False) -> bool:
        """Open a file the user chose: read and check it first, then (only if it can be opened)
        ask about unsaved changes, so a bad file never costs the user a question or their work."""
        p = Path(path)
        project = self._read(p)
        if project is None or not self.maybe_save():
            return False
        self._adopt(project, p, is_preset=is_preset, remember=True)
        return True

    def open_dialog(self) -> None:
        directory = str(self.path.parent) if self.path is not None and not self.is_preset else str(self.settings.value("last_dir", ""))
        path = self.prompts.open_path(directory)
        if path:
            self.open_path(path)

    def open_dropped(self, paths: list[str]) -> None:
        if paths:
            self.open_path(paths[0])

    def open_preset(self, name: str) -> bool:
        import presets
        try:
            path = presets.path(name)
        except KeyError as exc:
            self.prompts.error("Cannot open lesson", str(exc))
            return False
        return self.open_path(path, is_preset=True)

    def populate_presets(self, menu: QMenu) -> None:
        """Fill Open Lesson with the lessons, by their titles."""
        self.presets_menu = menu
        self.presets_actions: dict[str, Any] = {}
        menu.clear()
        try:
            import presets
            names = presets.names()
        except Exception:  # noqa: BLE001 - a broken presets package must not stop the editor
            names = []
        for name in names:
            a = menu.addAction(lesson_title(name).replace("&", "&&"))
            a.setStatusTip(f"Open the lesson {name}")
            a.triggered.connect(lambda _=False, n=name: self.open_preset(n))
            self.presets_actions[name] = a
        menu.setEnabled(bool(names))

    # --- saving ----------------------------------------------------------------------------------

    def current_project(self) -> Any:
        """The project to write: the document's graph plus what the loaded file carried. Weights
        of nodes that are gone or changed shape are dropped (they no longer fit)."""
        from engine.serialize import Project
        base = self.project
        graph = self.doc.graph.copy()
        if base is None:
            return Project(graph)
        weights = None
        if base.weights:
            weights = {}
            report = graph.infer()
            for nid, ws in base.weights.items():
                if nid not in graph.nodes:
                    continue
                expected = graph.weight_shapes(nid, report)
                if all(name in expected and tuple(expected[name]) == tuple(a.shape) for name, a in ws.items()):
                    weights[nid] = dict(ws)
        same = weights is not None and base.weights is not None and len(weights) == len(base.weights)
        return Project(graph, base.name, base.description, dict(base.data), dict(base.training), weights or None,
                       base.optimizer_state if same else None, base.history if same else None)

    def write(self, path: Path) -> bool:
        from engine.serialize import save
        project = self.current_project()
        try:
            save(project, path)
        except (EngineError, OSError) as exc:
            self.prompts.error("Cannot save file", str(exc))
            return False
        self.path = path
        self.is_preset = False
        self.project = project
        self.undo_stack.setClean()
        self._remember(path)
        self.drop_recovery()
        self.changed.emit()
        self.message.emit(f"Saved {path}", 4000)
        return True

    def save(self) -> bool:
        if self.path is None or self.is_preset:
            return self.save_as()
        return self.write(self.path)

    def save_as(self) -> bool:
        stem = (self.project.name if self.project is not None and self.project.name else "untitled")
        suggestion = str(self.path) if self.path is not None and not self.is_preset else \
            str(Path(str(self.settings.value("last_dir", "")) or ".") / (stem.replace(" ", "_").lower() + ".json"))
        path = self.prompts.save_path(suggestion)
        if not path:
            return False
        p = Path(path)
        if not p.suffix:
            p = p.with_suffix(".json")
        return self.write(p)

    # --- recent files ----------------------------------------------------------------------------

    def _remember(self, path: Path) -> None:
        recent = [str(path.resolve())] + [p for p in self.recent_files() if p != str(path.resolve())]
        self.settings.setValue("recent", recent[:MAX_RECENT])
        self.settings.setValue("last_dir", str(path.resolve().parent))
        self.update_recent_menu()

    def recent_files(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def update_recent_menu(self, menu: QMenu | None = None) -> None:
        if menu is not None:
            self.recent_menu = menu
        menu = self.recent_menu
        if menu is None:
            return
        menu.clear()
        files = self.recent_files()
        for i, p in enumerate(files):
            a = menu.addAction(f"&{i + 1}  {Path(p).name}")
            a.setToolTip(p)
            a.setStatusTip(p)
            a.triggered.connect(lambda _=False, path=p: self.open_path(path))
        if files:
            menu.addSeparator()
            menu.addAction("Clear Recent", lambda: (self.settings.setValue("recent", []), self.update_recent_menu()))
        menu.setEnabled(bool(files))

    # --- autosave and recovery -------------------------------------------------------------------

    def autosave(self) -> bool:
        """Write the unsaved document to the recovery file (only when there are changes)."""
        if not self.modified:
            return False
        from engine.serialize import Project, save
        path = recovery_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            project = self.current_project()
            save(Project(project.graph, project.name, project.description, project.data, project.training), path)
        except (EngineError, OSError) as exc:
            self.message.emit(f"Autosave failed: {exc}", 6000)
            return False
        self.settings.setValue("recovery/source", str(self.path) if self.path is not None and not self.is_preset else "")
        return True

    def drop_recovery(self) -> None:
        try:
            recovery_path().unlink()
        except OSError:
            pass
        self.settings.remove("recovery/source")

    def offer_recovery(self) -> bool:
        """After a crash: offer to restore the recovery file. True when it was restored."""
        path = recovery_path()
        if not path.exists():
            return False
        source = str(self.settings.value("recovery/source", ""))
        when = f" while editing {Path(source).name}" if source else ""
        if not self.prompts.restore_recovery(when):
            self.drop_recovery()
            return False
        from engine.serialize import load
        try:
            project = load(path)
        except (EngineError, OSError) as exc:
            self.prompts.error("Cannot restore", str(exc))
            self.drop_recovery()
            return False
        self.set_project(project, Path(source) if source else None)
        # Restored work is unsaved work: mark it modified until the user saves it.
        self.undo_stack.resetClean()
        self.changed.emit()
        return True
