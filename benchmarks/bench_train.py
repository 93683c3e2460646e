"""Side-by-side: training in the window vs ``backprop-studio train``, and the window's memory over a
long run (issue 9; not a test).

    python benchmarks/bench_train.py [--lessons two_layer_net,convnet,language_model]
                                     [--steps N] [--repeats 7] [--long 6] [--long-repeats 3]
                                     [--memory 10000] [--threads 1] [--base DIR [--rounds 2]]

**Time per step.** One process holds both contenders, built from the same lesson file, and runs
them in turns (window, CLI, CLI, window, ...), for two lengths of run:

- *file's steps*: a press of Train as the lesson comes (its file's number of steps; ``--steps``
  sets another): a short run (two_layer_net: 500 steps, ~0.3 s), where what a press costs once
  (starting, the first and last drawing, the last evaluation) weighs most;
- *long*: a run of about ``--long`` seconds (steps from the CLI's speed), the steady state.

Each contender does the same steps from the same file and settings, on its own trainer (both
continue from their own last run):

- *window*: the editor's main window (offscreen) with the Train panel open and its loss plot
  drawing; each run is the Train button's work: ``TrainController.start()`` of N steps on the
  worker thread (syncs to the window a few times a second, traced steps for the canvas, the
  evaluations along the run, the last evaluation), timed from the click until the controller
  is idle again. The GUI thread waits in Qt's event loop, so its own work (plot, progress,
  committing checkpoints to the document) is counted in the CPU time, as it should be;
- *CLI*: what ``backprop-studio train`` does per run after loading: ``Trainer.step()`` N times
  with the CLI's ``Progress.update`` after each, then one evaluation (the CLI's ``run`` also
  evaluates before; the window already knows the loss it starts from, so that one is left out).

Both trainers are built and warmed (kernels compiled, one run) before timing and both use the
kernel backend ``Trainer.ready()`` picks, as the window and the CLI do. Medians of CPU time
(``process_time``: both threads, steadier than wall time on a shared machine) and of wall time,
per step, and window/CLI ratios (the median of the runs' ratios, and their spread). Goal: ≤ 1.10.

**Before and after.** ``--base DIR`` (a worktree of another revision, e.g. main's) runs this
script on DIR's code and on this tree's in turns, each in a process of its own (``--rounds``
rounds, the order alternating), and prints both sides' ratios next to each other.

**One redraw.** In the same window after the runs, the GUI thread's CPU time (``thread_time``)
of one plot redraw as a run makes them: ``LossPlot.set_data`` of the history so far (grown by
1 % each time) and the repaint it causes. *held*: during a run (the view's ranges stay put while
the data fits them, the axes' pictures are cached); *fitted*: the view fitted to the data at each
redraw, as every redraw did before issue 9's second round (the axes repaint ticks and grid).

**Memory.** The two-layer net trained ``--memory`` steps (default 10,000) in one run in the
window with the plot open; the resident set size is sampled from ``/proc/self/statm`` a few
times a second. It prints RSS at 10 % of the run and at the end, the growth over the second half
per 1,000 steps, the history's bytes and the points the plot draws. Goal: flat.

Threads pinned (re-executes itself with OPENBLAS/NUMBA/OMP_NUM_THREADS set); glibc malloc as
users have it (no GLIBC_TUNABLES).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _pinned import pin  # noqa: E402

THREADS = pin(__name__, {"QT_QPA_PLATFORM": "offscreen"})

import sys  # noqa: E402

if "--code" in sys.argv:  # run another tree's engine and editor (see --base)
    sys.path.insert(0, os.path.abspath(sys.argv[sys.argv.index("--code") + 1]))

CACHE_BACKGROUND = "--cache-background" in sys.argv

import io  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

from PySide6.QtCore import QEventLoop, QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

import presets  # noqa: E402
from engine import cli, kernels, serialize  # noqa: E402
from engine.train import Trainer  # noqa: E402



def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Window:
    """The editor's main window with a lesson open and the Train panel showing."""

    def __init__(self, lesson: str, tmp: str) -> None:
        from editor.window import MainWindow

        self.w = MainWindow(QSettings(os.path.join(tmp, f"{lesson}.ini"), QSettings.Format.IniFormat))
        self.w.resize(1400, 900)
        self.w.show()
        if not self.w.files.load_path(presets.path(lesson), is_preset=True, remember=False):
            raise SystemExit(f"cannot open {lesson}")
        self.c = self.w.train.controller
        self.w.train.show_panel()
        if CACHE_BACKGROUND:
            # an experiment (--cache-background): the canvas keeps its dotted background in a
            # pixmap instead of drawing its dots at each repaint (editor/view.py does not, yet)
            from PySide6.QtWidgets import QGraphicsView
            self.w.view.setCacheMode(QGraphicsView.CacheModeFlag.CacheBackground)
        self._wait()

    def set_steps(self, steps: int) -> None:
        from editor.train.settings import SetTrainingCommand

        c = self.c
        if c.training().get("steps") != steps:
            self.w.undo_stack.push(SetTrainingCommand(c, {**c.training(), "steps": steps}, f"Set the steps to {steps}"))

    def _wait(self, on_tick=None) -> None:  # noqa: ANN001
        """Wait in Qt's event loop (not polling) until the controller is idle and the worker free.
        No timer of the benchmark's own runs during the run (it would wake the GUI thread, which
        then waits for the GIL, as the window alone does not): the controller's ``changed`` says
        when the run is over, then a short poll waits for the worker's thread to end (just after
        its last signal). ``on_tick``: called every 100 ms (the memory run's samples)."""
        c = self.c
        loop = QEventLoop()
        poll = QTimer()
        poll.setInterval(2)

        def check() -> None:
            if c.state in ("idle", "failed"):
                if not c.worker.busy:
                    loop.quit()
                elif not poll.isActive():
                    poll.start()

        poll.timeout.connect(check)
        ticker = QTimer()
        if on_tick is not None:
            ticker.setInterval(100)
            ticker.timeout.connect(on_tick)
            ticker.start()
        c.changed.connect(check)
        check()
        if c.state not in ("idle", "failed") or c.worker.busy:
            loop.exec()
        poll.stop()
        ticker.stop()
        c.changed.disconnect(check)
        QApplication.processEvents()
        if c.state == "failed":
            raise SystemExit(f"training failed: {c.failure.message if c.failure else '?'}")

    def run(self, on_tick=None) -> tuple[float, float, int]:  # noqa: ANN001
        """One press of Train (the file's steps); (CPU seconds, wall seconds, steps taken)."""
        at = self.c.step_count
        draws = [0]

        def drawn() -> None:
            draws[0] += 1

        self.c.history_changed.connect(drawn)
        c0, w0, g0 = time.process_time(), time.perf_counter(), time.thread_time()
        self.c.start()
        self._wait(on_tick)
        self.gui_cpu = time.thread_time() - g0  # the GUI thread's share of the CPU time
        self.c.history_changed.disconnect(drawn)
        self.draws_per_second = draws[0] / max(time.perf_counter() - w0, 1e-9)  # plot and progress redraws
        return time.process_time() - c0, time.perf_counter() - w0, self.c.step_count - at

    def close(self) -> None:
        self.w.train.shutdown()
        self.w.run.shutdown()
        self.w.undo_stack.setClean()
        self.w.close()
        self.w.deleteLater()
        QApplication.processEvents()


