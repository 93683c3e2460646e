"""Recurrent cells run over a whole sequence: forward, and back-propagation through time.

One kernel call covers the whole sequence in one direction, so BPTT never returns to Python
between time steps. Arrays are batch-major, ``x`` (B, L, d_in), as the block holds them: no
transposes. A step's rows ``seq[:, t]`` (B, h) are strided, which BLAS takes through its leading
dimension, and the elementwise loops run along each row's contiguous last axis.

The input projections do not depend on the recurrence, so they are done as one big
(B·L, d_in) @ (d_in, k·h) product before the time loop (forward) or after it (backward, for the
``Wx`` and ``Wh`` gradients, the bias gradients and ``dx``), the way cuDNN and torch do (the
LSTM's bias gradient is summed in its backward kernel instead, while each step's rows are in
cache). Those
big products are numpy's, in the wrappers (:func:`run_forward`, :func:`run_backward`), shared by
both backends; the kernels hold only the time loop: ``h @ Wh`` per step (through
:func:`engine.kernels.blas.gemm`, numpy's BLAS, written into the step's own rows) and the gates.
Kernels write into arrays the wrapper allocates: no slice-assignment, no axis sums, no
allocation, which keeps them cheap to compile (benchmarks/README.md).

Each backward kernel also fills ``norms[t] = ‖dL/dh_t‖`` (Frobenius norm over the batch) of the
*total* gradient reaching ``h_t``, from its own output and from every later step: the vanishing
/ exploding gradient picture the editor draws.

The LSTM's forward kernel keeps tanh(c_t), which its backward kernel reads rather than computing
it again, and the backward kernel takes Whᵀ contiguous (made once per pass), so that each step's
``dZ_t @ Whᵀ`` is a plain product rather than a transposed one (~15 % faster at B16 h64,
benchmarks/README.md, issue 13 fifth round).

The numpy twins loop over time in Python; they are the oracles the kernels are tested against.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.kernels import contiguous, kernel
from engine.kernels.blas import block, matrix, product
from engine.kernels.vecmath import exp, one as _one

#: SimpleRNN activations, by the integer code the kernels take.
ACTIVATIONS = {"tanh": 0, "relu": 1, "sigmoid": 2}


# Loops compute σ(v) = 1 / (1 + e^−v) and tanh(v) = 2σ(2v) − 1 with vecmath.exp (which vectorises;
# libm's exp and tanh do not), in loops that write one array each and copy a row they would
# otherwise read and write in the same loop (the previous step's c or h), so that LLVM vectorises
# them (see benchmarks/bench_kernel_facts.py for what that is worth). ``one`` is 1 in the array's dtype so float32 stays float32: a Python
# float literal would promote every expression to float64. Both forms saturate correctly
# (exp → inf gives 0, 1 and ±1); tanh's absolute error is at rounding level.


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


def _norm_np(v: np.ndarray) -> float:
    return float(np.sqrt(np.sum(np.square(v, dtype=np.float64))))


#: the recurrent twins step through time in Python: ~30x the cost per element of a vectorised twin
PYTHON_LOOP_NS = 300.0


# --- SimpleRNN: h_t = act(x_t Wx + h_{t−1} Wh + b) ---------------------------------------------


def rnn_forward_np(h0, Wh, act, seq):
    """``seq`` (B, L, h) holds x_t Wx + b on entry and h_t on return."""
    h = h0
    for t in range(seq.shape[1]):
        seq[:, t] = _act_np(seq[:, t] + h @ Wh, act)
        h = seq[:, t]


@kernel(rnn_forward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def rnn_forward(h0, Wh, act, seq):
    B, L, H = seq.shape
    wp, ldw = matrix(Wh)
    one = _one(seq)
    two = one + one
    zero = one - one
    for t in range(L):
        hp, ldh = matrix(h0) if t == 0 else block(seq, t - 1)
        out, ldo = block(seq, t)
        product(False, False, B, H, H, hp, ldh, wp, ldw, 1.0, out, ldo, seq.itemsize)
        for i in range(B):
            if act == 0:
                for j in range(H):
                    seq[i, t, j] = two / (one + exp(-two * seq[i, t, j])) - one
            elif act == 1:
                for j in range(H):
                    v = seq[i, t, j]
                    seq[i, t, j] = v if (v > zero or v != v) else zero  # a NaN stays visible, as np.maximum
            else:
                for j in range(H):
                    seq[i, t, j] = one / (one + exp(-seq[i, t, j]))


def rnn_backward_np(seq, Wh, gseq, act, dh, dA, norms):
    """``dh`` (B, h) holds dL/dh_L on entry and dL/dh_0 on return; fills ``dA`` (B, L, h), the
    gradient at the pre-activations, and ``norms`` (L,)."""
    for t in range(seq.shape[1] - 1, -1, -1):
        v = dh + gseq[:, t]
        norms[t] = _norm_np(v)
        dA[:, t] = v * _act_grad_np(seq[:, t], act)
        dh[...] = dA[:, t] @ Wh.T


@kernel(rnn_backward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def rnn_backward(seq, Wh, gseq, act, dh, dA, norms):
    B, L, H = seq.shape
    wp, ldw = matrix(Wh)
    hp, ldh = matrix(dh)
    one = _one(seq)
    zero = one - one
    for t in range(L - 1, -1, -1):
        s = 0.0
        for i in range(B):
            for j in range(H):
                dA[i, t, j] = dh[i, j] + gseq[i, t, j]
            for j in range(H):
                s += float(dA[i, t, j]) * float(dA[i, t, j])
            if act == 0:
                for j in range(H):
                    dA[i, t, j] *= one - seq[i, t, j] * seq[i, t, j]
            elif act == 1:
                for j in range(H):
                    dA[i, t, j] = dA[i, t, j] if seq[i, t, j] > zero else zero
            else:
                for j in range(H):
                    dA[i, t, j] *= seq[i, t, j] * (one - seq[i, t, j])
        norms[t] = math.sqrt(s)
        dp, ldd = block(dA, t)
        product(False, True, B, H, H, dp, ldd, wp, ldw, 0.0, hp, ldh, dh.itemsize)


# --- LSTM: gates i, f, g, o in column blocks of width h -----------------------------------------


def lstm_forward_np(h0, c0, Wh, b, gates, cs, tcs, seq):
    """``gates`` (B, L, 4h) holds x_t Wx on entry and the gate values i, f, g, o on return (the
    bias b is added here, in the pass that reads the pre-activations anyway); fills the cell
    states ``cs``, their ``tcs`` = tanh(c_t) (which the backward pass reads instead of computing
    them again) and the outputs ``seq`` (B, L, h)."""
    H = h0.shape[1]
    h, c = h0, c0
    for t in range(gates.shape[1]):
        z = gates[:, t] + h @ Wh + b
        i, f, o = _sigmoid_np(z[:, :H]), _sigmoid_np(z[:, H:2 * H]), _sigmoid_np(z[:, 3 * H:])
        g = np.tanh(z[:, 2 * H:3 * H])
        c = f * c + i * g
        tcs[:, t] = np.tanh(c)
        h = o * tcs[:, t]
        gates[:, t] = np.concatenate([i, f, g, o], axis=1)
        seq[:, t], cs[:, t] = h, c


@kernel(lstm_forward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def lstm_forward(h0, c0, Wh, b, gates, cs, tcs, seq):
    B, L, H = seq.shape
    wp, ldw = matrix(Wh)
    one = _one(seq)
    two = one + one
    # Every gate is σ(scale · z) with scale 2 on the g block, which then becomes 2σ(2z) − 1 = tanh(z).
    # One loop takes two gates per element, i with g and f with o: two independent exp chains
    # per iteration. g's 2σ − 1 is folded into the loop that reads it for c, and tanh(c) into the
    # one that writes h. Measured against the one-gate, one-array loops kept in
    # benchmarks/bench_recurrent_conv.py (--only lstm-loops, issue 13 fifth round); the same
    # fusion tried in the backward kernel's loops (four gates and the bias sum per element) made
    # them slower, so they stay one array per loop.
    scale = np.ones(2 * H, seq.dtype)
    for j in range(H):
        scale[j] = two
    c = np.empty(H, seq.dtype)
    for t in range(L):
        hp, ldh = matrix(h0) if t == 0 else block(seq, t - 1)
        out, ldo = block(gates, t)
        product(False, False, B, 4 * H, H, hp, ldh, wp, ldw, 1.0, out, ldo, seq.itemsize)
        for i in range(B):
            for j in range(2 * H):
                gates[i, t, j] = one / (one + exp(-(gates[i, t, j] + b[j])))
                gates[i, t, 2 * H + j] = one / (one + exp(-scale[j] * (gates[i, t, 2 * H + j] + b[2 * H + j])))
            if t == 0:
                for j in range(H):
                    g = two * gates[i, t, 2 * H + j] - one
                    gates[i, t, 2 * H + j] = g
                    c[j] = gates[i, t, H + j] * c0[i, j] + gates[i, t, j] * g
            else:
                for j in range(H):
                    g = two * gates[i, t, 2 * H + j] - one
                    gates[i, t, 2 * H + j] = g
                    c[j] = gates[i, t, H + j] * cs[i, t - 1, j] + gates[i, t, j] * g
            for j in range(H):
                cs[i, t, j] = c[j]
            for j in range(H):
                tc = two / (one + exp(-two * c[j])) - one
                tcs[i, t, j] = tc
                seq[i, t, j] = gates[i, t, 3 * H + j] * tc


def lstm_backward_np(c0, cs, tcs, gates, WhT, gseq, dh, dc, dZ, db, norms):
    """``dh``, ``dc`` (B, h) hold the gradients at h_L, c_L on entry and at h_0, c_0 on return;
    fills ``dZ`` (B, L, 4h), the gradient at the gate pre-activations, ``db`` (4h,), its sum
    over batch and time (the bias gradient), and ``norms``. ``tcs`` holds tanh(c_t) from the
    forward pass; ``WhT`` is Whᵀ (4h, h), contiguous."""
    H = dh.shape[1]
    for t in range(gates.shape[1] - 1, -1, -1):
        cprev = cs[:, t - 1] if t > 0 else c0
        v = dh + gseq[:, t]
        norms[t] = _norm_np(v)
        i, f, g, o = (gates[:, t, k * H:(k + 1) * H] for k in range(4))
        tc = tcs[:, t]
        dcv = dc + v * o * (1 - tc * tc)
        dZ[:, t] = np.concatenate([dcv * g * i * (1 - i), dcv * cprev * f * (1 - f), dcv * i * (1 - g * g), v * tc * o * (1 - o)], axis=1)
        dc[...] = dcv * f
        dh[...] = dZ[:, t] @ WhT
    db[...] = dZ.sum(axis=(0, 1))


@kernel(lstm_backward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def lstm_backward(c0, cs, tcs, gates, WhT, gseq, dh, dc, dZ, db, norms):
    B, L, H4 = gates.shape
    H = H4 // 4
    wp, ldw = matrix(WhT)
    hp, ldh = matrix(dh)
    one = _one(cs)
    zero = one - one
    v = np.empty(H, cs.dtype)
    cprev = np.empty(H, cs.dtype)
    for j in range(H4):
        db[j] = zero
    for t in range(L - 1, -1, -1):
        s = 0.0
        for i in range(B):
            if t == 0:
                for j in range(H):
                    cprev[j] = c0[i, j]
            else:
                for j in range(H):
                    cprev[j] = cs[i, t - 1, j]
            for j in range(H):
                v[j] = dh[i, j] + gseq[i, t, j]
            for j in range(H):
                s += float(v[j]) * float(v[j])
            for j in range(H):  # dL/dc_t: from c_{t+1}, and through h_t = o tanh(c_t)
                dc[i, j] += v[j] * gates[i, t, 3 * H + j] * (one - tcs[i, t, j] * tcs[i, t, j])
            for j in range(H):
                dZ[i, t, j] = dc[i, j] * gates[i, t, 2 * H + j] * gates[i, t, j] * (one - gates[i, t, j])
            for j in range(H):
                dZ[i, t, H + j] = dc[i, j] * cprev[j] * gates[i, t, H + j] * (one - gates[i, t, H + j])
            for j in range(H):
                dZ[i, t, 2 * H + j] = dc[i, j] * gates[i, t, j] * (one - gates[i, t, 2 * H + j] * gates[i, t, 2 * H + j])
            for j in range(H):
                dZ[i, t, 3 * H + j] = v[j] * tcs[i, t, j] * gates[i, t, 3 * H + j] * (one - gates[i, t, 3 * H + j])
            for j in range(H):
                dc[i, j] *= gates[i, t, H + j]
            for j in range(H4):
                db[j] += dZ[i, t, j]
        norms[t] = math.sqrt(s)
        dp, ldd = block(dZ, t)
        product(False, False, B, H, H4, dp, ldd, wp, ldw, 0.0, hp, ldh, dh.itemsize)


# --- GRU (torch's formula): gates r, z, n in column blocks of width h ----------------------------


def gru_forward_np(h0, Wh, bh, gates, seq, hns):
    """``gates`` (B, L, 3h) holds x_t Wx + bx on entry and the gate values r, z, n on return;
    fills ``seq`` and ``hns`` (B, L, h), the candidate's h_{t−1} Wh_n + bh_n."""
    H = h0.shape[1]
    h = h0
    for t in range(gates.shape[1]):
        xp = gates[:, t]
        hp = h @ Wh + bh
        r = _sigmoid_np(xp[:, :H] + hp[:, :H])
        z = _sigmoid_np(xp[:, H:2 * H] + hp[:, H:2 * H])
        hn = hp[:, 2 * H:]
        n = np.tanh(xp[:, 2 * H:] + r * hn)
        h = (1 - z) * n + z * h
        gates[:, t] = np.concatenate([r, z, n], axis=1)
        hns[:, t], seq[:, t] = hn, h


