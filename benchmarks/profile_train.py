"""Where a press of Train in the window spends CPU time that ``backprop-studio train`` does not
(issue 9's speed goal; not a test).

    python benchmarks/profile_train.py [--lessons two_layer_net,language_model] [--presses 10]
                                       [--top 25] [--steps N] [--threads 1] [--code DIR]
    python benchmarks/profile_train.py --dots

For each lesson: the window of ``bench_train.py`` (offscreen, Train panel open), warmed by one
press, then ``--presses`` presses of the file's steps, each timed by thread (``thread_time`` of
the GUI thread and of the worker's thread), next to the CLI's loop on the same lesson (same
steps, ``Trainer.step`` + ``Progress.update``, one evaluation). Then cProfile of the GUI thread
and of the worker's thread over the same presses: the ``--top`` functions by own time and by
cumulative time. (Every event goes through the script's Python ``QApplication.notify``, also
when not counting: its GUI-thread figures are a little higher than ``bench_train.py``'s, alike for
every tree compared.)

``--worker-alone``: the worker's loop without the window (the GUI thread waiting or receiving).
``--pieces``: the worker's own pieces (a step, a traced step, a checkpoint, an evaluation).
``--floor``: the GUI thread per press with the plot hidden and/or the canvas not painted.
``--drawing``: the plot's drawing at the end of a run alone (fitted to the data, painted).

``--dots``: the canvas's dot grid alone (drawn a few times a second while training): GUI-thread
CPU time of one full repaint of it over a 1600x1000 canvas, as drawn now and as before.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import threading
import time

from _pinned import pin

THREADS = pin(__name__, {"QT_QPA_PLATFORM": "offscreen"})

from PySide6.QtCore import QEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

import bench_train  # noqa: E402
from editor.train import worker as worker_module  # noqa: E402


class TimedApplication(QApplication):
    """Counts the GUI thread's CPU time (``thread_time``) of each event it delivers, by receiver
    (class, object name) and event type, exclusive of the events delivered inside it (a paint
    inside an update request counts as a paint)."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.on = False
        self.spent: dict[tuple[str, str], list[float]] = {}
        self._stack: list[float] = []  # the time of the events inside the current one

    def notify(self, receiver, event):  # noqa: ANN001, ANN201, N802
        if not self.on or threading.current_thread() is not threading.main_thread():
            return super().notify(receiver, event)
        t0 = time.thread_time()
        self._stack.append(0.0)
        try:
            return super().notify(receiver, event)
        finally:
            inner = self._stack.pop()
            took = time.thread_time() - t0
            if self._stack:
                self._stack[-1] += took
            key = (_who(receiver), _event_name(event.type()))
            got = self.spent.setdefault(key, [0.0, 0])
            got[0] += took - inner
            got[1] += 1


def _who(receiver) -> str:  # noqa: ANN001
    """A receiver's class and object name; a plain QWidget (a view's viewport) with its parent's."""
    try:
        name = receiver.objectName()
        who = f"{type(receiver).__name__}{'#' + name if name else ''}"
        parent = receiver.parent()
        if type(receiver).__name__ == "QWidget" and parent is not None:
            who += f" in {type(parent).__name__}"
        return who
    except (RuntimeError, AttributeError):  # deleted meanwhile
        return type(receiver).__name__


def _event_name(t: QEvent.Type) -> str:
    try:
        return QEvent.Type(t).name
    except ValueError:
        return str(int(t))


