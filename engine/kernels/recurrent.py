"""Recurrent cells run over a whole sequence: forward, and back-propagation through time.

One kernel call covers the whole sequence in one direction, so BPTT never returns to Python
between time steps. Arrays are **time-major** here, ``x`` (L, B, d_in), so ``x[t]`` is a
contiguous (B, d_in) block for the per-step matrix products; the block transposes at the edges.

The input projections do not depend on the recurrence, so they are done as one big
(L·B, d_in) @ (d_in, k·h) product before the time loop (forward) or after it (backward, for the
``Wx`` gradient and ``dx``), the way cuDNN and torch do; only ``h @ Wh`` stays inside the loop.

Each backward kernel also returns ``norms[t] = ‖dL/dh_t‖`` (Frobenius norm over the batch) of
the *total* gradient reaching ``h_t``, from its own output and from every later step: the
vanishing / exploding gradient picture the editor draws.

The numpy twins loop over time in Python; they are the oracles the kernels are tested against.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.kernels import contiguous, jit, kernel

#: SimpleRNN activations, by the integer code the kernels take.
ACTIVATIONS = {"tanh": 0, "relu": 1, "sigmoid": 2}


# The scalar helpers take ``one`` (1 in the array's dtype) so float32 stays float32: a Python
# float literal would promote every expression to float64. tanh and σ are written with exp
# because numba's libm tanh call costs ~35 ns per element, exp ~2 ns (measured): that alone
# made the kernels slower than the vectorised numpy twins. Both forms saturate correctly
# (exp → inf gives ±1, 1 and 0); tanh's absolute error is at rounding level.


@jit
def _sigmoid(v, one):
    return one / (one + math.exp(-v))


@jit
def _tanh(v, one):
    two = one + one
    return one - two / (math.exp(two * v) + one)


@jit
def _act(v, act, one):
    if act == 0:
        return _tanh(v, one)
    if act == 1:
        return v if (v > 0 or v != v) else one - one  # a NaN stays visible, as np.maximum does
    return _sigmoid(v, one)


@jit
def _act_grad_from_output(y, act, one):
    if act == 0:
        return one - y * y
    if act == 1:
        return one if y > 0 else one - one
    return y * (one - y)


@jit(fastmath=frozenset({"nsz", "contract"}))
def _exp_row(src, dst, bits):
    """``dst[j] = exp(src[j])`` over a 1-D row, in a form LLVM vectorises.

    Numba calls libm's scalar ``exp`` once per element (no SVML in pip's llvmlite), and the
    LSTM's gates make five per step and unit. In float32 this is Cephes' ``expf``: Cody-Waite
    reduction by ln 2 in two parts, a degree-6 polynomial, then 2ⁿ applied as two factors built
    in the exponent bits of ``bits`` (so the whole range down to subnormals is exact); within
    an ulp of the correctly rounded value, branch-free so the loops run several lanes wide.
    inf, 0 and NaN come out as from ``math.exp``. Float64 keeps ``math.exp``.
    NOTE: no ``reassoc`` here: it would merge the two parts of ln 2 and lose the precision."""
    m = src.shape[0]
    if src.itemsize == 8:
        for j in range(m):
            dst[j] = math.exp(src[j])
        return
    hi = np.float32(88.72283)
    lo = np.float32(-103.97208)
    log2e = np.float32(1.44269504088896341)
    half = np.float32(0.5)
    for j in range(m):
        v = src[j]
        c = hi if v > hi else v
        c = lo if c < lo else c
        n = math.floor(c * log2e + half)
        r = c - n * np.float32(0.693359375)
        r = r - n * np.float32(-2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        dst[j] = p * r * r + r + np.float32(1.0)
        bits[j] = ((np.int32(n) >> np.int32(1)) + np.int32(127)) << np.int32(23)  # 2^(n//2)
    scale = bits.view(np.float32)
    for j in range(m):
        dst[j] *= scale[j]
        v = src[j]
        c = hi if v > hi else v
        c = lo if c < lo else c
        n = np.int32(math.floor(c * log2e + half))
        bits[j] = ((n - (n >> np.int32(1))) + np.int32(127)) << np.int32(23)  # 2^(n − n//2)
    for j in range(m):
        v = src[j]
        e = dst[j] * scale[j]
        e = np.float32(np.inf) if v > hi else e
        e = np.float32(0.0) if v < lo else e
        dst[j] = e if v == v else v


@jit
def _one(x):
    """1 in ``x``'s dtype (so float32 arithmetic stays float32)."""
    return np.ones(1, x.dtype)[0]


