"""2-D convolution (cross-correlation) and max pooling, forward and backward.

Conv2d uses im2col + one BLAS matrix product per image, inside the jitted kernel: on the
reference size (B=8, C=8, 28×28, K=3, 16 filters, one thread) it measured 6.5× faster than
direct loops forward and 7× backward in float32 (5× / 7.7× in float64); the direct loops are
kept in benchmarks/bench_recurrent_conv.py so the comparison can be re-run. Zero padding is
handled while gathering the columns, so no padded copy of the image is made.

Layouts: x (B, C, H, W), W (C_out, C, K, K), columns (C·K·K, H'·W') per image with row index
``(c·K + ki)·K + kj``, the same order as ``W.reshape(C_out, C·K·K)``.
"""

from __future__ import annotations

import numpy as np

from engine.kernels import jit, kernel


def out_size(n: int, k: int, stride: int, pad: int) -> int:
    """⌊(n + 2p − k)/s⌋ + 1 (may be ≤ 0: the caller reports it)."""
    return (n + 2 * pad - k) // stride + 1


# --- im2col / col2im ------------------------------------------------------------------------------


@jit
def _im2col(img, K, stride, pad, Ho, Wo, cols):
    """Gather image (C, H, W) into cols (C·K·K, Ho·Wo); zero where the window leaves the image."""
    C, H, W = img.shape
    for c in range(C):
        for ki in range(K):
            for kj in range(K):
                row = (c * K + ki) * K + kj
                for oi in range(Ho):
                    ii = oi * stride - pad + ki
                    base = oi * Wo
                    if ii < 0 or ii >= H:
                        for oj in range(Wo):
                            cols[row, base + oj] = 0
                        continue
                    for oj in range(Wo):
                        jj = oj * stride - pad + kj
                        cols[row, base + oj] = img[c, ii, jj] if 0 <= jj < W else 0


@jit
def _col2im(cols, K, stride, pad, Ho, Wo, img):
    """Scatter-add cols (C·K·K, Ho·Wo) back into image (C, H, W), the adjoint of _im2col."""
    C, H, W = img.shape
    for c in range(C):
        for ki in range(K):
            for kj in range(K):
                row = (c * K + ki) * K + kj
                for oi in range(Ho):
                    ii = oi * stride - pad + ki
                    if ii < 0 or ii >= H:
                        continue
                    base = oi * Wo
                    for oj in range(Wo):
                        jj = oj * stride - pad + kj
                        if 0 <= jj < W:
                            img[c, ii, jj] += cols[row, base + oj]


