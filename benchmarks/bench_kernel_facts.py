"""The measurements behind the kernels' form (benchmarks/README.md, "What the numbers taught"), not
a test. Each line races two ways of writing the same loop in Numba, in one process, alternating,
one thread, and prints the medians:

    python benchmarks/bench_kernel_facts.py

- matrix products: Numba's ``np.dot`` (scipy's OpenBLAS) against ``engine.kernels.blas.gemm``
  (numpy's own OpenBLAS), at the sizes of an LSTM step, an image's im2col and a big layer;
- a division in a loop under Numba's default (Python) error model, which checks every divisor,
  against the numpy error model the kernels use;
- ``math.exp`` in a loop against ``engine.kernels.vecmath.exp``, float32;
- σ written inline in the loop against the same expression in a helper ``@jit`` function;
- a strided copy indexed with a signed index (wrap-around checked) against an unsigned one.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from typing import Callable

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_k, "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from engine.kernels import FASTMATH, jit  # noqa: E402
from engine.kernels.blas import gemm  # noqa: E402
from engine.kernels.vecmath import exp  # noqa: E402


def race(contenders: dict[str, Callable[[], object]], repeats: int = 15) -> dict[str, float]:
    for f in contenders.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for k, f in contenders.items():
            t0 = time.process_time()
            f()
            times[k].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def numba_plain(fn: Callable[..., object], error_model: str = "numpy") -> Callable[..., object]:
    import numba

    return numba.njit(fastmath=set(FASTMATH), error_model=error_model)(fn)


@jit
def _dot_numba(a, b, out, reps):
    for _ in range(reps):
        np.dot(a, b, out)


@jit
def _dot_blas(a, b, out, reps):
    for _ in range(reps):
        gemm(a, b, out, False, False, 0.0)


def _divide(x, out, reps):  # type: ignore[no-untyped-def]
    one = np.float32(1.0)
    for _ in range(reps):
        for i in range(x.shape[0]):
            out[i] = one / (one + x[i])


def _exp_libm(x, out, reps):  # type: ignore[no-untyped-def]
    for _ in range(reps):
        for i in range(x.shape[0]):
            out[i] = math.exp(x[i])


@jit
def _exp_vec(x, out, reps):
    for _ in range(reps):
        for i in range(x.shape[0]):
            out[i] = exp(x[i])


@jit
def _sigmoid_helper(v, one):
    return one / (one + exp(-v))


@jit
def _sigmoid_called(x, out, reps):
    one = np.float32(1.0)
    for _ in range(reps):
        for i in range(x.shape[0]):
            out[i] = _sigmoid_helper(x[i], one)


@jit
def _sigmoid_inline(x, out, reps):
    one = np.float32(1.0)
    for _ in range(reps):
        for i in range(x.shape[0]):
            out[i] = one / (one + exp(-x[i]))


@jit
def _copy_signed(src, dst, start, reps):
    n = dst.shape[0]
    for _ in range(reps):
        for row in range(0, n, 14):
            for j in range(14):
                dst[row + j] = src[start + row + j]


@jit
def _copy_unsigned(src, dst, start, reps):
    n = dst.shape[0]
    for _ in range(reps):
        for row in range(0, n, 14):
            for j in range(14):
                dst[np.uint64(row + j)] = src[np.uint64(start + row + j)]


def main() -> None:
    print(f"one thread; load average {os.getloadavg()[0]:.2f}; medians of interleaved runs, CPU time")
    for m, k, n in ((16, 64, 256), (8, 72, 196), (256, 128, 128)):
        a = np.random.rand(m, k).astype(np.float32)
        b = np.random.rand(k, n).astype(np.float32)
        out = np.empty((m, n), np.float32)
        reps = max(1, int(2e7 / (m * n * k)))
        med = race({"numba np.dot": lambda: _dot_numba(a, b, out, reps), "blas.gemm": lambda: _dot_blas(a, b, out, reps),
                    "numpy": lambda: [np.dot(a, b, out) for _ in range(reps)]})
        print(f"float32 {m}×{k} @ {k}×{n}: " + ", ".join(f"{name} {t / reps * 1e6:.1f} µs" for name, t in med.items()))
    x = np.random.randn(4096).astype(np.float32)
    out = np.empty_like(x)
    reps = 2000
    per = 1e9 / reps / x.size

    def line(title: str, med: dict[str, float]) -> None:
        print(f"{title}: " + ", ".join(f"{name} {t * per:.2f} ns/element" for name, t in med.items()))

    py_div, np_div = numba_plain(_divide, "python"), numba_plain(_divide, "numpy")
    line("1/(1+x), float32", race({"error_model python": lambda: py_div(x, out, reps), "error_model numpy": lambda: np_div(x, out, reps)}))
    libm = numba_plain(_exp_libm)
    line("exp, float32", race({"math.exp": lambda: libm(x, out, reps), "vecmath.exp": lambda: _exp_vec(x, out, reps)}))
    line("σ, float32", race({"helper @jit function": lambda: _sigmoid_called(x, out, reps),
                             "written in the loop": lambda: _sigmoid_inline(x, out, reps)}))
    src = np.random.randn(14 * 4096 + 16).astype(np.float32)
    dst = np.empty(14 * 4096, np.float32)
    line("copy in rows of 14 (im2col), float32", {k: v * x.size / dst.size for k, v in race({
        "signed index": lambda: _copy_signed(src, dst, 3, reps // 4),
        "unsigned index": lambda: _copy_unsigned(src, dst, 3, reps // 4)}).items()})


if __name__ == "__main__":
    main()
