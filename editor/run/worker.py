"""The pass runs here, off the GUI thread: it prepares the data (:mod:`engine.feeds`), records the
pass frame by frame (:mod:`engine.record`) and sends the frames back in small batches through
Qt signals (queued to the GUI thread, carrying numpy copies). ``stop`` is honoured between any
two node executions."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from PySide6.QtCore import QObject, Signal

from engine import feeds, kernels, record
from engine.errors import EngineError

FLUSH_SECONDS = 0.03  # frames are sent at most this often (and the first one at once)


@dataclass(frozen=True)
class Job:
    """What to run: a project (a copy: the worker never sees the live document), the data mode,
    inputs typed by hand, and a number telling this job's signals from an older job's."""

    token: int
    project: Any
    one_example: bool = False
    overrides: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Started:
    token: int
    note: str
    source: str
    loss: tuple[str, str] | None
    schedule: tuple[str, ...]  # top-level node names in forward order
    labels: Mapping[str, str]  # top-level node id → name


@dataclass(frozen=True)
class Finished:
    token: int
    stopped: bool
    error: str
    loss: float | None
    seconds: float
    compiled: int = 0  # fast kernels compiled during this pass (a first run on this machine)


class PassWorker(QObject):
    """Runs one :class:`Job` at a time on a Python thread; emits ``started``, ``frames``
    (a list of frames) and ``finished``, each tagged with the job's token."""

    started = Signal(object)
    frames = Signal(int, object)
    finished = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._compiled_at_start = 0

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: Job) -> None:
        self.stop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(job, self._stop), name=f"pass-{job.token}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the running pass to stop; returns at once (the thread ends after its current node)."""
        self._stop.set()

    def join(self, timeout: float = 2.0) -> bool:
        """Wait for the thread to end (closing the window, tests); True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def compiling(self) -> int:
        """Kernels compiled so far during the running pass (read from the GUI thread)."""
        return record.compiled_kernels() - self._compiled_at_start

    def _emit(self, signal: Any, *args: Any) -> bool:
        """Send to the GUI thread; False when the window is gone (closed while the pass ran)."""
        try:
            signal.emit(*args)
            return True
        except RuntimeError:
            return False

    def _run(self, job: Job, stop: threading.Event) -> None:
        t0 = time.perf_counter()
        self._compiled_at_start = record.compiled_kernels()
        try:
            setup = feeds.prepare(job.project, one_example=job.one_example, overrides=job.overrides)
            program = setup.runtime.program
            graph = setup.runtime.graph
            labels = {s.node: graph.nodes[s.node].name or s.type for s in program.steps}
            if not self._emit(self.started, Started(job.token, setup.note, setup.source, setup.loss,
                                                    tuple(labels[s.node] for s in program.steps), labels)):
                return
            # The kernel backend `backprop-studio run` would pick for one pass of this graph, so
            # the window shows the same numbers as the command line, to the last digit.
            plan = setup.ready()
            recorder = record.Recorder(setup.runtime, setup.feeds, setup.loss, should_stop=stop.is_set)
            batch: list[record.Frame] = []
            last = 0.0
            with kernels.using(plan.backend):
                for frame in recorder.frames():
                    batch.append(frame)
                    now = time.perf_counter()
                    if now - last >= FLUSH_SECONDS or len(batch) == 1 and last == 0.0:
                        if not self._emit(self.frames, job.token, batch):
                            return
                        batch, last = [], now
            if batch:
                self._emit(self.frames, job.token, batch)
            self._emit(self.finished, Finished(job.token, recorder.stopped, "", recorder.loss_value,
                                               time.perf_counter() - t0, self.compiling()))
        except EngineError as exc:
            self._emit(self.finished, Finished(job.token, False, str(exc), None, time.perf_counter() - t0))
        except Exception as exc:  # noqa: BLE001 - a block failing must not take the window down
            self._emit(self.finished, Finished(job.token, False, f"{type(exc).__name__}: {exc}", None,
                                               time.perf_counter() - t0))
