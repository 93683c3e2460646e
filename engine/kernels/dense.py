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
from engine.kernels.blas import gemm, product

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


# --- several maps of one input, side by side (attention's Q, K, V projections) -------------------
#
# ``out = x [W₀ W₁ …] + [b₀ b₁ …]`` without concatenating the weights (a copy of every weight per
# call, then a copy of each weight's gradient out of the fused one): each product writes its own
# columns of ``out`` and each weight's gradient is its own product. ``ws`` and ``bs`` are tuples
# (one kernel signature per count of maps); an empty bias adds nothing.


def linears_fwd_np(x, ws, bs, out):
    np.matmul(x, np.concatenate(ws, axis=1), out=out)
    c = 0
    for w, b in zip(ws, bs):
        k = w.shape[1]
        if b.size:
            out[:, c:c + k] += b
        c += k


@kernel(linears_fwd_np)
def linears_fwd(x, ws, bs, out):
    n, d_in = x.shape
    ld = out.shape[1]
    isz = out.itemsize
    c = 0
    for i in range(len(ws)):
        w = ws[i]
        b = bs[i]
        k = w.shape[1]
        product(False, False, n, k, d_in, x.ctypes.data, max(d_in, 1), w.ctypes.data, max(k, 1), 0.0,
                out.ctypes.data + c * isz, max(ld, 1), isz)
        if b.size:
            for r in range(n):
                for j in range(k):
                    out[r, c + j] += b[j]
        c += k


def linears_bwd_np(x, ws, g, dx, dws, dbs):
    np.matmul(g, np.concatenate(ws, axis=1).T, out=dx)
    c = 0
    for w, dw, db in zip(ws, dws, dbs):
        k = w.shape[1]
        np.matmul(x.T, g[:, c:c + k], out=dw)
        if db.size:
            g[:, c:c + k].sum(axis=0, out=db)
        c += k


@kernel(linears_bwd_np)
def linears_bwd(x, ws, g, dx, dws, dbs):
    n, d_in = x.shape
    ld = g.shape[1]
    isz = g.itemsize
    c = 0
    for i in range(len(ws)):
        w = ws[i]
        dw = dws[i]
        db = dbs[i]
        k = w.shape[1]
        ga = g.ctypes.data + c * isz
        # dx = Σ_i g_i W_iᵀ (the first product overwrites dx, the others add to it)
        product(False, True, n, d_in, k, ga, max(ld, 1), w.ctypes.data, max(k, 1), 0.0 if i == 0 else 1.0,
                dx.ctypes.data, max(d_in, 1), isz)
        product(True, False, d_in, k, n, x.ctypes.data, max(d_in, 1), ga, max(ld, 1), 0.0,
                dw.ctypes.data, max(k, 1), isz)  # dW_i = xᵀ g_i
        if db.size:
            for j in range(k):
                db[j] = 0
            for r in range(n):
                for j in range(k):
                    db[j] += g[r, c + j]
        c += k


# --- wrappers ------------------------------------------------------------------------------------


def _no_bias(dtype: np.dtype) -> np.ndarray:
    return np.empty(0, dtype)


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *, transposed: bool = False) -> np.ndarray:
    """``x W + b`` (or ``x Wᵀ + b`` when ``transposed``) for ``x`` of shape ``(..., d_in)``.

    The result has ``x``'s dtype; ``w`` and ``b`` are cast to it if they differ."""
    x = contiguous(x)
    dt = x.dtype
    w = contiguous(w, dt)
    b = _no_bias(dt) if b is None else contiguous(b, dt)
    d_out = w.shape[0] if transposed else w.shape[1]
    # NOTE: a 2-D x goes in as it is and its result comes out as it is (no views to make).
    flat = x.ndim != 2
    x2 = x.reshape(-1, x.shape[-1]) if flat else x
    out = np.empty((x2.shape[0], d_out), dt)
    if out.size:
        linear_fwd(x2, w, b, bool(transposed), out)
    elif b.size:
        out[...] = 0  # no rows: nothing to compute (BLAS is not asked about empty products)
    return out.reshape(*x.shape[:-1], d_out) if flat else out


