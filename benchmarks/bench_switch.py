"""How the GIL's switch interval changes what training costs beside the GUI thread (issue 9; not a
test). ``editor.window.hand_over_the_gil_quickly`` sets 10 µs in the editor; CPython's default is
5 ms.

    python benchmarks/bench_switch.py [--lessons two_layer_net,language_model,convnet]
                                      [--intervals 0.005,0.00001] [--seconds 2] [--repeats 8]
    python benchmarks/bench_switch.py --bare [--steps 3000]
    python benchmarks/bench_switch.py --busy

**In the window** (default). One process: the editor's main window with the lesson and its Train
panel (``bench_train.Window``) and the CLI's loop on the same lesson (``bench_train.Cli``), both
warmed. Each repeat runs, for each interval in turn (the order alternating): the CLI's loop (at
5 ms: no other thread wants the GIL there), then one press of Train of about ``--seconds``
seconds at that interval. Per interval, medians over the repeats, as ratios to that repeat's CLI
CPU time: the window's CPU time (both threads), the training thread's alone, and the GUI thread's.

**Bare** (``--bare``). No window: the lesson's ``Trainer.step()`` ``--steps`` times on a thread of
its own, while the main thread (a) runs the same steps itself (the reference), (b) waits in
``join``, (c) sits in a ``QEventLoop`` whose only work is a 20 Hz timer with an empty Python slot.
The training thread's CPU time (``thread_time``) per step, as a ratio to (a), at each interval,
and the main thread's own CPU time meanwhile (in (c) it only waits, for its timer and the GIL).

**Two busy threads** (``--busy``): what a short interval costs when both threads compute in Python
at once (the GUI thread's bursts do, briefly): a pure-Python loop on two threads at once and then
one after the other, wall and CPU time, at each interval.

Threads pinned (one BLAS/Numba thread), glibc malloc as users have it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time

from _pinned import pin

THREADS = pin(__name__, {"QT_QPA_PLATFORM": "offscreen"})

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

import bench_train  # noqa: E402
from editor.train import worker as worker_module  # noqa: E402

DEFAULT = 0.005  # CPython's switch interval


def in_window(lessons: list[str], intervals: list[float], seconds: float, repeats: int) -> None:
    worker_cpu: list[float] = []
    loop = worker_module.TrainWorker._loop

    def timed_loop(self, job, trainer):  # noqa: ANN001, ANN202 - the training thread's CPU time of a press
        t0 = time.thread_time()
        try:
            return loop(self, job, trainer)
        finally:
            worker_cpu.append(time.thread_time() - t0)

    worker_module.TrainWorker._loop = timed_loop
    print(f"threads {THREADS}; ratios to the CLI's CPU time for the same steps, medians of {repeats} presses "
          "(spread of the window's)")
    with tempfile.TemporaryDirectory() as tmp:
        for lesson in lessons:
            win = bench_train.Window(lesson, tmp)
            per = bench_train.Cli(lesson, 100).run()[1] / 100
            steps = max(200, int(round(seconds / per, -2)))
            ref = bench_train._warm(win, lesson, steps)
            got: dict[float, list[tuple[float, float, float]]] = {s: [] for s in intervals}
            for i in range(repeats):
                for s in (intervals if i % 2 == 0 else intervals[::-1]):
                    sys.setswitchinterval(DEFAULT)
                    cli = ref.run()[0]
                    sys.setswitchinterval(s)
                    worker_cpu.clear()
                    cpu = win.run()[0]
                    got[s].append((cpu / cli, worker_cpu[-1] / cli, win.gui_cpu / cli))
            sys.setswitchinterval(DEFAULT)
            win.close()
            print(f"{lesson}, {steps} steps a press ({ref.backend} kernels):")
            for s in intervals:
                r = got[s]
                med = [statistics.median(x[k] for x in r) for k in range(3)]
                print(f"  {s * 1e6:>6g} µs: window {med[0]:.3f} ({min(x[0] for x in r):.2f}–{max(x[0] for x in r):.2f})"
                      f" = training thread {med[1]:.3f} + GUI thread {med[2]:.3f}", flush=True)


def _near(got: dict, s: float, mode: str) -> float:
    """The key of ``got`` for interval ``s`` (sys.getswitchinterval rounds what it was given)."""
    return min((k for k, m in got if m == mode), key=lambda k: abs(k - s))


def bare(lesson: str, intervals: list[float], steps: int, repeats: int) -> None:
    import presets
    from engine import kernels, serialize
    from engine.train import Trainer

    t = Trainer.from_project(serialize.load(presets.path(lesson)), steps=steps)
    backend = t.ready().backend

    def steps_cpu(out: list[float]) -> None:
        with kernels.using(backend):
            c0 = time.thread_time()
            for _ in range(steps):
                t.step()
            out.append(time.thread_time() - c0)

    main_cpu: dict[tuple[float, str], list[float]] = {}

    def on_thread(main: str) -> float:
        out: list[float] = []
        th = threading.Thread(target=steps_cpu, args=(out,))
        m0 = time.thread_time()
        if main == "join":
            th.start()
            th.join()
            main_cpu.setdefault((sys.getswitchinterval(), main), []).append(time.thread_time() - m0)
            return out[0]
        loop = QEventLoop()
        done = QTimer()
        done.setInterval(50)  # (the 20 Hz timer: also how the loop learns that the thread ended)
        done.timeout.connect(lambda: th.is_alive() or loop.quit())
        done.start()
        th.start()
        loop.exec()
        th.join()
        done.stop()
        main_cpu.setdefault((sys.getswitchinterval(), main), []).append(time.thread_time() - m0)
        return out[0]

    modes = ("main thread", "join", "event loop")
    got = {(s, m): [] for s in intervals for m in modes}
    for i in range(repeats):
        for s in (intervals if i % 2 == 0 else intervals[::-1]):
            sys.setswitchinterval(s)
            for m in (modes if i % 2 == 0 else modes[::-1]):
                if m == "main thread":
                    out: list[float] = []
                    steps_cpu(out)
                    got[(s, m)].append(out[0])
                else:
                    got[(s, m)].append(on_thread(m))
    sys.setswitchinterval(DEFAULT)
    print(f"threads {THREADS}; {lesson} ({backend} kernels), {steps} steps on a thread of their own while the main thread "
          f"... : the thread's CPU time as a ratio to the same steps run by the main thread, medians of {repeats}")
    for s in intervals:
        ref = got[(s, "main thread")]
        cells = []
        for m in modes[1:]:
            ratios = [a / b for a, b in zip(got[(s, m)], ref)]
            waiting = 1e3 * statistics.median(main_cpu[(_near(main_cpu, s, m), m)])
            cells.append(f"{m} {statistics.median(ratios):.3f} ({min(ratios):.2f}–{max(ratios):.2f}; the main thread "
                         f"{waiting:.1f} ms CPU)")
        print(f"  {s * 1e6:>6g} µs: {1e6 * statistics.median(ref) / steps:.0f} µs a step; " + ", ".join(cells), flush=True)


def busy(intervals: list[float], repeats: int) -> None:
    def count(n: int = 3_000_000) -> None:
        total = 0
        for i in range(n):
            total += i

    print(f"a Python loop on two threads at once, and the same two loops one after the other (medians of {repeats})")
    for s in intervals:
        sys.setswitchinterval(s)
        wall, cpu, alone = [], [], []
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            threads = [threading.Thread(target=count) for _ in range(2)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
            c0 = time.process_time()
            count()
            count()
            alone.append(time.process_time() - c0)
        med = statistics.median
        print(f"  {s * 1e6:>6g} µs: at once {med(wall):.3f} s wall, {med(cpu):.3f} s CPU; one after the other "
              f"{med(alone):.3f} s CPU (CPU ×{med(c / a for c, a in zip(cpu, alone)):.2f})", flush=True)
    sys.setswitchinterval(DEFAULT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lessons", default="two_layer_net,language_model,convnet")
    ap.add_argument("--intervals", default="0.005,0.00001", help="switch intervals in seconds")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds of a press (in the window)")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--bare", action="store_true", help="no window: a training thread beside an idle event loop")
    ap.add_argument("--busy", action="store_true", help="two threads computing in Python at once")
    ap.add_argument("--steps", type=int, default=3000, help="steps a run (--bare)")
    ap.add_argument("--threads", default="1")
    args = ap.parse_args()
    app = QApplication.instance() or QApplication([])  # noqa: F841
    intervals = [float(x) for x in args.intervals.split(",")]
    lessons = [s.strip() for s in args.lessons.split(",") if s.strip()]
    if args.busy:
        busy(intervals, args.repeats)
    elif args.bare:
        for lesson in lessons:
            bare(lesson, intervals, args.steps, args.repeats)
    else:
        in_window(lessons, intervals, args.seconds, args.repeats)


if __name__ == "__main__":
    main()
