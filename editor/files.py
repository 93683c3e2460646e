"""Files for one window: new, open, save, recent files, autosave and crash recovery.

:class:`Files` owns what the open document was loaded from (the project, its path, whether it is
a shipped lesson) and every read and write of it. The window shows what it is given through one
callback and listens to :attr:`Files.changed` for its title; it never touches a file itself.

Recovery: every window autosaves its unsaved work to a file of its own in :func:`recovery_dir`
(``<id>.json``, private to the user, with ``<id>.source`` saying which file it was edited from)
and holds ``<id>.lock`` (a :class:`QLockFile`) for as long as it lives. A recovery file whose lock
nobody holds any more (the window's process died) is an orphan: the next start offers every
orphan at once (:meth:`Files.offer_recovery`). Two windows, in one process or in two, never
write, offer or delete each other's files.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QLockFile, QObject, QSettings, QStandardPaths, Signal
from PySide6.QtGui import QUndoStack
from PySide6.QtWidgets import QMenu

from editor.document import Document
from editor.prompts import Prompts
from engine.errors import EngineError
from engine.graph import Graph, short

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


RECOVERY_ENV = "BACKPROP_STUDIO_RECOVERY_DIR"
BUG_REPORT = ("This is a bug in Backprop Studio; please report it "
              "(with the file, if you can share it).")


def recovery_dir() -> Path:
    """Where windows keep their unsaved work: ``$BACKPROP_STUDIO_RECOVERY_DIR`` when set, else
    ``recovery/`` in the application's data folder."""
    configured = os.environ.get(RECOVERY_ENV, "").strip()
    if configured:
        return Path(configured)
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base) / "recovery"


def _legacy_recovery_path() -> Path | None:
    """The one recovery file versions before per-window recovery wrote (offered once more)."""
    if os.environ.get(RECOVERY_ENV, "").strip():
        return None
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base) / "recovery.json"


def _lock(path: Path) -> QLockFile:
    lock = QLockFile(str(path))
    # NOTE: 0 turns off "older than 30 s means stale": a window open for hours still holds its
    # lock; only a lock whose process is gone (on this machine) is taken over.
    lock.setStaleLockTime(0)
    return lock


def unexpected(what: str, exc: BaseException) -> str:
    """One line for an exception nobody expected: what failed, the exception, a bug-report hint."""
    detail = short(" ".join(str(exc).split()), 200)
    return f"{what} failed unexpectedly ({type(exc).__name__}{': ' + detail if detail else ''}). {BUG_REPORT}"