class Cli:
    """``backprop-studio train``'s trainer and loop for the same lesson."""

    def __init__(self, lesson: str, steps: int) -> None:
        project = serialize.load(presets.path(lesson))
        self.trainer = Trainer.from_project(project, steps=steps)
        self.backend = self.trainer.ready().backend
        self.steps = steps

    def run(self) -> tuple[float, float, int]:
        t = self.trainer
        out = cli.Output(False, io.StringIO(), io.StringIO())
        c0, w0 = time.process_time(), time.perf_counter()
        with kernels.using(self.backend):
            progress = cli.Progress(out, self.steps, None, t.step_count)
            for _ in range(self.steps):
                progress.update(t.step())
            t.evaluation()
        return time.process_time() - c0, time.perf_counter() - w0, self.steps


def _warm(win: Window, lesson: str, steps: int) -> Cli:
    """Both contenders set to ``steps`` a run and warmed: a trainer built for that length (its
    kernels chosen by :meth:`Trainer.ready` for it, as a press of Train and the CLI do) and
    compiled, and one run each."""
    win.set_steps(steps)
    ref = Cli(lesson, steps)
    win.run()
    ref.run()
    if win.c.backend != ref.backend:
        raise SystemExit(f"{lesson}: the window chose kernels {win.c.backend!r}, the CLI {ref.backend!r}")
    return ref


