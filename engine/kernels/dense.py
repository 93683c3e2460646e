"""Fused affine-map kernels: ``out = x W + b`` forward, and ``(dx, dW, db)`` backward in one call.

Kernels work on 2-D row-major arrays (rows = every leading position flattened); the wrappers
reshape ``(..., d_in)`` to ``(n, d_in)`` and back. The matrix products go to numpy's BLAS
through :func:`engine.kernels.blas.gemm`, written straight into the destination: no temporary
and no copy (and at small sizes about twice as fast as Numba's ``np.dot``, which reaches scipy's
BLAS). The bias add and its reduction are fused loops, so no temporary ``(n, d_out)`` array is
made for them either.

NOTE: no ``out[:, :] = array`` and no ``.sum(axis=...)`` in these kernels: each costs Numba
seconds to compile the first time a process meets it (measured in
benchmarks/bench_kernel_cache.py).

``transposed=True`` means the weight is stored ``(d_out, d_in)`` and used as ``Wᵀ``: the layout
of an embedding table scored by GenerateToken (``logits = x Eᵀ + b``), so a tied ``E`` is used
in place with no copy. An absent bias is an empty array (size 0), which keeps one kernel
signature for both cases.
"""

from __future__ import annotations

import numpy as np

from engine.kernels import contiguous, kernel
from engine.kernels.blas import gemm

# ``transposed``: W stored (d_out, d_in) and used as Wᵀ (GenerateToken's E); one kernel either way.


def linear_fwd_np(x: np.ndarray, w: np.ndarray, b: np.ndarray, transposed: bool, out: np.ndarray) -> None:
    np.matmul(x, w.T if transposed else w, out=out)
    if b.size:
        out += b


@kernel(linear_fwd_np)
def linear_fwd(x, w, b, transposed, out):
    gemm(x, w, out, False, transposed, 0.0)
    if b.size:
        n, k = out.shape
        for r in range(n):
            for j in range(k):
                out[r, j] += b[j]


def linear_bwd_np(x: np.ndarray, w: np.ndarray, g: np.ndarray, transposed: bool, dx: np.ndarray, dw: np.ndarray,
                  db: np.ndarray) -> None:
    if transposed:
        np.matmul(g, w, out=dx)
        np.matmul(g.T, x, out=dw)
    else:
        np.matmul(g, w.T, out=dx)
        np.matmul(x.T, g, out=dw)
    if db.size:
        g.sum(axis=0, out=db)


@kernel(linear_bwd_np)
def linear_bwd(x, w, g, transposed, dx, dw, db):
    gemm(g, w, dx, False, not transposed, 0.0)
    if transposed:
        gemm(g, x, dw, True, False, 0.0)
    else:
        gemm(x, g, dw, True, False, 0.0)
    if db.size:
        n, k = g.shape
        # NOTE: serial on purpose: every row adds into the same db (no prange race).
        for j in range(k):
            db[j] = 0
        for r in range(n):
            for j in range(k):
                db[j] += g[r, j]


# --- wrappers ------------------------------------------------------------------------------------


def _no_bias(dtype: np.dtype) -> np.ndarray:
    return np.empty(0, dtype)


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *, transposed: bool = False) -> np.ndarray:
    """``x W + b`` (or ``x Wᵀ + b`` when ``transposed``) for ``x`` of shape ``(..., d_in)``.

    The result has ``x``'s dtype; ``w`` and ``b`` are cast to it if they differ."""
    x = contiguous(x)
    w = contiguous(w, x.dtype)
    b = _no_bias(x.dtype) if b is None else contiguous(b, x.dtype)
    d_in = x.shape[-1]
    d_out = w.shape[0] if transposed else w.shape[1]
    out = np.empty((*x.shape[:-1], d_out), x.dtype)
    if out.size:
        linear_fwd(x.reshape(-1, d_in), w, b, bool(transposed), out.reshape(-1, d_out))
    elif b.size:
        out[...] = 0  # no rows: nothing to compute (BLAS is not asked about empty products)
    return out


def linear_grad(
    x: np.ndarray, w: np.ndarray, g: np.ndarray, *, bias: bool, transposed: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(dx, dW, db)`` of ``out = x W + b`` given the upstream gradient ``g`` (shape of out).

    ``db`` is None when there is no bias."""
    x = contiguous(x)
    w = contiguous(w, x.dtype)
    g = contiguous(g, x.dtype)
    d_in = x.shape[-1]
    d_out = g.shape[-1]
    dx = np.empty_like(x)
    dw = np.empty_like(w)
    db = np.empty(d_out, x.dtype) if bias else _no_bias(x.dtype)
    if x.size and g.size:
        linear_bwd(x.reshape(-1, d_in), w, g.reshape(-1, d_out), bool(transposed), dx.reshape(-1, d_in), dw, db)
    else:
        dx[...] = 0
        dw[...] = 0
        db[...] = 0
    return dx, dw, (db if bias else None)
