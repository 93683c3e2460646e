"""Side-by-side timings for the recurrent and convolution kernels (not a test).

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=67108864 \\
    python benchmarks/bench_recurrent_conv.py

Prints medians and ratios of: Conv2d batched im2col+BLAS (the shipped kernels) vs direct loops
(the alternative that lost), vs the numpy twins and torch; SequenceRNN forward+backward per cell
vs the numpy twins and torch; the LSTM's two time-loop kernels as shipped vs as they were before
issue 13's fifth round (kept below), and the backward step's product both ways. Runs alternate so
machine noise hits every contender alike.

    python benchmarks/bench_recurrent_conv.py --only lstm-loops [--repeats 200]
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
from engine.kernels import recurrent as rk
from engine.kernels.blas import block, matrix, product
from engine.kernels.vecmath import exp
from engine.kernels.vecmath import one as _one

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


# --- the LSTM time loops before issue 13's fifth round, kept here so the comparison can be re-run --
# The forward did not keep tanh(c_t), so the backward computed it again; the backward multiplied
# by Wh transposed in the call (BLAS's NT product); the bias gradient was a numpy sum afterwards.


@jit
def lstm_forward_before(h0, c0, Wh, b, gates, cs, seq):
    B, L, H = seq.shape
    wp, ldw = matrix(Wh)
    one = _one(seq)
    two = one + one
    scale = np.ones(4 * H, seq.dtype)
    for j in range(2 * H, 3 * H):
        scale[j] = two
    c = np.empty(H, seq.dtype)
    for t in range(L):
        hp, ldh = matrix(h0) if t == 0 else block(seq, t - 1)
        out, ldo = block(gates, t)
        product(False, False, B, 4 * H, H, hp, ldh, wp, ldw, 1.0, out, ldo, seq.itemsize)
        for i in range(B):
            for j in range(4 * H):
                gates[i, t, j] = one / (one + exp(-scale[j] * (gates[i, t, j] + b[j])))
            for j in range(2 * H, 3 * H):
                gates[i, t, j] = two * gates[i, t, j] - one
            if t == 0:
                for j in range(H):
                    c[j] = gates[i, t, H + j] * c0[i, j] + gates[i, t, j] * gates[i, t, 2 * H + j]
            else:
                for j in range(H):
                    c[j] = gates[i, t, H + j] * cs[i, t - 1, j] + gates[i, t, j] * gates[i, t, 2 * H + j]
            for j in range(H):
                cs[i, t, j] = c[j]
            for j in range(H):
                seq[i, t, j] = gates[i, t, 3 * H + j] * (two / (one + exp(-two * c[j])) - one)


@jit
def lstm_backward_before(c0, cs, gates, Wh, gseq, dh, dc, dZ, norms):
    B, L, H4 = gates.shape
    H = H4 // 4
    wp, ldw = matrix(Wh)
    hp, ldh = matrix(dh)
    one = _one(cs)
    two = one + one
    tc = np.empty(H, cs.dtype)
    v = np.empty(H, cs.dtype)
    cprev = np.empty(H, cs.dtype)
    for t in range(L - 1, -1, -1):
        s = 0.0
        for i in range(B):
            if t == 0:
                for j in range(H):
                    cprev[j] = c0[i, j]
            else:
                for j in range(H):
                    cprev[j] = cs[i, t - 1, j]
            for j in range(H):
                tc[j] = two / (one + exp(-two * cs[i, t, j])) - one  # tanh(c_t)
            for j in range(H):
                v[j] = dh[i, j] + gseq[i, t, j]
            for j in range(H):
                s += float(v[j]) * float(v[j])
            for j in range(H):
                dc[i, j] += v[j] * gates[i, t, 3 * H + j] * (one - tc[j] * tc[j])
            for j in range(H):
                dZ[i, t, j] = dc[i, j] * gates[i, t, 2 * H + j] * gates[i, t, j] * (one - gates[i, t, j])
            for j in range(H):
                dZ[i, t, H + j] = dc[i, j] * cprev[j] * gates[i, t, H + j] * (one - gates[i, t, H + j])
            for j in range(H):
                dZ[i, t, 2 * H + j] = dc[i, j] * gates[i, t, j] * (one - gates[i, t, 2 * H + j] * gates[i, t, 2 * H + j])
            for j in range(H):
                dZ[i, t, 3 * H + j] = v[j] * tc[j] * gates[i, t, 3 * H + j] * (one - gates[i, t, 3 * H + j])
            for j in range(H):
                dc[i, j] *= gates[i, t, H + j]
        norms[t] = np.sqrt(s)
        dp, ldd = block(dZ, t)
        product(False, True, B, H, 4 * H, dp, ldd, wp, ldw, 0.0, hp, ldh, dh.itemsize)


@jit
def step_products(dZ, W, dh, transposed):
    """Only the backward loop's per-step products dZ_t @ Whᵀ: ``W`` is Wh (h, 4h), multiplied
    transposed in the call (NT, before), or Whᵀ (4h, h) contiguous (NN, shipped)."""
    B, L, H4 = dZ.shape
    H = dh.shape[1]
    wp, ldw = matrix(W)
    hp, ldh = matrix(dh)
    for t in range(L - 1, -1, -1):
        dp, ldd = block(dZ, t)
        product(False, transposed, B, H, H4, dp, ldd, wp, ldw, 0.0, hp, ldh, dh.itemsize)


def bench_lstm_loops(B: int, L: int, D: int, H: int, repeats: int) -> None:
    """The LSTM's time-loop kernels (what ``engine.kernels.recurrent.run_forward`` /
    ``run_backward`` call, with the bias gradient), shipped vs before, same inputs, outputs
    checked equal."""
    dt = np.float32
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, L, D)).astype(dt)
    h0, c0 = (rng.standard_normal((B, H)).astype(dt) for _ in range(2))
    Wx, Wh = ((rng.standard_normal((n, 4 * H)) * 0.2).astype(dt) for n in (D, H))
    b = rng.standard_normal(4 * H).astype(dt)
    gseq = rng.standard_normal((B, L, H)).astype(dt)
    pre = (x.reshape(B * L, D) @ Wx).reshape(B, L, 4 * H)
    WhT = np.ascontiguousarray(Wh.T)

    def shipped() -> tuple[np.ndarray, ...]:
        gates, cs, tcs, seq = pre.copy(), np.empty((B, L, H), dt), np.empty((B, L, H), dt), np.empty((B, L, H), dt)
        rk.lstm_forward(h0, c0, Wh, b, gates, cs, tcs, seq)
        dh, dc, dZ, db, norms = np.zeros((B, H), dt), np.zeros((B, H), dt), np.empty_like(gates), np.empty(4 * H, dt), np.empty(L)
        rk.lstm_backward(c0, cs, tcs, gates, np.ascontiguousarray(Wh.T), gseq, dh, dc, dZ, db, norms)
        return seq, dZ, db, dh, dc

    def before() -> tuple[np.ndarray, ...]:
        gates, cs, seq = pre.copy(), np.empty((B, L, H), dt), np.empty((B, L, H), dt)
        lstm_forward_before(h0, c0, Wh, b, gates, cs, seq)
        dh, dc, dZ, norms = np.zeros((B, H), dt), np.zeros((B, H), dt), np.empty_like(gates), np.empty(L)
        lstm_backward_before(c0, cs, gates, Wh, gseq, dh, dc, dZ, norms)
        return seq, dZ, dZ.reshape(B * L, 4 * H).sum(axis=0), dh, dc

    for new, old in zip(shipped(), before()):
        err = float(np.max(np.abs(new - old)))
        assert err <= 1e-4 * max(1.0, float(np.max(np.abs(old)))), f"shipped and before disagree by {err:.2e}"
    report(f"LSTM time loops forward+backward (with the bias gradient) B={B} L={L} h={H} float32",
           race({"shipped": shipped, "before (round 4)": before}, repeats), "shipped")
    dZ, dh = rng.standard_normal((B, L, 4 * H)).astype(dt), np.empty((B, H), dt)
    report(f"LSTM backward loop's {L} step products (B, 4h) @ (4h, h) alone",
           race({"NN, Whᵀ contiguous (shipped)": lambda: step_products(dZ, WhT, dh, False),
                 "NT, Wh transposed (before)": lambda: step_products(dZ, Wh, dh, True)}, repeats),
           "NN, Whᵀ contiguous (shipped)")


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
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("conv", "rnn", "lstm-loops"), help="one part (default: all)")
    ap.add_argument("--repeats", type=int, default=200, help="runs per contender of the LSTM loops (default 200)")
    args = ap.parse_args()
    if args.only in (None, "conv"):
        bench_conv(np.float32)
        bench_conv(np.float64)
    if args.only in (None, "rnn"):
        bench_rnn(8, 12, 8, 16)  # the size of a lesson in the app
        bench_rnn(16, 50, 32, 64)
    if args.only in (None, "lstm-loops"):
        bench_lstm_loops(16, 50, 64, 64, args.repeats)  # issue 13's LSTM
