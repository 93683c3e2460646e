"""Side-by-side timings for the recurrent and convolution kernels (not a test).

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=67108864 \\
    python benchmarks/bench_recurrent_conv.py

Prints medians and ratios of: Conv2d batched im2col+BLAS (the shipped kernels) vs direct loops
(the alternative that lost), vs the numpy twins and torch; SequenceRNN forward+backward per cell
vs the numpy twins and torch. Runs alternate so machine noise hits every contender alike.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Callable

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):  # one thread unless told otherwise
    os.environ.setdefault(_k, "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from engine import blocks, kernels  # noqa: E402
from engine.kernels import conv as ck  # noqa: E402
from engine.kernels import jit  # noqa: E402

try:  # torch is an optional reference only
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None


# --- the losing alternative: direct loops, kept here so the comparison can be re-run -------------


@jit
def conv2d_direct(x, Wt, b, stride, pad):
    B, C, H, W = x.shape
    Co, _, K, _ = Wt.shape
    Ho = (H + 2 * pad - K) // stride + 1
    Wo = (W + 2 * pad - K) // stride + 1
    xp = np.zeros((B, C, H + 2 * pad, W + 2 * pad), x.dtype)
    xp[:, :, pad:pad + H, pad:pad + W] = x
    out = np.empty((B, Co, Ho, Wo), x.dtype)
    for n in range(B):
        for o in range(Co):
            out[n, o] = b[o]
            for c in range(C):
                for ki in range(K):
                    for kj in range(K):
                        w = Wt[o, c, ki, kj]
                        for oi in range(Ho):
                            for oj in range(Wo):
                                out[n, o, oi, oj] += w * xp[n, c, oi * stride + ki, oj * stride + kj]
    return out


@jit
def conv2d_direct_backward(x, Wt, g, stride, pad):
    B, C, H, W = x.shape
    Co, _, K, _ = Wt.shape
    Ho, Wo = g.shape[2], g.shape[3]
    xp = np.zeros((B, C, H + 2 * pad, W + 2 * pad), x.dtype)
    xp[:, :, pad:pad + H, pad:pad + W] = x
    gxp = np.zeros_like(xp)
    gW = np.zeros_like(Wt)
    gb = np.zeros(Co, x.dtype)
    for n in range(B):
        for o in range(Co):
            for oi in range(Ho):
                for oj in range(Wo):
                    gb[o] += g[n, o, oi, oj]
            for c in range(C):
                for ki in range(K):
                    for kj in range(K):
                        w = Wt[o, c, ki, kj]
                        s = gW[o, c, ki, kj] * 0
                        for oi in range(Ho):
                            for oj in range(Wo):
                                gv = g[n, o, oi, oj]
                                s += gv * xp[n, c, oi * stride + ki, oj * stride + kj]
                                gxp[n, c, oi * stride + ki, oj * stride + kj] += w * gv
                        gW[o, c, ki, kj] += s
    return np.ascontiguousarray(gxp[:, :, pad:pad + H, pad:pad + W]), gW, gb


def race(contenders: dict[str, Callable[[], object]], repeats: int = 15) -> dict[str, float]:
    """Median seconds per contender, runs interleaved."""
    for f in contenders.values():  # warm-up / compile
        f()
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
        print(f"  {k:32s} {v * 1e3:9.3f} ms   {v / med[base]:6.2f}× {base}")


def shipped(backend: str, fn: Callable[..., object], *args: object) -> Callable[[], object]:
    """The shipped wrapper (engine.kernels.conv) on the Numba kernels or on the numpy twins."""
    def run() -> object:
        with kernels.using(backend):
            return fn(*args)
    return run


def bench_conv(dtype: type = np.float32) -> None:
    rng = np.random.default_rng(0)
    B, C, H, Co, K = 8, 8, 28, 16, 3
    x = rng.standard_normal((B, C, H, H)).astype(dtype)
    W = (rng.standard_normal((Co, C, K, K)) * 0.1).astype(dtype)
    b = rng.standard_normal(Co).astype(dtype)
    g = rng.standard_normal((B, Co, H - K + 1, H - K + 1)).astype(dtype)
    assert np.allclose(ck.conv2d(x, W, b, 1, 0)[0], conv2d_direct(x, W, b, 1, 0), atol=1e-3)
    fwd = {
        "im2col+BLAS (shipped)": shipped("numba", ck.conv2d, x, W, b, 1, 0),
        "direct loops": lambda: conv2d_direct(x, W, b, 1, 0),
        "numpy twins": shipped("numpy", ck.conv2d, x, W, b, 1, 0),
    }
    bwd = {
        "im2col+BLAS (shipped)": shipped("numba", ck.conv2d_grad, x, W, g, 1, 0),
        "direct loops": lambda: conv2d_direct_backward(x, W, g, 1, 0),
        "numpy twins": shipped("numpy", ck.conv2d_grad, x, W, g, 1, 0),
    }
    if torch is not None:
        tx, tw, tb = torch.from_numpy(x).requires_grad_(), torch.from_numpy(W).requires_grad_(), torch.from_numpy(b).requires_grad_()
        tg = torch.from_numpy(g)
        fwd["torch"] = lambda: torch.nn.functional.conv2d(tx, tw, tb)

        def torch_bwd() -> None:
            out = torch.nn.functional.conv2d(tx, tw, tb)
            torch.autograd.grad(out, (tx, tw, tb), tg)

        bwd["torch (forward+backward)"] = torch_bwd
    name = np.dtype(dtype).name
    report(f"Conv2d forward B={B} C={C} {H}x{H} K={K} C_out={Co} {name}", race(fwd), "im2col+BLAS (shipped)")
    report(f"Conv2d backward (dx, dW, db) {name}", race(bwd), "im2col+BLAS (shipped)")


def bench_rnn(B: int, L: int, D: int, H: int, dtype: type = np.float32) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, L, D)).astype(dtype)
    for cell in ("SimpleRNN", "LSTM", "GRU"):
        block = blocks.create("SequenceRNN", cell=cell, hidden=H)
        w = {k: v.astype(dtype) for k, v in block.init_weights({"x": x.shape}, rng).items()}
        gseq = rng.standard_normal((B, L, H)).astype(dtype)

        def ours(backend: str) -> Callable[[], object]:
            def run() -> None:
                with kernels.using(backend):
                    _, saved = block.forward({"x": x}, w)
                    block.backward({"seq": gseq}, saved, w)
            return run

        contenders = {"numba kernels (shipped)": ours("numba"), "numpy twins": ours("numpy")}
        if torch is not None:
            mod = {"SimpleRNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[cell](D, H, batch_first=True)
            mod = mod.to(torch.float32 if dtype == np.float32 else torch.float64)
            tx, tg = torch.from_numpy(x).requires_grad_(), torch.from_numpy(gseq)

            def torch_run() -> None:
                out, _ = mod(tx)
                torch.autograd.grad(out, [tx, *mod.parameters()], tg)

            contenders["torch"] = torch_run
        report(f"SequenceRNN {cell} forward+backward B={B} L={L} d_in={D} h={H} {np.dtype(dtype).name}",
               race(contenders, repeats=9), "numba kernels (shipped)")


if __name__ == "__main__":
    bench_conv(np.float32)
    bench_conv(np.float64)
    bench_rnn(8, 12, 8, 16)  # the size of a lesson in the app
    bench_rnn(16, 50, 32, 64)