def linear_grad(
    x: np.ndarray, w: np.ndarray, g: np.ndarray, *, bias: bool, transposed: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(dx, dW, db)`` of ``out = x W + b`` given the upstream gradient ``g`` (shape of out).

    ``db`` is None when there is no bias."""
    x = contiguous(x)
    dt = x.dtype
    w = contiguous(w, dt)
    g = contiguous(g, dt)
    dx = np.empty_like(x)
    dw = np.empty_like(w)
    db = np.empty(g.shape[-1], dt) if bias else _no_bias(dt)
    if x.size and g.size:
        if x.ndim == 2 and g.ndim == 2:  # no views to make
            linear_bwd(x, w, g, bool(transposed), dx, dw, db)
        else:
            d_in, d_out = x.shape[-1], g.shape[-1]
            linear_bwd(x.reshape(-1, d_in), w, g.reshape(-1, d_out), bool(transposed), dx.reshape(-1, d_in), dw, db)
    else:
        dx[...] = 0
        dw[...] = 0
        db[...] = 0
    return dx, dw, (db if bias else None)


#: :func:`linears` writes each map's columns with a product of its own while the input has at most
#: this many rows per input column (n ≤ d_in): there the copy of the weights that a concatenation
#: costs weighs more than BLAS's packing of the input once per map; beyond, one product of the
#: concatenated weights is faster (benchmarks/bench_transformer.py: B1 L16 d64 against B8 L256 d128).
SPLIT_ROWS_PER_COLUMN = 1


def _split(x: np.ndarray) -> bool:
    return x.shape[0] <= SPLIT_ROWS_PER_COLUMN * x.shape[1]


def linears(x: np.ndarray, ws: tuple[np.ndarray, ...], bs: tuple[np.ndarray | None, ...]) -> np.ndarray:
    """``x [W₀ W₁ …] + [b₀ b₁ …]`` (each ``Wᵢ`` (d_in, kᵢ), ``bᵢ`` (kᵢ,) or None) for ``x`` of
    shape ``(n, d_in)``: the maps' outputs side by side, ``(n, Σ kᵢ)``. Few rows: each map's
    product writes its own columns (no copy of the weights); many: one product of the
    concatenated weights (see :data:`SPLIT_ROWS_PER_COLUMN`). The result has ``x``'s dtype."""
    x = contiguous(x)
    dt = x.dtype
    if not _split(x):
        b = None
        if any(b is not None for b in bs):
            b = np.concatenate([np.zeros(w.shape[1], dt) if b is None else b for w, b in zip(ws, bs)])
        return linear(x, np.concatenate(ws, axis=1), b)
    ws = tuple([contiguous(w, dt) for w in ws])
    bs = tuple([_no_bias(dt) if b is None else contiguous(b, dt) for b in bs])
    out = np.empty((x.shape[0], sum([w.shape[1] for w in ws])), dt)
    if out.size:
        linears_fwd(x, ws, bs, out)
    return out


def linears_grad(x: np.ndarray, ws: tuple[np.ndarray, ...], g: np.ndarray,
                 biases: tuple[bool, ...]) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray | None]]:
    """``(dx, [dW₀, dW₁, …], [db₀, db₁, …])`` of :func:`linears` given the gradient ``g``
    (n, Σ kᵢ) of its output; ``dbᵢ`` is None where ``biases[i]`` is false."""
    x = contiguous(x)
    dt = x.dtype
    if not _split(x):
        dx, dw, db = linear_grad(x, np.concatenate(ws, axis=1), g, bias=any(biases))
        dws, dbs, c = [], [], 0
        for w, b in zip(ws, biases):
            k = w.shape[1]
            dws.append(np.ascontiguousarray(dw[:, c:c + k]))
            dbs.append(db[c:c + k] if b else None)  # type: ignore[index]
            c += k
        return dx, dws, dbs
    ws = tuple([contiguous(w, dt) for w in ws])
    g = contiguous(g, dt)
    dx = np.empty_like(x)
    dws = tuple([np.empty_like(w) for w in ws])
    dbs = tuple([np.empty(w.shape[1], dt) if b else _no_bias(dt) for w, b in zip(ws, biases)])
    if x.size and g.size:
        linears_bwd(x, ws, g, dx, dws, dbs)
    else:
        dx[...] = 0
        for a in (*dws, *dbs):
            a[...] = 0
    return dx, list(dws), [db if b else None for db, b in zip(dbs, biases)]