def _pairs(win: Window, ref: Cli, repeats: int) -> dict:
    """``repeats`` runs of each, alternating who goes first; medians per step and the ratios."""
    steps = ref.steps
    app_cpu, app_wall, cli_cpu, cli_wall, ratios_cpu, ratios_wall, gui, draws = [], [], [], [], [], [], [], []
    for i in range(repeats):
        # alternate who goes first, so that a load change hits both alike
        order = (win, ref) if i % 2 == 0 else (ref, win)
        got = {}
        for who in order:
            cpu, wall, n = who.run()
            if n != steps:
                raise SystemExit(f"the window trained {n} steps, not {steps}")
            got[who] = (cpu / n, wall / n)
        app_cpu.append(got[win][0])
        gui.append(win.gui_cpu / (got[win][0] * steps))
        draws.append(win.draws_per_second)
        app_wall.append(got[win][1])
        cli_cpu.append(got[ref][0])
        cli_wall.append(got[ref][1])
        ratios_cpu.append(got[win][0] / got[ref][0])
        ratios_wall.append(got[win][1] / got[ref][1])
    med = statistics.median
    return {"steps": steps, "backend": ref.backend, "app_cpu": med(app_cpu), "cli_cpu": med(cli_cpu),
            "app_wall": med(app_wall), "cli_wall": med(cli_wall), "ratio_cpu": med(ratios_cpu),
            "ratio_wall": med(ratios_wall), "ratios_cpu": ratios_cpu, "gui": med(gui), "draws": med(draws)}


def time_lesson(lesson: str, steps: int, repeats: int, long_seconds: float, long_repeats: int, tmp: str) -> dict:
    win = Window(lesson, tmp)
    ref = _warm(win, lesson, steps or win.c.config().steps)  # the file's steps by default
    out = {"lesson": lesson, "runs": [_pairs(win, ref, repeats)]}
    if long_seconds > 0:
        long = max(ref.steps, int(round(long_seconds / out["runs"][0]["cli_wall"], -2)))
        out["runs"].append(_pairs(win, _warm(win, lesson, long), long_repeats))
    out["held"], out["fitted"] = redraw_ms(win)
    win.close()
    return out


