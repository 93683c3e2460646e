"""Running the graph in the window: watch backpropagation node by node.

:func:`install` adds everything to a :class:`~editor.window.MainWindow` in one call: the run
controller (worker thread and the pass's frames), the Run menu and toolbar with the timeline
scrubber, the canvas overlay, the Values and Problems panels, and a Check Gradient entry in the
node context menu. The window stays a thin assembly; this package owns the feature.
"""

from __future__ import annotations

from typing import Any

from editor.run.controller import RunController


def install(window: Any) -> RunController:
    """Build the run feature into ``window`` and return its controller (also ``window.run``)."""
    from editor.run.installation import Installation

    return Installation(window).controller


__all__ = ["RunController", "install"]
