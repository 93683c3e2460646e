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


TARGETS: dict[str, Callable[[str], int]] = {"load": load, "info": _cli("info"), "run": _cli("run")}