def redraw_ms(win: Window, repeats: int = 40) -> tuple[float, float]:
    """Median GUI-thread CPU ms of one plot redraw (set_data + repaint): the view held as during a
    run, and fitted to the data at each redraw (see the module docstring)."""
    panel, c = win.w.train.panel, win.c
    plot = panel.plot
    h = c.history
    n = len(h)
    minibatch = c.batch_rows is not None and c.batch_rows[0] < c.batch_rows[1]
    out = []
    for x_end in (float(n), None):
        times = []
        for i in range(repeats):
            k = max(2, n * (i + 60) // (repeats + 60))  # the history so far, 1 % more at each redraw
            t0 = time.thread_time()
            plot.set_data(h["step"][:k], h["loss"][:k], c.evaluations, c.metric_kind, None, None, minibatch,
                          x_end=x_end)
            plot.widget.viewport().repaint()
            times.append(time.thread_time() - t0)
        out.append(1e3 * statistics.median(times))
    panel.draw_plot()
    return out[0], out[1]


def memory(steps: int, tmp: str) -> None:
    win = Window("two_layer_net", tmp)
    win.set_steps(steps)
    samples: list[tuple[int, float]] = []

    def tick() -> None:
        samples.append((win.c.step_count, _rss_mib()))

    start_rss = _rss_mib()
    cpu, wall, n = win.run(tick)
    tick()
    plot = win.w.train.panel.plot
    hist_bytes = sum(win.c.history[k].nbytes for k in win.c.history.keys())
    tenth = next(((s, r) for s, r in samples if s >= steps // 10), samples[0])
    half = [(s, r) for s, r in samples if s >= steps // 2]
    slope = 0.0
    if len(half) >= 2 and half[-1][0] > half[0][0]:
        slope = (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) * 1000
    print(f"\nmemory: two_layer_net, {n:,} steps in one run in the window, plot open ({wall:.1f} s wall, "
          f"{len(samples)} samples)")
    print(f"  RSS before {start_rss:.1f} MiB · at step {tenth[0]:,} {tenth[1]:.1f} MiB · at step {samples[-1][0]:,} "
          f"{samples[-1][1]:.1f} MiB · peak {max(r for _, r in samples):.1f} MiB")
    print(f"  second half: {slope:+.3f} MiB per 1,000 steps · history {hist_bytes / 1024:.0f} KiB "
          f"({len(win.c.history):,} rows) · plot draws {plot.points:,} points")
    win.close()


def _row(lesson: str, r: dict, what: str) -> str:
    spread = f"{min(r['ratios_cpu']):.2f}–{max(r['ratios_cpu']):.2f}"
    return (f"{lesson:<15} {what:<6} {r['steps']:>6} {r['backend']:>7} {1e3 * r['app_cpu']:>9.3f} {1e3 * r['cli_cpu']:>8.3f} "
            f"{r['ratio_cpu']:>6.3f} {spread:>10}  {r['ratio_wall']:>6.3f}  {100 * r['gui']:>4.1f}% {r['draws']:>5.1f}")


HEADER = (f"{'lesson':<15} {'run':<6} {'steps':>6} {'kernels':>7} {'window ms':>9} {'CLI ms':>8} {'ratio':>6} "
          f"{'spread':>10}  {'wall':>6}  {'GUI':>5} {'draws/s':>5}")


def compare(args: argparse.Namespace) -> None:
    """--base: this script on DIR's code and on this tree's, in turns, one process each."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"before": os.path.abspath(args.base), "after": here}
    got: dict[str, dict[str, list]] = {k: {} for k in trees}
    for lesson in [s.strip() for s in args.lessons.split(",") if s.strip()]:
        for r in range(args.rounds):
            for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
                cmd = [sys.executable, os.path.abspath(__file__), "--code", trees[side], "--json", "--memory", "0",
                       "--lessons", lesson, "--repeats", str(args.repeats), "--long", str(args.long),
                       "--long-repeats", str(args.long_repeats), "--threads", args.threads,
                       *(["--cache-background"] if args.cache_background else []),
                       *(["--steps", str(args.steps)] if args.steps else [])]
                env = {**os.environ, "PYTHONPATH": trees[side]}
                res = subprocess.run(cmd, env=env, capture_output=True, text=True)
                line = next((ln for ln in res.stdout.splitlines() if ln.startswith("{")), None)
                if line is None:
                    raise SystemExit(f"{side} ({trees[side]}) failed:\n{res.stdout}\n{res.stderr}")
                got[side].setdefault(lesson, []).append(json.loads(line))
        for i, what in enumerate(("file's", "long") if args.long > 0 else ("file's",)):
            cells = []
            for side in trees:
                ratios = [x for rr in got[side][lesson] for x in rr["runs"][i]["ratios_cpu"]]
                cells.append(f"{side} {statistics.median(ratios):.3f} ({min(ratios):.2f}–{max(ratios):.2f}, "
                             f"{len(ratios)} runs, GUI {100 * statistics.median(rr['runs'][i]['gui'] for rr in got[side][lesson]):.1f}%)")
            steps = got["after"][lesson][0]["runs"][i]["steps"]
            print(f"{lesson:<15} {what:<6} {steps:>6} steps: " + " · ".join(cells), flush=True)
    print("window/CLI CPU time per step, median of all runs' ratios (spread); goal ≤ 1.10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lessons", default="two_layer_net,convnet,language_model")
    ap.add_argument("--steps", type=int, default=0, help="steps of the short runs (default: the lesson file's)")
    ap.add_argument("--repeats", type=int, default=7, help="runs of each contender, short runs")
    ap.add_argument("--long", type=float, default=6.0, help="seconds of the long runs (0: none)")
    ap.add_argument("--long-repeats", type=int, default=3, help="runs of each contender, long runs")
    ap.add_argument("--memory", type=int, default=10_000, help="steps of the memory run (0: skip)")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--base", help="a tree of another revision: compare its window/CLI ratios with this tree's")
    ap.add_argument("--rounds", type=int, default=2, help="with --base: processes per side and lesson")
    ap.add_argument("--cache-background", action="store_true",
                    help="an experiment: the canvas caches its background (a change to editor/view.py, not made)")
    ap.add_argument("--code", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.base:
        print(f"threads {THREADS}; before: {os.path.abspath(args.base)}, after: this tree; each side runs this "
              f"script in turns ({args.rounds} processes each, {args.repeats} short and {args.long_repeats} long "
              "alternating runs of window and CLI per process)", flush=True)
        compare(args)
        return
    app = QApplication.instance() or QApplication([])  # noqa: F841
    lessons = [s.strip() for s in args.lessons.split(",") if s.strip()]
    if args.json:
        with tempfile.TemporaryDirectory() as tmp:
            for lesson in lessons:
                r = time_lesson(lesson, args.steps, args.repeats, args.long, args.long_repeats, tmp)
                print(json.dumps(r), flush=True)
        return
    print(f"threads {THREADS}, CPU time (process_time) per step, medians of {args.repeats} (file's steps) and "
          f"{args.long_repeats} (long: ~{args.long:g} s) alternating runs; ratio: window/CLI, the median of the runs' "
          "ratios and their spread; wall: the same for wall time; GUI: the GUI thread's share of the window's CPU")
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for lesson in lessons:
            r = time_lesson(lesson, args.steps, args.repeats, args.long, args.long_repeats, tmp)
            for run, what in zip(r["runs"], ("file's", "long")):
                print(_row(lesson, run, what), flush=True)
            print(f"{'':<15} one redraw {r['held']:.1f} ms of the GUI thread, {r['fitted']:.1f} ms with the view "
                  "fitted each time", flush=True)
        print("goal: window/CLI ≤ 1.10 per step")
        if args.memory:
            memory(args.memory, tmp)


if __name__ == "__main__":
    main()