@kernel(gru_forward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def gru_forward(h0, Wh, bh, gates, seq, hns):
    B, L, H = seq.shape
    one = _one(seq)
    two = one + one
    hp = np.empty((B, 3 * H), seq.dtype)
    wp, ldw = matrix(Wh)
    hpp, ldhp = matrix(hp)
    h = np.empty(H, seq.dtype)
    for t in range(L):
        src, lds = matrix(h0) if t == 0 else block(seq, t - 1)
        product(False, False, B, 3 * H, H, src, lds, wp, ldw, 0.0, hpp, ldhp, seq.itemsize)
        for i in range(B):
            for j in range(2 * H):  # r, z
                gates[i, t, j] = one / (one + exp(-(gates[i, t, j] + (hp[i, j] + bh[j]))))
            for j in range(H):
                hns[i, t, j] = hp[i, 2 * H + j] + bh[2 * H + j]
            for j in range(H):  # n
                gates[i, t, 2 * H + j] = two / (one + exp(-two * (gates[i, t, 2 * H + j] + gates[i, t, j] * hns[i, t, j]))) - one
            if t == 0:
                for j in range(H):
                    h[j] = h0[i, j]
            else:
                for j in range(H):
                    h[j] = seq[i, t - 1, j]
            for j in range(H):
                seq[i, t, j] = (one - gates[i, t, H + j]) * gates[i, t, 2 * H + j] + gates[i, t, H + j] * h[j]


def gru_backward_np(h0, seq, gates, hns, Wh, gseq, dh, dX, dHp, norms):
    """``dh`` (B, h) holds dL/dh_L on entry and dL/dh_0 on return; fills ``dX`` and ``dHp``
    (B, L, 3h), the gradients at x Wx + bx and at h Wh + bh per gate, and ``norms``."""
    H = h0.shape[1]
    for t in range(gates.shape[1] - 1, -1, -1):
        hprev = seq[:, t - 1] if t > 0 else h0
        v = dh + gseq[:, t]
        norms[t] = _norm_np(v)
        r, z, n = (gates[:, t, k * H:(k + 1) * H] for k in range(3))
        dan = v * (1 - z) * (1 - n * n)
        dar = dan * hns[:, t] * r * (1 - r)
        daz = v * (hprev - n) * z * (1 - z)
        dX[:, t] = np.concatenate([dar, daz, dan], axis=1)
        dHp[:, t] = np.concatenate([dar, daz, dan * r], axis=1)
        dh[...] = v * z + dHp[:, t] @ Wh.T


@kernel(gru_backward_np, twin_ns_per_element=PYTHON_LOOP_NS)
def gru_backward(h0, seq, gates, hns, Wh, gseq, dh, dX, dHp, norms):
    B, L, H = seq.shape
    wp, ldw = matrix(Wh)
    hp, ldh = matrix(dh)
    one = _one(seq)
    v = np.empty(H, seq.dtype)
    hprev = np.empty(H, seq.dtype)
    for t in range(L - 1, -1, -1):
        s = 0.0
        for i in range(B):
            if t == 0:
                for j in range(H):
                    hprev[j] = h0[i, j]
            else:
                for j in range(H):
                    hprev[j] = seq[i, t - 1, j]
            for j in range(H):
                v[j] = dh[i, j] + gseq[i, t, j]
            for j in range(H):
                s += float(v[j]) * float(v[j])
            for j in range(H):  # at the candidate n
                dX[i, t, 2 * H + j] = v[j] * (one - gates[i, t, H + j]) * (one - gates[i, t, 2 * H + j] * gates[i, t, 2 * H + j])
            for j in range(H):  # at r
                dX[i, t, j] = dX[i, t, 2 * H + j] * hns[i, t, j] * gates[i, t, j] * (one - gates[i, t, j])
            for j in range(H):  # at z
                dX[i, t, H + j] = v[j] * (hprev[j] - gates[i, t, 2 * H + j]) * gates[i, t, H + j] * (one - gates[i, t, H + j])
            for j in range(2 * H):
                dHp[i, t, j] = dX[i, t, j]
            for j in range(H):
                dHp[i, t, 2 * H + j] = dX[i, t, 2 * H + j] * gates[i, t, j]
            for j in range(H):
                dh[i, j] = v[j] * gates[i, t, H + j]  # the direct path; the gates' path is added below
        norms[t] = math.sqrt(s)
        dp, ldd = block(dHp, t)
        product(False, True, B, H, 3 * H, dp, ldd, wp, ldw, 1.0, hp, ldh, dh.itemsize)


# --- wrappers: dtype and contiguity, one interface for every cell -------------------------------

#: Weight names each cell uses (the block adds ``_rev`` for the backward direction).
CELL_WEIGHTS = {"SimpleRNN": ("Wx", "Wh", "b"), "LSTM": ("Wx", "Wh", "b"), "GRU": ("Wx", "Wh", "bx", "bh")}


def _c(a: np.ndarray, dtype: Any) -> np.ndarray:
    return contiguous(a, dtype)


def _project(x: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """x (B, L, d) @ W (d, k) (+ b) as a new contiguous (B, L, k) array: one BLAS call."""
    B, L, D = x.shape
    out = x.reshape(B * L, D) @ W
    if b is not None:
        out += b
    return out.reshape(B, L, W.shape[1])


def _previous(h0: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """(B·L, h): the state each step started from, h0, h_1, …, h_{L−1}."""
    B, L, H = seq.shape
    prev = np.empty((B, L, H), seq.dtype)
    if L:
        prev[:, 0] = h0
        prev[:, 1:] = seq[:, :-1]
    return prev.reshape(B * L, H)


def run_forward(cell: str, activation: str, x: np.ndarray, h0: np.ndarray, c0: np.ndarray | None,
                w: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One direction over ``x`` (B, L, d_in) from ``h0`` (B, h) (and ``c0`` for LSTM).

    ``w`` maps the cell's weight names (without suffix) to arrays. Returns ``seq`` (B, L, h) and
    the state the backward pass needs (including ``c_seq`` (B, L, h) for the LSTM)."""
    dt = x.dtype
    x, h0 = _c(x, dt), _c(h0, dt)
    W = {k: _c(w[k], dt) for k in CELL_WEIGHTS[cell]}
    B, L = x.shape[:2]
    H = h0.shape[1]
    state: dict[str, np.ndarray] = {"x": x, "h0": h0}
    if cell == "SimpleRNN":
        seq = _project(x, W["Wx"], W["b"])
        rnn_forward(h0, W["Wh"], ACTIVATIONS[activation], seq)
    elif cell == "LSTM":
        c0 = _c(c0, dt)
        gates = _project(x, W["Wx"], None)
        cs = np.empty((B, L, H), dt)
        tcs = np.empty((B, L, H), dt)
        seq = np.empty((B, L, H), dt)
        lstm_forward(h0, c0, W["Wh"], W["b"], gates, cs, tcs, seq)
        state.update(c0=c0, c_seq=cs, tanh_c=tcs, gates=gates)
    else:
        gates = _project(x, W["Wx"], W["bx"])
        seq = np.empty((B, L, H), dt)
        hns = np.empty((B, L, H), dt)
        gru_forward(h0, W["Wh"], W["bh"], gates, seq, hns)
        state.update(gates=gates, hns=hns)
    state["seq"] = seq
    return seq, state


def run_backward(cell: str, activation: str, state: dict[str, np.ndarray], w: dict[str, np.ndarray],
                 gseq: np.ndarray, glast: np.ndarray, glast_c: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, np.ndarray], np.ndarray]:
    """BPTT for one direction: the time loop in one kernel call, then the weight gradients and
    ``dx`` as a few big products.

    Returns ``(dx (B, L, d_in), dh0, dc0 or None, weight grads, norms (L,))``."""
    x, h0, seq = state["x"], state["h0"], state["seq"]
    dt = x.dtype
    B, L, D = x.shape
    W = {k: _c(w[k], dt) for k in CELL_WEIGHTS[cell]}
    gseq = _c(gseq, dt)
    dh = np.array(glast, dtype=dt, order="C")  # a copy: the kernel turns it into dL/dh0
    norms = np.empty(L, np.float64)
    dc = None
    if cell == "SimpleRNN":
        d = np.empty_like(seq)
        rnn_backward(seq, W["Wh"], gseq, ACTIVATIONS[activation], dh, d, norms)
        dx_side = dh_side = d
    elif cell == "LSTM":
        dc = np.array(glast_c, dtype=dt, order="C")
        d = np.empty_like(state["gates"])
        db = np.empty(d.shape[2], dt)
        # Whᵀ once per pass: each step's (B, 4h) @ (4h, h) is then a plain product (module docstring).
        lstm_backward(state["c0"], state["c_seq"], state["tanh_c"], state["gates"], np.ascontiguousarray(W["Wh"].T),
                      gseq, dh, dc, d, db, norms)
        dx_side = dh_side = d
    else:
        dx_side = np.empty_like(state["gates"])
        dh_side = np.empty_like(state["gates"])
        gru_backward(h0, seq, state["gates"], state["hns"], W["Wh"], gseq, dh, dx_side, dh_side, norms)
    dxf = dx_side.reshape(B * L, dx_side.shape[2])
    dhf = dh_side.reshape(B * L, dh_side.shape[2])
    gx = (dxf @ W["Wx"].T).reshape(B, L, D)
    if dx_side is dh_side:
        # One product for both weight gradients: [x | h_{t−1}]ᵀ d, split by rows (no copies).
        H = h0.shape[1]
        both = np.empty((B, L, D + H), dt)
        both[:, :, :D] = x
        if L:
            both[:, 0, D:] = h0
            both[:, 1:, D:] = seq[:, :-1]
        gw = both.reshape(B * L, D + H).T @ dxf
        grads = {"Wx": gw[:D], "Wh": gw[D:]}
    else:
        grads = {"Wx": x.reshape(B * L, D).T @ dxf, "Wh": _previous(h0, seq).T @ dhf}
    if cell == "GRU":
        grads.update(bx=dxf.sum(axis=0), bh=dhf.sum(axis=0))
    elif cell == "LSTM":
        grads["b"] = db  # summed in the kernel, while dZ's rows were in cache
    else:
        grads["b"] = dxf.sum(axis=0)
    return gx, dh, dc, grads, norms
