"""``backprop-studio screenshot FILE OUT.png``: render the window with FILE open, offscreen, and
exit. The README's pictures and the tests' visual checks come from here.

Settings are kept in a throw-away location so a screenshot neither reads nor changes the user's
(window size, recent files, theme). ``BACKPROP_STUDIO_THEME=light|dark`` picks the theme.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def render(window, out: str | Path, width: int, height: int) -> None:  # noqa: ANN001
    from PySide6.QtWidgets import QApplication

    window.resize(width, height)
    window.show()
    for _ in range(3):
        QApplication.processEvents()
    window.view.fit()
    window.minimap.rebuild()
    QApplication.processEvents()
    image = window.grab()
    if not image.save(str(out)):
        raise OSError(f"cannot write {out}")


def main(file: str, out: str, width: int = 1400, height: int = 900, theme: str | None = None,
         select: str | None = None, step: str | None = None, as_json: bool = False) -> int:
    """Render the editor with ``file`` (a graph, a .bps project or a preset name) to ``out``;
    ``select`` names a node to select first (the inspector then shows it); ``step``
    (``forward:3``, ``backward:end``) runs the pass and shows that point of it; ``as_json``
    prints one JSON line (loss, events, phase, step) instead of the file name."""
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
        if select:
            try:
                window.scene.select_nodes([window.doc.graph.find(select).id])
            except Exception as exc:  # noqa: BLE001 - a wrong name must not cost the picture
                print(f"backprop-studio screenshot: cannot select {select!r}: {exc}", file=sys.stderr)
        info = None
        if step:
            from editor.run import scripted
            try:
                window.resize(width, height)
                info = scripted.go_to(window.run, step)
            except scripted.StepError as exc:
                print(f"backprop-studio screenshot: {exc}", file=sys.stderr)
                window.undo_stack.setClean()
                window.close()
                return 1
        if as_json and info is None:
            from editor.run import scripted
            info = scripted.summary(window.run)
        try:
            render(window, out, width, height)
        except OSError as exc:
            print(f"backprop-studio screenshot: {exc}", file=sys.stderr)
            return 1
        finally:
            window.undo_stack.setClean()
            window.close()
            window.deleteLater()
    if as_json:
        import json
        print(json.dumps({"file": str(out), **(info or {})}, ensure_ascii=False))
    else:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
