"""Crash recovery with several editor instances: each keeps its unsaved work in a file of its own,
no instance deletes or offers another's while that one runs, and after a crash (a real second
process killed) the next start offers every orphaned piece of work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from editor import commands
from editor.app import build_window
from editor.files import recovery_dir
from editor.prompts import Prompts
from editor.window import MainWindow

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints")

ROOT = Path(__file__).resolve().parents[2]

# A second editor instance: a window with one unsaved edit, autosaved; it prints its recovery
# file's path and then runs until it is killed.
INSTANCE = textwrap.dedent("""
    import os, sys, time
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import QSettings
    from editor import commands
    from editor.app import application
    from editor.window import MainWindow
    app = application([])
    w = MainWindow(QSettings(sys.argv[1], QSettings.Format.IniFormat))
    w.undo_stack.push(commands.AddNodeCommand(w.doc, "ReLU", {}, name=sys.argv[2]))
    assert w.files.autosave()
    print(w.files.recovery_path, flush=True)
    while True:
        app.processEvents()
        time.sleep(0.05)
""")


def _start_instance(tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
    proc = subprocess.Popen([sys.executable, "-c", INSTANCE, str(tmp_path / f"{name}.ini"), name], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise AssertionError(f"the second instance did not start: {proc.stderr.read()[-2000:]}")
    return proc, Path(line)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)  # a crash: no close event, no cleanup
    proc.wait(timeout=30)  # reaped, as a crashed process is: its lock is then stale
    proc.stdout.close()
    proc.stderr.close()


def _window(qtbot, tmp_path: Path, name: str) -> MainWindow:
    w = MainWindow(QSettings(str(tmp_path / f"{name}.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    return w


def _names(w: MainWindow) -> set[str]:
    return {n.name for n in w.doc.graph.nodes.values()}


def test_two_instances_keep_their_own_work_and_a_crashed_ones_is_offered(qtbot, tmp_path, monkeypatch):
    here = _window(qtbot, tmp_path, "here")
    here.undo_stack.push(commands.AddNodeCommand(here.doc, "Tanh", {}, name="from this instance"))
    assert here.files.autosave()
    proc, theirs = _start_instance(tmp_path, "from the other instance")
    try:
        ours = here.files.recovery_path
        assert ours != theirs and ours.exists() and theirs.exists()
        assert theirs.parent == ours.parent == recovery_dir()
        assert (ours.stat().st_mode & 0o777) == 0o600, "unsaved work is private"
        asked: list[list[str]] = []
        monkeypatch.setattr(Prompts, "restore_recovery", lambda self, items: (asked.append(items), "restore")[1])
        # both instances are running: nothing is orphaned, nothing is offered
        third = _window(qtbot, tmp_path, "third")
        assert not third.files.offer_recovery() and not asked
        # this one saves: its recovery file goes, the other instance's stays
        here.files.write(tmp_path / "saved.json")
        assert not ours.exists() and theirs.exists()
        here.undo_stack.push(commands.AddNodeCommand(here.doc, "Tanh", {}, name="more work here"))
        assert here.files.autosave()
    finally:
        _kill(proc)
    # the next start offers the crashed instance's work (and not the running window's)
    fresh = _window(qtbot, tmp_path, "fresh")
    assert fresh.files.offer_recovery()
    assert len(asked) == 1 and len(asked[0]) == 1 and "kept at" in asked[0][0]
    assert _names(fresh) == {"from the other instance"} and fresh.modified
    assert not theirs.exists(), "restored: the orphan goes ..."
    assert fresh.files.recovery_path.exists(), "... once the restored work is kept in this window's own file"
    assert here.files.recovery_path.exists(), "the running window's work is untouched"
    for w in (here, third, fresh):
        w.undo_stack.setClean()


def test_every_orphan_is_offered_at_once_each_in_a_window(qtbot, tmp_path, monkeypatch):
    procs = [_start_instance(tmp_path, f"work {k}") for k in (1, 2)]
    for proc, _ in procs:
        _kill(proc)
    asked: list[list[str]] = []
    monkeypatch.setattr(Prompts, "restore_recovery", lambda self, items: (asked.append(items), "restore")[1])
    window = build_window(None, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    for extra in window.more_windows:
        qtbot.addWidget(extra)
    assert len(asked) == 1 and len(asked[0]) == 2, "one question for all of them"
    assert len(window.more_windows) == 1
    assert _names(window) | _names(window.more_windows[0]) == {"work 1", "work 2"}
    assert all(not path.exists() for _, path in procs)
    assert not window.files.orphans(), "nothing left to offer: the restored work lives in running windows"
    for w in (window, *window.more_windows):
        assert w.modified
        w.undo_stack.setClean()


def test_not_now_keeps_the_work_and_a_damaged_recovery_file_is_set_aside(qtbot, tmp_path, monkeypatch):
    proc, theirs = _start_instance(tmp_path, "kept for later")
    _kill(proc)
    monkeypatch.setattr(Prompts, "restore_recovery", lambda self, items: "later")
    w = _window(qtbot, tmp_path, "w")
    assert not w.files.offer_recovery() and theirs.exists(), "not now: asked again next time"
    # the file gets damaged before the next start
    theirs.write_bytes(theirs.read_bytes()[:40])
    errors: list[str] = []
    monkeypatch.setattr(Prompts, "restore_recovery", lambda self, items: "restore")
    monkeypatch.setattr(Prompts, "error", lambda self, title, text: errors.append(f"{title}: {text}"))
    w2 = _window(qtbot, tmp_path, "w2")
    assert not w2.files.offer_recovery()
    assert len(errors) == 1 and "Cannot restore" in errors[0] and ".damaged" in errors[0], errors
    kept = theirs.with_name(theirs.name + ".damaged")
    assert kept.exists() and not theirs.exists(), "set aside, never deleted"
    assert not w2.files.orphans(), "and not offered again"
    assert "it is incomplete" in errors[0], "the loader's own words say what is wrong"


def test_a_lock_left_without_work_is_swept_and_a_clean_document_keeps_no_recovery_file(qtbot, tmp_path):
    proc, theirs = _start_instance(tmp_path, "crashed before its first write")
    _kill(proc)
    theirs.unlink()  # as if it died between taking its lock and writing its work
    lock, note = theirs.with_suffix(".lock"), theirs.with_suffix(".source")
    assert lock.exists() and note.exists()
    w = _window(qtbot, tmp_path, "w")
    assert not w.files.orphans()
    assert not lock.exists() and not note.exists(), "nothing of a dead window with no work is left behind"
    # a window whose edits are undone back to the saved state drops its recovery file at the next tick
    w.undo_stack.push(commands.AddNodeCommand(w.doc, "Tanh", {}, name="soon undone"))
    assert w.files.autosave() and w.files.recovery_path.exists()
    w.undo_stack.undo()
    assert not w.files.autosave()
    assert not w.files.recovery_path.exists() and not w.files.recovery_path.with_suffix(".lock").exists()
