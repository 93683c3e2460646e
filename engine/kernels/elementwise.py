"""Fused elementwise kernels: the activations (forward, and backward as one pass ``g * f'(x)``,
one kernel each for all activations), the power ``a^p`` and the dropout mask.

Kernels work on flat contiguous arrays; the wrappers (:func:`activation`, :func:`power`, ...)
reshape, and keep a 0-d array 0-d (``np.ascontiguousarray`` would turn it into shape (1,)).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.kernels import contiguous, kernel
from engine.kernels.vecmath import exp, one as _one

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


#: The activations, by the code the kernels take (one kernel for all: one compile per dtype).
CODES = {"sigmoid": 0, "tanh": 1, "relu": 2, "gelu": 3}
#: Whether the backward kernel wants the forward *output* (True) or the *input* (False).
GRAD_FROM_OUTPUT = {"sigmoid": True, "tanh": True, "relu": True, "gelu": False}


def activation_np(code: int, x: np.ndarray, out: np.ndarray) -> None:
    if code == 0:  # tanh form: exact and overflow-free for large |x|
        out[:] = 0.5 * (1.0 + np.tanh(0.5 * x))
    elif code == 1:
        out[:] = np.tanh(x)
    elif code == 2:
        out[:] = np.maximum(x, 0)
    else:
        from scipy import special  # NOTE: here, not at the top: scipy.special costs ~0.3 s to import

        out[:] = x * 0.5 * (1.0 + special.erf(x * _SQRT_HALF))


@kernel(activation_np)
def activation_fwd(code, x, out):
    one = _one(x)
    zero = one - one
    two = one + one
    n = x.size
    if code == 0:
        # σ(v) = 1 / (1 + e^−v) for v ≥ 0, e^v / (1 + e^v) below: no overflow; a select, so it vectorises
        for i in range(n):
            v = x[i]
            e = exp(-abs(v))
            s = one / (one + e)
            out[i] = s if v >= zero else e * s
    elif code == 1:
        if x.itemsize == 4:
            # tanh(v) = 2σ(2v) − 1 through the vectorised exp (libm's tanhf costs ~35 ns);
            # absolute error at float32 rounding. Float64 keeps libm's tanh.
            for i in range(n):
                v = x[i]
                e = exp(-two * abs(v))
                t = (one - e) / (one + e)
                out[i] = t if v >= zero else -t
        else:
            for i in range(n):
                out[i] = math.tanh(x[i])
    elif code == 2:
        for i in range(n):
            v = x[i]
            out[i] = v if (v > zero or v != v) else zero  # a NaN stays visible, as np.maximum keeps it
    else:
        for i in range(n):
            out[i] = x[i] * 0.5 * (1.0 + math.erf(x[i] * _SQRT_HALF))


def activation_grad_np(code: int, src: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    """``g · f'``, from the forward output (σ, tanh, ReLU) or input (GELU) ``src``."""
    if code == 0:
        out[:] = g * src * (1 - src)
    elif code == 1:
        out[:] = g * (1 - src * src)
    elif code == 2:
        out[:] = np.where(src > 0, g, 0)
    else:
        from scipy import special

        cdf = 0.5 * (1.0 + special.erf(src * _SQRT_HALF))
        out[:] = g * (cdf + src * _INV_SQRT_2PI * np.exp(-0.5 * src * src))


@kernel(activation_grad_np)
def activation_bwd(code, src, g, out):
    one = _one(src)
    zero = one - one
    n = src.size
    if code == 0:
        for i in range(n):
            out[i] = g[i] * src[i] * (one - src[i])
    elif code == 1:
        for i in range(n):
            out[i] = g[i] * (one - src[i] * src[i])
    elif code == 2:
        for i in range(n):
            out[i] = g[i] if src[i] > zero else zero
    else:
        for i in range(n):
            v = src[i]
            cdf = 0.5 * (1.0 + math.erf(v * _SQRT_HALF))
            out[i] = g[i] * (cdf + v * _INV_SQRT_2PI * math.exp(-0.5 * v * v))


