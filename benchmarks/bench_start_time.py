"""How long `backprop-studio run two_layer_net` takes in a fresh process: first-ever (empty Numba
cache: every kernel it needs compiles) and cached (median of several), next to a bare
``python -c "import numpy"`` on the same machine, so the figure can be read as a ratio too.

    python benchmarks/bench_start_time.py [--repeats 5]

The README quotes what this prints, with the machine line.
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


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one child (CPU time hardly changes when the machine is busy)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, cwd=ROOT, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    from machine import describe

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    run = ["-m", "engine.cli", "run", "two_layer_net", "--json"]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        first = timed(run, env)
        cached, bare = [], []
        for _ in range(args.repeats):  # alternating, so machine noise hits both alike
            cached.append(timed(run, env))
            bare.append(timed(["-c", "import numpy"], env))
    c = statistics.median(w for w, _ in cached), statistics.median(u for _, u in cached)
    b = statistics.median(w for w, _ in bare), statistics.median(u for _, u in bare)
    print(f"machine: {describe()}")
    print(f"`backprop-studio run two_layer_net` in a fresh process: first-ever (compiles its kernels) {first[0]:.1f} s "
          f"({first[1]:.1f} s of CPU); cached: median {c[0]:.2f} s ({c[1]:.2f} s of CPU) of {args.repeats}; "
          f"`python -c 'import numpy'`: median {b[0]:.2f} s ({b[1]:.2f} s of CPU): a cached run costs "
          f"{c[1] / b[1]:.1f}× the CPU of a bare numpy start")


if __name__ == "__main__":
    main()
