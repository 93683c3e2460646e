"""The run controller: owns the worker and the current pass's frames, and moves a cursor through
them (Forward, Backward, Step, Step Back, Play at a speed, Run to Here, the scrubber).

It knows nothing about painting: the canvas overlay, the panels and the controls listen to
``changed`` and read :attr:`timeline`, :attr:`cursor` and :attr:`level`. Editing the graph
marks the pass :attr:`stale` (the overlay greys it); the next run starts a fresh pass.

Training (:mod:`editor.train`) plugs in three ways: :attr:`source` hands the next pass over (a
paused run's next training step, stepped through node by node in training mode);
:meth:`show_training` puts a :class:`TrainingView` on the canvas while no pass is shown; and
:meth:`lock` refuses new passes while a run is training, saying why.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from editor.run.timeline import Path, Timeline, TrainingView
from editor.run.worker import Finished, Job, PassWorker, Source, Started
from engine import feeds

SPEEDS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # nodes per second
DEFAULT_SPEED = 2.0
SLOW_SECONDS = 0.8  # no frame for this long: tell the user what is being computed


class RunController(QObject):
    """See the module docstring. ``project`` returns the project to run (a copy of the
    document's graph with the file's data, training settings and weights)."""

    changed = Signal()  # cursor, frames, level, staleness or mode: redraw
    locked_changed = Signal()  # passes refused or allowed again (training): the run buttons, nothing to redraw
    problems_changed = Signal()
    busy_changed = Signal(bool)
    playing_changed = Signal(bool)
    message = Signal(str, int)  # a status-bar line and how long to show it (ms; 0: until replaced)
    progress = Signal(int, int)  # frames received, frames expected (0, 0: hide)

    def __init__(self, project: Callable[[], Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.project = project
        self.worker = PassWorker(self)
        self.worker.started.connect(self._on_started)
        self.worker.frames.connect(self._on_frames)
        self.worker.finished.connect(self._on_finished)
        self.timeline: Timeline | None = None
        self.cursor = -1
        self.level: Path = ()
        self.stale = False
        self.one_example = False
        self.show_local = False
        self.overrides: dict[str, np.ndarray] = {}
        self.speed = DEFAULT_SPEED
        self.note = ""
        self.labels: dict[str, str] = {}
        self.schedule: tuple[str, ...] = ()
        self.busy = False
        self.source: Callable[[], Source | None] | None = None  # a pass prepared elsewhere (training)
        self.training_view: TrainingView | None = None
        self.locked = ""  # why passes cannot start now ("" when they can)
        self._token = 0
        self._want: Callable[[], bool] | None = None
        self._queued = 0  # steps asked for and not yet taken
        self._breakpoint: tuple[Path, str] | None = None
        self._last_arrival = 0.0
        self._expected = 0
        self._top = 0  # top-level frames received (the progress bar counts them)
        self._play = QTimer(self)
        self._play.timeout.connect(self._tick)
        self._watch = QTimer(self)
        self._watch.setInterval(250)
        self._watch.timeout.connect(self._watchdog)

    # --- state -----------------------------------------------------------------------------------

    @property
    def playing(self) -> bool:
        return self._play.isActive()

    @property
    def shown(self) -> bool:
        """Whether the canvas shows a pass (there is one and the cursor is past its start)."""
        return self.timeline is not None and self.cursor >= 0

    def frame(self) -> Any:
        if self.timeline is None or not 0 <= self.cursor < len(self.timeline):
            return None
        return self.timeline.frames[self.cursor]

    def visible(self) -> list[int]:
        return self.timeline.visible(self.level) if self.timeline is not None else []

    def position(self) -> int:
        """How many frames of the shown level have happened (0: the start)."""
        return self.timeline.position(self.level, self.cursor) if self.timeline is not None else 0

    # --- the pass ---------------------------------------------------------------------------------

    def run_pass(self) -> None:
        """Start a fresh pass of the current graph (the old one is dropped): the lesson's, or
        the one :attr:`source` prepares."""
        if self._refused():
            return
        try:
            source = self.source() if self.source is not None else None
            project = self.project() if source is None else None
        except Exception as exc:  # noqa: BLE001 - a document that cannot be copied: say so
            self.message.emit(f"Cannot run: {exc}", 8000)
            return
        self.training_view = None
        self._token += 1
        self.timeline = None
        self.cursor = -1
        self.stale = False
        self.note = ""
        self._set_busy(True)
        self._last_arrival = time.perf_counter()
        self.worker.start(Job(self._token, project, self.one_example, dict(self.overrides), source))
        self.changed.emit()
        self.problems_changed.emit()

    def _refused(self) -> bool:
        if self.locked:
            self.message.emit(self.locked, 5000)
        return bool(self.locked)

    def lock(self, reason: str) -> None:
        """Refuse new passes with ``reason`` (empty: allow them again)."""
        if reason != self.locked:
            self.locked = reason
            # (not `changed`: the canvas and the values panel would draw again what did not
            # change, at every start and end of a training run)
            self.locked_changed.emit()

    def show_training(self, view: TrainingView | None) -> None:
        """Show a training step's gradients on the canvas (None: stop showing them). Replaces
        the pass shown, if any."""
        if view is not None and self.timeline is not None:
            self.pause()
            self._want = None
            self._queued = 0
            if self.busy:
                self._token += 1
                self.worker.stop()
                self._set_busy(False)
                self.progress.emit(0, 0)
            self.timeline = None
            self.cursor = -1
            self.stale = False
            self.problems_changed.emit()
        if view is not self.training_view:
            self.training_view = view
            self.changed.emit()

    def _ensure(self, then: Callable[[], bool]) -> None:
        """Do ``then`` now if it can be done, else when the frames it needs arrive; start a
        pass first when there is none (or the graph changed since)."""
        if self._refused():
            return
        if self.timeline is None and not self.busy or self.stale:
            self.run_pass()
        if then():
            self._want = None
        else:
            self._want = then

    def _on_started(self, info: Started) -> None:
        if info.token != self._token:
            return
        self.timeline = Timeline(info.loss[0] if info.loss else None)
        self.note = info.note
        self.labels = dict(info.labels)
        self.schedule = info.schedule
        self._top = 0
        self._expected = 2 * len(info.schedule) if info.loss else len(info.schedule)
        self.message.emit(f"Running on {info.note}" + ("" if info.loss else "; no single-number output to take "
                                                        "gradients of, so forward only"), 6000)

    def _on_frames(self, token: int, frames: list) -> None:
        if token != self._token or self.timeline is None:
            return
        before = len(self.timeline.problems)
        self.timeline.extend(frames)
        self._last_arrival = time.perf_counter()
        self._top += sum(1 for f in frames if f.depth == 0)
        self.progress.emit(self._top, max(self._expected, self._top))
        if self._want is not None and self._want():
            self._want = None
            self._check_breakpoint()
        if len(self.timeline.problems) != before:
            self.problems_changed.emit()
        self.changed.emit()

    def _on_finished(self, info: Finished) -> None:
        if info.token != self._token:
            return
        self._set_busy(False)
        self.progress.emit(0, 0)
        if self.timeline is None:
            self.timeline = Timeline()
        self.timeline.finished = True
        self.timeline.stopped = info.stopped
        self.timeline.error = info.error
        if info.loss is not None:
            self.timeline.loss = info.loss
        if info.error:
            self.message.emit(f"The pass failed: {info.error}", 0)
            self._want = None
        elif info.stopped:
            self.message.emit(f"Stopped after {len(self.timeline)} node runs; what ran so far is shown.", 6000)
        elif info.compiled:
            self.message.emit(f"Pass ready in {info.seconds:.0f} s: this first run compiled {info.compiled} fast "
                              "kernels; that happens once on this machine, later runs start at once.", 10000)
        else:
            loss = "" if self.timeline.loss is None else f"loss {self.timeline.loss:.6g} · "
            self.message.emit(f"Pass ready: {loss}{self.note}", 6000)
        if self._want is not None and self._want():
            self._want = None
            self._check_breakpoint()
        self._want = None  # nothing more will arrive
        self.changed.emit()
        self.problems_changed.emit()

    def _set_busy(self, busy: bool) -> None:
        if busy == self.busy:
            return
        self.busy = busy
        if busy:
            self._watch.start()
        else:
            self._watch.stop()
        self.busy_changed.emit(busy)

    def _watchdog(self) -> None:
        if not self.busy:
            return
        waited = time.perf_counter() - self._last_arrival
        if waited < SLOW_SECONDS:
            return
        what = "preparing the data"
        if self.timeline is not None:
            top = [f for f in self.timeline.frames if f.depth == 0]
            done_fwd = sum(1 for f in top if f.phase == "forward")
            if done_fwd < len(self.schedule) and not any(f.phase == "backward" for f in top):
                what = f"forward: '{self.schedule[done_fwd]}' ({done_fwd + 1} of {len(self.schedule)})"
            else:
                what = "the backward pass"
        compiled = self.worker.compiling()
        if compiled:
            self.message.emit(f"Computing {what}: compiling fast kernels ({compiled} so far, {waited:.0f} s). This "
                              "happens once on this machine; later runs start at once. Stop (Shift+F5) works any time.", 0)
        else:
            self.message.emit(f"Computing {what} for {waited:.0f} s… Stop (Shift+F5) works any time.", 0)

    def stop(self) -> None:
        """Stop the pass being computed (what has run stays) and the playback."""
        self.pause()
        if self.busy:
            self.worker.stop()
            self.message.emit("Stopping…", 2000)

    def invalidate(self) -> None:
        """The graph changed: what is shown is from before the edit."""
        if self.training_view is not None:
            self.training_view = None
            self.changed.emit()
        self.pause()
        self._want = None
        self._queued = 0
        if self.busy:
            self._token += 1  # whatever the old pass still sends is ignored
            self.worker.stop()
            self._set_busy(False)
            self.progress.emit(0, 0)
        if self.timeline is not None and not self.stale:
            self.stale = True
            self.changed.emit()

    def clear(self) -> None:
        """Forget the pass (a new document)."""
        self.invalidate()
        self.timeline = None
        self.cursor = -1
        self.stale = False
        self.overrides = {}
        self.changed.emit()
        self.problems_changed.emit()

    def shutdown(self) -> None:
        self.pause()
        self.worker.stop()
        self.worker.join(1.0)

    # --- modes ----------------------------------------------------------------------------------------

    def set_one_example(self, on: bool) -> None:
        if on != self.one_example:
            self.one_example = on
            self.invalidate()

    def set_show_local(self, on: bool) -> None:
        if on != self.show_local:
            self.show_local = on
            self.changed.emit()

    def set_speed(self, speed: float) -> None:
        self.speed = speed
        if self.playing:
            self._play.setInterval(self._interval())

    def set_override(self, node_id: str, value: np.ndarray | None) -> None:
        """Data typed by hand for an Input (None: back to the lesson's or random data)."""
        if value is None:
            self.overrides.pop(node_id, None)
        else:
            self.overrides[node_id] = np.asarray(value)
        self.invalidate()

    def default_mode_for(self, graph: Any) -> None:
        """A newly opened graph: one example when it is one of the lecture's scalar pictures."""
        self.one_example = feeds.suits_one_example(graph)

    def set_level(self, path: Path) -> None:
        if path != self.level:
            self.level = path
            self.changed.emit()

    # --- moving the cursor ---------------------------------------------------------------------------

    def seek(self, index: int) -> None:
        """Show the state after frame ``index`` (−1: before the pass)."""
        if self.timeline is None:
            return
        index = max(-1, min(index, len(self.timeline) - 1))
        if index != self.cursor:
            self.cursor = index
            self.changed.emit()

    def seek_position(self, position: int) -> None:
        """The scrubber: after the ``position``-th frame of the shown level (0: the start)."""
        order = self.visible()
        self.seek(order[position - 1] if 0 < position <= len(order) else -1)

    def forward(self) -> None:
        """The whole forward pass."""
        def go() -> bool:
            end = self.timeline.forward_end() if self.timeline is not None else None
            if end is None:
                return False
            self.seek(end)
            return True
        self.pause()
        self._queued = 0
        self._ensure(go)

    def backward(self) -> None:
        """The whole pass, backward included."""
        def go() -> bool:
            if self.timeline is None or not self.timeline.finished:
                return False
            self.seek(len(self.timeline) - 1)
            if not any(f.phase == "backward" for f in self.timeline.frames):
                self.message.emit("Nothing to go backward from: the graph has no single-number output (a loss).", 6000)
            return True
        self.pause()
        self._queued = 0
        self._ensure(go)

    def step(self) -> None:
        """One node of the shown level: forward in topological order, then backward in reverse.
        Steps asked for before their frames arrive are queued, not lost."""
        if self._refused():
            return
        self._queued += 1
        if self.stale or self.timeline is None and not self.busy:
            self._queued = 1
            self._ensure(self._drain)
            return
        if self._want is None and not self._drain():
            self._want = self._drain

    def _drain(self) -> bool:
        """Take the queued steps; False while the next frame has not arrived yet."""
        while self._queued > 0:
            if self.timeline is None:
                return False
            nxt = self.timeline.next_visible(self.level, self.cursor)
            if nxt is None:
                if not self.timeline.finished:
                    return False
                self._queued = 0
                if self.playing:
                    self.pause()
                else:
                    self.message.emit("End of the pass. Step Back, or Reset to start again.", 4000)
                return True
            self.seek(nxt)
            self._queued -= 1
        return True

    def step_back(self) -> None:
        self.pause()
        self._queued = 0
        if self.timeline is None:
            return
        self.seek(self.timeline.previous_visible(self.level, self.cursor))

    def reset(self) -> None:
        """Back to before the pass (the next Step starts it again)."""
        self.pause()
        self._want = None
        self._queued = 0
        if self.stale:
            self.timeline = None
            self.stale = False
        self.seek(-1)
        self.changed.emit()

    def _interval(self) -> int:
        return max(30, int(1000 / self.speed))

    def play(self) -> None:
        if self.playing or self._refused():
            return
        if self.timeline is not None and self.timeline.finished and not self.stale and \
                self.timeline.next_visible(self.level, self.cursor) is None:
            self.seek(-1)  # at the end: play again from the start
        self._play.setInterval(self._interval())
        self._play.start()
        self.playing_changed.emit(True)
        self._tick()

    def pause(self) -> None:
        if self._play.isActive():
            self._play.stop()
            self._breakpoint = None
            self.playing_changed.emit(False)

    def toggle_play(self) -> None:
        if self.playing:
            self.pause()
        else:
            self.play()

    def _tick(self) -> None:
        if self._want is not None or self._queued:
            return  # still waiting for the frames of the last step
        self.step()
        self._check_breakpoint()

    def _check_breakpoint(self) -> None:
        if not self.playing or self._breakpoint is None or self.timeline is None or not 0 <= self.cursor < len(self.timeline):
            return
        f = self.timeline.frames[self.cursor]
        if (f.path[:-1], f.node) == self._breakpoint:
            self.pause()
            self.message.emit(f"Reached {f.event.label} ({f.phase}).", 4000)

    def run_to(self, node_id: str | None) -> None:
        """Play until the node ``node_id`` of the shown level runs next (forward first, then
        backward); a breakpoint in either phase."""
        if node_id is None:
            self.message.emit("Select a node first: Run to Here plays the pass until that node runs.", 5000)
            return
        if self._refused():
            return
        self.pause()
        self._breakpoint = (self.level, node_id)
        self._play.setInterval(self._interval())
        self._play.start()
        self.playing_changed.emit(True)
        self._tick()
