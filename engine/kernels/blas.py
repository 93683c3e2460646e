"""Matrix products inside the kernels, through numpy's own BLAS.

Numba's ``np.dot`` reaches BLAS through scipy's copy of OpenBLAS; numpy ships another (an
ILP64 build, ``scipy_cblas_sgemm64_``), and at the sizes of a recurrent step or an attention head
it takes about half the time of scipy's (benchmarks/bench_kernel_facts.py prints both).
:func:`product` calls numpy's ``cblas_?gemm`` directly, as an external function that Numba links
by name (:data:`SGEMM`, :data:`DGEMM`), so the kernels that use it stay cacheable: the cached
machine code refers to the symbol, which :func:`bind` registers in every process before the
first kernel is compiled or loaded.

:func:`product` takes sizes, addresses and leading dimensions only, so it compiles once per
process whatever the layout of the arrays; :func:`gemm` (arrays whose rows are contiguous),
:func:`matrix` and :func:`block` (a time step of a batch-major sequence) are inlined helpers
that work those out.

Where numpy's BLAS cannot be found (a numpy built against another BLAS), or with
``BACKPROP_STUDIO_BLAS=scipy``, the same symbols point at small adapters (Numba ``cfunc``\\ s)
that call scipy's Fortran ``?gemm``, which is what ``np.dot`` would have used: slower, same
arithmetic contract.

The products write straight into the destination: no temporary and no slice-assignment, which
keeps the kernels that use them cheap to compile (see benchmarks/README.md).
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from typing import Any

import numpy as np

from engine.kernels import jit

#: Link names of the two external functions (cblas, row-major, 64-bit integers).
SGEMM = "backprop_studio_cblas_sgemm"
DGEMM = "backprop_studio_cblas_dgemm"
ENV_VAR = "BACKPROP_STUDIO_BLAS"

ROW_MAJOR = 101
NO_TRANS = 111
TRANS = 112

# Set by bind() (called by engine.kernels before the first Numba dispatcher of any module exists):
# Numba reads these globals when it compiles gemm.
_sgemm: Any = None
_dgemm: Any = None
_provider = ""
_lock = threading.Lock()


def provider() -> str:
    """Where the kernels' matrix products go: ``"numpy"`` (numpy's OpenBLAS), ``"scipy"``
    (scipy's BLAS, the fallback) or ``""`` before the first kernel ran."""
    return _provider


def _numpy_library() -> ctypes.CDLL | None:
    """numpy's bundled OpenBLAS (wheels since numpy 2.0), already loaded by numpy itself."""
    root = os.path.dirname(os.path.dirname(np.__file__))
    patterns = [os.path.join(root, "numpy.libs", "libscipy_openblas64_*"),
                os.path.join(os.path.dirname(np.__file__), ".dylibs", "libscipy_openblas64_*")]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                lib = ctypes.CDLL(path)
                lib.scipy_cblas_sgemm64_  # noqa: B018 - raises AttributeError when absent
                lib.scipy_cblas_dgemm64_  # noqa: B018
                return lib
            except (OSError, AttributeError):
                continue
    return None


def _signature(numba: Any, real: Any) -> Any:
    # NOTE: addresses as uintp (what ``array.ctypes.data`` is), which the 64-bit calling
    # conventions pass exactly as pointers: the kernels then hand over plain integers, so the
    # one function that calls BLAS compiles once, whatever the layout of the arrays.
    t = numba.types
    return t.void(t.int32, t.int32, t.int32, t.int64, t.int64, t.int64, real, t.uintp, t.int64,
                  t.uintp, t.int64, real, t.uintp, t.int64)


def _scipy_adapters(numba: Any) -> tuple[int, int]:
    """Addresses of cfuncs with the cblas signature that call scipy's Fortran ``sgemm``/``dgemm``.

    Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ: the Fortran call takes B
    first, with m and n swapped."""
    import llvmlite.binding as llvm
    from numba.extending import get_cython_function_address

    t = numba.types
    addresses = []
    for letter, real, np_real in (("s", t.float32, np.float32), ("d", t.float64, np.float64)):
        symbol = f"backprop_studio_f77_{letter}gemm"
        llvm.add_symbol(symbol, get_cython_function_address("scipy.linalg.cython_blas", f"{letter}gemm"))
        p = t.uintp
        f77 = t.ExternalFunction(symbol, t.void(p, p, p, p, p, p, p, p, p, p, p, p, p))
        addresses.append(numba.cfunc(_signature(numba, real))(_adapter(f77, np_real)).address)
    return addresses[0], addresses[1]


def _adapter(f77: Any, np_real: Any) -> Any:
    """The body of one adapter (a closure: Numba freezes ``f77`` and ``np_real`` into it)."""

    def adapter(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):  # type: ignore[no-untyped-def]
        chars = np.empty(2, np.uint8)
        chars[0] = 84 if tb == TRANS else 78  # 'T' / 'N': Fortran's op on its first matrix (our B)
        chars[1] = 84 if ta == TRANS else 78
        ints = np.empty(6, np.int32)
        ints[0] = n
        ints[1] = m
        ints[2] = k
        ints[3] = ldb
        ints[4] = lda
        ints[5] = ldc
        scalars = np.empty(2, np_real)
        scalars[0] = alpha
        scalars[1] = beta
        pc, pi, ps = chars.ctypes.data, ints.ctypes.data, scalars.ctypes.data
        f77(pc, pc + 1, pi, pi + 4, pi + 8, ps, b, pi + 12, a, pi + 16, ps + scalars.itemsize, c, pi + 20)

    return adapter


def bind() -> str:
    """Register the link names with LLVM and set the external functions :func:`gemm` calls;
    once per process. Returns the provider."""
    global _sgemm, _dgemm, _provider
    with _lock:
        if _provider:
            return _provider
        import llvmlite.binding as llvm
        import numba

        want = os.environ.get(ENV_VAR, "").strip().lower()
        lib = None if want == "scipy" else _numpy_library()
        if lib is not None:
            s = ctypes.cast(lib.scipy_cblas_sgemm64_, ctypes.c_void_p).value
            d = ctypes.cast(lib.scipy_cblas_dgemm64_, ctypes.c_void_p).value
            provider = "numpy"
        else:
            s, d = _scipy_adapters(numba)
            provider = "scipy"
        llvm.add_symbol(SGEMM, s)
        llvm.add_symbol(DGEMM, d)
        _sgemm = numba.types.ExternalFunction(SGEMM, _signature(numba, numba.types.float32))
        _dgemm = numba.types.ExternalFunction(DGEMM, _signature(numba, numba.types.float64))
        _provider = provider
        return provider


#: :func:`product`'s one signature: callers pass literal or run-time flags, and addresses that
#: Numba types as uint64, int64 or (uint64 + int64) float64; each combination used to compile a
#: specialisation of its own (8 in all, measured by benchmarks/bench_kernel_cache.py).
PRODUCT_SIGNATURE = ("void(boolean, boolean, int64, int64, int64, uintp, int64, uintp, int64, float64, uintp, int64,"
                     " int64)")


@jit(signature=PRODUCT_SIGNATURE)
def product(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, itemsize):
    """The BLAS call itself, on sizes, addresses and leading dimensions only (compiled once, for
    :data:`PRODUCT_SIGNATURE`): ``C (m×n) = op(A) op(B) + beta·C``, row-major, ``itemsize`` 4 or 8. Kernels that
    address blocks of larger arrays in place (attention's heads) call it directly."""
    ta = TRANS if trans_a else NO_TRANS
    tb = TRANS if trans_b else NO_TRANS
    if itemsize == 4:
        _sgemm(ROW_MAJOR, ta, tb, m, n, k, np.float32(1.0), a, lda, b, ldb, np.float32(beta), c, ldc)
    else:
        _dgemm(ROW_MAJOR, ta, tb, m, n, k, 1.0, a, lda, b, ldb, np.float64(beta), c, ldc)


@jit(inline=True)
def gemm(a, b, out, trans_a, trans_b, beta):
    """``out = op(a) @ op(b) + beta·out`` with op = transpose where asked; 2-D arrays whose rows
    are contiguous (C-contiguous arrays and row or column ranges of them), all of one dtype.
    ``beta`` 0 overwrites ``out`` (whatever it held, even NaN, as BLAS promises); empty sizes
    are BLAS's to handle (k = 0 gives beta·out).

    Inlined into the kernel (it only reads shapes, strides and addresses); the call goes to
    :func:`product`. The leading dimensions are the row strides, at least the row length (a
    single row may have any stride)."""
    product(trans_a, trans_b, out.shape[0], out.shape[1], a.shape[0] if trans_a else a.shape[1],
             a.ctypes.data, max(a.strides[0] // a.itemsize, a.shape[1], 1),
             b.ctypes.data, max(b.strides[0] // b.itemsize, b.shape[1], 1), beta,
             out.ctypes.data, max(out.strides[0] // out.itemsize, out.shape[1], 1), out.itemsize)


@jit(inline=True)
def block(a, t):
    """``(address, leading dimension)`` of the block ``a[:, t]`` of a 3-D array whose rows are
    contiguous, for :func:`product`: a time step of a batch-major sequence, without a view."""
    return a.ctypes.data + t * a.strides[1], a.strides[0] // a.itemsize


@jit(inline=True)
def matrix(a):
    """``(address, leading dimension)`` of a 2-D array whose rows are contiguous, for :func:`product`."""
    return a.ctypes.data, max(a.strides[0] // a.itemsize, a.shape[1], 1)
