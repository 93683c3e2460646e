"""The ``backprop-studio`` console entry point.

``backprop-studio`` (optionally with a ``.json``/``.bps`` file) opens the editor;
``backprop-studio screenshot FILE OUT.png`` renders the window offscreen; every other
subcommand (``run``, ``train``, ``gradcheck``, ``info``, ``--help``, ``--version``, ...) is the
headless CLI in :mod:`engine.cli`, which never imports Qt.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

GRAPH_SUFFIXES = (".json", ".bps")

NO_DISPLAY = (
    "backprop-studio: no display to open the editor on ({why}). Run it from a desktop session, "
    "or use the headless commands: backprop-studio run|train|gradcheck|info FILE "
    "(backprop-studio --help lists them)."
)


def display_problem(environ: "os._Environ[str] | dict[str, str] | None" = None) -> str | None:
    """Why the editor cannot open a window here, or None when it can (as far as we can tell
    without starting Qt, whose failure to find a screen aborts the process)."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return None
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return None  # offscreen, wayland, vnc, ...: the user chose explicitly
    if env.get("WAYLAND_DISPLAY") and not platform:
        return None
    display = env.get("DISPLAY", "")
    if not display:
        return "DISPLAY is not set"
    if not _x_server_answers(display):
        return f"the X server at DISPLAY={display} does not answer"
    return None


def _x_server_answers(display: str) -> bool:
    """Connect to the X server with libxcb, as Qt would. Without libxcb we cannot tell: assume yes."""
    name = ctypes.util.find_library("xcb")
    if not name:
        return True
    try:
        xcb = ctypes.CDLL(name)
    except OSError:
        return True
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = xcb.xcb_connect(display.encode(), None)
    try:
        return xcb.xcb_connection_has_error(conn) == 0
    finally:
        xcb.xcb_disconnect(conn)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "screenshot":
        return _screenshot(argv[1:])
    if argv and not argv[0].lower().endswith(GRAPH_SUFFIXES):
        from engine import cli

        return cli.main(argv)
    problem = display_problem()
    if problem:
        print(NO_DISPLAY.format(why=problem), file=sys.stderr)
        return 2
    from editor.app import run_app

    return run_app(argv[0] if argv else None, argv)


def _screenshot(args: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="backprop-studio screenshot", description="Render the editor window with FILE open to a PNG, offscreen, and exit.")
    parser.add_argument("file", help="a .json graph or .bps project (or a preset name)")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--open", dest="inside", metavar="NODE[/NODE…]",
                        help="open these composites first, one level each (e.g. BERT/block1)")
    parser.add_argument("--show-all", action="store_true", help="open every compact stack of the shown level")
    parser.add_argument("--step", metavar="PHASE:N", help="run the pass and show it after N nodes of a phase: "
                        "forward:3, backward:end")
    parser.add_argument("--select", metavar="NODE", help="select this node (its numbers show in the panels)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON line about the picture: {"zoom": …, "min_text_px": …, …} and, with '
                             '--step, {"loss": …, "events": …, "phase": …, "step": …}')
    ns = parser.parse_args(args)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from editor.screenshot import main as screenshot

    return screenshot(ns.file, ns.out, ns.width, ns.height, select=ns.select, inside=ns.inside, show_all=ns.show_all,
                      step=ns.step, as_json=ns.json)


if __name__ == "__main__":
    sys.exit(main())
