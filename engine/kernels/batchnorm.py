"""Batch-normalisation kernels over a ``(N, C, S)`` array: statistics per channel c, taken over
the N examples and the S positions of each (S = 1 for feature vectors, H·W for images).

- :func:`batchnorm_stats`: per-channel mean and biased variance of a batch.
- :func:`batchnorm_apply`: ``x̂ = (x − μ) r`` with ``r = 1/√(σ² + eps)`` given per channel (the
  batch's statistics while training, the running ones in evaluation), ``out = γ x̂ + β``.
- :func:`batchnorm_grad`: with ``M = N·S`` values per channel,
  training (the statistics depend on x): ``dx = γ r (g − mean(g) − x̂ mean(g x̂))``;
  evaluation (fixed statistics): ``dx = γ r g``; both ``dγ = Σ g x̂``, ``dβ = Σ g``.

Sums are accumulated in float64 by the Numba kernels even for float32 data; the numpy twins use
numpy's own (pairwise float32) sums; both stay well inside float32 rounding of each other.
"""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import kernel


def batchnorm_stats_np(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> None:
    mean[:] = x.mean(axis=(0, 2))
    var[:] = ((x - mean[None, :, None]) ** 2).mean(axis=(0, 2))


@kernel(batchnorm_stats_np)
def batchnorm_stats(x, mean, var):
    n, c, s = x.shape
    inv = 1.0 / (n * s)
    for ch in range(c):
        total = 0.0
        for i in range(n):
            for j in range(s):
                total += x[i, ch, j]
        mu = total * inv
        v = 0.0
        for i in range(n):
            for j in range(s):
                d = x[i, ch, j] - mu
                v += d * d
        mean[ch] = mu
        var[ch] = v * inv


def batchnorm_apply_np(x: np.ndarray, mean: np.ndarray, rstd: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                       out: np.ndarray, xhat: np.ndarray) -> None:
    xhat[:] = (x - mean[None, :, None]) * rstd[None, :, None]
    out[:] = xhat * gamma[None, :, None] + beta[None, :, None]


@kernel(batchnorm_apply_np)
def batchnorm_apply(x, mean, rstd, gamma, beta, out, xhat):
    n, c, s = x.shape
    for i in range(n):
        for ch in range(c):
            mu, r, g, b = mean[ch], rstd[ch], gamma[ch], beta[ch]
            for j in range(s):
                h = (x[i, ch, j] - mu) * r
                xhat[i, ch, j] = h
                out[i, ch, j] = h * g + b


def batchnorm_grad_np(xhat: np.ndarray, rstd: np.ndarray, gamma: np.ndarray, g: np.ndarray, batch_stats: bool,
                      dx: np.ndarray, dgamma: np.ndarray, dbeta: np.ndarray) -> None:
    dbeta[:] = g.sum(axis=(0, 2))
    dgamma[:] = (g * xhat).sum(axis=(0, 2))
    k = (gamma * rstd)[None, :, None]
    if batch_stats:
        m = xhat.shape[0] * xhat.shape[2]
        dx[:] = k * (g - (dbeta / m)[None, :, None] - xhat * (dgamma / m)[None, :, None])
    else:
        dx[:] = k * g


@kernel(batchnorm_grad_np)
def batchnorm_grad(xhat, rstd, gamma, g, batch_stats, dx, dgamma, dbeta):
    n, c, s = xhat.shape
    inv = 1.0 / (n * s)
    for ch in range(c):
        sg = 0.0
        sgx = 0.0
        for i in range(n):
            for j in range(s):
                sg += g[i, ch, j]
                sgx += g[i, ch, j] * xhat[i, ch, j]
        dbeta[ch] = sg
        dgamma[ch] = sgx
        k = gamma[ch] * rstd[ch]
        if batch_stats:
            m1 = sg * inv
            m2 = sgx * inv
            for i in range(n):
                for j in range(s):
                    dx[i, ch, j] = k * (g[i, ch, j] - m1 - xhat[i, ch, j] * m2)
        else:
            for i in range(n):
                for j in range(s):
                    dx[i, ch, j] = k * g[i, ch, j]


# --- wrappers -------------------------------------------------------------------------------------


def _as3(x: np.ndarray) -> np.ndarray:
    """(N, C, ...) → contiguous (N, C, S)."""
    x = np.ascontiguousarray(x)
    return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mean, biased variance)`` of x (N, C, ...), in x's dtype."""
    x3 = _as3(x)
    mean = np.zeros(x3.shape[1], x3.dtype)
    var = np.zeros(x3.shape[1], x3.dtype)
    if x3.size:
        batchnorm_stats(x3, mean, var)
    return mean, var


def apply(x: np.ndarray, mean: np.ndarray, rstd: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(out, xhat)`` for x (N, C, ...) normalised per channel with the given mean and 1/σ."""
    x3 = _as3(x)
    dt = x3.dtype
    out = np.empty_like(x3)
    xhat = np.empty_like(x3)
    if x3.size:
        batchnorm_apply(x3, *(np.ascontiguousarray(a, dtype=dt) for a in (mean, rstd, gamma, beta)), out, xhat)
    return out.reshape(np.shape(x)), xhat.reshape(np.shape(x))


def grad(xhat: np.ndarray, rstd: np.ndarray, gamma: np.ndarray, g: np.ndarray, batch_stats: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)``; ``batch_stats``: the forward used the batch's own statistics."""
    shape = np.shape(xhat)
    x3 = _as3(xhat)
    dt = x3.dtype
    g3 = _as3(np.asarray(g, dtype=dt))
    dx = np.empty_like(x3)
    dgamma = np.zeros(x3.shape[1], dt)
    dbeta = np.zeros(x3.shape[1], dt)
    if x3.size:
        batchnorm_grad(x3, np.ascontiguousarray(rstd, dtype=dt), np.ascontiguousarray(gamma, dtype=dt), g3,
                       bool(batch_stats), dx, dgamma, dbeta)
    return dx.reshape(shape), dgamma, dbeta
