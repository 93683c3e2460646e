"""Editing how a lesson trains, as undoable edits on the window's stack.

The training settings live in the file's ``training`` section, not in the graph, so their edit is
a command of its own (:class:`SetTrainingCommand`): it swaps the files controller's section for
a checked copy (:func:`engine.train.normalize`) and tells the train controller. Consecutive
changes of one field (typing a learning rate) merge into one undo step.

The batch size is not a setting: it is the first dimension of the Inputs that the data feeds, so
changing it is a set of param edits on those Inputs (:func:`batch_command`), one undo step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from PySide6.QtGui import QUndoCommand

from editor import commands
from engine import data as data_mod
from engine.train import normalize

_SET_TRAINING_ID = 9001


class SetTrainingCommand(QUndoCommand):
    """Replace the document's training settings by ``training`` (checked: raises
    :class:`~engine.train.TrainingError` with the engine's message)."""

    edits_graph = False  # a lesson's layout still follows the window after it (MainWindow._on_first_edit)

    def __init__(self, controller: Any, training: Mapping[str, Any], text: str, *, merge_key: str = "") -> None:
        super().__init__(text)
        self.controller = controller
        self.old = normalize(controller.training())
        self.new = normalize(dict(training))
        self.merge_key = merge_key

    def id(self) -> int:
        return _SET_TRAINING_ID if self.merge_key else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, SetTrainingCommand) or other.merge_key != self.merge_key:
            return False
        self.new = other.new
        self.setText(other.text())
        return True

    def _apply(self, training: dict[str, Any]) -> None:
        files = self.controller.files
        if files.project is not None:
            files.project = dataclasses.replace(files.project, training=dict(training))
        self.controller.settings_changed()

    def redo(self) -> None:
        self._apply(self.new)

    def undo(self) -> None:
        self._apply(self.old)


def batched_inputs(project: Any, graph: Any) -> tuple[list[str], int, int]:
    """The Inputs fed by the data a batch at a time (node ids), the batch size and the number of
    rows; raises :class:`~engine.data.DataError` when the data do not fit the graph."""
    dataset = data_mod.bind(project.data, graph)
    return [b.node for b in dataset.bindings if b.batched], dataset.batch, dataset.rows


def batch_command(doc: Any, project: Any, batch: int) -> QUndoCommand | None:
    """One undo step setting the batch size (the first dimension of every batched Input) to
    ``batch``; None when it is already that. Raises the engine's errors (DataError, ParamError)."""
    nodes, current, rows = batched_inputs(project, doc.graph)
    if batch == current or not nodes:
        return None
    if not 1 <= batch <= rows:
        raise data_mod.DataError(f"the batch size must be between 1 and the {rows} rows of the data, got {batch}")
    return commands.MacroCommand(f"Set the batch size to {batch}", [
        commands.SetParamsCommand(doc, nid, {"shape": [batch, *doc.node(nid).params["shape"][1:]]}) for nid in nodes])
