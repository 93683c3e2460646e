"""Quitting after a copy must not crash: Qt's clipboard outlives the interpreter (PySide6 6.11
segfaults destroying a Python-made QMimeData at exit unless the editor takes it back first)."""

import os
import subprocess
import sys

CHILD = r"""
import sys
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
app = QApplication([])
from editor.app import build_window
window = build_window(None, offer_recovery=False, settings=QSettings(sys.argv[1], QSettings.Format.IniFormat))
window.select_all()
assert window.clipboard.copy(), "nothing was copied"
print("copied", flush=True)
"""


def test_quitting_after_copy_exits_cleanly(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "s.ini")], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "copied", out.stderr
    assert out.returncode == 0, f"exit status {out.returncode}: {out.stderr[-500:]}"
