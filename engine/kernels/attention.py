"""The attention core, fused: scores, (causal) masked softmax and A·V, and its VJP.

Arrays are head-major and contiguous: ``q`` (N, Lq, dh), ``k`` and ``v`` (N, Lk, dh) with
N = batch·heads. The projections (x Wq + bq, ...) and the head split/merge stay in the block,
where one big BLAS call per projection is fastest; these kernels do the per-head work that
numpy would otherwise spread over several temporaries of shape (N, Lq, Lk).

Causal masking hides key j from query i when j > i (−∞ above the diagonal), which is what
``torch.triu(ones(Lq, Lk), 1)`` as an attention mask does. A key-padding mask ``keep`` (B, Lk)
hides key j of sequence b from every query when ``keep[b, j]`` is 0 (torch's
``key_padding_mask`` is its negation). A query that sees no key at all (every key hidden) gets an
attention row of zeros, so its output is 0 and no gradient flows through it (torch gives NaN).
"""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import kernel
from engine.kernels.blas import gemm
from engine.kernels.vecmath import exp, minus_inf, one as _one


def _causal_mask(lq: int, lk: int) -> np.ndarray:
    return np.triu(np.ones((lq, lk), dtype=bool), 1)


def attention_core_np(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, causal: bool, keep: np.ndarray,
                      heads: int, a: np.ndarray, o: np.ndarray) -> None:
    """Fills ``a`` (N, Lq, Lk) with softmax(q kᵀ · scale [masked]) and ``o`` (N, Lq, dh) with a v.
    ``keep`` (B, Lk), N = B·heads: key j of row n is hidden where ``keep[n // heads, j]`` is 0;
    an empty ``keep`` (size 0) means no mask."""
    n, lq, lk = a.shape
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if not keep.size:  # no mask
        keep = np.ones((n // max(heads, 1), lk), np.bool_)
    hidden = np.broadcast_to(np.repeat(keep == 0, heads, axis=0)[:, None, :], s.shape)
    if causal:
        hidden = hidden | _causal_mask(lq, lk)
    s = np.where(hidden, -np.inf, s)
    seen = ~hidden.all(axis=-1, keepdims=True)  # rows with at least one key to look at
    s = s - np.where(seen, s.max(axis=-1, keepdims=True, initial=-np.inf), 0)
    e = np.exp(s)
    a[...] = np.where(seen, e / np.where(seen, e.sum(axis=-1, keepdims=True), 1), 0)
    o[...] = np.matmul(a, v)


@kernel(attention_core_np)
def attention_core(q, k, v, scale, causal, keep, heads, a, o):
    n, lq, _ = q.shape
    lk = k.shape[1]
    masked = keep.size > 0  # an empty keep means no mask
    one = _one(a)
    zero = one - one
    lowest = minus_inf(a)
    for i in range(n):
        gemm(q[i], k[i], a[i], False, True, 0.0)  # raw scores q kᵀ, into a[i]
        b = i // heads
        for r in range(lq):
            # Keys after the query (causal) and padding keys are masked: probability exactly 0.
            stop = min(r + 1, lk) if causal else lk
            # NOTE: selects, not branches, in the loops over keys: they vectorise.
            m = lowest
            seen = 0
            if masked:
                for j in range(stop):
                    m = max(m, a[i, r, j] if keep[b, j] else lowest)
                    seen += keep[b, j] != 0
            else:
                for j in range(stop):
                    m = max(m, a[i, r, j])
                seen = stop
            if seen == 0:  # no key to look at: the row stays 0 (a NaN or ±∞ score still shows)
                m = zero
            total = zero
            if masked:
                for j in range(stop):
                    e = exp((a[i, r, j] - m) * scale)
                    e = e if keep[b, j] else zero
                    a[i, r, j] = e
                    total += e
            else:
                for j in range(stop):
                    e = exp((a[i, r, j] - m) * scale)
                    a[i, r, j] = e
                    total += e
            inv = one / total if seen else zero  # NaN in, NaN out
            for j in range(stop):
                a[i, r, j] *= inv
            for j in range(stop, lk):
                a[i, r, j] = zero
        gemm(a[i], v[i], o[i], False, False, 0.0)


def attention_core_grad_np(q: np.ndarray, k: np.ndarray, v: np.ndarray, a: np.ndarray, go: np.ndarray, scale: float,
                           dq: np.ndarray, dk: np.ndarray, dv: np.ndarray) -> None:
    """VJP of :func:`attention_core_np` given the upstream gradient ``go`` of ``o``.

    dA = go vᵀ;  dv = Aᵀ go;  dS = A ⊙ (dA − Σ_j dA ⊙ A) · scale;  dq = dS k;  dk = dSᵀ q.
    Masked entries have A = 0, so they send no gradient."""
    da = np.matmul(go, np.swapaxes(v, -1, -2))
    dv[...] = np.matmul(np.swapaxes(a, -1, -2), go)
    ds = a * (da - (da * a).sum(axis=-1, keepdims=True)) * scale
    dq[...] = np.matmul(ds, k)
    dk[...] = np.matmul(np.swapaxes(ds, -1, -2), q)


@kernel(attention_core_grad_np)
def attention_core_grad(q, k, v, a, go, scale, dq, dk, dv):
    n, lq, _ = q.shape
    lk = k.shape[1]
    da = np.empty((lq, lk), q.dtype)
    for i in range(n):
        gemm(go[i], v[i], da, False, True, 0.0)  # dA = go vᵀ
        gemm(a[i], go[i], dv[i], True, False, 0.0)  # dv = Aᵀ go
        for r in range(lq):
            d = scale - scale
            for j in range(lk):
                d += da[r, j] * a[i, r, j]
            for j in range(lk):
                da[r, j] = a[i, r, j] * (da[r, j] - d) * scale
        gemm(da, k[i], dq[i], False, False, 0.0)  # dq = dS k
        gemm(da, q[i], dk[i], True, False, 0.0)  # dk = dSᵀ q


# --- wrappers -------------------------------------------------------------------------------


def forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool, keep: np.ndarray | None = None,
            heads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(a, o)`` for head-major ``q`` (N, Lq, dh), ``k``, ``v`` (N, Lk, dh); scale 1/√dh.
    ``keep`` (B, Lk) with N = B·heads: nonzero where a key may be attended to (None: all)."""
    dtype = q.dtype
    q = np.ascontiguousarray(q)
    k = np.ascontiguousarray(k, dtype=dtype)
    v = np.ascontiguousarray(v, dtype=dtype)
    n, lq, dh = q.shape
    lk = k.shape[1]
    keep = np.zeros((0, 0), np.bool_) if keep is None else np.ascontiguousarray(keep != 0)
    a = np.empty((n, lq, lk), dtype)
    o = np.empty((n, lq, dh), dtype)
    scale = dtype.type(1.0 / math.sqrt(dh)) if dh else dtype.type(1.0)
    # Empty sizes (no keys, zero-width heads) take the numpy twin, which handles them exactly.
    core = attention_core if n * lq * lk * dh else attention_core_np
    core(q, k, v, scale, bool(causal), keep, int(heads), a, o)
    return a, o


def backward(q: np.ndarray, k: np.ndarray, v: np.ndarray, a: np.ndarray, go: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dq, dk, dv)`` given the saved ``q, k, v, a`` and the gradient ``go`` of ``o``."""
    dtype = q.dtype
    q, k, v, a = (np.ascontiguousarray(t, dtype=dtype) for t in (q, k, v, a))
    go = np.ascontiguousarray(go, dtype=dtype)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    n, lq, dh = q.shape
    core = attention_core_grad if n * lq * k.shape[1] * dh else attention_core_grad_np
    core(q, k, v, a, go, dtype.type(1.0 / math.sqrt(dh)) if dh else dtype.type(1.0), dq, dk, dv)
    return dq, dk, dv
