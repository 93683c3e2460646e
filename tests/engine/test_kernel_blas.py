"""The kernels' matrix products (engine.kernels.blas.gemm): numpy's BLAS called from Numba, with
scipy's BLAS as the fallback; both must give numpy's products."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from engine.kernels import blas, jit
from engine.kernels.blas import gemm


@jit
def _product(a, b, out, trans_a, trans_b, beta):
    gemm(a, b, out, trans_a, trans_b, beta)


@jit
def _per_row_block(a, b, out):
    # Row blocks of 3-D arrays: a[i] and out[:, i] (a strided block whose rows are contiguous).
    for i in range(a.shape[0]):
        gemm(a[i], b, out[:, i], False, True, 0.0)


SHAPES = [(3, 4, 5), (1, 7, 2), (5, 1, 1), (16, 256, 64), (2, 3, 0)]


def check_products() -> None:
    rng = np.random.default_rng(0)
    for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-12)):
        for trans_a in (False, True):
            for trans_b in (False, True):
                for m, n, k in SHAPES:
                    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
                    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
                    out = rng.standard_normal((m, n)).astype(dtype)
                    want = (a.T if trans_a else a) @ (b.T if trans_b else b) + 0.5 * out
                    _product(a, b, out, trans_a, trans_b, 0.5)
                    np.testing.assert_allclose(out, want, rtol=tol, atol=tol, err_msg=f"{dtype} {trans_a} {trans_b} {m, n, k}")
        # beta 0 overwrites whatever out held, NaN included
        out = np.full((3, 2), np.nan, dtype)
        _product(np.ones((3, 4), dtype), np.ones((4, 2), dtype), out, False, False, 0.0)
        np.testing.assert_array_equal(out, np.full((3, 2), 4, dtype))
        a = rng.standard_normal((4, 3, 5)).astype(dtype)
        b = rng.standard_normal((6, 5)).astype(dtype)
        out = np.zeros((3, 4, 6), dtype)
        _per_row_block(a, b, out)
        np.testing.assert_allclose(out, np.swapaxes(a @ b.T, 0, 1), rtol=tol, atol=tol)


def test_gemm_gives_numpys_products() -> None:
    check_products()
    assert blas.provider() == "numpy"  # numpy's wheels ship their OpenBLAS: the fast path is taken


@pytest.mark.slow
def test_scipy_fallback_gives_the_same_products() -> None:
    code = ("from tests.engine.test_kernel_blas import check_products\n"
            "from engine.kernels import blas\n"
            "check_products()\n"
            "print(blas.provider())\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, BACKPROP_STUDIO_BLAS="scipy", PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "scipy"


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("rows", [0, 3, 8, 40])  # ≤ 8 columns: each map its own product; 40: one concatenated
@pytest.mark.parametrize("maps", [3, 2])
def test_linears_side_by_side_match_one_product_of_concatenated_weights(dtype, tol, rows, maps):
    from engine import kernels
    from engine.kernels import dense

    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, 8)).astype(dtype)
    widths = (5, 3, 5)[3 - maps:]  # two maps: (3, 5), the first without a bias (cross-attention's K, V)
    ws = tuple(rng.standard_normal((8, k)).astype(dtype) for k in widths)
    bs = ((rng.standard_normal(5).astype(dtype), None) if maps == 3 else (None,)) + (rng.standard_normal(5).astype(dtype),)
    total = sum(widths)
    g = rng.standard_normal((rows, total)).astype(dtype)
    w = np.concatenate(ws, axis=1)
    b = np.concatenate([np.zeros(k, dtype) if v is None else v for k, v in zip(widths, bs)])
    want_out = x @ w + b
    want_dw = x.T @ g
    assert dense._split(x) == (rows <= 8)
    for backend in kernels.BACKENDS:
        with kernels.using(backend):
            out = dense.linears(x, ws, bs)
            dx, dws, dbs = dense.linears_grad(x, ws, g, tuple(v is not None for v in bs))
        assert out.dtype == dtype and out.shape == (rows, total)
        assert len(dws) == len(dbs) == maps
        np.testing.assert_allclose(out, want_out, rtol=tol, atol=tol)
        np.testing.assert_allclose(dx, g @ w.T, rtol=tol, atol=tol)
        lo = 0
        for got, db, k, v in zip(dws, dbs, widths, bs):
            assert got.flags.c_contiguous and got.shape == (8, k)
            np.testing.assert_allclose(got, want_dw[:, lo:lo + k], rtol=tol, atol=tol)
            if v is None:
                assert db is None
            else:
                np.testing.assert_allclose(db, g[:, lo:lo + k].sum(axis=0), rtol=tol, atol=tol)
            lo += k