@dataclass
class Orphan:
    """A recovery file whose window is gone, locked by us while the user decides."""

    path: Path
    source: str  # the file its work was edited from ("" when none)
    name: str  # the document's name when it was kept
    saved: float  # when it was last written (seconds since the epoch)
    lock: QLockFile

    def describe(self) -> str:
        when = time.strftime("%H:%M on %d %b", time.localtime(self.saved))
        what = f"“{short(self.name)}”" if self.name else "an untitled graph"
        return what + (f", edited from {short(Path(self.source).name)}" if self.source else "") + f", kept at {when}"

    def discard(self) -> None:
        """Delete it (its work was restored elsewhere, or the user said so)."""
        for p in (self.path, self.path.with_suffix(".source")):
            try:
                p.unlink()
            except OSError:
                pass
        self.lock.unlock()

    def release(self) -> None:
        """Leave it for the next start."""
        self.lock.unlock()


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
        # This window's own recovery file (see the module docstring), locked while it exists.
        self._recovery_id = uuid.uuid4().hex
        self._recovery_lock: QLockFile | None = None
        self._recovery_source: tuple[str, str] | None = None  # what <id>.source says

    # --- state -----------------------------------------------------------------------------------

    @property
    def modified(self) -> bool:
        return not self.undo_stack.isClean()

    def display_name(self) -> str:
        if self.path is not None and not self.is_preset:
            return short(self.path.name)
        # a file's name is the file's to say, so never a megabyte in a title bar or a question
        return short(self.project.name if self.project is not None and self.project.name else "") or "Untitled"

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
        """The project in ``path``, or None after telling the user why it cannot be opened: the
        loader's message, or (for anything it did not expect) one line asking for a bug report.
        Never silently nothing, never a traceback."""
        from engine.serialize import load
        try:
            return load(path)
        except (EngineError, OSError) as exc:
            self.prompts.error("Cannot open file", str(exc))
        except Exception as exc:  # noqa: BLE001 - whatever escapes the loader, the user gets one message
            self.prompts.error("Cannot open file", unexpected(f"Opening {short(path.name)}", exc))
        return None

    def load_path(self, path: str | Path, *, is_preset: bool = False, remember: bool = True) -> bool:
        """Load a file; on failure show the loader's message and leave the document untouched."""
        p = Path(path)
        project = self._read(p)
        if project is None:
            return False
        return self._adopt(project, p, is_preset=is_preset, remember=remember)

    def _adopt(self, project: Any, path: Path, *, is_preset: bool, remember: bool) -> bool:
        previous = (self.project, self.path, self.is_preset, self.doc.graph, self.modified)
        try:
            self.set_project(project, path, is_preset=is_preset)
        except Exception as exc:  # noqa: BLE001 - it loaded but cannot be shown: show what was open before
            from engine.serialize import Project
            old_project, old_path, old_preset, old_graph, was_modified = previous
            if old_project is None or old_project.graph is not old_graph:
                old_project = Project(old_graph, *(() if old_project is None else (old_project.name, old_project.description)))
            self.set_project(old_project, old_path, is_preset=old_preset)
            if was_modified:
                # the edits are all still in the graph (only their undo history went with the
                # attempt): still unsaved work, so still marked modified and still autosaved
                self.undo_stack.resetClean()
                self.changed.emit()
            self.prompts.error("Cannot open file", unexpected(f"Showing {short(path.name)}", exc))
            return False
        if remember and not is_preset:
            self._remember(path)
        self.loaded.emit(str(path))
        return True

    def open_path(self, path: str | Path, *, is_preset: bool = False) -> bool:
        """Open a file the user chose: read and check it first, then (only if it can be opened)
        ask about unsaved changes, so a bad file never costs the user a question or their work."""
        p = Path(path)
        project = self._read(p)
        if project is None:
            self._forget_if_gone(p)
            return False
        if not self.maybe_save():
            return False
        return self._adopt(project, p, is_preset=is_preset, remember=True)

    def open_dialog(self) -> None:
        directory = str(self.path.parent) if self.path is not None and not self.is_preset else str(self.settings.value("last_dir", ""))
        path = self.prompts.open_path(directory)
        if path:
            self.open_path(path)

    def open_dropped(self, paths: list[str]) -> None:
        """Files dropped on the window: the first graph file among them opens (a window shows
        one document); the others are named in the status bar, never silently ignored."""
        if not paths:
            return
        graphs = [p for p in paths if Path(p).suffix.lower() in (".json", ".bps")] or paths
        if self.open_path(graphs[0]) and len(paths) > 1:
            rest = len(paths) - 1
            self.message.emit(f"Opened {short(Path(graphs[0]).name)} only: a window shows one graph "
                              f"({rest} more file{'s' if rest != 1 else ''} dropped)", 8000)

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

    def _forget_if_gone(self, path: Path) -> None:
        """A recent file that no longer exists leaves the Open Recent menu (its error said why)."""
        key = str(path.resolve())
        if key in self.recent_files() and not path.exists():
            self.settings.setValue("recent", [p for p in self.recent_files() if p != key])
            self.update_recent_menu()

    def recent_files(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return []  # a settings file written by something else
        return [str(v) for v in value[:MAX_RECENT]]

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

    @property
    def recovery_path(self) -> Path:
        """This window's recovery file."""
        return recovery_dir() / f"{self._recovery_id}.json"

    def autosave(self) -> bool:
        """Write the unsaved document to this window's recovery file (only when there are
        changes); readable by the user only."""
        if not self.modified:
            self.drop_recovery()  # saved, undone or discarded since: nothing to recover
            return False
        from engine.serialize import Project, save
        path = self.recovery_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self._recovery_lock is None:
                lock = _lock(path.with_suffix(".lock"))
                if not lock.tryLock(0):
                    raise OSError(f"cannot lock {path.with_suffix('.lock')} (error {int(lock.error().value)})")
                self._recovery_lock = lock
            self._write_source(path.with_suffix(".source"))
            project = self.current_project()
            save(Project(project.graph, project.name, project.description, project.data, project.training), path,
                 private=True)
        except (EngineError, OSError) as exc:
            self.message.emit(f"Autosave failed: {short(str(exc), 300)}", 6000)
            return False
        return True

    def _write_source(self, path: Path) -> None:
        source = str(self.path) if self.path is not None and not self.is_preset else ""
        name = self.project.name if self.project is not None and self.project.name else ""
        if self._recovery_source == (source, name) and path.exists():
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"source": source, "name": short(name, 200)}, f)
        os.replace(tmp, path)
        self._recovery_source = (source, name)

    def drop_recovery(self) -> None:
        """Delete this window's recovery file (saved, or closed on purpose) and let its lock go."""
        path = self.recovery_path
        for p in (path, path.with_suffix(".source")):
            try:
                p.unlink()
            except OSError:
                pass
        self._recovery_source = None
        if self._recovery_lock is not None:
            self._recovery_lock.unlock()
            self._recovery_lock = None

    def orphans(self) -> list[Orphan]:
        """Every recovery file whose window is gone (oldest first), each locked for us: the
        lock of a window still open, in this process or another, cannot be taken."""
        found: list[Orphan] = []
        directory = recovery_dir()
        candidates = sorted(directory.glob("*.json"), key=_mtime) if directory.is_dir() else []
        legacy = _legacy_recovery_path()
        if legacy is not None and legacy.is_file():
            candidates.insert(0, legacy)
        for path in candidates:
            lock = _lock(path.with_suffix(".lock"))
            if not lock.tryLock(0):
                continue  # its window is still open
            if not path.is_file():  # saved and dropped meanwhile
                lock.unlock()
                continue
            if path == legacy:
                source, name = str(self.settings.value("recovery/source", "") or ""), ""
            else:
                source, name = _read_source(path.with_suffix(".source"))
            found.append(Orphan(path, source, name, _mtime(path), lock))
        if directory.is_dir():
            _sweep(directory)
        return found

    def offer_recovery(self, another: Callable[[], "Files | None"] | None = None) -> bool:
        """After a crash: offer every orphaned recovery file at once. The first restored goes
        into this window, each further one into ``another()`` (a new window's files; without
        it they wait for the next start). True when something was restored here."""
        orphans = self.orphans()
        if not orphans:
            return False
        answer = self.prompts.restore_recovery([o.describe() for o in orphans])
        if answer != "restore":
            for o in orphans:
                if answer == "discard":
                    o.discard()
                else:
                    o.release()  # "not now": offered again next time
            return False
        here = False
        for o in orphans:
            project = self._read_orphan(o)
            if project is None:
                continue  # damaged: set aside and said so; no window for it
            target = self if not here else (another() if another is not None else None)
            if target is None:
                o.release()  # no window to put it in: offered again next time
                continue
            if target._show_orphan(o, project):
                here = here or target is self
        return here

    def restore(self, orphan: Orphan) -> bool:
        """Show an orphan's work in this window (see :meth:`_show_orphan`). True when it did."""
        project = self._read_orphan(orphan)
        return project is not None and self._show_orphan(orphan, project)

    def _read_orphan(self, orphan: Orphan) -> Any:
        """An orphan's project, or None after saying why not: a damaged one is set aside as
        ``<id>.json.damaged`` (never deleted, never offered again) and its place named."""
        from engine.serialize import load
        try:
            return load(orphan.path)
        except Exception as exc:  # noqa: BLE001 - a damaged recovery file must not stop the start
            kept = orphan.path.with_name(orphan.path.name + ".damaged")
            try:
                os.replace(orphan.path, kept)
                where = f" It was kept as {kept}."
            except OSError:
                where = f" It is still at {orphan.path}."
            text = str(exc) if isinstance(exc, EngineError) else unexpected("Reading it", exc)
            self.prompts.error("Cannot restore unsaved work", short(text, 600) + where)
            orphan.release()
            return None

    def _show_orphan(self, orphan: Orphan, project: Any) -> bool:
        """Show restored work, unsaved, kept at once in this window's own recovery file; only
        then does the orphan go (if keeping it fails, it stays for the next start)."""
        try:
            self.set_project(project, Path(orphan.source) if orphan.source else None)
        except Exception as exc:  # noqa: BLE001 - it loads but cannot be shown: keep it, say so
            from engine.serialize import Project
            self.set_project(Project(Graph()), None)
            self.prompts.error("Cannot restore unsaved work",
                               unexpected("Showing it", exc) + f" It is still at {orphan.path}.")
            orphan.release()
            return False
        self.undo_stack.resetClean()
        self.changed.emit()
        if self.autosave():
            orphan.discard()
        else:
            orphan.release()
        return True


def _sweep(directory: Path) -> None:
    """Remove what a window that died holds no work in leaves behind: a lock (and ``.source``
    note) without its recovery file, e.g. after a crash between taking the lock and the first
    write. A live window's lock cannot be taken, so its files stay."""
    for lock_path in directory.glob("*.lock"):
        work = lock_path.with_suffix(".json")
        if work.exists():
            continue
        lock = _lock(lock_path)
        if not lock.tryLock(0):
            continue
        if not work.exists():
            try:
                lock_path.with_suffix(".source").unlink()
            except OSError:
                pass
        lock.unlock()  # removes the lock file


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_source(path: Path) -> tuple[str, str]:
    """(source file, document name) from a recovery file's ``.source`` note; empty when it is
    missing or damaged."""
    try:
        with open(path, "rb") as f:
            raw = f.read(65536)
        from engine.serialize import parse_json
        info = parse_json(raw.decode("utf-8", errors="replace"))
    except (OSError, EngineError):
        return "", ""
    if not isinstance(info, dict):
        return "", ""
    source, name = info.get("source", ""), info.get("name", "")
    return (source if isinstance(source, str) else ""), (name if isinstance(name, str) else "")