@jit
def _column_sums(d):
    """``d.sum(axis=0)`` of a 2-D array, as a loop (an axis reduction costs Numba seconds to compile)."""
    n, k = d.shape
    out = np.zeros(k, d.dtype)
    for r in range(n):
        for j in range(k):
            out[j] += d[r, j]
    return out


@jit
def _input_side(x, Wx, d):
    """``(dx, dWx)`` = ``(d Wxᵀ, xᵀ d)`` for ``d`` (L·B, k·h), the gradient at the gate
    pre-activations: two big products after the time loop instead of one per step."""
    L, B, D = x.shape
    gx = np.empty((L, B, D), x.dtype)
    np.dot(d, Wx.T, gx.reshape(L * B, D))
    gWx = np.empty((D, d.shape[1]), x.dtype)
    np.dot(x.reshape(L * B, D).T, d, gWx)
    return gx, gWx


@jit
def _state_side(h0, seq, d):
    """``dWh = prevᵀ d`` with prev = h0, h_1, …, h_{L−1}, the state each step started from."""
    L, B, H = seq.shape
    prev = np.empty((L, B, H), seq.dtype)
    for i in range(B):
        for j in range(H):
            prev[0, i, j] = h0[i, j]
    for t in range(1, L):
        for i in range(B):
            for j in range(H):
                prev[t, i, j] = seq[t - 1, i, j]
    gWh = np.empty((H, d.shape[1]), seq.dtype)
    np.dot(prev.reshape(L * B, H).T, d, gWh)
    return gWh


def _sigmoid_np(v: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * v))


def _act_np(v: np.ndarray, act: int) -> np.ndarray:
    if act == 0:
        return np.tanh(v)
    if act == 1:
        return np.maximum(v, 0)
    return _sigmoid_np(v)


def _act_grad_np(y: np.ndarray, act: int) -> np.ndarray:
    if act == 0:
        return 1 - y * y
    if act == 1:
        return (y > 0).astype(y.dtype)
    return y * (1 - y)


def _previous_np(h0: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """(L, B, h) states each step started from: h0, h_1, …, h_{L−1}."""
    return np.concatenate([h0[None], seq[:-1]], axis=0)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1])


# --- SimpleRNN: h_t = act(x_t Wx + h_{t−1} Wh + b) ---------------------------------------------


def rnn_forward_np(x, h0, Wx, Wh, b, act):
    L, B, _ = x.shape
    xp = (_flat(x) @ Wx).reshape(L, B, -1) + b
    seq = np.empty((L, B, h0.shape[1]), x.dtype)
    h = h0
    for t in range(L):
        h = _act_np(xp[t] + h @ Wh, act)
        seq[t] = h
    return seq


#: the recurrent twins step through time in Python: ~30x the cost per element of a vectorised twin
PYTHON_LOOP_NS = 300.0