def _windows_np(x: np.ndarray, K: int, stride: int, pad: int) -> np.ndarray:
    """(B, C, Ho, Wo, K, K) view of the zero-padded input."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (K, K), axis=(2, 3))
    return win[:, :, ::stride, ::stride]


# --- Conv2d ----------------------------------------------------------------------------------------


def conv2d_forward_np(x, Wt, b, stride, pad):
    K = Wt.shape[2]
    win = _windows_np(x, K, stride, pad)
    return np.ascontiguousarray(np.einsum("bchwij,ocij->bohw", win, Wt) + b[None, :, None, None])


@kernel(conv2d_forward_np)
def conv2d_forward(x, Wt, b, stride, pad):
    B, C, H, W = x.shape
    Co, _, K, _ = Wt.shape
    Ho = (H + 2 * pad - K) // stride + 1
    Wo = (W + 2 * pad - K) // stride + 1
    P = Ho * Wo
    w2 = Wt.reshape(Co, C * K * K)
    cols = np.empty((C * K * K, P), x.dtype)
    out = np.empty((B, Co, Ho, Wo), x.dtype)
    for n in range(B):
        _im2col(x[n], K, stride, pad, Ho, Wo, cols)
        y = np.dot(w2, cols)
        for o in range(Co):
            bo = b[o]
            for p in range(P):
                out[n, o, p // Wo, p % Wo] = y[o, p] + bo
    return out


def conv2d_backward_np(x, Wt, g, stride, pad):
    """Returns ``(dx, dW, db)``."""
    B, C, H, W = x.shape
    K = Wt.shape[2]
    Ho, Wo = g.shape[2], g.shape[3]
    win = _windows_np(x, K, stride, pad)
    gW = np.einsum("bchwij,bohw->ocij", win, g)
    gb = g.sum(axis=(0, 2, 3))
    gxp = np.zeros((B, C, H + 2 * pad, W + 2 * pad), x.dtype)
    for i in range(K):
        for j in range(K):
            # Every output pixel (oi, oj) saw input (oi·s + i, oj·s + j) through W[:, :, i, j].
            gxp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride] += np.einsum("bohw,oc->bchw", g, Wt[:, :, i, j])
    return np.ascontiguousarray(gxp[:, :, pad:pad + H, pad:pad + W]), gW, gb


@kernel(conv2d_backward_np)
def conv2d_backward(x, Wt, g, stride, pad):
    B, C, H, W = x.shape
    Co, _, K, _ = Wt.shape
    Ho, Wo = g.shape[2], g.shape[3]
    P = Ho * Wo
    CKK = C * K * K
    w2 = Wt.reshape(Co, CKK)
    cols = np.empty((CKK, P), x.dtype)
    gw2 = np.zeros((Co, CKK), x.dtype)
    gb = np.zeros(Co, x.dtype)
    gx = np.zeros((B, C, H, W), x.dtype)
    for n in range(B):
        gn = g[n].reshape(Co, P)
        _im2col(x[n], K, stride, pad, Ho, Wo, cols)
        gw2 += np.dot(gn, cols.T)
        for o in range(Co):
            s = gb[o] * 0
            for p in range(P):
                s += gn[o, p]
            gb[o] += s
        gcols = np.dot(w2.T, gn)
        _col2im(gcols, K, stride, pad, Ho, Wo, gx[n])
    return gx, gw2.reshape(Co, C, K, K), gb


# --- MaxPool2d --------------------------------------------------------------------------------------


def maxpool_forward_np(x, K, stride):
    """Returns ``(out, arg)``; ``arg`` is the flat index ``i·W + j`` of each window's maximum
    within its (H, W) plane: the first one in row-major order on ties, a NaN if there is one."""
    B, C, H, W = x.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (K, K), axis=(2, 3))[:, :, ::stride, ::stride]
    Ho, Wo = win.shape[2], win.shape[3]
    flat = win.reshape(B, C, Ho, Wo, K * K)
    # NaN first: a window holding a NaN outputs NaN (as torch does), so it stays visible.
    isnan = np.isnan(flat)
    k = np.where(isnan.any(axis=-1), isnan.argmax(axis=-1), np.argmax(flat, axis=-1))
    out = np.take_along_axis(flat, k[..., None], axis=-1)[..., 0]
    ki, kj = k // K, k % K
    oi = np.arange(Ho)[:, None] * stride
    oj = np.arange(Wo)[None, :] * stride
    arg = (oi + ki) * W + (oj + kj)
    return np.ascontiguousarray(out), arg.astype(np.int64)


@kernel(maxpool_forward_np)
def maxpool_forward(x, K, stride):
    B, C, H, W = x.shape
    Ho = (H - K) // stride + 1
    Wo = (W - K) // stride + 1
    out = np.empty((B, C, Ho, Wo), x.dtype)
    arg = np.empty((B, C, Ho, Wo), np.int64)
    for n in range(B):
        for c in range(C):
            for oi in range(Ho):
                for oj in range(Wo):
                    i0 = oi * stride
                    j0 = oj * stride
                    best = x[n, c, i0, j0]
                    where = i0 * W + j0
                    if best == best:  # not NaN
                        for ki in range(K):
                            stop = False
                            for kj in range(K):
                                v = x[n, c, i0 + ki, j0 + kj]
                                if v > best or v != v:
                                    best = v
                                    where = (i0 + ki) * W + j0 + kj
                                    if v != v:
                                        stop = True
                                        break
                            if stop:
                                break
                    out[n, c, oi, oj] = best
                    arg[n, c, oi, oj] = where
    return out, arg


def maxpool_backward_np(arg, g, H, W):
    B, C = g.shape[:2]
    gx = np.zeros((B * C, H * W), g.dtype)
    rows = np.repeat(np.arange(B * C), arg[0, 0].size)
    # add.at, not fancy assignment: overlapping windows (stride < kernel) may pick the same pixel.
    np.add.at(gx, (rows, arg.reshape(-1)), g.reshape(-1))
    return gx.reshape(B, C, H, W)


@kernel(maxpool_backward_np)
def maxpool_backward(arg, g, H, W):
    B, C, Ho, Wo = g.shape
    gx = np.zeros((B, C, H * W), g.dtype)
    for n in range(B):
        for c in range(C):
            for oi in range(Ho):
                for oj in range(Wo):
                    gx[n, c, arg[n, c, oi, oj]] += g[n, c, oi, oj]
    return gx.reshape(B, C, H, W)


# --- wrappers -----------------------------------------------------------------------------------------


def conv2d(x: np.ndarray, Wt: np.ndarray, b: np.ndarray | None, stride: int, pad: int) -> np.ndarray:
    """Cross-correlation of x (B, C, H, W) with Wt (C_out, C, K, K), plus b (C_out) if given."""
    x = np.ascontiguousarray(x)
    Wt = np.ascontiguousarray(Wt, dtype=x.dtype)
    b = np.zeros(Wt.shape[0], x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    return conv2d_forward(x, Wt, b, int(stride), int(pad))


def conv2d_grad(x: np.ndarray, Wt: np.ndarray, g: np.ndarray, stride: int, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dW, db)`` for upstream gradient g (B, C_out, H', W')."""
    x = np.ascontiguousarray(x)
    Wt = np.ascontiguousarray(Wt, dtype=x.dtype)
    g = np.ascontiguousarray(g, dtype=x.dtype)
    return conv2d_backward(x, Wt, g, int(stride), int(pad))


def maxpool2d(x: np.ndarray, K: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """``(out, arg)``: window maxima and the flat (H·W) index each came from."""
    return maxpool_forward(np.ascontiguousarray(x), int(K), int(stride))


def maxpool2d_grad(arg: np.ndarray, g: np.ndarray, H: int, W: int) -> np.ndarray:
    g = np.ascontiguousarray(g)
    return maxpool_backward(np.ascontiguousarray(arg, dtype=np.int64), g, int(H), int(W))
