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

from engine.kernels import contiguous, jit, kernel
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


# --- up to three maps of one input, side by side (attention's Q, K, V projections) ----------------
#
# ``out = x [W₀ W₁ W₂] + [b₀ b₁ b₂]`` without concatenating the weights (a copy of every weight per
# call, then a copy of each weight's gradient out of the fused one): each product writes its own
# columns of ``out`` and each weight's gradient is its own product. Three arrays, not a tuple (Numba
# types a tuple argument in Python, ~1 µs a call); an unused map is an empty (d_in, 0) weight, and an
# empty bias adds nothing.


def linears_fwd_np(x, w0, w1, w2, b0, b1, b2, out):
    np.matmul(x, np.concatenate((w0, w1, w2), axis=1), out=out)
    c = 0
    for w, b in ((w0, b0), (w1, b1), (w2, b2)):
        k = w.shape[1]
        if b.size:
            out[:, c:c + k] += b
        c += k


@jit(inline=True)
def _map_fwd(x, w, b, out, c):
    """Columns c … c + k of ``out`` = x w + b; returns c + k."""
    n, d_in = x.shape
    k = w.shape[1]
    isz = out.itemsize
    product(False, False, n, k, d_in, x.ctypes.data, max(d_in, 1), w.ctypes.data, max(k, 1), 0.0,
            out.ctypes.data + c * isz, max(out.shape[1], 1), isz)
    if b.size:
        for r in range(n):
            for j in range(k):
                out[r, c + j] += b[j]
    return c + k


@kernel(linears_fwd_np)
def linears_fwd(x, w0, w1, w2, b0, b1, b2, out):
    c = _map_fwd(x, w0, b0, out, 0)
    c = _map_fwd(x, w1, b1, out, c)
    _map_fwd(x, w2, b2, out, c)


def linears_bwd_np(x, w0, w1, w2, g, dx, dw0, dw1, dw2, db0, db1, db2):
    np.matmul(g, np.concatenate((w0, w1, w2), axis=1).T, out=dx)
    c = 0
    for w, dw, db in ((w0, dw0, db0), (w1, dw1, db1), (w2, dw2, db2)):
        k = w.shape[1]
        np.matmul(x.T, g[:, c:c + k], out=dw)
        if db.size:
            g[:, c:c + k].sum(axis=0, out=db)
        c += k


@jit(inline=True)
def _map_bwd(x, w, g, dx, dw, db, c, beta):
    """The map whose output is columns c … c + k of ``g``'s: dx (beta 0: =, 1: +=) g_c wᵀ,
    dw = xᵀ g_c, db = Σ_rows g_c; returns c + k."""
    n, d_in = x.shape
    k = w.shape[1]
    ld = g.shape[1]
    isz = g.itemsize
    ga = g.ctypes.data + c * isz
    product(False, True, n, d_in, k, ga, max(ld, 1), w.ctypes.data, max(k, 1), beta,
            dx.ctypes.data, max(d_in, 1), isz)
    product(True, False, d_in, k, n, x.ctypes.data, max(d_in, 1), ga, max(ld, 1), 0.0,
            dw.ctypes.data, max(k, 1), isz)
    if db.size:
        for j in range(k):
            db[j] = 0
        for r in range(n):
            for j in range(k):
                db[j] += g[r, c + j]
    return c + k


@kernel(linears_bwd_np)
def linears_bwd(x, w0, w1, w2, g, dx, dw0, dw1, dw2, db0, db1, db2):
    # dx = Σ_i g_i W_iᵀ: the first product overwrites dx, the others add to it
    c = _map_bwd(x, w0, g, dx, dw0, db0, 0, 0.0)
    c = _map_bwd(x, w1, g, dx, dw1, db1, c, 1.0)
    _map_bwd(x, w2, g, dx, dw2, db2, c, 1.0)


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
#: concatenated weights is faster (timed by hand on both paths at n 16…2048, d 64 and 128: the
#: crossover is near n = d_in; the cases that matter are bench_transformer.py's B1 L16 d64, split,
#: and B8 L32…L256 d128, concatenated).
SPLIT_ROWS_PER_COLUMN = 1


def _split(x: np.ndarray) -> bool:
    return x.shape[0] <= SPLIT_ROWS_PER_COLUMN * x.shape[1]


def linears(x: np.ndarray, ws: tuple[np.ndarray, ...], bs: tuple[np.ndarray | None, ...]) -> np.ndarray:
    """``x [W₀ W₁ …] + [b₀ b₁ …]`` (two or three maps: each ``Wᵢ`` (d_in, kᵢ), ``bᵢ`` (kᵢ,) or
    None) for ``x`` of shape ``(n, d_in)``: the maps' outputs side by side, ``(n, Σ kᵢ)``. Few
    rows: each map's product writes its own columns (no copy of the weights); many: one product
    of the concatenated weights (see :data:`SPLIT_ROWS_PER_COLUMN`). The result has ``x``'s dtype."""
    x = contiguous(x)
    dt = x.dtype
    if not _split(x):
        joined = None
        if any(b is not None for b in bs):
            joined = np.concatenate([np.zeros(w.shape[1], dt) if b is None else b for w, b in zip(ws, bs)])
        return linear(x, np.concatenate(ws, axis=1), joined)
    no = _no_bias(dt)
    w0, w1 = contiguous(ws[0], dt), contiguous(ws[1], dt)
    w2 = contiguous(ws[2], dt) if len(ws) == 3 else np.empty((x.shape[1], 0), dt)
    # NOTE: no generators or comprehensions here: each is a call of its own (~0.5 µs at B1)
    b0 = no if bs[0] is None else contiguous(bs[0], dt)
    b1 = no if bs[1] is None else contiguous(bs[1], dt)
    b2 = no if len(bs) < 3 or bs[2] is None else contiguous(bs[2], dt)
    out = np.empty((x.shape[0], w0.shape[1] + w1.shape[1] + w2.shape[1]), dt)
    if out.size:
        linears_fwd(x, w0, w1, w2, b0, b1, b2, out)
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
    count = len(ws)
    if count == 2:
        ws, biases = (*ws, np.empty((x.shape[1], 0), dt)), (*biases, False)
    w0, w1, w2 = contiguous(ws[0], dt), contiguous(ws[1], dt), contiguous(ws[2], dt)
    g = contiguous(g, dt)
    dx = np.empty_like(x)
    dw0, dw1, dw2 = np.empty_like(w0), np.empty_like(w1), np.empty_like(w2)
    no = _no_bias(dt)
    db0 = np.empty(w0.shape[1], dt) if biases[0] else no
    db1 = np.empty(w1.shape[1], dt) if biases[1] else no
    db2 = np.empty(w2.shape[1], dt) if biases[2] else no
    if x.size and g.size:
        linears_bwd(x, w0, w1, w2, g, dx, dw0, dw1, dw2, db0, db1, db2)
    else:
        for a in (dx, dw0, dw1, dw2, db0, db1, db2):
            a[...] = 0
    dbs = [db0 if biases[0] else None, db1 if biases[1] else None, db2 if biases[2] else None]
    return dx, [dw0, dw1, dw2][:count], dbs[:count]
