"""First-ever compile vs cached start of every kernel, in fresh processes.

Runs every block example of the registry forward and backward in float32 and float64 (which
touches every kernel signature the app uses) in a child process with an empty NUMBA_CACHE_DIR,
then again with the cache it left behind. Prints both wall times.

    python benchmarks/bench_kernel_cache.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import numpy as np
from engine import blocks
for name in blocks.names():
    for ex in blocks.spec(name).examples:
        b = blocks.create(name, **ex.params)
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(0)
            x = ex.sample(b, rng, dtype)
            w = {k: np.asarray(v, dtype) for k, v in b.init_weights(ex.inputs, rng).items()}
            outs, saved = b.forward(x, w)
            b.backward({k: np.ones_like(v) for k, v in outs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)}, saved, w)
"""


def timed(env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one child (CPU time hardly changes when the machine is busy)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    from machine import describe

    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        first = timed(env)
        cached = sorted(timed(env) for _ in range(3))[1]
    print(f"every kernel, first-ever compile: {first[0]:.1f} s ({first[1]:.1f} s of CPU); "
          f"cached start: median {cached[0]:.1f} s ({cached[1]:.1f} s of CPU)")


if __name__ == "__main__":
    main()
