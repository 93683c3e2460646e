"""The editor at scale: Select All, Delete and Undo on a chain of thousands of nodes, in the real
window (offscreen), each timed until the window is idle again (queued wire routing included).

    python benchmarks/bench_editor_scale.py [--nodes 5000] [--repeat 3] [--base DIR | --base-rev REV]

Each repeat runs in a fresh process (one thread pinned, CPU time). With ``--base DIR`` (a checkout
of an older commit, see README.md) or ``--base-rev REV`` (any commit of this repository, e.g.
``e683d7f``, the last commit before the editor-at-scale work: exported to a temporary folder with
``git archive``) the same measurement runs against that code too, alternating with this one, and
the ratios are printed, and the part of each step spent in the garbage collector. This script always drives both (it only needs ``MainWindow.select_all``,
``delete_selection`` and the undo stack, which older versions have). Goal (issue 10): each step
well under a second.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("select all", "delete", "undo", "redo")


def chain(n: int):
    """Input (4, 8) → n−1 alternating ReLU / Tanh nodes, in rows of 40 (a laid-out long graph)."""
    from engine.graph import Graph, Link

    g = Graph()
    prev = g.add_node("Input", {"shape": (4, 8)}, name="x", position=(0.0, 0.0))
    for i in range(1, n):
        row, col = divmod(i, 40)
        node = g.add_node("ReLU" if i % 2 else "Tanh", {}, name=f"act {i}", position=(220.0 * col, 160.0 * row))
        g.add_link(Link(prev.id, "out", node.id, "a"))  # valid by construction (connect checks cost O(N) each)
        prev = node
    return g


def measure(n: int) -> dict[str, float]:
    """CPU seconds of each step, in this process, with the code on ``sys.path``."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings

    from editor.app import application
    from editor.window import MainWindow
    from engine import serialize

    app = application([])
    settings = QSettings(os.path.join(tempfile.mkdtemp(prefix="bench-scale-"), "s.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings)
    window.resize(1400, 900)
    window.show()
    graph = chain(n)
    window.files.set_project(serialize.Project(graph, "chain"), None)
    app.processEvents()

    def settle() -> None:
        # what the window queued (wire routing, the minimap, panels) is part of the step
        for _ in range(5):
            app.processEvents()

    settle()
    # CPU seconds of the cyclic garbage collector inside each step (a full pass walks every
    # object the graph and its items hold: its cost grows with the graph, not with the edit)
    collecting = [0.0, 0.0]

    def on_gc(phase: str, _info: dict) -> None:
        if phase == "start":
            collecting[1] = time.process_time()
        else:
            collecting[0] += time.process_time() - collecting[1]

    gc.callbacks.append(on_gc)
    out: dict[str, float] = {"nodes": float(len(window.doc.graph.nodes))}
    actions = {"select all": window.select_all, "delete": window.delete_selection,
               "undo": window.undo_stack.undo, "redo": window.undo_stack.redo}
    for step in STEPS:
        collecting[0] = 0.0
        t = time.process_time()
        actions[step]()
        settle()
        out[step] = time.process_time() - t
        out[f"{step} gc"] = collecting[0]
    gc.callbacks.remove(on_gc)
    out["nodes after"] = float(len(window.doc.graph.nodes))
    window.undo_stack.setClean()
    window.close()
    return out


def run_child(code: Path, n: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(code), OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               QT_QPA_PLATFORM="offscreen")
    script = f"import json, sys; sys.path.insert(0, {str(code)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); " \
             f"import bench_editor_scale as b; print(json.dumps(b.measure({n})))"
    res = subprocess.run([sys.executable, "-c", script], cwd=code, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"the measurement in {code} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def export(rev: str) -> Path:
    """Commit ``rev`` of this repository as a plain folder (a temporary one, left for reruns)."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", rev + "^{commit}"],
                            capture_output=True, text=True, check=False)
    if commit.returncode != 0:
        raise SystemExit(f"--base-rev: {rev!r} is not a commit of {ROOT}: {commit.stderr.strip()}")
    sha = commit.stdout.strip()
    target = Path(tempfile.gettempdir()) / f"bench-editor-scale-{sha[:12]}"
    if not (target / "editor" / "window.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--base", type=Path, help="an older checkout to compare with")
    group.add_argument("--base-rev", help="a commit of this repository to compare with (exported with git archive)")
    ns = parser.parse_args()
    contenders = {"this": ROOT}
    if ns.base is not None:
        contenders["base"] = ns.base.resolve()
    elif ns.base_rev:
        contenders["base"] = export(ns.base_rev)
        print(f"base: {ns.base_rev} exported to {contenders['base']}", flush=True)
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in contenders}
    for r in range(ns.repeat):
        for name, code in contenders.items():
            result = run_child(code, ns.nodes)
            runs[name].append(result)
            print(f"  run {r + 1} {name}: " + ", ".join(f"{s} {result[s]:.2f} s" for s in STEPS), flush=True)
    print(f"{ns.nodes}-node chain in the window (offscreen), CPU seconds, median of {ns.repeat} fresh processes:")
    print(f"  {'':10s}" + "".join(f"{s:>12s}" for s in STEPS))
    med = {name: {s: statistics.median(r[s] for r in rs) for s in STEPS} for name, rs in runs.items()}
    for name in contenders:
        print(f"  {name:10s}" + "".join(f"{med[name][s]:12.3f}" for s in STEPS))
    if "base" in med:
        print(f"  {'base/this':10s}" + "".join(f"{med['base'][s] / max(med['this'][s], 1e-9):11.1f}×" for s in STEPS))
    print("  spread (fastest–slowest run):")
    for name, rs in runs.items():
        print(f"  {name:10s}" + "".join(f"{min(r[s] for r in rs):6.2f}–{max(r[s] for r in rs):.2f}".rjust(12) for s in STEPS))
    print("  of which the garbage collector (median):")
    for name, rs in runs.items():
        print(f"  {name:10s}" + "".join(f"{statistics.median(r.get(s + ' gc', 0.0) for r in rs):12.3f}" for s in STEPS))
    print("  goal: each step well under 1 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
