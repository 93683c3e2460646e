"""Scalar maths the kernels share, in forms LLVM vectorises.

Numba calls libm's scalar ``exp`` once per element (pip's llvmlite has no SVML), so a loop of
``math.exp`` runs one lane wide at ~3 ns per element. :func:`exp` is what the kernels call
instead: in float32 it is Cephes' ``expf`` written branch-free, which LLVM inlines into the
caller's loop and runs eight lanes wide (~0.8–1.6 ns per element with the loop around it against
~3 ns for libm's, measured in benchmarks/bench_general_kernels.py); in float64 it is ``math.exp``.

Write ``one / (one + exp(-x))`` in the loop itself: the same expression behind a helper ``@jit``
function, or an ``exp_row(src, dst)`` helper called from a kernel, measured 2–4× slower (the
call's exception check keeps LLVM from vectorising the loop when it does not inline it). ``exp``
keeps its own fastmath flags (:data:`EXP_FASTMATH`) when LLVM inlines it, so the kernel's
``reassoc`` cannot multiply its two scale factors first (2⁶⁴·2⁶⁴ overflows).

``exp`` is a Numba overload, registered by :func:`bind` when Numba is first needed (see
``engine.kernels``), so importing this module does not import Numba.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from engine.kernels import jit

#: fastmath flags of the float32 exp itself. NOTE: no ``reassoc``: it would merge the two parts
#: of ln 2 in the argument reduction and lose the precision near the ends of the range.
EXP_FASTMATH = frozenset({"nsz", "contract"})

_lock = threading.Lock()
_bound = False
# Set by bind(): an intrinsic reinterpreting the low 32 bits of an integer as a float32.
_float32_from_bits: Any = None


@jit(inline=True)
def one(x):
    """1 in ``x``'s dtype (so float32 arithmetic stays float32).

    NOTE: ``x.dtype.type(1)``, not ``np.ones(1, x.dtype)[0]``: no allocation, and less for Numba
    to type and lower in every kernel that uses it."""
    return x.dtype.type(1)


@jit(inline=True)
def minus_inf(x):
    """−∞ in ``x``'s dtype (a float literal would be float64 and drag float32 loops with it)."""
    return x.dtype.type(-np.inf)


def exp(v: float) -> float:
    """``e ** v`` for a float scalar inside a kernel (this Python body is never used there).

    float32: Cephes' ``expf``: Cody-Waite reduction by ln 2 in two parts, a degree-6
    polynomial, then 2ⁿ applied as two factors built in the exponent bits (so the whole range
    down to subnormals is exact); within an ulp of the correctly rounded value; inf, 0 and NaN
    as from ``math.exp``. float64: ``math.exp``."""
    return math.exp(v)


def _expf(v):  # type: ignore[no-untyped-def]
    hi = np.float32(88.72283)
    lo = np.float32(-103.97208)
    c = min(max(v, lo), hi)
    # NOTE: np.floor, not math.floor: math.floor returns an int64, which would turn the rest
    # into float64 arithmetic with int64 conversions that do not vectorise.
    n = np.floor(c * np.float32(1.44269504088896341) + np.float32(0.5))
    r = c - n * np.float32(0.693359375)
    r = r - n * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    e = p * r * r + r + np.float32(1.0)
    k = np.int32(n)
    half = k >> np.int32(1)
    e = e * _float32_from_bits((half + np.int32(127)) << np.int32(23))  # 2^(n//2)
    e = e * _float32_from_bits((k - half + np.int32(127)) << np.int32(23))  # 2^(n − n//2)
    e = np.float32(np.inf) if v > hi else e
    e = np.float32(0.0) if v < lo else e
    return e if v == v else v


def _exp64(v):  # type: ignore[no-untyped-def]
    return math.exp(v)


def bind() -> None:
    """Register :func:`exp` with Numba (once per process, before the first kernel compiles)."""
    global _bound, _float32_from_bits
    with _lock:
        if _bound:
            return
        from llvmlite import ir
        from numba import types
        from numba.extending import intrinsic, overload

        @intrinsic
        def float32_from_bits(typingctx, x):  # type: ignore[no-untyped-def]
            if not isinstance(x, types.Integer):
                return None

            def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
                bits = builder.trunc(args[0], ir.IntType(32)) if x.bitwidth > 32 else args[0]
                return builder.bitcast(bits, ir.FloatType())

            return types.float32(x), codegen

        _float32_from_bits = float32_from_bits

        @overload(exp, jit_options={"fastmath": set(EXP_FASTMATH), "error_model": "numpy"})
        def _exp_overload(v):  # type: ignore[no-untyped-def]
            if v == types.float32:
                return _expf
            if isinstance(v, types.Float):
                return _exp64
            return None

        _bound = True
