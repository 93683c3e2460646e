"""What the fuzz harness can point a file at: each target takes the path of a file and returns an
exit code, writing what a person would see to stdout and stderr.

A target runs in a forked child of the harness's server (see :mod:`tests.fuzz.harness`), under a
memory limit and a timeout. To fuzz another way of opening a file (the editor's File > Open, for
example), add a function here that opens the file the way the user would and returns 0 when it
opened, 2 with a one-line message on stderr when it was refused; anything else (a traceback, a
hang, a blow-up) is what the harness reports as a finding.
"""

from __future__ import annotations

import sys
from typing import Callable


def load(path: str) -> int:
    """engine.serialize.load: 0 and "loaded", or 2 and the FileFormatError's message."""
    from engine import serialize
    from engine.errors import FileFormatError

    try:
        serialize.load(path)
    except FileFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("loaded")
    return 0


def _cli(command: str) -> Callable[[str], int]:
    def run(path: str) -> int:
        from engine import cli

        return cli.main([command, path])

    run.__name__ = command
    run.__doc__ = f"backprop-studio {command} FILE"
    return run


def editor_open(path: str) -> int:
    """File > Open in the editor's window (offscreen), over a lesson with an unsaved edit: 0 when
    the file opened (and was drawn); 2 and the one message the user saw when it was refused; 3
    when the open document changed although the file was refused, or the user was told nothing
    or more than once."""
    import os
    import tempfile

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    scratch = tempfile.mkdtemp(prefix="bps-fuzz-editor-")
    os.environ["BACKPROP_STUDIO_RECOVERY_DIR"] = os.path.join(scratch, "recovery")
    from PySide6.QtCore import QSettings

    import presets
    from editor import commands
    from editor.app import application
    from editor.window import MainWindow

    app = application([])
    window = MainWindow(QSettings(os.path.join(scratch, "settings.ini"), QSettings.Format.IniFormat))
    said: list[str] = []
    window.prompts.error = lambda title, text: said.append(f"{title}: {text}")  # type: ignore[method-assign]
    window.prompts.save_changes = lambda name: "discard"  # type: ignore[method-assign]
    if not window.files.load_path(presets.path("two_layer_net"), is_preset=True):
        print(f"error: the lesson itself did not open: {said}", file=sys.stderr)
        return 3
    window.undo_stack.push(commands.AddNodeCommand(window.doc, "ReLU", {}, position=(0.0, 500.0), name="unsaved"))

    def state() -> tuple:
        f = window.files
        return (window.doc.dump(), window.undo_stack.count(), window.undo_stack.index(), window.modified,
                f.path, id(f.project), window.windowTitle())

    before = state()
    opened = window.files.open_path(path)
    app.processEvents()  # the scene arranges and draws what it got
    if opened:
        window.view.viewport().repaint()
        print("opened")
        return 0
    if state() != before:
        print("error: the open document changed although the file was refused", file=sys.stderr)
        return 3
    if len(said) != 1:
        print(f"error: the user was told {len(said)} things, not one: {said!r:.500}", file=sys.stderr)
        return 3
    print("error: " + " ".join(said[0].split()), file=sys.stderr)
    return 2


TARGETS: dict[str, Callable[[str], int]] = {"load": load, "info": _cli("info"), "run": _cli("run"),
                                            "editor-open": editor_open}
