"""Command-line start-up: warm commands, and first-ever (cold Numba cache) runs, in fresh processes.

    python benchmarks/bench_cli.py [--repeats 7] [--cold] [--base DIR]

Warm: ``list-presets``, ``info two_layer_net`` and ``run two_layer_net``, each started as a user
starts ``backprop-studio`` (a fresh interpreter running editor.main), the kernels already in
Numba's cache. Runs alternate between commands (and between this tree and ``--base DIR``, an
older checkout to compare with, when given), so machine noise hits all alike; medians.

``--cold`` adds the first-ever runs of the issue: ``run presets/bert.json`` and ``generate
language_model`` with an empty NUMBA_CACHE_DIR (one run each per tree: they are slow). Besides
wall time it prints the child's CPU time (user + system), which the other engineers' load on a
shared machine disturbs much less.

Goals (issue 13): warm list-presets / info ≤ 0.4 s, warm run two_layer_net ≤ 0.7 s, cold run
bert ≤ 6 s, cold generate language_model ≤ 12 s. Both wall and CPU are judged: on a loaded
shared machine wall time is mostly waiting for a core.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = "import sys; from editor.main import main; sys.exit(main())"
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}

WARM = {
    "list-presets": ["list-presets"],
    "info two_layer_net": ["info", "two_layer_net"],
    "run two_layer_net": ["run", "two_layer_net"],
}
COLD = {
    "run presets/bert.json": ["run", "bert"],
    "generate language_model": ["generate", "language_model", "--prompt", "the quick brown"],
}
GOALS = {"list-presets": 0.4, "info two_layer_net": 0.4, "run two_layer_net": 0.7,
         "run presets/bert.json": 6.0, "generate language_model": 12.0}


PYC = tempfile.mkdtemp(prefix="bench-cli-pyc-")


def timed(tree: Path, argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s of the child) for one run of the CLI from ``tree``.

    NOTE: with Python's bytecode cache (in a temporary PYTHONPYCACHEPREFIX), as an installed
    package has it: PYTHONDONTWRITEBYTECODE, set on the development machines, would add the
    compiling of every engine module to each start."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run([sys.executable, "-c", ENTRY, *argv], cwd=tree, capture_output=True, text=True,
                          env={**base, **ONE_THREAD, **env, "PYTHONPATH": str(tree), "PYTHONPYCACHEPREFIX": PYC})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed in {tree}:\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cold", action="store_true", help="also the first-ever runs with an empty Numba cache")
    ap.add_argument("--base", type=Path, help="an older checkout to compare with, side by side")
    args = ap.parse_args()
    trees = {"this tree": ROOT}
    if args.base:
        trees["base"] = args.base.resolve()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.2f}; one thread; medians of {args.repeats} alternating runs")
    for tree in trees.values():  # fill the kernel caches first
        timed(tree, WARM["run two_layer_net"], {})
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for label, argv in WARM.items():
            for name, tree in trees.items():
                samples.setdefault((label, name), []).append(timed(tree, argv, {}))
    if args.cold:
        for label, argv in COLD.items():
            for name, tree in trees.items():
                with tempfile.TemporaryDirectory(prefix="bench-cli-numba-") as cache:
                    samples[(label, name)] = [timed(tree, argv, {"NUMBA_CACHE_DIR": cache})]
    print(f"{'command':28s} {'tree':10s} {'wall s':>8s} {'CPU s':>8s} {'goal s':>7s}")
    for (label, name), runs in samples.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        goal = GOALS[label]
        print(f"{label:28s} {name:10s} {wall:8.2f} {cpu:8.2f} {goal:7.1f}  wall {'met' if wall <= goal else 'NOT met':7s} "
              f"CPU {'met' if cpu <= goal else 'NOT met'}")
    if args.base:
        print("ratios this tree / base (wall, CPU):")
        for label in {k[0]: None for k in samples}:
            a, b = samples[(label, "this tree")], samples[(label, "base")]
            ra = statistics.median(r[0] for r in a) / statistics.median(r[0] for r in b)
            rc = statistics.median(r[1] for r in a) / statistics.median(r[1] for r in b)
            print(f"  {label:28s} {ra:5.2f}  {rc:5.2f}")


if __name__ == "__main__":
    main()
