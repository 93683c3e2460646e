"""Starting the editor: the application object, its identity (for QSettings), the theme, the
window with the file or the default lesson, and the crash-recovery offer."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from editor.window import MainWindow

ORGANIZATION = "BackpropStudio"
APPLICATION = "Backprop Studio"


def application(argv: list[str] | None = None) -> QApplication:
    """The QApplication, created once, named so that QSettings and the recovery file have a home."""
    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(["backprop-studio"] + list(argv or []))
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    from editor.icons import app_icon
    app.setWindowIcon(app_icon())
    return app  # type: ignore[return-value]


def resolve_file(path: str) -> Path:
    """A file path, or the name of a shipped lesson (``two_layer_net``)."""
    p = Path(path)
    if p.exists() or p.suffix:
        return p
    import presets
    try:
        return presets.path(path)
    except KeyError:
        return p


def build_window(path: str | None = None, *, offer_recovery: bool = True, settings: object = None) -> MainWindow:
    """The main window showing ``path``, or the default lesson when there is none (or it fails
    to load: the loader's message is shown and the user still gets a working editor)."""
    window = MainWindow(settings)  # type: ignore[arg-type]
    window.apply_theme()

    def another() -> object:
        # one more window for one more piece of restored work
        extra = MainWindow(settings)  # type: ignore[arg-type]
        extra.apply_theme()
        window.more_windows.append(extra)
        return extra.files

    if offer_recovery and window.files.offer_recovery(another):
        return window
    if path:
        target = resolve_file(path)
        is_preset = _is_preset(target)
        if window.files.load_path(target, is_preset=is_preset):
            return window
    open_default(window)
    return window


def _is_preset(path: Path) -> bool:
    try:
        import presets
        return path.resolve().parent == presets.path(presets.DEFAULT).resolve().parent
    except Exception:  # noqa: BLE001
        return False


def open_default(window: MainWindow) -> bool:
    try:
        import presets
        return window.files.load_path(presets.path(presets.DEFAULT), is_preset=True)
    except Exception:  # noqa: BLE001 - no presets: an empty graph is still a working editor
        return False


def run_app(path: str | None, argv: list[str]) -> int:
    """Open the editor (on ``path`` or the default lesson) and run until the window closes."""
    app = application(argv)
    window = build_window(path)
    for w in (window, *window.more_windows):
        w.show()
        w.view.show_graph()
    return app.exec()


if __name__ == "__main__":
    sys.exit(run_app(sys.argv[1] if len(sys.argv) > 1 else None, sys.argv[1:]))
