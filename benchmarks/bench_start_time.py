"""How long `backprop-studio run two_layer_net` takes in a fresh process: first-ever (empty Numba
cache: every kernel it needs compiles) and cached (median of several), next to a bare
``python -c "import numpy"`` on the same machine, so the figure can be read as a ratio too.

    python benchmarks/bench_start_time.py [--repeats 5]

The README quotes what this prints, with the machine line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t0


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
    c, b = statistics.median(cached), statistics.median(bare)
    print(f"machine: {describe()}")
    print(f"`backprop-studio run two_layer_net` in a fresh process: first-ever (compiles its kernels) {first:.1f} s; "
          f"cached: median {c:.2f} s of {args.repeats}; `python -c 'import numpy'`: median {b:.2f} s "
          f"(cached run = {c / b:.1f}× a bare numpy start)")


if __name__ == "__main__":
    main()
