"""Training runs here, off the GUI thread: the engine's :class:`~engine.train.Trainer`, stepped
in a loop that checks between two steps whether to pause or stop, and tells the window how it
goes a few times a second (Qt signals, queued to the GUI thread, carrying numpy snapshots).

What it sends costs the run little, however fast its steps are: one :class:`Sync` at most every
:data:`SYNC_SECONDS` (and at the end), and nothing in between, so that the window wakes up a few
times a second whatever the run does. Between two syncs the loop is the command line's
(``Trainer.step()``, one after the other). A sync carries:

- the history rows since the last one (the plot draws them), a :class:`~engine.train.Checkpoint`
  of the state (references, no copies: Save writes it, Roll Back returns to it) and the speed;
- the trace events of the step just before it, for the canvas's gradient colours: only a step
  whose gradients the window will show is traced (a traced step computes the same numbers, only
  reading them costs time), within :data:`TRACE_SHARE` of the run's time (a slow traced step is
  not repeated at every sync);
- the evaluations made since the last sync (the loss and the lesson's metric over the evaluation
  batches, each with the checkpoint of its step), at the start and end of a run and about
  :data:`EVALUATIONS` times in between, fewer when that would take more than :data:`EVAL_SHARE` of
  the run's time. An evaluation waits for the next sync: it does not wake the window itself.

After sending a sync (and the run's first), the loop waits until the window says it has drawn it
(:meth:`TrainWorker.drawn`), at most :data:`DRAW_WAIT`: the two threads take turns. Drawing needs
the GIL for many short moments; while the loop computed beside it, the threads handed the GIL to
each other thousands of times a second, which cost the training thread more CPU time than the
drawing's few milliseconds of waiting cost it in wall time (``benchmarks/bench_train.py``). Pause
and Stop end the wait at once; nothing the user does between syncs (panning, editing) makes the
loop wait.

The trainer is the engine's, on the kernel backend :meth:`Trainer.ready` picks for the file's
number of steps: the same as ``backprop-studio train``, so the same losses, bit for bit.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine import kernels
from engine.errors import EngineError, NonFiniteError
from engine.runtime import TraceEvent
from engine.train import Checkpoint, Evaluation, Trainer

SYNC_SECONDS = 0.4  # the window hears about the run at most this often (and draws it each time)
TRACE_SHARE = 0.01  # at most this share of a run's time goes to tracing steps for the canvas
EVAL_SHARE = 0.015  # ... and this share to evaluations during the run
EVALUATIONS = 25  # evaluations a run aims at (the metric's curve)
DRAW_WAIT = 0.05  # after a sync, the loop waits at most this long for the window to draw it


@dataclass(frozen=True)
class Job:
    """One piece of work: ``steps`` training steps (0: only an evaluation), from a new trainer
    built from ``project`` (a copy of the document's) or the worker's current one."""

    token: int
    project: Any = None  # None: continue with the trainer the worker has
    steps: int = 0
    evaluate_first: bool = False
    evaluate_last: bool = True


@dataclass(frozen=True)
class Prepared:
    """A trainer is ready (built, kernels chosen and compiled)."""

    token: int
    step: int  # the steps it has had (a trained file's count)
    backend: str
    batch: int
    rows: int
    metric: str | None  # the metric's kind, or None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Sync:
    """How the run goes: new history rows, a checkpoint of the state, maybe a traced step and the
    evaluations since the last sync."""

    token: int
    step: int
    first: int  # the index of the first row in ``rows`` (rows from there on replace the window's)
    rows: dict[str, Any]  # history rows (engine.train.HISTORY_KEYS) from ``first`` on
    checkpoint: Checkpoint
    events: tuple[TraceEvent, ...] = ()
    traced_step: int = 0
    evaluations: tuple[tuple[Evaluation, Checkpoint], ...] = ()  # made since the last sync, oldest first
    steps_per_second: float = 0.0
    where: str = ""  # "first": the run starts (nothing new to draw); "last": :class:`Ended` follows at once


@dataclass(frozen=True)
class Ended:
    """The job is over: ``reason`` is done, paused, stopped, failed (NaN/Inf: ``node``,
    ``phase`` and ``step`` say where) or error (a message for the person)."""

    token: int
    reason: str
    message: str = ""
    node: str = ""
    phase: str = ""
    step: int = 0
    intact: bool = True  # failed: False when the update spoilt the weights (the trainer went back to the last Sync)


class TrainWorker(QObject):
    """Runs one :class:`Job` at a time on a Python thread; the trainer stays with the worker
    between jobs (a paused run resumes with it). The GUI may read :attr:`trainer` only while
    no job runs (:attr:`busy` is False)."""

    prepared = Signal(object)
    synced = Signal(object)
    ended = Signal(object)
    status = Signal(str)  # compiling kernels, evaluating...: a line for the panel

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.trainer: Trainer | None = None
        self.backend = ""
        self._thread: threading.Thread | None = None
        self._halt = ""  # "pause" | "stop": asked from the GUI thread, read between steps
        self._lock = threading.Lock()
        self._drawn = threading.Event()  # the window has drawn the last sync (see drawn())
        self._sent = 0  # history rows the window has
        self._last: Checkpoint | None = None  # the state the window was last sent

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: Job) -> None:
        if self.busy:
            raise RuntimeError("the training worker is busy")
        self._halt = ""
        self._thread = threading.Thread(target=self._run, args=(job,), name=f"train-{job.token}", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Stop after the current step, keeping the run (it resumes from there)."""
        with self._lock:
            self._halt = self._halt or "pause"
        self._drawn.set()

    def stop(self) -> None:
        """Stop after the current step and end the run (a last evaluation, like the CLI's)."""
        with self._lock:
            self._halt = "stop"
        self._drawn.set()

    def drawn(self) -> None:
        """The window has drawn the last sync: the loop goes on (GUI thread)."""
        self._drawn.set()

    def _sync(self, sync: Sync) -> bool:
        """Send ``sync`` and wait (at most DRAW_WAIT) until the window has drawn it."""
        self._drawn.clear()
        if not self._emit(self.synced, sync):
            return False
        if not self._halt:
            self._drawn.wait(DRAW_WAIT)
        return True

    def join(self, timeout: float = 2.0) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def drop(self) -> None:
        """Forget the trainer (the graph or the settings changed); only while not busy."""
        if not self.busy:
            self.trainer = None

    def _emit(self, signal: Any, *args: Any) -> bool:
        try:
            signal.emit(*args)
            return True
        except RuntimeError:  # the window closed meanwhile
            return False

    # --- the loop ------------------------------------------------------------------------------

    def _run(self, job: Job) -> None:
        trainer = self.trainer
        try:
            if job.project is not None or trainer is None:
                self._emit(self.status, "Preparing the data and the model…")
                trainer = Trainer.from_project(job.project)
                plan = trainer.ready(self._compiling)
                self.trainer, self.backend = trainer, plan.backend
                if not self._emit(self.prepared, Prepared(job.token, trainer.step_count, plan.backend, trainer.dataset.batch,
                                                          trainer.dataset.rows,
                                                          trainer.metric.kind if trainer.metric is not None else None,
                                                          tuple(trainer.notes))):
                    return
            with kernels.using(self.backend):
                self._loop(job, trainer)
        except NonFiniteError as exc:
            self._fail(job, trainer, exc)
        except EngineError as exc:
            self._emit(self.ended, Ended(job.token, "error", str(exc)))
        except Exception as exc:  # noqa: BLE001 - a block failing must not take the window down
            self._emit(self.ended, Ended(job.token, "error", f"{type(exc).__name__}: {exc}"))

    def _compiling(self, done: int, total: int, name: str) -> None:
        if done < total:
            self._emit(self.status, f"Compiling fast kernels for this model, once on this machine: {done + 1} of {total}…")

    def _loop(self, job: Job, trainer: Trainer) -> None:
        t_start = time.perf_counter()
        evaluated: list[tuple[Evaluation, Checkpoint]] = []
        # what an evaluation costs this thread: its CPU time (its wall time also counts the waits
        # for the GIL while the GUI thread draws, most of all at a run's start)
        eval_seconds = 0.0
        if job.evaluate_first:
            c0 = time.thread_time()
            first = trainer.evaluation()
            eval_seconds = time.thread_time() - c0
            evaluated.append((first, trainer.checkpoint()))
        last_eval = time.perf_counter()
        every = max(1, job.steps // EVALUATIONS)
        measured = 0  # evaluations along this run that measured what one costs
        next_eval = every
        self._sent = sent = trainer.step_count
        self._last = trainer.checkpoint()
        self._sync(Sync(job.token, trainer.step_count, sent, trainer.history.rows(sent), self._last,
                        evaluations=tuple(evaluated), where="first"))
        evaluated = []
        last_sync = time.perf_counter()
        next_trace = 0.0  # trace the first step: the canvas shows gradients at once
        step_time = 0.0  # a running mean of an untraced step's seconds
        events: tuple[TraceEvent, ...] = ()
        traced_step = 0
        done = 0
        reason = "done"
        step = trainer.step
        while done < job.steps:
            if self._halt:
                reason = "stopped" if self._halt == "stop" else "paused"
                break
            now = time.perf_counter()
            # the step before a sync is traced (its gradients are the ones the window shows), the
            # first one too, so that the canvas shows gradients at once, and the run's last one
            ahead = now + step_time  # when this step will end
            due = ahead - last_sync >= SYNC_SECONDS  # a sync follows this step
            trace = (ahead >= next_trace and (due or not done)) or done == job.steps - 1
            if not trace:
                step()
                done += 1
                took = time.perf_counter() - now
                step_time = took if not step_time else 0.9 * step_time + 0.1 * took
            else:
                record = step(trace=True)
                done += 1
                events, traced_step = record.events, record.step
                # what tracing added to the step, spread so that it stays within TRACE_SHARE
                after = time.perf_counter()
                trace_cost = max(0.0, after - now - step_time) if step_time else 0.0
                next_trace = after + trace_cost / TRACE_SHARE
            if done >= next_eval and done < job.steps:
                now = time.perf_counter()
                # the first two evaluations along the run come at their steps whatever the one
                # before the run cost: that one may have been a new trainer's first, which builds
                # the plan of evaluation mode and costs several of the next (for a fast lesson, its
                # budget could be longer than the whole run, and the metric's curve had no points).
                # What one costs is the cheapest measured along the run: a dearer one was
                # interrupted (once, a 500-step run's first one along it was dear enough to leave the
                # run no other)
                if measured < 2 or now - last_eval >= eval_seconds / EVAL_SHARE:
                    next_eval = done + every
                    try:
                        c0 = time.thread_time()
                        ev = trainer.evaluation()
                        cost = time.thread_time() - c0
                        eval_seconds = min(eval_seconds, cost) if measured else cost
                        measured += 1
                        evaluated.append((ev, trainer.checkpoint()))
                    except NonFiniteError:
                        # NOTE: an evaluation the command line does not make must not be what stops the
                        # run: the next training step finds the NaN or Inf and names its node and step,
                        # as `backprop-studio train` does (or it trains on, as the CLI would)
                        pass
                    last_eval = time.perf_counter()
            now = time.perf_counter()
            # a sync shows a traced step: when one is due after an untraced step (it ended later than
            # foreseen) and a trace is allowed, the next step is traced and the sync follows it
            late = now - last_sync >= SYNC_SECONDS
            if due and trace or late and (trace or now + step_time < next_trace):
                rate = done / max(now - t_start, 1e-9)
                self._last = trainer.checkpoint()
                if not self._sync(Sync(job.token, trainer.step_count, sent, trainer.history.rows(sent), self._last, events,
                                       traced_step, tuple(evaluated), rate)):
                    return
                self._sent = sent = trainer.step_count
                events, evaluated, last_sync = (), [], now
        if self._halt == "stop":
            reason = "stopped"
        if job.evaluate_last and (reason != "paused" or done):
            evaluated.append((trainer.evaluation(), trainer.checkpoint()))
        rate = done / max(time.perf_counter() - t_start, 1e-9)
        self._emit(self.synced, Sync(job.token, trainer.step_count, sent, trainer.history.rows(sent), trainer.checkpoint(),
                                     events, traced_step, tuple(evaluated), rate, where="last"))
        self._sent = trainer.step_count
        self._emit(self.ended, Ended(job.token, reason, step=trainer.step_count))

    def _fail(self, job: Job, trainer: Trainer | None, exc: NonFiniteError) -> None:
        intact = exc.phase != "update"
        if trainer is not None:
            if not intact and self._last is not None:
                # the update spoilt the weights: back to the state the window was last sent
                trainer.restore(self._last)
            # the rows of the steps that went well (the failing step left none) and the state
            # after the last of them
            sent = min(self._sent, trainer.step_count)
            self._emit(self.synced, Sync(job.token, trainer.step_count, sent, trainer.history.rows(sent),
                                         trainer.checkpoint()))
            self._sent = trainer.step_count
        self._emit(self.ended, Ended(job.token, "failed", str(exc), exc.node, exc.phase, exc.step, intact))

