"""``backprop-studio screenshot FILE OUT.png``: render the window with FILE open, offscreen, and
exit. The README's pictures and the tests' visual checks come from here.

Settings are kept in a throw-away location so a screenshot neither reads nor changes the user's
(window size, recent files, theme). ``BACKPROP_STUDIO_THEME=light|dark`` picks the theme.
With ``--json`` it prints one line describing the picture: at least the canvas zoom and the
smallest on-screen text height (``{"zoom": 0.9, "min_text_px": 9.9, ...}``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def render(window, out: str | Path, width: int, height: int) -> dict[str, Any]:  # noqa: ANN001
    """Show ``window`` at ``width`` × ``height``, frame the graph as a user opening it sees it,
    save the picture to ``out`` and return what :meth:`GraphView.legibility` measures."""
    from PySide6.QtWidgets import QApplication

    window.resize(width, height)
    window.show()
    for _ in range(3):
        QApplication.processEvents()
    window.view.show_graph()
    window.scene.arrange()
    window.minimap.rebuild()
    QApplication.processEvents()
    report = window.view.legibility()
    image = window.grab()
    if not image.save(str(out)):
        raise OSError(f"cannot write {out}")
    return report


def open_path(window, path: str, *, show_all: bool = False) -> None:  # noqa: ANN001
    """Open the composites named by ``path`` ("translator/decoder"), one level each, as a
    double-click would; ``show_all`` then opens every compact stack of the last level."""
    for name in [p for p in path.split("/") if p]:
        doc = window.level.doc
        node = doc.graph.find(name)
        head = window.scene._stack_of.get(node.id)
        if head is not None and head != node.id:
            window.scene.open_stack(head)
        if not window.open_inside(node.id):
            raise ValueError(f"{name!r} has no inside to open")
    if show_all:
        for head in list(window.scene.stacks):
            window.scene.open_stack(head)
        window.view.show_graph()


def lesson_views(window, lesson: str, depth: int = 2):  # noqa: ANN001, ANN201
    """Open ``lesson`` (a shipped lesson's name), then each different composite inside it
    (``depth`` levels deep) and each compact stack opened, as a student would; yields a name for
    every view while the window shows it, framed as on opening."""
    import presets
    from PySide6.QtWidgets import QApplication

    from editor.window import openable

    def settle() -> None:
        for _ in range(2):
            QApplication.processEvents()
        window.view.show_graph()
        window.scene.arrange(reroute=True)

    if not window.files.load_path(presets.path(lesson), is_preset=True, remember=False):
        raise ValueError(f"cannot open the lesson {lesson}")
    settle()
    yield lesson

    def inside(prefix: str, level_depth: int):  # noqa: ANN202
        seen: set[str] = set()
        for nid, node in list(window.level.doc.graph.nodes.items()):
            key = f"{node.type} {sorted(node.params.items())!r}"
            head = window.scene._stack_of.get(nid)
            if not openable(node) or key in seen or (head is not None and head != nid):
                continue  # a block met already, or a member of a compact stack (its head stands for it)
            seen.add(key)
            level = len(window.levels)
            if not window.open_inside(nid):
                continue
            settle()
            name = f"{prefix} > {node.name}"
            yield name
            if window.scene.stacks:
                for stack in list(window.scene.stacks):
                    window.scene.open_stack(stack)
                settle()
                yield name + " (every block)"
            if level_depth < depth:
                yield from inside(name, level_depth + 1)
            window.go_to_level(level - 1)
            settle()

    yield from inside(lesson, 1)


def main(file: str, out: str, width: int = 1400, height: int = 900, theme: str | None = None,
         select: str | None = None, inside: str | None = None, show_all: bool = False,
         step: str | None = None, as_json: bool = False) -> int:
    """Render the editor with ``file`` (a graph, a .bps project or a preset name) to ``out``;
    ``select`` names a node to select first (the inspector then shows it); ``inside`` opens
    composites first (see :func:`open_path`); ``step`` (``forward:3``, ``backward:end``) runs
    the pass and shows that point of it (at the opened level)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings

    from editor.app import _is_preset, application, resolve_file
    from editor.window import MainWindow

    application([])
    with tempfile.TemporaryDirectory(prefix="bps-shot-") as tmp:
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        settings.setValue("theme", theme or os.environ.get("BACKPROP_STUDIO_THEME", "system"))
        window = MainWindow(settings)
        errors: list[str] = []
        window.prompts.error = lambda title, text: errors.append(text)  # type: ignore[method-assign]
        window.apply_theme()
        target = resolve_file(file)
        if not window.files.load_path(target, is_preset=_is_preset(target), remember=False):
            print(f"backprop-studio screenshot: {errors[0] if errors else 'cannot open ' + file}", file=sys.stderr)
            window.undo_stack.setClean()
            window.close()
            return 1
        try:
            window.resize(width, height)
            if inside or show_all:
                open_path(window, inside or "", show_all=show_all)
            if select:
                window.scene.select_nodes([window.level.doc.graph.find(select).id])
        except Exception as exc:  # noqa: BLE001 - a wrong name must not cost the picture
            print(f"backprop-studio screenshot: {exc}", file=sys.stderr)
        run_info: dict[str, Any] = {}
        if step or as_json:
            from editor.run import scripted
            try:
                run_info = scripted.go_to(window.run, step) if step else scripted.summary(window.run)
            except scripted.StepError as exc:
                print(f"backprop-studio screenshot: {exc}", file=sys.stderr)
                window.undo_stack.setClean()
                window.close()
                return 1
        try:
            report = render(window, out, width, height)
        except OSError as exc:
            print(f"backprop-studio screenshot: {exc}", file=sys.stderr)
            return 1
        finally:
            window.undo_stack.setClean()
            window.close()
            window.deleteLater()
    if as_json:
        print(json.dumps({"out": str(out), **report, "view": " > ".join(level.title for level in window.levels),
                          **run_info}, ensure_ascii=False))
    else:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
