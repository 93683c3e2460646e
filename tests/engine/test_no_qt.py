"""The engine stays free of Qt so it runs headless and in CI without a screen."""

import subprocess
import sys


def test_import_engine_leaves_qt_out():
    code = (
        "import sys, engine, engine.graph, engine.runtime, engine.compile, engine.blocks, engine.gradcheck\n"
        "import importlib.util\n"
        "for m in ('engine.serialize', 'engine.cli', 'engine.train', 'engine.optim', 'engine.data', 'engine.generate',\n"
        "          'engine.feeds', 'engine.record', 'engine.nodecheck'):\n"
        "    if importlib.util.find_spec(m): __import__(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'pyqtgraph', 'torch'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"engine imported {out.stdout.strip()}"
