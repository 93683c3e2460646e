"""Legibility of every lesson and of every composite opened inside it, as a student opens them:
the zoom the view opens at and the smallest canvas text on screen (pixels), at the default
window size (1400×900), at 1600×1000 and at 1280×800 (issue 8: zoom ≥ 0.8 and text ≥ 9 px everywhere).

    python benchmarks/legibility.py [--sizes 1600x1000,1280x800] [--shots DIR] [--themes light,dark]

With ``--shots DIR`` it also saves a PNG of every view in every theme (DIR/<size>-<theme>/...),
the pictures to look at. Offscreen, one window, a few seconds per size.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1600x1000,1400x900,1280x800")
    parser.add_argument("--shots", type=Path, default=None, help="save a PNG of every view here")
    parser.add_argument("--themes", default="light", help="themes for --shots: light,dark")
    ns = parser.parse_args()

    from PySide6.QtCore import QSettings

    import presets
    from editor.app import application
    from editor.items.fonts import LEGIBLE_PX
    from editor.screenshot import lesson_views
    from editor.window import MainWindow

    app = application([])
    sizes = [tuple(int(v) for v in s.split("x")) for s in ns.sizes.split(",")]
    themes = ns.themes.split(",") if ns.shots else ["light"]
    worst = (9.9, 9.9)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bps-legibility-") as tmp:
        for theme in themes:
            settings = QSettings(str(Path(tmp) / f"{theme}.ini"), QSettings.Format.IniFormat)
            settings.setValue("theme", theme)
            window = MainWindow(settings)
            window.prompts.error = lambda title, text: None  # type: ignore[method-assign]
            window.apply_theme()
            window.show()
            for width, height in sizes:
                window.resize(width, height)
                app.processEvents()
                print(f"{width}×{height} ({theme})   zoom   text px   view")
                for lesson in presets.names():
                    for view in lesson_views(window, lesson):
                        seen = window.view.legibility()
                        zoom, text = seen["zoom"], seen["min_text_px"] or 0.0
                        ok = zoom >= 0.8 and text >= LEGIBLE_PX and window.width() <= width
                        failures += not ok
                        worst = (min(worst[0], zoom), min(worst[1], text))
                        print(f"  {'  ' if ok else '✗ '}{zoom:10.3f} {text:9.2f}   {view}")
                        if ns.shots:
                            folder = ns.shots / f"{width}x{height}-{theme}"
                            folder.mkdir(parents=True, exist_ok=True)
                            name = re.sub(r"[^A-Za-z0-9]+", "_", view).strip("_").lower()
                            window.minimap.rebuild()
                            window.grab().save(str(folder / f"{name}.png"))
            window.undo_stack.setClean()
            window.close()
    print(f"lowest zoom {worst[0]:.3f}, smallest text {worst[1]:.2f} px; {failures} view(s) below 0.8 / {LEGIBLE_PX:g} px")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
