"""The attention core, fused: scores, (causal) masked softmax and A·V, and its VJP.

The kernels read the heads straight out of the projections, as the block computes them: ``q``
(B, Lq, ·) holds head h of the queries in columns ``qo + h·dh … qo + (h+1)·dh`` (``k`` and ``v``
likewise with their own offsets; for self-attention all three are the one (B, L, 3d) product
x [Wq Wk Wv]), and the output ``o`` (B, Lq, heads·dh) is written with the heads already
concatenated. Each head's block is a strided matrix whose rows are contiguous, which BLAS takes
as it is (its leading dimension), so no head is ever copied out or back in. The attention
weights ``a`` are (B·heads, Lq, Lk). The backward kernel writes dq, dk and dv into the same
layouts (for self-attention the one (B, L, 3d) gradient of the fused projection).

Causal masking hides key j from query i when j > i (−∞ above the diagonal), which is what
``torch.triu(ones(Lq, Lk), 1)`` as an attention mask does; the kernels take it as ``first``, the
position of query 0 among the keys (0 for a whole sequence; −1 means not causal), so that the
queries of new tokens can attend to cached keys (generation with a key/value cache). A key-padding mask ``keep`` (B, Lk)
hides key j of sequence b from every query when ``keep[b, j]`` is 0 (torch's
``key_padding_mask`` is its negation). A query that sees no key at all (every key hidden) gets an
attention row of zeros, so its output is 0 and no gradient flows through it (torch gives NaN).
"""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import kernel
from engine.kernels.blas import product
from engine.kernels.vecmath import exp, minus_inf, one as _one


def _causal_mask(lq: int, lk: int, first: int = 0) -> np.ndarray:
    return np.triu(np.ones((lq, lk), dtype=bool), 1 + first)


def _heads_np(t: np.ndarray, off: int, heads: int, dh: int) -> np.ndarray:
    """(B, L, ·) with heads in columns off … → (B·heads, L, dh)."""
    B, L = t.shape[:2]
    return t[:, :, off:off + heads * dh].reshape(B, L, heads, dh).transpose(0, 2, 1, 3).reshape(B * heads, L, dh)


