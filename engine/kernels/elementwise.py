"""Fused elementwise kernels: the activations (forward, and backward as one pass ``g * f'(x)``),
the power ``a^p`` and the dropout mask.

Kernels work on flat contiguous arrays; the wrappers (:func:`activation`, :func:`power`, ...)
reshape, and keep a 0-d array 0-d (``np.ascontiguousarray`` would turn it into shape (1,)).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.kernels import contiguous, kernel

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


def sigmoid_np(x: np.ndarray, out: np.ndarray) -> None:
    # tanh form: exact and overflow-free for large |x|.
    out[:] = 0.5 * (1.0 + np.tanh(0.5 * x))


@kernel(sigmoid_np)
def sigmoid(x, out):
    for i in range(x.size):
        v = x[i]
        if v >= 0:
            out[i] = 1.0 / (1.0 + math.exp(-v))
        else:
            e = math.exp(v)
            out[i] = e / (1.0 + e)


def sigmoid_grad_np(y: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    out[:] = g * y * (1 - y)


@kernel(sigmoid_grad_np)
def sigmoid_grad(y, g, out):
    for i in range(y.size):
        out[i] = g[i] * y[i] * (1 - y[i])


def tanh_np(x: np.ndarray, out: np.ndarray) -> None:
    out[:] = np.tanh(x)


@kernel(tanh_np)
def tanh(x, out):
    for i in range(x.size):
        out[i] = math.tanh(x[i])


def tanh_grad_np(y: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    out[:] = g * (1 - y * y)


@kernel(tanh_grad_np)
def tanh_grad(y, g, out):
    for i in range(y.size):
        out[i] = g[i] * (1 - y[i] * y[i])


def relu_np(x: np.ndarray, out: np.ndarray) -> None:
    out[:] = np.maximum(x, 0)


@kernel(relu_np)
def relu(x, out):
    for i in range(x.size):
        out[i] = x[i] if x[i] > 0 else 0


def relu_grad_np(y: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    out[:] = np.where(y > 0, g, 0)


@kernel(relu_grad_np)
def relu_grad(y, g, out):
    for i in range(y.size):
        out[i] = g[i] if y[i] > 0 else 0


def gelu_np(x: np.ndarray, out: np.ndarray) -> None:
    from scipy import special  # NOTE: here, not at the top: scipy.special costs ~0.3 s to import

    out[:] = x * 0.5 * (1.0 + special.erf(x * _SQRT_HALF))


@kernel(gelu_np)
def gelu(x, out):
    for i in range(x.size):
        out[i] = x[i] * 0.5 * (1.0 + math.erf(x[i] * _SQRT_HALF))


def gelu_grad_np(x: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    from scipy import special

    cdf = 0.5 * (1.0 + special.erf(x * _SQRT_HALF))
    out[:] = g * (cdf + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x))


@kernel(gelu_grad_np)
def gelu_grad(x, g, out):
    for i in range(x.size):
        v = x[i]
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


FORWARD = {"sigmoid": sigmoid, "tanh": tanh, "relu": relu, "gelu": gelu}
BACKWARD = {"sigmoid": sigmoid_grad, "tanh": tanh_grad, "relu": relu_grad, "gelu": gelu_grad}
#: Whether the backward kernel wants the forward *output* (True) or the *input* (False).
GRAD_FROM_OUTPUT = {"sigmoid": True, "tanh": True, "relu": True, "gelu": False}


def activation(name: str, x: np.ndarray) -> np.ndarray:
    """``f(x)`` for a named activation, any shape (0-d too), float32 or float64."""
    x = contiguous(x)
    out = np.empty_like(x)
    FORWARD[name](x.reshape(-1), out.reshape(-1))
    return out


def activation_grad(name: str, x: np.ndarray, y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``g * f'(x)``, given the forward input ``x`` and output ``y``."""
    src = contiguous(y if GRAD_FROM_OUTPUT[name] else x)
    g = _shaped(g, src.shape, src.dtype)
    out = np.empty_like(src)
    BACKWARD[name](src.reshape(-1), g.reshape(-1), out.reshape(-1))
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
