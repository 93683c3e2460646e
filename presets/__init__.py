"""The lessons that ship with Backprop Studio: complete graphs with data and training settings,
stored in the ordinary graph-file format (see :mod:`engine.serialize`).

Found through :mod:`importlib.resources`, so they work from a source tree, a wheel or a zip::

    import presets
    presets.names()                  # ['hinge_loss', 'linear_regression', 'two_layer_net', ...]
    engine.serialize.load(presets.path("two_layer_net"))
"""

from __future__ import annotations

import contextlib
import importlib.resources
import pathlib

DEFAULT = "two_layer_net"
SUFFIXES = (".json", ".bps")

_stack = contextlib.ExitStack()  # keeps extracted files alive when presets live inside a zip


def _root() -> importlib.resources.abc.Traversable:
    return importlib.resources.files(__name__)


def names() -> list[str]:
    """The name of every preset (file name without suffix), sorted."""
    found = {
        entry.name.rsplit(".", 1)[0]
        for entry in _root().iterdir()
        if entry.is_file() and entry.name.endswith(SUFFIXES) and not entry.name.startswith((".", "_"))
    }
    return sorted(found)


def path(name: str) -> pathlib.Path:
    """A real filesystem path to the preset ``name`` (``"two_layer_net"`` or
    ``"two_layer_net.json"``); raises KeyError naming the presets that exist."""
    stem = name.rsplit(".", 1)[0] if name.endswith(SUFFIXES) else name
    for suffix in SUFFIXES:
        entry = _root().joinpath(stem + suffix)
        if entry.is_file():
            return pathlib.Path(_stack.enter_context(importlib.resources.as_file(entry)))
    raise KeyError(f"there is no preset {name!r} (presets: {', '.join(names())})")