# --- power ------------------------------------------------------------------------------------


def power_np(x: np.ndarray, p: float, out: np.ndarray) -> None:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # 0^−1 = inf, (−8)^⅓ = NaN, as torch
        out[:] = np.power(x, p)


@kernel(power_np)
def power_fwd(x, p, out):
    for i in range(x.size):
        out[i] = x[i] ** p


def power_grad_np(x: np.ndarray, p: float, pm1: float, g: np.ndarray, out: np.ndarray) -> None:
    if p == 0:
        out[:] = 0  # torch: d(x⁰)/dx = 0, also at x = 0
        return
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out[:] = g * (p * np.power(x, pm1))


@kernel(power_grad_np)
def power_bwd(x, p, pm1, g, out):
    for i in range(x.size):
        if p == 0:
            out[i] = 0
        else:
            out[i] = g[i] * (p * x[i] ** pm1)


# --- dropout --------------------------------------------------------------------------------------


def dropout_np(x: np.ndarray, keep: np.ndarray, scale: float, out: np.ndarray) -> None:
    out[:] = np.where(keep, x * x.dtype.type(scale), x.dtype.type(0))


@kernel(dropout_np)
def dropout_apply(x, keep, scale, out):
    for i in range(x.size):
        out[i] = x[i] * scale if keep[i] else 0


# --- wrappers -------------------------------------------------------------------------------------


def _shaped(a: np.ndarray, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``a`` broadcast to ``shape`` as a contiguous, writable array of ``dtype``.

    NOTE: broadcast only when the shape differs: a broadcast view is read-only, which makes
    :func:`contiguous` copy an array that needed nothing (a whole extra pass per backward)."""
    a = np.asarray(a)
    if a.shape != tuple(shape):
        a = np.broadcast_to(a, shape)
    return contiguous(a, dtype)


def activation(name: str, x: np.ndarray) -> np.ndarray:
    """``f(x)`` for a named activation, any shape (0-d too), float32 or float64."""
    x = contiguous(x)
    out = np.empty_like(x)
    activation_fwd(CODES[name], x.reshape(-1), out.reshape(-1))
    return out


def activation_grad(name: str, x: np.ndarray, y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``g * f'(x)``, given the forward input ``x`` and output ``y``."""
    src = contiguous(y if GRAD_FROM_OUTPUT[name] else x)
    g = _shaped(g, src.shape, src.dtype)
    out = np.empty_like(src)
    activation_bwd(CODES[name], src.reshape(-1), g.reshape(-1), out.reshape(-1))
    return out


def power(x: np.ndarray, p: float) -> np.ndarray:
    """``x ** p`` elementwise (any shape, float32 or float64)."""
    x = contiguous(x)
    out = np.empty_like(x)
    power_fwd(x.reshape(-1), x.dtype.type(p), out.reshape(-1))  # p in the data's type: float32 stays float32
    return out


def power_grad(x: np.ndarray, p: float, g: np.ndarray) -> np.ndarray:
    """``g · p · x^(p−1)``, and 0 when p = 0 (torch's rule, also at x = 0)."""
    x = contiguous(x)
    g = _shaped(g, x.shape, x.dtype)
    out = np.empty_like(x)
    t = x.dtype.type
    power_bwd(x.reshape(-1), t(p), t(p - 1), g.reshape(-1), out.reshape(-1))
    return out


def dropout(x: np.ndarray, keep: np.ndarray, scale: float) -> np.ndarray:
    """``x · scale`` where ``keep`` is true, 0 elsewhere (also the VJP, with x = the gradient)."""
    x = contiguous(x)
    keep = _shaped(keep, x.shape, np.bool_)
    out = np.empty_like(x)
    dropout_apply(x.reshape(-1), keep.reshape(-1), x.dtype.type(scale), out.reshape(-1))
    return out
