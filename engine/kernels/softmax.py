"""Softmax and log-softmax over the last axis, their VJPs, and fused softmax + cross-entropy.

Kernels work on 2-D (rows, classes) contiguous arrays; the wrappers reshape. The exps go through
:func:`engine.kernels.vecmath.exp` written inline in the loops, which vectorises; row sums
accumulate in float64.
"""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import kernel
from engine.kernels.vecmath import exp, one as _one


# ``log`` selects log-softmax: one kernel for both (and one for both VJPs), one compile per dtype.


def rows_np(log: bool, x: np.ndarray, out: np.ndarray) -> None:
    shifted = x - x.max(axis=1, keepdims=True)
    if log:
        out[:] = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    else:
        e = np.exp(shifted)
        out[:] = e / e.sum(axis=1, keepdims=True)


@kernel(rows_np)
def rows_fwd(log, x, out):
    n, k = x.shape
    one = _one(x)
    for r in range(n):
        m = x[r, 0]
        for j in range(1, k):
            m = max(m, x[r, j])
        s = 0.0
        if log:
            for j in range(k):
                s += exp(x[r, j] - m)
            logz = math.log(s)
            for j in range(k):
                out[r, j] = (x[r, j] - m) - logz
        else:
            for j in range(k):
                e = exp(x[r, j] - m)
                out[r, j] = e
                s += e
            inv = one / s
            for j in range(k):
                out[r, j] *= inv


def rows_grad_np(log: bool, y: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    """softmax: ``y ⊙ (g − Σ g⊙y)``; log-softmax: ``g − e^y Σ g``, given the forward output ``y``."""
    if log:
        out[:] = g - np.exp(y) * g.sum(axis=1, keepdims=True)
    else:
        out[:] = y * (g - (g * y).sum(axis=1, keepdims=True))


@kernel(rows_grad_np)
def rows_bwd(log, y, g, out):
    n, k = y.shape
    for r in range(n):
        d = 0.0
        if log:
            for j in range(k):
                d += g[r, j]
            for j in range(k):
                out[r, j] = g[r, j] - exp(y[r, j]) * d
        else:
            for j in range(k):
                d += g[r, j] * y[r, j]
            for j in range(k):
                out[r, j] = y[r, j] * (g[r, j] - d)


def cross_entropy_rows_np(x: np.ndarray, target: np.ndarray, ignore: int, weight: np.ndarray, smoothing: float,
                          prob: np.ndarray) -> tuple[float, float]:
    """Fills ``prob`` with softmax(x); returns the summed loss over non-ignored rows and the sum of
    their target weights (the mean's denominator). Row loss: ``(1 − ε) w[t] (−log p_t) +
    (ε/C) Σ_c w[c] (−log p_c)``, torch's label smoothing with class weights."""
    rows_np(False, x, prob)
    keep = target != ignore
    if not keep.any():
        return 0.0, 0.0
    rows = np.nonzero(keep)[0]
    t = target[rows]
    shifted = x[rows] - x[rows].max(axis=1, keepdims=True)
    logz = np.log(np.exp(shifted).sum(axis=1))
    wt = weight[t]
    total = np.sum((1.0 - smoothing) * wt * (logz - shifted[np.arange(rows.size), t]))
    if smoothing:
        total += smoothing / x.shape[1] * np.sum(weight[None, :] * (logz[:, None] - shifted))
    return float(total), float(wt.sum())


@kernel(cross_entropy_rows_np)
def cross_entropy_rows(x, target, ignore, weight, smoothing, prob):
    n, k = x.shape
    one = _one(x)
    total = 0.0
    den = 0.0
    for r in range(n):
        m = x[r, 0]
        for j in range(1, k):
            m = max(m, x[r, j])
        s = 0.0
        for j in range(k):
            e = exp(x[r, j] - m)
            prob[r, j] = e
            s += e
        inv = one / s
        for j in range(k):
            prob[r, j] *= inv
        t = target[r]
        if t != ignore:
            logs = math.log(s)
            total += (1.0 - smoothing) * weight[t] * (logs - (x[r, t] - m))
            if smoothing != 0.0:
                sm = 0.0
                for j in range(k):
                    sm += weight[j] * (logs - (x[r, j] - m))
                total += smoothing / k * sm
            den += weight[t]
    return total, den


def _rows(x: np.ndarray) -> int:
    return x.shape[-1] if x.ndim else 1


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; an empty array (even an empty last axis) gives an empty one."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    if x.size:
        k = _rows(x)
        rows_fwd(False, x.reshape(-1, k), out.reshape(-1, k))
    return out


def softmax_grad(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    y = np.ascontiguousarray(y)
    g = np.ascontiguousarray(g, dtype=y.dtype)
    out = np.empty_like(y)
    if y.size:
        k = _rows(y)
        rows_bwd(False, y.reshape(-1, k), g.reshape(-1, k), out.reshape(-1, k))
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    """``x − max − log Σ exp(x − max)`` over the last axis: exact where log(softmax) underflows."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    if x.size:
        k = _rows(x)
        rows_fwd(True, x.reshape(-1, k), out.reshape(-1, k))
    return out


def log_softmax_grad(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``g − softmax · Σ g`` given the forward output ``y`` = log softmax."""
    y = np.ascontiguousarray(y)
    g = np.ascontiguousarray(g, dtype=y.dtype)
    out = np.empty_like(y)
    if y.size:
        k = _rows(y)
        rows_bwd(True, y.reshape(-1, k), g.reshape(-1, k), out.reshape(-1, k))
    return out


def cross_entropy(logits: np.ndarray, target: np.ndarray, ignore_index: int, weight: np.ndarray | None = None,
                  smoothing: float = 0.0) -> tuple[float, np.ndarray, float]:
    """Summed loss, softmax probabilities, and the mean's denominator: the number of counted
    (non-ignored) positions, or the sum of their target classes' weights when ``weight`` is given."""
    x = np.ascontiguousarray(logits)
    k = x.shape[-1]
    t = np.ascontiguousarray(target, dtype=np.int64).reshape(-1)
    prob = np.empty_like(x)
    if not x.size:
        return 0.0, prob, 0.0
    w = np.ones(k) if weight is None else np.ascontiguousarray(weight, dtype=np.float64)
    total, den = cross_entropy_rows(x.reshape(-1, k), t, int(ignore_index), w, float(smoothing), prob.reshape(-1, k))
    return float(total), prob, float(den)
