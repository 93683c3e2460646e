"""The train controller: one training run of the open document at a time, and what it leaves.

It owns the :class:`~editor.train.worker.TrainWorker` and keeps, on the GUI thread, what the
panels show and what Save writes:

- the run's state (:data:`STATES`), its progress and speed;
- the history (the engine's compact :class:`~engine.train.History`), the evaluations (loss and
  metric) and the best one, with its :class:`~engine.train.Checkpoint`;
- the trained state of the document: every :class:`~editor.train.worker.Sync` commits its
  checkpoint to the window's files controller (weights, optimiser state and history, as
  ``backprop-studio train -o`` saves them) and marks the document modified, so Save keeps the
  run and closing asks first;
- the canvas while training: a :class:`~editor.run.timeline.TrainingView` of the latest traced
  step, and per-node gradient sparklines; while paused, the run controls step through the next
  training step node by node (:meth:`next_step_source`), in training mode.

Training starts from the document as it is (graph, data, the file's training settings and its
trained state), so a reopened ``.bps`` continues exactly where it stopped. An edit that changes
the graph's structure stops a run (what it learned so far is kept); settings are edited with
:class:`~editor.train.settings.SetTrainingCommand`, undoable like any edit.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QObject, QTimer, Signal

from editor.run.timeline import EXPLODING, VANISHING, TrainingView
from editor.run.worker import Source
from editor.train.worker import Ended, Job, Prepared, Sync, TrainWorker
from engine import metrics
from engine.errors import EngineError
from engine.runtime import Runtime, TraceEvent
from engine.train import Checkpoint, Evaluation, History, TrainingConfig

#: idle: nothing trains (a trainer may be kept); preparing: building it and compiling kernels;
#: running; pausing/stopping: asked, the current step finishing; paused: mid-run, resumable;
#: failed: NaN or Inf stopped it; evaluating: measuring a loaded file's loss and metric
STATES = ("idle", "preparing", "running", "pausing", "paused", "stopping", "failed", "evaluating")
SPARK_LENGTH = 48  # traced steps a node's sparkline remembers
# While training, a node's weight gradient is marked vanishing once it was below VANISHING at each
# of the last this many traced steps (fewer at a run's start), and no longer once it was above at
# each of them: a model that has learned its data has gradients that dip below it now and then, and
# a badge that came and went with each dip would flicker, and move the wires that keep clear of it,
# a few times a second.
VANISHING_STEPS = 3


@dataclass(frozen=True)
class Failure:
    """Why the last run stopped on NaN or Inf, and what it can go back to."""

    message: str
    node: str
    node_label: str
    phase: str
    step: int
    rollback: Checkpoint | None  # the last good checkpoint (the best evaluation, else the run's start)
    rollback_text: str


def structure_key(graph: Any) -> str:
    """What training depends on in a graph: nodes, their types and params, and the links (not
    names, not positions)."""
    nodes = [(nid, n.type, n.params) for nid, n in graph.nodes.items()]
    links = sorted((l.src, l.src_port, l.dst, l.dst_port) for l in graph.links)
    return json.dumps([nodes, links], sort_keys=True, default=str)


class TrainController(QObject):
    """See the module docstring. ``window`` is the main window (its files controller, undo
    stack and run controller)."""

    changed = Signal()  # state, settings: the panel redraws its controls
    progressed = Signal()  # a run's progress (steps, speed, loss, metric): a few times a second while running
    history_changed = Signal()  # new rows or evaluations: the plot redraws (a few times a second)
    message = Signal(str, int)  # a status-bar line
    failed = Signal(object)  # a Failure: the panel offers to roll back
    prepared = Signal(object)

    def __init__(self, window: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.window = window
        self.worker = TrainWorker(self)
        self.worker.prepared.connect(self._on_prepared)
        self.worker.synced.connect(self._on_synced)
        self.worker.ended.connect(self._on_ended)
        self.worker.status.connect(self._on_status)
        self.state = "idle"
        self.status = ""  # one line on what is happening
        self.history = History()
        self.evaluations: list[Evaluation] = []
        self.best: tuple[Evaluation, Checkpoint] | None = None
        self.first: tuple[Evaluation, Checkpoint] | None = None  # the run's starting point
        self.failure: Failure | None = None
        self.metric_kind: str | None = None
        self.backend = ""
        self.batch_rows: tuple[int, int] | None = None
        self.rate = 0.0  # steps per second of the current run
        self.run_start = 0  # step count when the run began
        self.run_end = 0  # ... when it will end
        self.sparks: dict[str, deque[float]] = {}
        self._vanishing: set[str] = set()  # nodes whose gradient is marked vanishing (VANISHING_STEPS)
        self.view: TrainingView | None = None
        self._token = 0
        self._key = ""  # structure_key of the graph the worker's trainer was built on
        self._settings_key = ""
        self._pending: Callable[[], None] | None = None  # what to do once the worker is free
        self._initial: tuple[Any, dict[str, dict[str, Any]]] | None = None
        self._single = False  # the job is one Step (it ends paused)
        self._events: tuple[tuple[TraceEvent, ...], int] | None = None  # a traced step not yet shown
        self._held = False  # _set_state leaves the signals to the caller (it emits once, at the end)

    # --- what the panels read ----------------------------------------------------------------------

    @property
    def files(self) -> Any:
        return self.window.files

    @property
    def running(self) -> bool:
        return self.state in ("preparing", "running", "pausing", "stopping")

    @property
    def step_count(self) -> int:
        return len(self.history)

    def training(self) -> dict[str, Any]:
        """The document's training settings (canonical), {} when it has none."""
        project = self.files.project
        return dict(project.training) if project is not None and project.training else {}

    def config(self) -> TrainingConfig | None:
        try:
            return TrainingConfig.from_dict(self.training())
        except EngineError:
            return None

    def initial_weights(self, node_id: str) -> dict[str, Any]:
        """The weights a node starts training from: what the file's seed draws for the graph
        as it is now (cached per graph structure, seed and dtype)."""
        config = self.config() or TrainingConfig()
        graph = self.window.doc.graph
        key = (structure_key(graph), config.seed, config.dtype)
        if self._initial is None or self._initial[0] != key:
            try:
                weights = Runtime(graph.copy(), seed=config.seed, dtype=config.dtype).weights
            except EngineError:
                weights = {}
            self._initial = (key, weights)
        return dict(self._initial[1].get(node_id, {}))

    def latest(self) -> Evaluation | None:
        return self.evaluations[-1] if self.evaluations else None

    def trained_text(self) -> str:
        """The status bar's words on the model: untrained, or trained for so many steps (and
        how well)."""
        n = self.step_count
        if not n:
            return "Untrained"
        text = f"Trained · {n:,} step{'s' if n != 1 else ''}"
        ev = self.latest()
        if ev is not None and ev.step == n and self.metric_kind and ev.metric is not None:
            text += f" · {metrics.label(self.metric_kind)} {metrics.format_value(self.metric_kind, ev.metric)}"
        elif ev is not None and ev.step == n:
            text += f" · loss {ev.loss:.4g}"
        return text

    # --- the document ------------------------------------------------------------------------------

    def load_project(self) -> None:
        """A project was opened (or a new document made): forget the old run, show the new
        one's history, and measure a trained file's loss and metric in the background."""
        self._halt_for_new_document()
        project = self.files.project
        try:
            self.history = History(project.history if project is not None and project.history else None)
        except EngineError:
            self.history = History()
        self.evaluations = []
        self.best = self.first = None
        self.failure = None
        self.sparks = {}
        self._vanishing = set()
        self.view = None
        self._events = None
        self.rate = 0.0
        self.run_start = self.run_end = len(self.history)
        config = self.config()
        self.metric_kind = config.metric["kind"] if config is not None and config.metric else None
        self._key = ""
        self.batch_rows = None
        self.state = "idle"
        self.status = ""
        self._update_lock()
        self.changed.emit()
        self.history_changed.emit()
        if project is not None and project.weights and project.training and len(self.history):
            self._key = structure_key(self.window.doc.graph)
            self._settings_key = json.dumps(self.training(), sort_keys=True, default=str)
            self._token += 1
            self._start_job(Job(self._token, self._project(), 0, evaluate_first=True, evaluate_last=False), "evaluating")
            self.status = "Measuring the trained model's loss and metric…"

    def _halt_for_new_document(self) -> None:
        self._token += 1  # whatever the old run still sends is ignored
        self._pending = None
        if self.worker.busy:
            self.worker.stop()
            self.worker.join(5.0)
        self.worker.drop()
        self.window.run.show_training(None)

    def _project(self) -> Any:
        return self.files.current_project()

    def graph_edited(self) -> None:
        """The document's graph changed: a structural change ends the run (what it learned is
        kept) and the next Start builds a trainer for the new graph."""
        key = structure_key(self.window.doc.graph)
        if key == self._key or not self._key:
            return
        self._key = ""
        if self.running:
            self.message.emit(f"The graph changed: training stopped at step {self.step_count:,} (what it learned is kept). "
                              "Train continues on the new graph.", 8000)
            self.worker.stop()
            self._pending = self.worker.drop
        else:
            self.worker.drop()
            if self.state == "paused":
                self._set_state("idle")
        self.batch_rows = None
        self.changed.emit()

    def settings_changed(self) -> None:
        """The training settings changed (an edit, an undo): the next Start uses them."""
        config = self.config()
        self.metric_kind = config.metric["kind"] if config is not None and config.metric else self.metric_kind
        if self.running:
            self.message.emit(f"The training settings changed: training stopped at step {self.step_count:,}.", 6000)
            self.worker.stop()
            self._pending = self.worker.drop
        else:
            self.worker.drop()
            self._key = ""
            if self.state == "paused":
                self._set_state("idle")
        self.changed.emit()

    def _commit(self, checkpoint: Checkpoint) -> None:
        """Make ``checkpoint`` (and the history up to it) the document's trained state: what
        Save writes and the next run starts from. Marks the document modified when it is new."""
        project = self.files.project
        if project is None:
            return
        n = checkpoint.step
        had = len(project.history["step"]) if project.history else 0
        if n == 0 and not had:
            return  # nothing learned yet: the document stays as it was
        history = {k: self.history[k][:n] for k in self.history.keys()}  # read-only views: no copy
        same = had == n and project.weights is not None
        self.files.project = dataclasses.replace(project, weights={k: dict(v) for k, v in checkpoint.weights.items()},
                                                 optimizer_state=dict(checkpoint.optimizer_state), history=history)
        if not same:
            self.window.undo_stack.resetClean()

    # --- commands ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start a run of the file's number of steps (or resume a paused one)."""
        if self.state == "paused" and self.worker.trainer is not None and self._key and self.run_end > self.step_count:
            self._run(self.run_end - self.step_count, resume=True)
            return
        if self.running:
            return
        config = self.config()
        steps = config.steps if config is not None else 0
        if steps <= 0:
            self.message.emit("Set the number of steps to train (Steps) first.", 5000)
            return
        self._run(steps)

    def step(self) -> None:
        """One training step, then pause (the canvas shows its gradients)."""
        if self.running:
            return
        self._run(1, resume=self.state == "paused", single=True)

    def pause(self) -> None:
        if self.state in ("running", "preparing"):
            self.worker.pause()
            self._set_state("pausing")

    def toggle(self) -> None:
        """Start, or pause a running run (the toolbar's Train button)."""
        if self.state in ("running", "preparing"):
            self.pause()
        else:
            self.start()

    def stop(self) -> None:
        """End the run after the current step (a last evaluation), or end a paused run."""
        if self.state in ("running", "preparing", "pausing"):
            self.worker.stop()
            self._set_state("stopping")
        elif self.state in ("paused", "failed"):
            self.failure = None
            self.run_end = self.step_count
            self._set_state("idle")
            self.message.emit(f"Training stopped at step {self.step_count:,}.", 4000)

    def shutdown(self) -> None:
        self._token += 1
        self.worker.stop()
        self.worker.join(2.0)

    def _run(self, steps: int, *, resume: bool = False, single: bool = False) -> None:
        if self.worker.busy:
            self._pending = lambda: self._run(steps, resume=resume, single=single)
            return
        key = structure_key(self.window.doc.graph)
        settings = json.dumps(self.training(), sort_keys=True, default=str)
        fresh = self.worker.trainer is None or key != self._key or settings != self._settings_key
        project = None
        if fresh:
            try:
                project = self._project()
            except Exception as exc:  # noqa: BLE001 - a document that cannot be copied: say so
                self._fail_plainly(f"Cannot train: {exc}")
                return
            self._key, self._settings_key = key, settings
        self.failure = None
        self._single = single
        if not resume:
            self.run_start = self.step_count
            self.run_end = self.step_count + steps
        self._token += 1
        self._start_job(Job(self._token, project, steps, evaluate_first=not resume and not single and not self.evaluations_at_now(),
                            evaluate_last=not single), "preparing" if fresh else "running")

    def evaluations_at_now(self) -> bool:
        return bool(self.evaluations) and self.evaluations[-1].step == self.step_count

    def _start_job(self, job: Job, state: str) -> None:
        self._token = job.token
        self.worker.start(job)
        self._set_state(state)

    def _fail_plainly(self, text: str) -> None:
        self.status = text
        self._set_state("idle")
        self.message.emit(text, 8000)

    # --- the worker's news ---------------------------------------------------------------------------

    def _on_status(self, text: str) -> None:
        self.status = text
        self.changed.emit()

    def _on_prepared(self, info: Prepared) -> None:
        if info.token != self._token:
            return
        self.backend = info.backend
        self.batch_rows = (info.batch, info.rows)
        self.metric_kind = info.metric
        if self.state == "preparing":
            self._set_state("running")
        for note in info.notes:
            self.message.emit(f"Note: {note}", 8000)
        self.status = ""
        self.prepared.emit(info)

    def _on_synced(self, sync: Sync) -> None:
        if sync.token != self._token:
            self.worker.drawn()  # an old run's: nothing to draw, the loop need not wait
            return
        if sync.first < len(self.history):
            self.history.truncate(sync.first)
        self.history.extend(sync.rows)
        if sync.steps_per_second:
            self.rate = sync.steps_per_second
        for ev, checkpoint in sync.evaluations:
            self._evaluated(ev, checkpoint)
        if self.state != "evaluating":
            self._commit(sync.checkpoint)
        if sync.events:
            self._events = (sync.events, sync.traced_step)
        # What the window draws for a sync (the plot, the progress, the canvas's gradient colours,
        # all at once: one repaint, 10–20 ms of the GUI thread) costs time that a fast model's
        # training would otherwise use: the worker syncs every SYNC_SECONDS (2.5 times a second),
        # and each sync of a run is drawn, except the first (nothing new yet) and the last (the
        # end of the run draws everything once).
        if not (self.running and sync.where):
            self._draw()
        if sync.where != "last":
            # the worker's loop waits until the window has drawn this (the run's start, or a sync):
            # the repaint's events come before a zero timer's
            QTimer.singleShot(0, self.worker.drawn)

    def _draw(self) -> None:
        """Show what the run has reached: the canvas (the latest traced step, or only the
        headline's step and loss), the plot and the progress."""
        if self._events is not None:
            events, step = self._events
            self._events = None
            self._show_step(events, step)
        elif self.view is not None and self.running:
            self.view = dataclasses.replace(self.view, headline=self._headline(self.view))
            self.window.run.show_training(self.view)
        self.history_changed.emit()
        self.progressed.emit()

    def _evaluated(self, ev: Evaluation, checkpoint: Checkpoint) -> None:
        if self.evaluations and self.evaluations[-1].step >= ev.step:
            self.evaluations = [e for e in self.evaluations if e.step < ev.step]
        self.evaluations.append(ev)
        if len(self.evaluations) > 4000:  # thin the oldest half: the plot shows the trend
            self.evaluations = self.evaluations[:2000:2] + self.evaluations[2000:]
        if self.first is None or ev.step <= self.first[0].step:
            self.first = (ev, checkpoint)
        if self.best is None or self._better(ev, self.best[0]):
            self.best = (ev, checkpoint)

    def _better(self, a: Evaluation, b: Evaluation) -> bool:
        if self.metric_kind and a.metric is not None and b.metric is not None and a.metric != b.metric:
            return metrics.better(self.metric_kind, a.metric, b.metric)
        return math.isfinite(a.loss) and (not math.isfinite(b.loss) or a.loss < b.loss)

    def _on_ended(self, info: Ended) -> None:
        if info.token != self._token:
            return
        pending, self._pending = self._pending, None
        self._held = True  # one `changed` at the end, not one per change of state
        try:
            if info.reason == "failed":
                self._failed(info)
            elif info.reason == "error":
                self.worker.drop()
                self._key = ""
                self._fail_plainly(f"Cannot train: {info.message}")
            elif self.state == "evaluating":
                self._set_state("idle")
            elif info.reason == "paused" or info.reason == "done" and self._single:
                self._set_state("paused")
                self.message.emit(f"Paused at step {self.step_count:,}. Step (F10) walks through the next training step node "
                                  "by node; Train resumes.", 6000)
            else:
                self.run_end = self.step_count if info.reason == "stopped" else self.run_end
                self._set_state("idle")
                what = "Stopped" if info.reason == "stopped" else "Trained"
                ev = self.latest()
                how = ""
                if ev is not None and ev.step == self.step_count:
                    how = f": loss {ev.loss:.4g}" + (f", {metrics.label(self.metric_kind)} "
                                                      f"{metrics.format_value(self.metric_kind, ev.metric)}"
                                                      if self.metric_kind and ev.metric is not None else "")
                self.message.emit(f"{what} at step {self.step_count:,}{how}.", 8000)
            if self._events is not None:
                events, step = self._events
                self._events = None
                self._show_step(events, step)
            elif self.view is not None and self.window.run.training_view is self.view:
                self.view = dataclasses.replace(self.view, headline=self._headline(self.view))
                self.window.run.show_training(self.view)
        finally:
            self._held = False
        self._update_lock()
        self.history_changed.emit()
        if pending is not None:
            pending()
        self.changed.emit()

    def _failed(self, info: Ended) -> None:
        graph = self.window.doc.graph
        label = graph.nodes[info.node].label if info.node in graph.nodes else "the model"
        rollback = self.best or self.first
        if rollback is not None and rollback[1].step < self.step_count:
            ev, cp = rollback
            what = "the best evaluation" if rollback is self.best and ev.step else "where this run started"
            text = f"step {cp.step:,} ({what}: loss {ev.loss:.4g})"
            rb: Checkpoint | None = cp
        else:
            rb, text = None, ""
        message = info.message
        if message.startswith(f"step {info.step}: "):
            message = message[len(f"step {info.step}: "):]
        self.failure = Failure(message, info.node, label, info.phase, info.step, rb, text)
        if not info.intact:
            self.worker.drop()
            self._key = ""
        self._set_state("failed")
        self.failed.emit(self.failure)

    def _set_state(self, state: str) -> None:
        self.state = state
        if not self._held:
            self._update_lock()
            self.changed.emit()

    def _update_lock(self) -> None:
        run = self.window.run
        if self.running:
            run.lock("Training is running: pause it to step through its next training step node by node.")
        else:
            run.lock("")
        run.source = self.next_step_source

    # --- checkpoints ------------------------------------------------------------------------------------

    def restore(self, checkpoint: Checkpoint) -> None:
        """Go back to ``checkpoint`` of this session: its weights, optimiser state and the
        history up to it (the curve after it is dropped); the next run continues from it."""
        if self.running:
            return
        self.history.truncate(checkpoint.step)
        self.evaluations = [e for e in self.evaluations if e.step <= checkpoint.step]
        if self.best is not None and self.best[1].step > checkpoint.step:
            self.best = None  # (only the best and the first evaluation keep their checkpoints)
        if self.first is not None and self.first[1].step > checkpoint.step:
            self.first = None
        self._commit(checkpoint)
        self.worker.drop()  # the next Start builds the trainer from the document
        self._key = ""
        self.failure = None
        self.run_start = self.run_end = checkpoint.step
        self.sparks = {}
        self._vanishing = set()
        self.view = None
        self._events = None
        self.window.run.show_training(None)
        self._set_state("idle")
        self.history_changed.emit()
        self.message.emit(f"Back at step {checkpoint.step:,}.", 5000)

    # --- the canvas -----------------------------------------------------------------------------------

    def _show_step(self, events: tuple[TraceEvent, ...], step: int) -> None:
        wires = {}
        weight_norms: dict[str, float] = {}
        problems: dict[str, tuple[str, ...]] = {}
        for ev in events:
            if ev.phase != "backward":
                bad = tuple(k for k, flag in (("nan", any(t.nan for t in ev.outputs.values())),
                                              ("inf", any(t.inf for t in ev.outputs.values()))) if flag)
                if bad:
                    problems[ev.node] = bad
                continue
            for port, t in ev.inputs.items():
                wires[(ev.node, port)] = t
            if ev.weights:
                norm = math.sqrt(sum(t.norm ** 2 for t in ev.weights.values()))
                weight_norms[ev.node] = norm
                self.sparks.setdefault(ev.node, deque(maxlen=SPARK_LENGTH)).append(norm)
                kinds = []
                recent = [0 < n < VANISHING for n in list(self.sparks[ev.node])[-VANISHING_STEPS:]]
                if all(recent):
                    self._vanishing.add(ev.node)
                elif not any(recent):
                    self._vanishing.discard(ev.node)
                if not math.isfinite(norm):
                    kinds.append("nan")
                elif norm > EXPLODING:  # (at once: a blow-up is not a dip)
                    kinds.append("exploding")
                elif ev.node in self._vanishing:
                    kinds.append("vanishing")
                if kinds:
                    problems[ev.node] = tuple(kinds)
        loss = float(self.history["loss"][-1]) if len(self.history) else math.nan
        view = TrainingView(step, loss, wires, weight_norms, {k: tuple(v) for k, v in self.sparks.items()}, "", problems)
        self.view = dataclasses.replace(view, headline=self._headline(view))
        self.window.run.show_training(self.view)

    def _headline(self, view: TrainingView) -> str:
        n = self.step_count
        loss = float(self.history["loss"][-1]) if n else math.nan
        state = {"running": "Training", "pausing": "Pausing", "stopping": "Stopping", "paused": "Paused",
                 "failed": "Stopped by NaN/Inf"}.get(self.state, "Trained")
        colour = "#c2185b"
        return (f"<b style='color:{colour}'>{state}</b> · step {n:,} · loss {loss:.4g} · the wires show the gradients "
                f"of step {view.step:,}" + (" (renewed a few times a second)" if self.running else ""))

    def next_step_source(self) -> Source | None:
        """While paused: the next training step as a pass for the run controls (the batch drawn
        for it, training mode, the run's kernel backend), so its forward and backward can be
        walked node by node; Train then takes exactly that step. None otherwise."""
        t = self.worker.trainer
        if self.state != "paused" or self.worker.busy or t is None:
            return None
        from engine.feeds import PassSetup

        feeds, context = t.next_step()
        runtime = Runtime.bound(t.graph, {n: dict(ws) for n, ws in t.runtime.weights.items()}, dtype=t.runtime.dtype,
                                program=t.runtime.program)
        note = (f"training step {t.step_count + 1:,} (paused): the batch drawn for it, in training mode "
                "(Dropout and BatchNorm as in training)")
        setup = PassSetup(runtime, feeds, t.loss_key, "training", note, t.dataset.batch, t.dataset.rows)
        return Source(setup, context, self.worker.backend)


__all__ = ["TrainController", "Failure", "STATES", "structure_key"]
