"""Training in the window, and trying what the model learned.

:func:`install` adds everything to a :class:`~editor.window.MainWindow` in one call: the train
controller (a worker thread running the engine's trainer, the run's history and checkpoints, the
document's trained state), the Train panel (settings, Train/Pause/Stop/Step, progress, the loss
curve with the lesson's metric, the weights before and after), the Try panel for language models
and translators, a Train menu and toolbar button, and the status bar's word on whether the
model is trained. The window stays a thin assembly; this package owns the feature.
"""

from __future__ import annotations

from typing import Any

from editor.train.controller import TrainController


def install(window: Any) -> Any:
    """Build training into ``window``; returns the installation (``window.train``): its
    ``controller``, ``panel``, ``try_panel`` and docks."""
    from editor.train.installation import Installation

    return Installation(window)


__all__ = ["TrainController", "install"]