@kernel(rnn_forward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def rnn_forward(x, h0, Wx, Wh, b, act):
    L, B, D = x.shape
    H = h0.shape[1]
    one = _one(x)
    xp = np.empty((L, B, H), x.dtype)
    np.dot(x.reshape(L * B, D), Wx, xp.reshape(L * B, H))
    seq = np.empty((L, B, H), x.dtype)
    z = np.empty((B, H), x.dtype)
    h = h0
    for t in range(L):
        np.dot(h, Wh, z)
        for i in range(B):
            for j in range(H):
                seq[t, i, j] = _act(z[i, j] + xp[t, i, j] + b[j], act, one)
        h = seq[t]
    return seq


def rnn_backward_np(x, h0, seq, Wx, Wh, gseq, glast, act):
    L, B, _ = x.shape
    dA = np.empty_like(seq)
    norms = np.empty(L)
    dh = glast.copy()
    for t in range(L - 1, -1, -1):
        dh = dh + gseq[t]
        norms[t] = np.sqrt(np.sum(np.square(dh, dtype=np.float64)))
        dA[t] = dh * _act_grad_np(seq[t], act)
        dh = dA[t] @ Wh.T
    d = _flat(dA)
    gWh = _flat(_previous_np(h0, seq)).T @ d
    return (d @ Wx.T).reshape(x.shape), dh, _flat(x).T @ d, gWh, d.sum(axis=0), norms


@kernel(rnn_backward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def rnn_backward(x, h0, seq, Wx, Wh, gseq, glast, act):
    L, B, D = x.shape
    H = h0.shape[1]
    one = _one(x)
    dA = np.empty((L, B, H), x.dtype)
    norms = np.empty(L, np.float64)
    dh = glast.copy()
    for t in range(L - 1, -1, -1):
        s = 0.0
        for i in range(B):
            for j in range(H):
                v = dh[i, j] + gseq[t, i, j]
                s += float(v) * float(v)
                dA[t, i, j] = v * _act_grad_from_output(seq[t, i, j], act, one)
        norms[t] = math.sqrt(s)
        np.dot(dA[t], Wh.T, dh)
    d = dA.reshape(L * B, H)
    gx, gWx = _input_side(x, Wx, d)
    return gx, dh, gWx, _state_side(h0, seq, d), _column_sums(d), norms


# --- LSTM: gates i, f, g, o in column blocks of width h -----------------------------------------


def lstm_forward_np(x, h0, c0, Wx, Wh, b):
    L, B, _ = x.shape
    H = h0.shape[1]
    xp = (_flat(x) @ Wx).reshape(L, B, -1) + b
    seq = np.empty((L, B, H), x.dtype)
    cs = np.empty((L, B, H), x.dtype)
    gates = np.empty((L, B, 4 * H), x.dtype)
    h, c = h0, c0
    for t in range(L):
        z = xp[t] + h @ Wh
        i, f, o = _sigmoid_np(z[:, :H]), _sigmoid_np(z[:, H:2 * H]), _sigmoid_np(z[:, 3 * H:])
        g = np.tanh(z[:, 2 * H:3 * H])
        c = f * c + i * g
        h = o * np.tanh(c)
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        seq[t], cs[t] = h, c
    return seq, cs, gates


@kernel(lstm_forward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def lstm_forward(x, h0, c0, Wx, Wh, b):
    L, B, D = x.shape
    H = h0.shape[1]
    one = _one(x)
    xp = np.empty((L, B, 4 * H), x.dtype)
    np.dot(x.reshape(L * B, D), Wx, xp.reshape(L * B, 4 * H))
    seq = np.empty((L, B, H), x.dtype)
    cs = np.empty((L, B, H), x.dtype)
    gates = np.empty((L, B, 4 * H), x.dtype)
    z = np.empty((B, 4 * H), x.dtype)
    # Row buffers: every exp of a step's row goes through one vectorised _exp_row call.
    arg = np.empty(4 * H, x.dtype)
    e = np.empty(4 * H, x.dtype)
    bits = np.empty(4 * H, np.int32)
    two = one + one
    h = h0
    c = c0
    for t in range(L):
        np.dot(h, Wh, z)
        for i in range(B):
            # Row views: 1-D loops over contiguous rows are what LLVM vectorises.
            zr, xr, gr, cr, cn_r, hr = z[i], xp[t, i], gates[t, i], c[i], cs[t, i], seq[t, i]
            # σ(v) = 1 / (1 + e^−v) for i, f, o; tanh(v) = 1 − 2 / (e^2v + 1) for g.
            for j in range(4 * H):
                arg[j] = -(zr[j] + xr[j] + b[j])
            for j in range(2 * H, 3 * H):
                arg[j] = -two * arg[j]
            _exp_row(arg, e, bits)
            for j in range(4 * H):
                gr[j] = one / (one + e[j])
            for j in range(2 * H, 3 * H):
                gr[j] = one - two / (e[j] + one)
            for j in range(H):
                cn = gr[H + j] * cr[j] + gr[j] * gr[2 * H + j]
                cn_r[j] = cn
                arg[j] = two * cn
            _exp_row(arg[:H], e[:H], bits[:H])
            for j in range(H):
                hr[j] = gr[3 * H + j] * (one - two / (e[j] + one))
        h = seq[t]
        c = cs[t]
    return seq, cs, gates


def lstm_backward_np(x, h0, c0, seq, cs, gates, Wx, Wh, gseq, glast, glast_c):
    L, B, _ = x.shape
    H = h0.shape[1]
    dZ = np.empty_like(gates)
    norms = np.empty(L)
    dh, dc = glast.copy(), glast_c.copy()
    cprev_all = _previous_np(c0, cs)
    for t in range(L - 1, -1, -1):
        dh = dh + gseq[t]
        norms[t] = np.sqrt(np.sum(np.square(dh, dtype=np.float64)))
        i, f, g, o = (gates[t, :, k * H:(k + 1) * H] for k in range(4))
        tc = np.tanh(cs[t])
        dc = dc + dh * o * (1 - tc * tc)
        dZ[t] = np.concatenate(
            [dc * g * i * (1 - i), dc * cprev_all[t] * f * (1 - f), dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1
        )
        dc = dc * f
        dh = dZ[t] @ Wh.T
    d = _flat(dZ)
    gWh = _flat(_previous_np(h0, seq)).T @ d
    return (d @ Wx.T).reshape(x.shape), dh, dc, _flat(x).T @ d, gWh, d.sum(axis=0), norms


@kernel(lstm_backward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def lstm_backward(x, h0, c0, seq, cs, gates, Wx, Wh, gseq, glast, glast_c):
    L, B, D = x.shape
    H = h0.shape[1]
    one = _one(x)
    dZ = np.empty((L, B, 4 * H), x.dtype)
    norms = np.empty(L, np.float64)
    dh = glast.copy()
    dc = glast_c.copy()
    two = one + one
    arg = np.empty(H, x.dtype)
    tcs = np.empty(H, x.dtype)
    bits = np.empty(H, np.int32)
    for t in range(L - 1, -1, -1):
        cprev = cs[t - 1] if t > 0 else c0
        s = 0.0
        for i in range(B):
            for j in range(H):
                arg[j] = two * cs[t, i, j]
            _exp_row(arg, tcs, bits)
            for j in range(H):
                dhv = dh[i, j] + gseq[t, i, j]
                s += float(dhv) * float(dhv)
                gi = gates[t, i, j]
                gf = gates[t, i, H + j]
                gg = gates[t, i, 2 * H + j]
                go = gates[t, i, 3 * H + j]
                tc = one - two / (tcs[j] + one)
                dcv = dc[i, j] + dhv * go * (one - tc * tc)
                dZ[t, i, j] = dcv * gg * gi * (one - gi)
                dZ[t, i, H + j] = dcv * cprev[i, j] * gf * (one - gf)
                dZ[t, i, 2 * H + j] = dcv * gi * (one - gg * gg)
                dZ[t, i, 3 * H + j] = dhv * tc * go * (one - go)
                dc[i, j] = dcv * gf
        norms[t] = math.sqrt(s)
        np.dot(dZ[t], Wh.T, dh)
    d = dZ.reshape(L * B, 4 * H)
    gx, gWx = _input_side(x, Wx, d)
    return gx, dh, dc, gWx, _state_side(h0, seq, d), _column_sums(d), norms


# --- GRU (torch's formula): gates r, z, n in column blocks of width h ----------------------------


def gru_forward_np(x, h0, Wx, Wh, bx, bh):
    L, B, _ = x.shape
    H = h0.shape[1]
    xp = (_flat(x) @ Wx).reshape(L, B, -1) + bx
    seq = np.empty((L, B, H), x.dtype)
    gates = np.empty((L, B, 3 * H), x.dtype)
    hns = np.empty((L, B, H), x.dtype)
    h = h0
    for t in range(L):
        hp = h @ Wh + bh
        r = _sigmoid_np(xp[t, :, :H] + hp[:, :H])
        z = _sigmoid_np(xp[t, :, H:2 * H] + hp[:, H:2 * H])
        hn = hp[:, 2 * H:]
        n = np.tanh(xp[t, :, 2 * H:] + r * hn)
        h = (1 - z) * n + z * h
        gates[t] = np.concatenate([r, z, n], axis=1)
        hns[t], seq[t] = hn, h
    return seq, gates, hns


@kernel(gru_forward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def gru_forward(x, h0, Wx, Wh, bx, bh):
    L, B, D = x.shape
    H = h0.shape[1]
    one = _one(x)
    xp = np.empty((L, B, 3 * H), x.dtype)
    np.dot(x.reshape(L * B, D), Wx, xp.reshape(L * B, 3 * H))
    seq = np.empty((L, B, H), x.dtype)
    gates = np.empty((L, B, 3 * H), x.dtype)
    hns = np.empty((L, B, H), x.dtype)
    hp = np.empty((B, 3 * H), x.dtype)
    h = h0
    for t in range(L):
        np.dot(h, Wh, hp)
        for i in range(B):
            for j in range(H):
                r = _sigmoid(xp[t, i, j] + bx[j] + hp[i, j] + bh[j], one)
                z = _sigmoid(xp[t, i, H + j] + bx[H + j] + hp[i, H + j] + bh[H + j], one)
                hn = hp[i, 2 * H + j] + bh[2 * H + j]
                n = _tanh(xp[t, i, 2 * H + j] + bx[2 * H + j] + r * hn, one)
                seq[t, i, j] = (one - z) * n + z * h[i, j]
                gates[t, i, j] = r
                gates[t, i, H + j] = z
                gates[t, i, 2 * H + j] = n
                hns[t, i, j] = hn
        h = seq[t]
    return seq, gates, hns


def gru_backward_np(x, h0, seq, gates, hns, Wx, Wh, gseq, glast):
    L, B, _ = x.shape
    H = h0.shape[1]
    dX = np.empty_like(gates)  # gradient at x Wx + bx, per gate
    dHp = np.empty_like(gates)  # gradient at h Wh + bh, per gate
    norms = np.empty(L)
    prev = _previous_np(h0, seq)
    dh = glast.copy()
    for t in range(L - 1, -1, -1):
        dh = dh + gseq[t]
        norms[t] = np.sqrt(np.sum(np.square(dh, dtype=np.float64)))
        r, z, n = (gates[t, :, k * H:(k + 1) * H] for k in range(3))
        dan = dh * (1 - z) * (1 - n * n)
        dar = dan * hns[t] * r * (1 - r)
        daz = dh * (prev[t] - n) * z * (1 - z)
        dX[t] = np.concatenate([dar, daz, dan], axis=1)
        dHp[t] = np.concatenate([dar, daz, dan * r], axis=1)
        dh = dh * z + dHp[t] @ Wh.T
    dx, dhp = _flat(dX), _flat(dHp)
    return (dx @ Wx.T).reshape(x.shape), dh, _flat(x).T @ dx, _flat(prev).T @ dhp, dx.sum(axis=0), dhp.sum(axis=0), norms


@kernel(gru_backward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def gru_backward(x, h0, seq, gates, hns, Wx, Wh, gseq, glast):
    L, B, D = x.shape
    H = h0.shape[1]
    one = _one(x)
    dX = np.empty((L, B, 3 * H), x.dtype)
    dHp = np.empty((L, B, 3 * H), x.dtype)
    direct = np.empty((B, H), x.dtype)
    norms = np.empty(L, np.float64)
    dh = glast.copy()
    for t in range(L - 1, -1, -1):
        hprev = seq[t - 1] if t > 0 else h0
        s = 0.0
        for i in range(B):
            for j in range(H):
                dhv = dh[i, j] + gseq[t, i, j]
                s += float(dhv) * float(dhv)
                r = gates[t, i, j]
                z = gates[t, i, H + j]
                n = gates[t, i, 2 * H + j]
                dan = dhv * (one - z) * (one - n * n)
                dar = dan * hns[t, i, j] * r * (one - r)
                daz = dhv * (hprev[i, j] - n) * z * (one - z)
                dX[t, i, j] = dar
                dX[t, i, H + j] = daz
                dX[t, i, 2 * H + j] = dan
                dHp[t, i, j] = dar
                dHp[t, i, H + j] = daz
                dHp[t, i, 2 * H + j] = dan * r
                direct[i, j] = dhv * z
        norms[t] = math.sqrt(s)
        np.dot(dHp[t], Wh.T, dh)
        for i in range(B):
            for j in range(H):
                dh[i, j] += direct[i, j]
    dx = dX.reshape(L * B, 3 * H)
    dhp = dHp.reshape(L * B, 3 * H)
    gx, gWx = _input_side(x, Wx, dx)
    return gx, dh, gWx, _state_side(h0, seq, dhp), _column_sums(dx), _column_sums(dhp), norms


# --- wrappers: dtype and contiguity, one interface for every cell -------------------------------

#: Weight names each cell uses (the block adds ``_rev`` for the backward direction).
CELL_WEIGHTS = {"SimpleRNN": ("Wx", "Wh", "b"), "LSTM": ("Wx", "Wh", "b"), "GRU": ("Wx", "Wh", "bx", "bh")}


def _c(a: np.ndarray, dtype: Any) -> np.ndarray:
    return contiguous(a, dtype)


def run_forward(cell: str, activation: str, x: np.ndarray, h0: np.ndarray, c0: np.ndarray | None,
                w: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One direction over time-major ``x`` (L, B, d_in) from ``h0`` (B, h) (and ``c0`` for LSTM).

    ``w`` maps the cell's weight names (without suffix) to arrays. Returns ``seq`` (L, B, h) and
    the state the backward pass needs (including ``c_seq`` (L, B, h) for the LSTM)."""
    dt = x.dtype
    x, h0 = _c(x, dt), _c(h0, dt)
    W = {k: _c(w[k], dt) for k in CELL_WEIGHTS[cell]}
    state: dict[str, np.ndarray] = {"x": x, "h0": h0}
    if cell == "SimpleRNN":
        seq = rnn_forward(x, h0, W["Wx"], W["Wh"], W["b"], ACTIVATIONS[activation])
    elif cell == "LSTM":
        c0 = _c(c0, dt)
        seq, cs, gates = lstm_forward(x, h0, c0, W["Wx"], W["Wh"], W["b"])
        state.update(c0=c0, c_seq=cs, gates=gates)
    else:
        seq, gates, hns = gru_forward(x, h0, W["Wx"], W["Wh"], W["bx"], W["bh"])
        state.update(gates=gates, hns=hns)
    state["seq"] = seq
    return seq, state


def run_backward(cell: str, activation: str, state: dict[str, np.ndarray], w: dict[str, np.ndarray],
                 gseq: np.ndarray, glast: np.ndarray, glast_c: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, np.ndarray], np.ndarray]:
    """BPTT for one direction, in one kernel call.

    Returns ``(dx (L, B, d_in), dh0, dc0 or None, weight grads, norms (L,))``."""
    x = state["x"]
    dt = x.dtype
    W = {k: _c(w[k], dt) for k in CELL_WEIGHTS[cell]}
    gseq, glast = _c(gseq, dt), _c(glast, dt)
    if cell == "SimpleRNN":
        gx, gh0, gWx, gWh, gb, norms = rnn_backward(
            x, state["h0"], state["seq"], W["Wx"], W["Wh"], gseq, glast, ACTIVATIONS[activation])
        return gx, gh0, None, {"Wx": gWx, "Wh": gWh, "b": gb}, norms
    if cell == "LSTM":
        gx, gh0, gc0, gWx, gWh, gb, norms = lstm_backward(
            x, state["h0"], state["c0"], state["seq"], state["c_seq"], state["gates"], W["Wx"], W["Wh"],
            gseq, glast, _c(glast_c, dt))
        return gx, gh0, gc0, {"Wx": gWx, "Wh": gWh, "b": gb}, norms
    gx, gh0, gWx, gWh, gbx, gbh, norms = gru_backward(
        x, state["h0"], state["seq"], state["gates"], state["hns"], W["Wx"], W["Wh"], gseq, glast)
    return gx, gh0, None, {"Wx": gWx, "Wh": gWh, "bx": gbx, "bh": gbh}, norms
