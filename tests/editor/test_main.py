"""The console entry point: headless commands never touch Qt; no display gives one sentence."""

import os
import subprocess
import sys

from editor.main import NO_DISPLAY, display_problem


def _run(args, env_updates, drop=()):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_updates)
    return subprocess.run([sys.executable, "-m", "editor.main", *args], capture_output=True, text=True, env=env, timeout=120)


def test_no_display_exits_with_one_clear_sentence():
    out = _run([], {}, drop=("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "no display" in lines[0] and "backprop-studio run" in lines[0]
    assert "Traceback" not in out.stderr


def test_dead_x_server_is_reported_not_aborted():
    out = _run([], {"DISPLAY": ":987"}, drop=("WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    assert out.returncode == 2
    assert "does not answer" in out.stderr and "Traceback" not in out.stderr


def test_display_problem_rules():
    if not sys.platform.startswith("linux"):
        return
    assert display_problem({}) == "DISPLAY is not set"
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}) is None
    assert NO_DISPLAY.count(".") >= 1


def test_headless_subcommand_does_not_import_qt():
    code = (
        "import sys\n"
        "from editor import main\n"
        "try:\n"
        "    main.main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('QT' if any(m.startswith('PySide6') for m in sys.modules) else 'CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "CLEAN", out.stdout + out.stderr


def test_the_window_loads_pyqtgraph_only_for_its_plots():
    # pyqtgraph costs a few tenths of a second to import: the canvas (its dot grid included)
    # must not need it, so that opening a lesson does not wait for it.
    code = (
        "import sys\n"
        "import editor.window, editor.view, editor.scene\n"
        "print('PG' if 'pyqtgraph' in sys.modules else 'CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "CLEAN", out.stdout + out.stderr
