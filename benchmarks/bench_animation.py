"""Frame times of the backward animation, and click latency while a pass runs.

Opens the 24-layer BERT lesson offscreen at 1600×1000, runs its pass, opens the BERT node and
its stack (every block drawn), and plays the backward pass of that level: each step moves the
cursor (the overlay updates, Qt repaints what changed) and the pulse then travels the wires for
a few frames. Prints the median and 95th percentile frame time (goal: median < 16 ms) and how
many items repainted per frame out of all on the canvas (only changed items should).

Then starts the pass again on its worker thread and posts a mouse click to the canvas every 20
ms while it runs; prints the median and worst time until the GUI thread handles a click (goal:
< 100 ms).

    python benchmarks/bench_animation.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QEvent, QObject, QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

import presets  # noqa: E402
from editor.app import application  # noqa: E402
from editor.items import LinkItem, NodeItem, ShapeLabel  # noqa: E402
from editor.run import scripted  # noqa: E402
from editor.run.overlay import RunMark  # noqa: E402
from editor.window import MainWindow  # noqa: E402

PULSE_FRAMES = 6  # pulse positions drawn per step (a 16 ms timer over a ~100 ms pulse)
REPEATS = 5  # the animation is played this many times (the machine is shared: medians need samples)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class DirtyCounter:
    """Which canvas items lie in the regions the scene reports changed (what Qt repaints)."""

    def __init__(self, scene) -> None:  # noqa: ANN001
        self.scene = scene
        self.rects: list = []
        scene.changed.connect(self.rects.extend)

    def items(self) -> int:
        kinds = (NodeItem, LinkItem, ShapeLabel, RunMark)
        found = set()
        for r in self.rects:
            for item in self.scene.items(r):
                if isinstance(item, kinds):
                    found.add(id(item))
        self.rects.clear()
        return len(found)


class ClickProbe(QObject):
    """Records when posted mouse presses reach the viewport."""

    def __init__(self) -> None:
        super().__init__()
        self.posted: list[float] = []
        self.latencies: list[float] = []
        self.when: list[float] = []

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() == QEvent.Type.MouseButtonPress and self.posted:
            posted = self.posted.pop(0)
            self.latencies.append(time.perf_counter() - posted)
            self.when.append(posted)
        return False


def main() -> None:
    app = application([])
    with tempfile.TemporaryDirectory() as tmp:
        w = MainWindow(QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat))
        w.prompts.error = lambda title, text: None  # type: ignore[method-assign]
        w.files.load_path(presets.path("bert"), is_preset=True, remember=False)
        w.resize(1600, 1000)
        w.show()
        app.processEvents()
        c = w.run
        t0 = time.perf_counter()
        scripted.run_and_wait(c)
        print(f"pass recorded in {time.perf_counter() - t0:.2f} s: {len(c.timeline)} frames (every level)")
        bert = w.doc.graph.find("BERT").id
        w.open_inside(bert)
        head = next(iter(w.scene.stacks))
        w.scene.open_stack(head)
        w.view.fit()
        c.set_speed(16.0)
        app.processEvents()
        items = sum(1 for i in w.scene.items() if isinstance(i, (NodeItem, LinkItem, ShapeLabel, RunMark)))
        order = [i for i in c.timeline.visible(c.level) if c.timeline.frames[i].phase == "backward"]
        c.seek(order[0] - 1)
        app.processEvents()
        step_ms, update_ms, pulse_ms, painted = [], [], [], []
        overlay = c.installation.overlay
        for i in [i for _ in range(REPEATS) for i in order]:
            if i == order[0]:
                c.seek(order[0] - 1)
                app.processEvents()
            t = time.perf_counter()
            c.seek(i)  # overlay refresh, pulses start
            t1 = time.perf_counter()
            app.processEvents()  # Qt repaints the dirty regions
            step_ms.append(1000 * (time.perf_counter() - t))
            update_ms.append(1000 * (t1 - t))
            for k in range(1, PULSE_FRAMES + 1):
                t = time.perf_counter()
                for p in overlay.pulses:
                    p.set_t(k / PULSE_FRAMES)
                app.processEvents()
                pulse_ms.append(1000 * (time.perf_counter() - t))
            overlay._stop_pulses()
            app.processEvents()
        # Again, counting what the scene reports changed (listening to it slows the scene down,
        # so it is not timed).
        c.seek(order[0] - 1)
        app.processEvents()
        counter = DirtyCounter(w.scene)
        counter.items()
        for i in order:
            c.seek(i)
            app.processEvents()
            painted.append(counter.items())
            overlay._stop_pulses()
            app.processEvents()
            counter.items()
        w.scene.changed.disconnect(counter.rects.extend)
        frames = step_ms + pulse_ms
        print(f"BERT stack opened: {len(w.scene.nodes)} nodes, {len(w.scene.links)} wires, {items} canvas items")
        print(f"backward animation, {len(order)} steps played {REPEATS} times, {len(frames)} frames: median {statistics.median(frames):.1f} ms, "
              f"p95 {percentile(frames, 0.95):.1f} ms (goal: median < 16 ms)")
        print(f"  step frames (cursor moves): median {statistics.median(step_ms):.1f} ms, p95 {percentile(step_ms, 0.95):.1f} ms "
              f"(of which updating the items' state: median {statistics.median(update_ms):.1f} ms)")
        print(f"  pulse frames: median {statistics.median(pulse_ms):.1f} ms, p95 {percentile(pulse_ms, 0.95):.1f} ms")
        print(f"  items in the repainted regions per step: median {statistics.median(painted):.0f} of {items} (the nodes "
              "whose state changed, the wires and labels whose gradient arrived, what lies under them)")

        # clicks while a pass runs
        w.go_to_level(0)
        for _ in range(3):  # let the closed inner scenes be deleted before measuring
            app.processEvents()
            time.sleep(0.05)
        probe = ClickProbe()
        vp = w.view.viewport()
        vp.installEventFilter(probe)
        where = QPointF(vp.width() - 20, 20)
        c.run_pass()
        t0 = time.perf_counter()
        next_click = 0.0
        while c.busy or not c.timeline or not c.timeline.finished:
            now = time.perf_counter()
            if now >= next_click and c.busy:
                for kind in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonRelease):
                    ev = QMouseEvent(kind, where, vp.mapToGlobal(where), Qt.MouseButton.LeftButton,
                                     Qt.MouseButton.LeftButton if kind == QEvent.Type.MouseButtonPress else Qt.MouseButton.NoButton,
                                     Qt.KeyboardModifier.NoModifier)
                    if kind == QEvent.Type.MouseButtonPress:
                        probe.posted.append(time.perf_counter())
                    QApplication.postEvent(vp, ev)
                next_click = now + 0.02
            app.processEvents()
            time.sleep(0.001)
        lat = [1000 * x for x in probe.latencies]
        if os.environ.get("BENCH_VERBOSE"):
            print("  click at (s after start) → latency (ms):",
                  ", ".join(f"{t - t0:.2f}→{x:.0f}" for t, x in zip(probe.when, lat)))
        print(f"clicks during a BERT pass ({time.perf_counter() - t0:.1f} s): {len(lat)} clicks, median "
              f"{statistics.median(lat):.1f} ms, worst {max(lat):.1f} ms (goal: < 100 ms)")
        w.undo_stack.setClean()
        w.close()


if __name__ == "__main__":
    main()
