"""First-ever compile vs cached start of every kernel, in fresh processes.

Runs every block example of the registry forward and backward in float32 and float64 (which
touches every kernel signature the app uses) in a child process with an empty NUMBA_CACHE_DIR,
then again with the cache it left behind. Prints both wall times.

    python benchmarks/bench_kernel_cache.py
"""

from __future__ import annotations

import os
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


def timed(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    from machine import describe

    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        first = timed(env)
        cached = [timed(env) for _ in range(3)]
    print(f"every kernel, first-ever compile: {first:.1f} s; cached start: median {sorted(cached)[1]:.1f} s")


if __name__ == "__main__":
    main()
