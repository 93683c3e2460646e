"""What generality cost: the shipped Conv2d kernels (any kernel shape, stride, padding, dilation
and groups) and attention core (with a key-padding mask) against the square-only Conv2d and
mask-less attention they replaced, kept here so the comparison can be re-run. Not a test.

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=67108864 \\
    python benchmarks/bench_general_kernels.py

Prints medians of interleaved runs and the ratio shipped / before (1.00 = no cost).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from typing import Callable

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):  # one thread unless told otherwise
    os.environ.setdefault(_k, "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from engine.kernels import attention as ka  # noqa: E402
from engine.kernels import conv as kc  # noqa: E402
from engine.kernels import jit  # noqa: E402

# --- the kernels as they were before (square kernels, one group; no mask) --------------------------


@jit
def _im2col_square(img, K, stride, pad, Ho, Wo, cols):
    C, H, W = img.shape
    for c in range(C):
        for ki in range(K):
            for kj in range(K):
                row = (c * K + ki) * K + kj
                for oi in range(Ho):
                    ii = oi * stride - pad + ki
                    base = oi * Wo
                    if ii < 0 or ii >= H:
                        for oj in range(Wo):
                            cols[row, base + oj] = 0
                        continue
                    for oj in range(Wo):
                        jj = oj * stride - pad + kj
                        cols[row, base + oj] = img[c, ii, jj] if 0 <= jj < W else 0


@jit
def _col2im_square(cols, K, stride, pad, Ho, Wo, img):
    C, H, W = img.shape
    for c in range(C):
        for ki in range(K):
            for kj in range(K):
                row = (c * K + ki) * K + kj
                for oi in range(Ho):
                    ii = oi * stride - pad + ki
                    if ii < 0 or ii >= H:
                        continue
                    base = oi * Wo
                    for oj in range(Wo):
                        jj = oj * stride - pad + kj
                        if 0 <= jj < W:
                            img[c, ii, jj] += cols[row, base + oj]


@jit
def conv2d_forward_square(x, Wt, b, stride, pad):
    B, C, H, W = x.shape
    Co, _, K, _ = Wt.shape
    Ho = (H + 2 * pad - K) // stride + 1
    Wo = (W + 2 * pad - K) // stride + 1
    P = Ho * Wo
    w2 = Wt.reshape(Co, C * K * K)
    cols = np.empty((C * K * K, P), x.dtype)
    out = np.empty((B, Co, Ho, Wo), x.dtype)
    for n in range(B):
        _im2col_square(x[n], K, stride, pad, Ho, Wo, cols)
        y = np.dot(w2, cols)
        for o in range(Co):
            bo = b[o]
            for p in range(P):
                out[n, o, p // Wo, p % Wo] = y[o, p] + bo
    return out


@jit
def conv2d_backward_square(x, Wt, g, stride, pad):
    B, C, H, W = x.shape
    Co, _, K, _ = Wt.shape
    Ho, Wo = g.shape[2], g.shape[3]
    P = Ho * Wo
    CKK = C * K * K
    w2 = Wt.reshape(Co, CKK)
    cols = np.empty((CKK, P), x.dtype)
    gw2 = np.zeros((Co, CKK), x.dtype)
    gb = np.zeros(Co, x.dtype)
    gx = np.zeros((B, C, H, W), x.dtype)
    for n in range(B):
        gn = g[n].reshape(Co, P)
        _im2col_square(x[n], K, stride, pad, Ho, Wo, cols)
        gw2 += np.dot(gn, cols.T)
        for o in range(Co):
            s = gb[o] * 0
            for p in range(P):
                s += gn[o, p]
            gb[o] += s
        gcols = np.dot(w2.T, gn)
        _col2im_square(gcols, K, stride, pad, Ho, Wo, gx[n])
    return gx, gw2.reshape(Co, C, K, K), gb


@jit
def attention_core_unmasked(q, k, v, scale, causal, a, o):
    n, lq, _ = q.shape
    lk = k.shape[1]
    for i in range(n):
        s = np.dot(q[i], k[i].T)
        for r in range(lq):
            stop = min(r + 1, lk) if causal else lk
            m = s[r, 0]
            for j in range(1, stop):
                if s[r, j] > m:
                    m = s[r, j]
            total = 0.0
            for j in range(stop):
                e = math.exp((s[r, j] - m) * scale)
                a[i, r, j] = e
                total += e
            inv = 1.0 / total
            for j in range(stop):
                a[i, r, j] *= inv
            for j in range(stop, lk):
                a[i, r, j] = 0
        o[i] = np.dot(a[i], v[i])


# --- racing -------------------------------------------------------------------------------------------


def race(contenders: dict[str, Callable[[], object]], repeats: int = 41) -> dict[str, float]:
    """Median seconds per contender, runs interleaved so machine noise hits each alike."""
    for f in contenders.values():
        f()  # compile / warm up
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for k, f in contenders.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def report(title: str, med: dict[str, float], base: str) -> None:
    print(f"\n{title}")
    for k, v in med.items():
        print(f"  {k:44s} {v * 1e3:9.3f} ms   {v / med[base]:5.2f}× {base}")


def bench_conv(dtype: type) -> None:
    rng = np.random.default_rng(0)
    B, C, H, Co, K = 8, 8, 28, 16, 3
    x = rng.standard_normal((B, C, H, H)).astype(dtype)
    W = (rng.standard_normal((Co, C, K, K)) * 0.1).astype(dtype)
    b = rng.standard_normal(Co).astype(dtype)
    g = rng.standard_normal((B, Co, H, H)).astype(dtype)
    assert np.allclose(kc.conv2d(x, W, b, 1, 1)[0], conv2d_forward_square(x, W, b, 1, 1), atol=1e-4)
    name = np.dtype(dtype).name
    report(f"Conv2d forward B={B} C={C} {H}x{H} K={K} pad 1 C_out={Co} {name}", race({
        "before (square only)": lambda: conv2d_forward_square(x, W, b, 1, 1),
        "shipped (batched im2col; rect, dilation, groups)": lambda: kc.conv2d(x, W, b, 1, 1),
    }), "before (square only)")
    report(f"Conv2d backward (dx, dW, db) {name}", race({
        "before (square only)": lambda: conv2d_backward_square(x, W, g, 1, 1),
        "shipped (batched im2col; rect, dilation, groups)": lambda: kc.conv2d_grad(x, W, g, 1, 1),
    }), "before (square only)")


def bench_attention(dtype: type, causal: bool) -> None:
    rng = np.random.default_rng(1)
    batch, heads, length, dh = 8, 4, 32, 32
    n = batch * heads
    q, k, v = (rng.standard_normal((n, length, dh)).astype(dtype) for _ in range(3))
    scale = np.dtype(dtype).type(1 / math.sqrt(dh))
    a, o = np.empty((n, length, length), dtype), np.empty((n, length, dh), dtype)
    keep_pad = np.ones((batch, length), np.bool_)
    keep_pad[::2, length // 2:] = False  # half the batch padded to half its length
    report(f"attention core forward batch {batch}, heads {heads}, length {length}, dh {dh}, causal={causal} {np.dtype(dtype).name}", race({
        "before (no mask)": lambda: attention_core_unmasked(q, k, v, scale, causal, a, o),
        "shipped, no mask": lambda: ka.forward(q, k, v, causal, None, heads),
        "shipped, padding mask": lambda: ka.forward(q, k, v, causal, keep_pad, heads),
    }), "before (no mask)")


if __name__ == "__main__":
    for dt in (np.float32, np.float64):
        bench_conv(dt)
    for causal in (False, True):
        bench_attention(np.float32, causal)
