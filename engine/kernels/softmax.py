"""Softmax over the last axis, its VJP, and fused softmax + cross-entropy.

Kernels work on 2-D (rows, classes) contiguous arrays; the wrappers reshape.
"""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import kernel


def softmax_rows_np(x: np.ndarray, out: np.ndarray) -> None:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    out[:] = e / e.sum(axis=1, keepdims=True)


@kernel(softmax_rows_np)
def softmax_rows(x, out):
    n, k = x.shape
    for r in range(n):
        m = x[r, 0]
        for j in range(1, k):
            if x[r, j] > m:
                m = x[r, j]
        s = 0.0
        for j in range(k):
            e = math.exp(x[r, j] - m)
            out[r, j] = e
            s += e
        inv = 1.0 / s
        for j in range(k):
            out[r, j] *= inv


def softmax_rows_grad_np(y: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    out[:] = y * (g - (g * y).sum(axis=1, keepdims=True))


@kernel(softmax_rows_grad_np)
def softmax_rows_grad(y, g, out):
    n, k = y.shape
    for r in range(n):
        d = 0.0
        for j in range(k):
            d += g[r, j] * y[r, j]
        for j in range(k):
            out[r, j] = y[r, j] * (g[r, j] - d)


def cross_entropy_rows_np(x: np.ndarray, target: np.ndarray, ignore: int, prob: np.ndarray) -> float:
    """Fills ``prob`` with softmax(x) and returns the summed loss over non-ignored rows."""
    softmax_rows_np(x, prob)
    keep = target != ignore
    if not keep.any():
        return 0.0
    rows = np.nonzero(keep)[0]
    shifted = x[rows] - x[rows].max(axis=1, keepdims=True)
    logz = np.log(np.exp(shifted).sum(axis=1))
    return float(np.sum(logz - shifted[np.arange(rows.size), target[rows]]))


@kernel(cross_entropy_rows_np)
def cross_entropy_rows(x, target, ignore, prob):
    n, k = x.shape
    total = 0.0
    for r in range(n):
        m = x[r, 0]
        for j in range(1, k):
            if x[r, j] > m:
                m = x[r, j]
        s = 0.0
        for j in range(k):
            e = math.exp(x[r, j] - m)
            prob[r, j] = e
            s += e
        inv = 1.0 / s
        for j in range(k):
            prob[r, j] *= inv
        t = target[r]
        if t != ignore:
            total += math.log(s) - (x[r, t] - m)
    return total


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    k = x.shape[-1] if x.ndim else 1
    softmax_rows(x.reshape(-1, k), out.reshape(-1, k))
    return out


def softmax_grad(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    y = np.ascontiguousarray(y)
    g = np.ascontiguousarray(g, dtype=y.dtype)
    out = np.empty_like(y)
    k = y.shape[-1] if y.ndim else 1
    softmax_rows_grad(y.reshape(-1, k), g.reshape(-1, k), out.reshape(-1, k))
    return out


def cross_entropy(logits: np.ndarray, target: np.ndarray, ignore_index: int) -> tuple[float, np.ndarray, int]:
    """Summed loss, softmax probabilities, and the number of counted (non-ignored) positions."""
    x = np.ascontiguousarray(logits)
    k = x.shape[-1]
    t = np.ascontiguousarray(target, dtype=np.int64).reshape(-1)
    prob = np.empty_like(x)
    total = cross_entropy_rows(x.reshape(-1, k), t, int(ignore_index), prob.reshape(-1, k))
    return float(total), prob, int(np.count_nonzero(t != ignore_index))