def _merge_np(t: np.ndarray, heads: int) -> np.ndarray:
    """(B·heads, L, dh) → (B, L, heads·dh)."""
    n, L, dh = t.shape
    return t.reshape(n // heads, heads, L, dh).transpose(0, 2, 1, 3).reshape(n // heads, L, heads * dh)


def attention_core_np(q, qo, k, ko, v, vo, heads, scale, first, keep, a, o):
    """Fills ``a`` (B·heads, Lq, Lk) with softmax(q kᵀ · scale [masked]) per head and ``o``
    (B, Lq, heads·dh) with a v. ``keep`` (B, Lk): key j of sequence b is hidden where
    ``keep[b, j]`` is 0; an empty ``keep`` (size 0) means no mask."""
    n, lq, lk = a.shape
    dh = o.shape[2] // heads
    qh, kh, vh = _heads_np(q, qo, heads, dh), _heads_np(k, ko, heads, dh), _heads_np(v, vo, heads, dh)
    s = np.matmul(qh, np.swapaxes(kh, -1, -2)) * scale
    if not keep.size:  # no mask
        keep = np.ones((n // max(heads, 1), lk), np.bool_)
    hidden = np.broadcast_to(np.repeat(keep == 0, heads, axis=0)[:, None, :], s.shape)
    if first >= 0:
        hidden = hidden | _causal_mask(lq, lk, first)
    s = np.where(hidden, -np.inf, s)
    seen = ~hidden.all(axis=-1, keepdims=True)  # rows with at least one key to look at
    s = s - np.where(seen, s.max(axis=-1, keepdims=True, initial=-np.inf), 0)
    e = np.exp(s)
    a[...] = np.where(seen, e / np.where(seen, e.sum(axis=-1, keepdims=True), 1), 0)
    o[...] = _merge_np(np.matmul(a, vh), heads)


@kernel(attention_core_np)
def attention_core(q, qo, k, ko, v, vo, heads, scale, first, keep, a, o):
    n, lq, lk = a.shape
    dh = o.shape[2] // heads
    masked = keep.size > 0  # an empty keep means no mask
    one = _one(a)
    zero = one - one
    lowest = minus_inf(a)
    isz = a.itemsize
    # Heads are addressed in place (see the module docstring): a head's block starts at the
    # address of its first element and its rows are one row stride apart.
    lq_, lk_, lv_, lo_ = q.strides[1] // isz, k.strides[1] // isz, v.strides[1] // isz, o.strides[1] // isz
    for i in range(n):
        b = i // heads
        h = i - b * heads
        ai = a[i]
        qa = q.ctypes.data + b * q.strides[0] + (qo + h * dh) * isz
        ka = k.ctypes.data + b * k.strides[0] + (ko + h * dh) * isz
        va = v.ctypes.data + b * v.strides[0] + (vo + h * dh) * isz
        oa = o.ctypes.data + b * o.strides[0] + h * dh * isz
        product(False, True, lq, lk, dh, qa, lq_, ka, lk_, 0.0, ai.ctypes.data, lk, isz)  # raw scores q kᵀ
        for r in range(lq):
            # Keys after the query (causal) and padding keys are masked: probability exactly 0.
            stop = min(r + 1 + first, lk) if first >= 0 else lk
            row = ai[r]
            # NOTE: selects, not branches, in the loops over keys: they vectorise.
            m = lowest
            seen = 0
            if masked:
                for j in range(stop):
                    m = max(m, row[j] if keep[b, j] else lowest)
                    seen += keep[b, j] != 0
            else:
                for j in range(stop):
                    m = max(m, row[j])
                seen = stop
            if seen == 0:  # no key to look at: the row stays 0 (a NaN or ±∞ score still shows)
                m = zero
            total = zero
            if masked:
                for j in range(stop):
                    e = exp((row[j] - m) * scale)
                    e = e if keep[b, j] else zero
                    row[j] = e
                    total += e
            else:
                for j in range(stop):
                    e = exp((row[j] - m) * scale)
                    row[j] = e
                    total += e
            inv = one / total if seen else zero  # NaN in, NaN out
            for j in range(stop):
                row[j] *= inv
            for j in range(stop, lk):
                row[j] = zero
        product(False, False, lq, dh, lk, ai.ctypes.data, lk, va, lv_, 0.0, oa, lo_, isz)  # A v


def attention_core_grad_np(q, qo, k, ko, v, vo, heads, scale, a, go, dq, dk, dv):
    """VJP of :func:`attention_core_np` given the upstream gradient ``go`` of ``o``; writes the
    heads' columns of ``dq``, ``dk``, ``dv`` (the same layouts as q, k, v; may be one array).

    dA = go vᵀ;  dv = Aᵀ go;  dS = A ⊙ (dA − Σ_j dA ⊙ A) · scale;  dq = dS k;  dk = dSᵀ q.
    Masked entries have A = 0, so they send no gradient."""
    dh = go.shape[2] // heads
    qh, kh, vh = _heads_np(q, qo, heads, dh), _heads_np(k, ko, heads, dh), _heads_np(v, vo, heads, dh)
    goh = _heads_np(go, 0, heads, dh)
    da = np.matmul(goh, np.swapaxes(vh, -1, -2))
    ds = a * (da - (da * a).sum(axis=-1, keepdims=True)) * scale
    w = heads * dh
    dv[:, :, vo:vo + w] = _merge_np(np.matmul(np.swapaxes(a, -1, -2), goh), heads)
    dq[:, :, qo:qo + w] = _merge_np(np.matmul(ds, kh), heads)
    dk[:, :, ko:ko + w] = _merge_np(np.matmul(np.swapaxes(ds, -1, -2), qh), heads)


@kernel(attention_core_grad_np)
def attention_core_grad(q, qo, k, ko, v, vo, heads, scale, a, go, dq, dk, dv):
    n, lq, lk = a.shape
    dh = go.shape[2] // heads
    isz = a.itemsize
    da = np.empty((lq, lk), a.dtype)
    dap = da.ctypes.data
    lq_, lk_, lv_, lg_ = q.strides[1] // isz, k.strides[1] // isz, v.strides[1] // isz, go.strides[1] // isz
    ldq, ldk, ldv = dq.strides[1] // isz, dk.strides[1] // isz, dv.strides[1] // isz
    for i in range(n):
        b = i // heads
        h = i - b * heads
        ai = a[i]
        aip = ai.ctypes.data
        qa = q.ctypes.data + b * q.strides[0] + (qo + h * dh) * isz
        ka = k.ctypes.data + b * k.strides[0] + (ko + h * dh) * isz
        va = v.ctypes.data + b * v.strides[0] + (vo + h * dh) * isz
        ga = go.ctypes.data + b * go.strides[0] + h * dh * isz
        dqa = dq.ctypes.data + b * dq.strides[0] + (qo + h * dh) * isz
        dka = dk.ctypes.data + b * dk.strides[0] + (ko + h * dh) * isz
        dva = dv.ctypes.data + b * dv.strides[0] + (vo + h * dh) * isz
        product(False, True, lq, lk, dh, ga, lg_, va, lv_, 0.0, dap, lk, isz)  # dA = go vᵀ
        product(True, False, lk, dh, lq, aip, lk, ga, lg_, 0.0, dva, ldv, isz)  # dv = Aᵀ go
        for r in range(lq):
            row = ai[r]
            drow = da[r]
            d = scale - scale
            for j in range(lk):
                d += drow[j] * row[j]
            for j in range(lk):
                drow[j] = row[j] * (drow[j] - d) * scale
        product(False, False, lq, dh, lk, dap, lk, ka, lk_, 0.0, dqa, ldq, isz)  # dq = dS k
        product(True, False, lk, dh, lq, dap, lk, qa, lq_, 0.0, dka, ldk, isz)  # dk = dSᵀ q


# --- wrappers -------------------------------------------------------------------------------


_SCALES: dict[tuple[int, str], np.generic] = {}
#: "no key-padding mask" (size 0; never written)
_NO_KEEP = np.zeros((0, 0), np.bool_)


def _scale(dh: int, dtype: np.dtype) -> np.generic:
    """1/√dh in ``dtype`` (1 for zero-width heads), worked out once per width and dtype."""
    key = (dh, dtype.char)
    s = _SCALES.get(key)
    if s is None:
        s = _SCALES[key] = dtype.type(1.0 / math.sqrt(dh)) if dh else dtype.type(1.0)
    return s


def attend(q: np.ndarray, qo: int, k: np.ndarray, ko: int, v: np.ndarray, vo: int, heads: int, width: int,
           causal: bool, keep: np.ndarray | None = None, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(a, o)``: attention of the ``heads`` heads of width ``width / heads`` found in the
    columns ``qo …`` of ``q`` (B, Lq, ·), ``ko …`` of ``k`` and ``vo …`` of ``v`` (B, Lk, ·);
    ``a`` (B·heads, Lq, Lk), ``o`` (B, Lq, width); scale 1/√dh. ``keep`` (B, Lk): nonzero where
    a key may be attended to (None: all). ``causal`` with ``first``: query i sees keys ≤ first + i
    (the queries are the keys ``first`` … of the sequence). Arrays must be C-contiguous in
    ``q``'s dtype."""
    dtype = q.dtype
    B, lq = q.shape[:2]
    lk = k.shape[1]
    dh = width // heads
    keep = _NO_KEEP if keep is None else np.ascontiguousarray(keep != 0)
    a = np.empty((B * heads, lq, lk), dtype)
    o = np.empty((B, lq, width), dtype)
    # Empty sizes (no keys, zero-width heads) take the numpy twin, which handles them exactly.
    core = attention_core if B * lq * lk * dh else attention_core_np
    core(q, int(qo), k, int(ko), v, int(vo), int(heads), _scale(dh, dtype), int(first) if causal else -1, keep, a, o)
    return a, o


def attend_grad(q: np.ndarray, qo: int, k: np.ndarray, ko: int, v: np.ndarray, vo: int, heads: int, a: np.ndarray,
                go: np.ndarray, dq: np.ndarray, dk: np.ndarray, dv: np.ndarray) -> None:
    """Writes the gradients of the heads' columns of ``q``, ``k``, ``v`` (see :func:`attend`)
    into ``dq``, ``dk``, ``dv`` (the same shapes; they may be one array) given the saved ``a``
    and the gradient ``go`` (B, Lq, width) of ``o``."""
    dtype = q.dtype
    B, lq, width = go.shape
    dh = width // heads
    core = attention_core_grad if B * lq * k.shape[1] * dh else attention_core_grad_np
    core(q, int(qo), k, int(ko), v, int(vo), int(heads), _scale(dh, dtype), a, go, dq, dk, dv)


def forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool, keep: np.ndarray | None = None,
            heads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(a, o)`` for head-major ``q`` (N, Lq, dh), ``k``, ``v`` (N, Lk, dh), N = B·heads, with
    ``keep`` (B, Lk) (None: no mask): each head as a batch entry of its own."""
    dtype = q.dtype
    q, k, v = (np.ascontiguousarray(t, dtype=dtype) for t in (q, k, v))
    if keep is not None:
        keep = np.repeat(np.asarray(keep) != 0, heads, axis=0)
    return attend(q, 0, k, 0, v, 0, 1, q.shape[2], causal, keep)


def backward(q: np.ndarray, k: np.ndarray, v: np.ndarray, a: np.ndarray, go: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dq, dk, dv)`` given the saved head-major ``q, k, v, a`` and the gradient ``go`` of ``o``."""
    dtype = q.dtype
    q, k, v, a = (np.ascontiguousarray(t, dtype=dtype) for t in (q, k, v, a))
    go = np.ascontiguousarray(go, dtype=dtype)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    attend_grad(q, 0, k, 0, v, 0, 1, a, go, dq, dk, dv)
    return dq, dk, dv