def _switches() -> int:
    """The calling thread's voluntary context switches so far (Linux; 0 elsewhere): each time it
    waited, e.g. for the GIL held by the other thread."""
    try:
        with open("/proc/thread-self/status") as f:
            return next(int(line.split(":")[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
    except (OSError, StopIteration, ValueError):
        return 0


def pieces(lesson: str, repeats: int = 30) -> None:
    """What the worker does beyond the CLI's steps, each piece's CPU ms (thread_time, medians): a
    step, a traced step (the canvas's gradients: the first and last step of a press, and at most
    1 %% of a run's time between), a checkpoint (each sync), an evaluation (the lesson's metric:
    along a run, within 1.5 %% of its time)."""
    import presets
    from engine import kernels, serialize
    from engine.train import Trainer

    t = Trainer.from_project(serialize.load(presets.path(lesson)), steps=500)
    backend = t.ready().backend
    got: dict[str, list[float]] = {"step": [], "traced step": [], "checkpoint": [], "evaluation": []}
    with kernels.using(backend):
        for _ in range(10):
            t.step()
        for i in range(repeats):
            for name, f in (("step", t.step), ("traced step", lambda: t.step(trace=True)), ("checkpoint", t.checkpoint),
                            ("evaluation", t.evaluation)):
                if name == "evaluation" and i >= 5:
                    continue
                t0 = time.thread_time()
                f()
                got[name].append(time.thread_time() - t0)
    print(f"{lesson} ({backend}): " + ", ".join(f"{k} {1e3 * statistics.median(v):.3f} ms" for k, v in got.items()))


def worker_alone(lesson: str, steps: int, presses: int, worker_cpu: list[float]) -> None:
    """The worker's loop without the window, next to the CLI's loop (alternating, thread CPU ms a
    press, medians): the worker on its thread as a press of Train runs it, while the GUI thread
    (1) waits in ``join`` (its signals are sent to no one) or (2) receives them (a slot that only
    keeps them) in its event loop. What the worker adds over the CLI there is its own (traced
    steps, evaluations, checkpoints, history rows, signals); the rest of its excess in the window
    comes from sharing the process with the GUI thread (the GIL, the caches)."""
    import dataclasses

    import presets
    from PySide6.QtCore import QEventLoop
    from engine import serialize

    project = serialize.load(presets.path(lesson))
    project = dataclasses.replace(project, training={**project.training, "steps": steps})
    ref = bench_train.Cli(lesson, steps)
    got: dict[str, list[float]] = {"worker, GUI thread waiting": [], "worker, GUI thread receiving": [], "CLI loop": []}
    w = worker_module.TrainWorker()
    kept: list[object] = []
    token = 0

    def press(receive: bool) -> float:
        nonlocal token
        token += 1
        worker_cpu.clear()
        job = worker_module.Job(token, project if w.trainer is None else None, steps, evaluate_last=True)
        if receive:
            loop = QEventLoop()
            w.ended.connect(loop.quit)
            w.start(job)
            loop.exec()
            w.ended.disconnect(loop.quit)
        else:
            w.start(job)
        w.join(600)
        QApplication.processEvents()
        kept.clear()
        return sum(worker_cpu)

    w.synced.connect(kept.append)
    press(True)  # (built, compiled)
    ref.run()
    for i in range(presses):
        order = ("worker, GUI thread waiting", "worker, GUI thread receiving", "CLI loop")
        for name in (order if i % 2 == 0 else order[::-1]):
            if name == "CLI loop":
                c0 = time.thread_time()
                ref.run()
                got[name].append(time.thread_time() - c0)
            else:
                got[name].append(press(name.endswith("receiving")))
    cli_ms = 1e3 * statistics.median(got["CLI loop"])
    print(f"\n{lesson}: {steps} steps a press, the worker without the window, medians of {presses} (thread CPU ms a press)")
    for name, v in got.items():
        ms = 1e3 * statistics.median(v)
        ratios = sorted(a / b for a, b in zip(v, got["CLI loop"]))
        print(f"  {name:<30} {ms:8.1f}  ({ms - cli_ms:+.1f} vs CLI; ratios {ratios[0]:.3f}–{ratios[-1]:.3f})")


def floor(win: "bench_train.Window", ref: "bench_train.Cli", presses: int) -> None:
    """The GUI thread's CPU ms per press (medians) as the window is, with the plot hidden, with
    the canvas not painted (updates off), and with both: what is left is the rest of the window
    (the controller, the panel's controls, the toolbar, the status bar, layouts)."""
    def measure(label: str) -> None:
        gui, cli = [], []
        for _ in range(presses):
            win.run()
            gui.append(win.gui_cpu)
            c0 = time.process_time()
            ref.run()
            cli.append(time.process_time() - c0)
        print(f"  {label:<28} GUI {1e3 * statistics.median(gui):6.1f} ms a press (the CLI's press "
              f"{1e3 * statistics.median(cli):.0f} ms)", flush=True)

    plot, view = win.w.train.panel.plot, win.w.view
    measure("as it is")
    plot.hide()
    measure("plot hidden")
    plot.show()
    view.setUpdatesEnabled(False)
    measure("canvas not painted")
    plot.hide()
    measure("neither")
    plot.show()
    view.setUpdatesEnabled(True)


def drawing(win: "bench_train.Window", repeats: int) -> None:
    """GUI-thread CPU ms of the plot's drawing at the end of a run, as the window makes it: the
    history so far (grown by 1 %% each time) fitted into the view, and the events processed until
    the window has painted it (pyqtgraph may paint it again), and the plot's paints."""
    from PySide6.QtCore import QEvent, QObject

    class Paints(QObject):
        n = 0

        def eventFilter(self, obj, event):  # noqa: ANN001, ANN201, N802
            if event.type() == QEvent.Type.Paint:
                Paints.n += 1
            return False

    c, plot = win.c, win.w.train.panel.plot
    counter = Paints()
    plot.widget.viewport().installEventFilter(counter)
    h = c.history
    n = len(h)
    minibatch = c.batch_rows is not None and c.batch_rows[0] < c.batch_rows[1]
    times, paints = [], []
    for i in range(repeats):
        k = max(2, n * (i + 60) // (repeats + 60))
        Paints.n = 0
        t0 = time.thread_time()
        plot.set_data(h["step"][:k], h["loss"][:k], c.evaluations, c.metric_kind, None, None, minibatch, x_end=None)
        for _ in range(4):
            QApplication.processEvents()
        times.append(time.thread_time() - t0)
        paints.append(Paints.n)
    print(f"  the end of a run's plot drawing (fitted, painted): {1e3 * statistics.median(times):.1f} ms of the GUI "
          f"thread (median of {repeats}), {statistics.median(paints):g} paints of the plot")


def dots(repeats: int = 30) -> None:
    """GUI-thread CPU ms of drawing the canvas's background over a 1600x1000 view, as
    ``GraphView.drawBackground`` draws it and as it was drawn before (a QPointF per dot: the
    oracle of tests/editor/test_view.py)."""
    from PySide6.QtGui import QImage, QPainter, QUndoStack

    from editor.document import Document
    from editor.scene import GraphScene
    from editor.view import GraphView
    from tests.editor.test_view import _dots_one_by_one

    doc, stack = Document(), QUndoStack()
    view = GraphView()
    view.setScene(GraphScene(doc, stack))
    view.resize(1600, 1000)
    view.show()
    for _ in range(5):
        QApplication.processEvents()
    image = QImage(view.viewport().size(), QImage.Format.Format_ARGB32_Premultiplied)
    for zoom in (1.0, 0.6):
        view.set_zoom(zoom)
        rect = view.mapToScene(view.viewport().rect()).boundingRect()
        for name, draw in (("one array of points", view.drawBackground),
                           ("a QPointF per dot (before)", lambda p, r: _dots_one_by_one(view, p, r))):
            times = []
            for _ in range(repeats):
                painter = QPainter(image)
                painter.setRenderHints(view.renderHints())
                painter.setWorldTransform(view.viewportTransform())
                t0 = time.thread_time()
                draw(painter, rect)
                times.append(time.thread_time() - t0)
                painter.end()
            print(f"dot grid of a {view.viewport().width()}x{view.viewport().height()} canvas at zoom {zoom:g}: "
                  f"{name}: {1e3 * statistics.median(times):.2f} ms (median of {repeats})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lessons", default="two_layer_net,language_model")
    ap.add_argument("--presses", type=int, default=10)
    ap.add_argument("--steps", type=int, default=0, help="steps a press (default: the lesson file's)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--threads", default="1")
    ap.add_argument("--code", help="run another tree's engine and editor (e.g. main's worktree), as bench_train.py does")
    ap.add_argument("--no-profile", action="store_true", help="only the per-thread times")
    ap.add_argument("--drawing", action="store_true", help="only the end of a run's drawing of the plot: fitted to "
                    "the history so far (1 %% more each time), until the window has painted what it changed")
    ap.add_argument("--pieces", action="store_true", help="only the worker's pieces: a step, a traced step, a "
                    "checkpoint, an evaluation (CPU ms, no window)")
    ap.add_argument("--floor", action="store_true", help="only the GUI thread's ms per press as the window is, with "
                    "the plot hidden, the canvas not painted, and both")
    ap.add_argument("--worker-alone", action="store_true", help="only the worker's loop without the window (the GUI "
                    "thread waiting, or receiving its signals), next to the CLI's loop")
    ap.add_argument("--switch-interval", type=float, default=0.0, help="sys.setswitchinterval for the run (an "
                    "experiment: how long a thread holding the GIL keeps it while the other waits; default Python's 0.005 s)")
    ap.add_argument("--dots", action="store_true", help="only the canvas's dot grid: one full repaint of it, "
                    "drawn as one array of points and as a QPointF per dot (as before)")
    args = ap.parse_args()
    if args.switch_interval:
        import sys
        sys.setswitchinterval(args.switch_interval)
    app = TimedApplication([])
    if args.dots:
        dots()
        return
    if args.pieces:
        for lesson in [s.strip() for s in args.lessons.split(",") if s.strip()]:
            pieces(lesson)
        return
    import tempfile

    worker_cpu: list[float] = []
    worker_switches: list[int] = []
    profiling = {"on": False, "prof": None}
    original = worker_module.TrainWorker._run

    def timed_run(self, job):  # noqa: ANN001, ANN202
        s0 = _switches()
        t0 = time.thread_time()
        prof = profiling["prof"] if profiling["on"] else None
        if prof is not None:
            prof.enable()
        try:
            original(self, job)
        finally:
            if prof is not None:
                prof.disable()
            worker_cpu.append(time.thread_time() - t0)
            worker_switches.append(_switches() - s0)

    worker_module.TrainWorker._run = timed_run
    if args.worker_alone:
        import presets
        from engine import serialize
        for lesson in [s.strip() for s in args.lessons.split(",") if s.strip()]:
            steps = args.steps or serialize.load(presets.path(lesson)).training["steps"]
            worker_alone(lesson, steps, args.presses, worker_cpu)
        return
    import editor
    print(f"code: {os.path.dirname(os.path.dirname(os.path.abspath(editor.__file__)))}")
    with tempfile.TemporaryDirectory() as tmp:
        for lesson in [s.strip() for s in args.lessons.split(",") if s.strip()]:
            win = bench_train.Window(lesson, tmp)
            steps = args.steps or win.c.config().steps
            ref = bench_train._warm(win, lesson, steps)
            if args.floor:
                floor(win, ref, args.presses)
                win.close()
                continue
            if args.drawing:
                win.run()
                print(f"\n{lesson}:")
                drawing(win, 40)
                win.close()
                continue
            gui, work, cli, wall, switches = [], [], [], [], []
            for _ in range(args.presses):
                worker_cpu.clear()
                worker_switches.clear()
                cpu, w, n = win.run()
                gui.append(win.gui_cpu)
                work.append(sum(worker_cpu))
                switches.append(sum(worker_switches) / max(w, 1e-9))
                wall.append(w)
                c0 = time.thread_time()
                ref.run()
                cli.append(time.thread_time() - c0)
            med = statistics.median
            print(f"\n{lesson}: {steps} steps a press, medians of {args.presses} presses (ms per press)")
            print(f"  CLI loop {1e3 * med(cli):8.1f}")
            print(f"  worker   {1e3 * med(work):8.1f}  ({1e3 * (med(work) - med(cli)):+.1f} vs CLI; "
                  f"{med(switches):.0f} times a second it waited, for the GIL or else)")
            print(f"  GUI      {1e3 * med(gui):8.1f}  (spread {1e3 * min(gui):.1f}–{1e3 * max(gui):.1f})")
            print(f"  wall     {1e3 * med(wall):8.1f}; draws/s {win.draws_per_second:.1f}")
            app.spent.clear()
            app.on = True
            for _ in range(args.presses):
                win.run()
            app.on = False
            total = sum(v[0] for v in app.spent.values())
            print(f"  events delivered on the GUI thread, CPU ms per press (exclusive), {1e3 * total / args.presses:.1f} in all:")
            for (who, what), (spent, n) in sorted(app.spent.items(), key=lambda kv: -kv[1][0])[:args.top]:
                print(f"    {1e3 * spent / args.presses:7.2f}  {n / args.presses:6.1f}×  {who} {what}")
            if args.drawing:
                drawing(win, args.presses)
                win.close()
                continue
            if args.no_profile:
                win.close()
                continue
            gprof, wprof = cProfile.Profile(time.thread_time), cProfile.Profile(time.thread_time)
            profiling.update(on=True, prof=wprof)
            for _ in range(args.presses):
                gprof.enable()
                win.run()
                gprof.disable()
            profiling.update(on=False, prof=None)
            for name, prof in (("GUI thread", gprof), ("worker thread", wprof)):
                for key in ("tottime", "cumtime"):
                    s = io.StringIO()
                    pstats.Stats(prof, stream=s).sort_stats(key).print_stats(args.top)
                    print(f"\n--- {lesson}: {name}, {args.presses} presses, by {key}")
                    print("\n".join(s.getvalue().splitlines()[6:]))
            win.close()


if __name__ == "__main__":
    main()
