"""Fused layer-normalisation kernels over the rows of a 2-D ``(rows, d)`` array.

Forward, per row: ``μ = mean(x)``, ``σ² = mean((x − μ)²)`` (biased, as torch), ``r = 1/√(σ²+eps)``,
``x̂ = (x − μ) r``, ``out = γ ⊙ x̂ + β``. It keeps ``x̂`` and ``r`` for the backward pass.

Backward, per row, with ``ĝ = g ⊙ γ``:
``dx = r (ĝ − mean(ĝ) − x̂ mean(ĝ ⊙ x̂))``, ``dγ = Σ_rows g ⊙ x̂``, ``dβ = Σ_rows g``.

Row statistics are accumulated in float64 by the Numba kernels even for float32 data (the twin
uses numpy's float32 pairwise sums); both stay well inside float32 rounding of each other.
"""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import contiguous, kernel


def layernorm_fwd_np(x: np.ndarray, res: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, out: np.ndarray,
                     xhat: np.ndarray, rstd: np.ndarray) -> None:
    if res.size:
        x = x + res
    mu = x.mean(axis=1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=1, keepdims=True)
    r = 1.0 / np.sqrt(var + eps)
    xhat[:] = xc * r
    rstd[:] = r[:, 0]
    out[:] = xhat * gamma + beta


@kernel(layernorm_fwd_np)
def layernorm_fwd(x, res, gamma, beta, eps, out, xhat, rstd):
    n, d = x.shape
    inv_d = 1.0 / d
    added = res.size > 0
    for i in range(n):
        # The row (plus the residual's, in the data's type: what numpy's x + res gives) goes
        # to xhat first, then is normalised there in place.
        s = 0.0
        if added:
            for j in range(d):
                v = x[i, j] + res[i, j]
                xhat[i, j] = v
                s += v
        else:
            for j in range(d):
                v = x[i, j]
                xhat[i, j] = v
                s += v
        mu = s * inv_d
        v = 0.0
        for j in range(d):
            c = xhat[i, j] - mu
            v += c * c
        r = 1.0 / math.sqrt(v * inv_d + eps)
        rstd[i] = r
        for j in range(d):
            h = (xhat[i, j] - mu) * r
            xhat[i, j] = h
            out[i, j] = h * gamma[j] + beta[j]


def layernorm_bwd_np(xhat: np.ndarray, rstd: np.ndarray, gamma: np.ndarray, g: np.ndarray, dx: np.ndarray, dgamma: np.ndarray, dbeta: np.ndarray) -> None:
    gh = g * gamma
    m1 = gh.mean(axis=1, keepdims=True)
    m2 = (gh * xhat).mean(axis=1, keepdims=True)
    dx[:] = rstd[:, None] * (gh - m1 - xhat * m2)
    dgamma[:] = (g * xhat).sum(axis=0)
    dbeta[:] = g.sum(axis=0)


@kernel(layernorm_bwd_np)
def layernorm_bwd(xhat, rstd, gamma, g, dx, dgamma, dbeta):
    n, d = xhat.shape
    inv_d = 1.0 / d
    for j in range(d):
        dgamma[j] = 0
        dbeta[j] = 0
    # NOTE: serial over rows: dgamma/dbeta are sums over every row (no prange race).
    for i in range(n):
        m1 = 0.0
        m2 = 0.0
        for j in range(d):
            gh = g[i, j] * gamma[j]
            m1 += gh
            m2 += gh * xhat[i, j]
        m1 *= inv_d
        m2 *= inv_d
        r = rstd[i]
        for j in range(d):
            gh = g[i, j] * gamma[j]
            dx[i, j] = r * (gh - m1 - xhat[i, j] * m2)
            dgamma[j] += g[i, j] * xhat[i, j]
            dbeta[j] += g[i, j]


#: "no residual" per dtype (size 0; never written)
_NO_RES: dict[str, np.ndarray] = {}


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float,
              res: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(out, xhat, rstd)`` for ``x`` (plus ``res``, the same shape, when given: a residual
    added in the same pass over the rows) of shape ``(..., d)``; ``rstd`` has shape
    ``x.shape[:-1]``."""
    x = contiguous(x)
    dt = x.dtype
    gamma = contiguous(gamma, dt)
    beta = contiguous(beta, dt)
    if res is None:
        res = _NO_RES.get(dt.char)
        if res is None:
            res = _NO_RES[dt.char] = np.empty((0, 0), dt)
    else:
        res = contiguous(res, dt)
    out = np.empty_like(x)
    xhat = np.empty_like(x)
    rstd = np.empty(x.shape[:-1], dt)
    if x.size:
        # NOTE: eps as the data's scalar type, so float32 stays float32 inside the kernel.
        e = dt.type(eps)
        if x.ndim == 2:  # no views to make
            layernorm_fwd(x, res, gamma, beta, e, out, xhat, rstd)
        else:
            d = x.shape[-1]
            layernorm_fwd(x.reshape(-1, d), res.reshape(-1, d) if res.size else res, gamma, beta, e,
                          out.reshape(-1, d), xhat.reshape(-1, d), rstd.reshape(-1))
    return out, xhat, rstd


def layernorm_grad(xhat: np.ndarray, rstd: np.ndarray, gamma: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dgamma, dbeta)`` from the saved ``xhat``, ``rstd`` and the upstream gradient ``g``."""
    xhat = contiguous(xhat)
    dt = xhat.dtype
    d = xhat.shape[-1]
    rstd = contiguous(rstd, dt)
    gamma = contiguous(gamma, dt)
    g = contiguous(g, dt)
    dx = np.empty_like(xhat)
    dgamma = np.zeros(d, dt)  # the kernel zeroes them too; zeros for an empty x
    dbeta = np.zeros(d, dt)
    if xhat.size:
        if xhat.ndim == 2 and g.ndim == 2:  # no views to make
            layernorm_bwd(xhat, rstd, gamma, g, dx, dgamma, dbeta)
        else:
            layernorm_bwd(xhat.reshape(-1, d), rstd.reshape(-1), gamma, g.reshape(-1, d), dx.reshape(-1, d), dgamma, dbeta)
    return dx, dgamma, dbeta
