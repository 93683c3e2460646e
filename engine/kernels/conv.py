"""2-D convolution (cross-correlation) and max pooling, forward and backward.

Conv2d is batched im2col: a kernel gathers the windows of a chunk of images into one matrix of
columns (C·Kh·Kw, n·H'·W'), one BLAS product per group multiplies it by the filters, and a second
kernel writes the result out image by image with the bias added (one pass, no index division
per element). The backward pass is the same in reverse: one pass turns the upstream gradient
into (C_out, n·H'·W') and sums it for the bias gradient, two products give the filter gradient
and the columns' gradient, and a kernel adds the columns back into the images. The products are
numpy's, shared by both backends; the kernels only move data, which keeps them cheap to compile.
A chunk holds as many images as fit in :data:`COLUMN_BYTES` of columns (the whole batch at
lesson sizes: one product per group); the forward pass hands its columns to the backward pass
when the whole batch fit in one chunk, so they are not gathered twice. Zero padding is handled
while gathering, so no padded copy of the image is made: each row of columns splits into the
part left of the image, the part inside (a plain strided copy, which vectorises) and the part
right of it.

Every size is a (height, width) pair: kernel (Kh, Kw), stride (sh, sw), padding (ph, pw),
dilation (dh, dw) (the kernel's taps are dh rows and dw columns apart). ``groups`` splits the
channels: group g's C_out/groups filters see only its C_in/groups input channels.

Layouts: x (B, C, H, W), W (C_out, C/groups, Kh, Kw), columns (C·Kh·Kw, n·H'·W') with row index
``(c·Kh + ki)·Kw + kj`` (group g's rows are a contiguous block, in the order of
``W.reshape(C_out, Cg·Kh·Kw)``) and column index ``image·H'·W' + i·W' + j``.

MaxPool2d pads with −∞ (a window never picks padding) and, with ``ceil_mode``, lets the last
window hang over the bottom and right edges, exactly as torch: a window must start inside the
image or its left/top padding.
"""

from __future__ import annotations

import numpy as np

from engine.kernels import jit, kernel

Pair = tuple[int, int]


def _two(v: int | tuple[int, ...]) -> Pair:
    """A size as (height, width): a number means both."""
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def out_size(n: int, k: int, stride: int, pad: int, dilation: int = 1, ceil: bool = False) -> int:
    """torch's output size: ⌊(n + 2p − d(k − 1) − 1)/s⌋ + 1, rounded up instead with ``ceil``
    (but the last window must start inside the input or its leading padding). May be ≤ 0: the
    caller reports it."""
    span = n + 2 * pad - dilation * (k - 1) - 1
    if not ceil:
        return span // stride + 1
    size = -(-span // stride) + 1
    if (size - 1) * stride >= n + pad:
        size -= 1
    return size


# --- Conv2d: im2col over a chunk of images, and the moves around the products --------------------

#: Columns of at most this many bytes per chunk of images (at least one image per chunk).
COLUMN_BYTES = 16 << 20


@jit(signature="UniTuple(int64, 2)(int64, int64, int64, int64)")
def _inside(n_out, stride, offset, size):
    """``(lo, hi)``: the outputs o in [0, n_out) whose tap ``o·stride + offset`` lies in [0, size)."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    hi = 0
    if size - offset > 0:
        hi = (size - offset + stride - 1) // stride
    lo = min(lo, n_out)
    hi = max(lo, min(hi, n_out))
    return lo, hi


def _windows_np(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int, dh: int, dw: int) -> np.ndarray:
    """(B, C, Ho, Wo, Kh, Kw) view of the zero-padded input, taps dh/dw apart."""
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


def im2col_np(x, kh, kw, sh, sw, ph, pw, dh, dw, cols):
    """Fills ``cols`` (C·Kh·Kw, B·Ho·Wo) with the windows of every image of ``x`` (B, C, H, W)."""
    B, C = x.shape[:2]
    win = _windows_np(x, kh, kw, sh, sw, ph, pw, dh, dw)  # (B, C, Ho, Wo, Kh, Kw)
    cols[...] = win.transpose(1, 4, 5, 0, 2, 3).reshape(cols.shape)


@kernel(im2col_np)
def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, cols):
    B, C, H, W = x.shape
    P = cols.shape[1] // B if B else 0
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    Ho = P // Wo if Wo else 0
    for c in range(C):
        for ki in range(kh):
            for kj in range(kw):
                row = (c * kh + ki) * kw + kj
                lo, hi = _inside(Wo, sw, kj * dw - pw, W)
                start = lo * sw - pw + kj * dw
                dst = cols[row]
                for n in range(B):
                    for oi in range(Ho):
                        ii = oi * sh - ph + ki * dh
                        base = n * P + oi * Wo
                        # NOTE: unsigned indices: a signed one is checked for wrap-around (−1 is
                        # the last element), which keeps LLVM from vectorising the copy (2–3×).
                        if ii < 0 or ii >= H:
                            for oj in range(Wo):
                                dst[np.uint64(base + oj)] = 0
                            continue
                        src = x[n, c, ii]
                        for oj in range(lo):
                            dst[np.uint64(base + oj)] = 0
                        if sw == 1:  # a contiguous copy (the usual case)
                            for oj in range(hi - lo):
                                dst[np.uint64(base + lo + oj)] = src[np.uint64(start + oj)]
                        else:
                            for oj in range(hi - lo):
                                dst[np.uint64(base + lo + oj)] = src[np.uint64(start + oj * sw)]
                        for oj in range(hi, Wo):
                            dst[np.uint64(base + oj)] = 0


def col2im_np(cols, kh, kw, sh, sw, ph, pw, dh, dw, gx):
    """Fills ``gx`` (B, C, H, W) with the sum of the columns' entries over the windows that saw
    each pixel: the adjoint of :func:`im2col_np`."""
    B, C, H, W = gx.shape
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    c6 = cols.reshape(C, kh, kw, B, Ho, Wo)
    gxp = np.zeros((B, C, H + 2 * ph, W + 2 * pw), gx.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            gxp[:, :, r0:r0 + sh * (Ho - 1) + 1:sh, c0:c0 + sw * (Wo - 1) + 1:sw] += c6[:, i, j].transpose(1, 0, 2, 3)
    gx[...] = gxp[:, :, ph:ph + H, pw:pw + W]


@kernel(col2im_np)
def col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, gx):
    B, C, H, W = gx.shape
    P = cols.shape[1] // B if B else 0
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    Ho = P // Wo if Wo else 0
    g1 = gx.reshape(gx.size)
    for i in range(gx.size):
        g1[i] = 0
    for c in range(C):
        for ki in range(kh):
            for kj in range(kw):
                row = (c * kh + ki) * kw + kj
                lo, hi = _inside(Wo, sw, kj * dw - pw, W)
                start = lo * sw - pw + kj * dw
                src = cols[row]
                for n in range(B):
                    for oi in range(Ho):
                        ii = oi * sh - ph + ki * dh
                        if ii < 0 or ii >= H:
                            continue
                        base = n * P + oi * Wo + lo
                        dst = gx[n, c, ii]
                        if sw == 1:  # unsigned indices: see im2col
                            for oj in range(hi - lo):
                                dst[np.uint64(start + oj)] += src[np.uint64(base + oj)]
                        else:
                            for oj in range(hi - lo):
                                dst[np.uint64(start + oj * sw)] += src[np.uint64(base + oj)]


def to_images_np(y, b, out):
    """``out[n, o] = y[o, n·P : (n+1)·P] + b[o]``: the product's (C_out, B·P) into (B, C_out, P)."""
    B, Co, P = out.shape
    out[...] = y.reshape(Co, B, P).transpose(1, 0, 2) + b[None, :, None]


@kernel(to_images_np)
def to_images(y, b, out):
    B, Co, P = out.shape
    for o in range(Co):
        bo = b[o]
        src = y[o]
        for n in range(B):
            dst = out[n, o]
            for p in range(P):
                dst[p] = src[np.uint64(n * P + p)] + bo  # unsigned: see im2col


def from_images_np(g, gt, gb):
    """``gt`` (C_out, B·P) from the upstream gradient ``g`` (B, C_out, P), and ``gb`` its sum per
    channel: the adjoint of :func:`to_images_np`."""
    B, Co, P = g.shape
    gt[...] = g.transpose(1, 0, 2).reshape(Co, B * P)
    gb[...] = g.sum(axis=(0, 2))


@kernel(from_images_np)
def from_images(g, gt, gb):
    B, Co, P = g.shape
    for o in range(Co):
        s = 0.0
        dst = gt[o]
        for n in range(B):
            src = g[n, o]
            for p in range(P):
                v = src[p]
                dst[np.uint64(n * P + p)] = v  # unsigned: see im2col
                s += v
        gb[o] = s


# --- MaxPool2d --------------------------------------------------------------------------------------


def maxpool_forward_np(x, kh, kw, sh, sw, ph, pw, out, arg):
    """Fills ``out`` and ``arg`` (B, C, H', W'); ``arg`` is the flat index ``i·W + j`` of each
    window's maximum within its (H, W) plane: the first one in row-major order on ties, the first
    NaN if there is one. Only the part of a window inside the image counts (padding is −∞)."""
    B, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    for oi in range(Ho):
        i0, i1 = max(oi * sh - ph, 0), min(oi * sh - ph + kh, H)
        for oj in range(Wo):
            j0, j1 = max(oj * sw - pw, 0), min(oj * sw - pw + kw, W)
            flat = x[:, :, i0:i1, j0:j1].reshape(B, C, (i1 - i0) * (j1 - j0))
            isnan = np.isnan(flat)
            # NaN first: a window holding a NaN outputs NaN (as torch does), so it stays visible.
            k = np.where(isnan.any(axis=-1), isnan.argmax(axis=-1), np.argmax(flat, axis=-1))
            out[:, :, oi, oj] = np.take_along_axis(flat, k[..., None], axis=-1)[..., 0]
            arg[:, :, oi, oj] = (i0 + k // (j1 - j0)) * W + j0 + k % (j1 - j0)


@kernel(maxpool_forward_np)
def maxpool_forward(x, kh, kw, sh, sw, ph, pw, out, arg):
    B, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    # Taps in row-major order, each taken only when strictly greater (ties keep the first
    # maximum). NaN is left out of that comparison, which keeps it a plain select: a window
    # whose sum is NaN (it holds a NaN, or both infinities) is searched again for its first NaN.
    # NOTE: with the NaN test inside the comparison the loops ran 4–5× slower (measured).
    if kh == 2 and kw == 2 and ph == 0 and pw == 0 and (Ho - 1) * sh + 2 <= H and (Wo - 1) * sw + 2 <= W:
        # The usual 2×2 windows, all inside the image: the four taps unrolled.
        for n in range(B):
            for c in range(C):
                for oi in range(Ho):
                    i = oi * sh
                    for oj in range(Wo):
                        j = oj * sw
                        a0 = x[n, c, i, j]
                        a1 = x[n, c, i, j + 1]
                        a2 = x[n, c, i + 1, j]
                        a3 = x[n, c, i + 1, j + 1]
                        best = a0
                        k = 0
                        t = a1 > best
                        best = a1 if t else best
                        k = 1 if t else k
                        t = a2 > best
                        best = a2 if t else best
                        k = 2 if t else k
                        t = a3 > best
                        best = a3 if t else best
                        k = 3 if t else k
                        total = a0 + a1 + a2 + a3
                        if total != total:
                            for tap in range(4):
                                v = x[n, c, i + tap // 2, j + tap % 2]
                                if v != v:
                                    best = v
                                    k = tap
                                    break
                        out[n, c, oi, oj] = best
                        arg[n, c, oi, oj] = (i + k // 2) * W + j + k % 2
        return
    for n in range(B):
        for c in range(C):
            for oi in range(Ho):
                i0 = max(oi * sh - ph, 0)
                i1 = min(oi * sh - ph + kh, H)
                for oj in range(Wo):
                    j0 = max(oj * sw - pw, 0)
                    j1 = min(oj * sw - pw + kw, W)
                    best = x[n, c, i0, j0]
                    where = i0 * W + j0
                    total = best - best
                    for i in range(i0, i1):
                        for j in range(j0, j1):
                            v = x[n, c, i, j]
                            total += v
                            t = v > best
                            best = v if t else best
                            where = i * W + j if t else where
                    if total != total:
                        stop = False
                        for i in range(i0, i1):
                            for j in range(j0, j1):
                                v = x[n, c, i, j]
                                if v != v:
                                    best = v
                                    where = i * W + j
                                    stop = True
                                    break
                            if stop:
                                break
                    out[n, c, oi, oj] = best
                    arg[n, c, oi, oj] = where


def maxpool_backward_np(arg, g, gx):
    """Adds each window's gradient into ``gx`` (B, C, H·W, zeros on entry) at its arg-max."""
    B, C = g.shape[:2]
    rows = np.repeat(np.arange(B * C), arg[0, 0].size) if B * C else np.zeros(0, np.int64)
    # add.at, not fancy assignment: overlapping windows (stride < kernel) may pick the same pixel.
    np.add.at(gx.reshape(B * C, gx.shape[2]), (rows, arg.reshape(-1)), g.reshape(-1))


@kernel(maxpool_backward_np)
def maxpool_backward(arg, g, gx):
    B, C, Ho, Wo = g.shape
    for n in range(B):
        for c in range(C):
            for oi in range(Ho):
                for oj in range(Wo):
                    gx[n, c, arg[n, c, oi, oj]] += g[n, c, oi, oj]


# --- wrappers -----------------------------------------------------------------------------------------


def _chunk(x: np.ndarray, rows: int, per_image: int) -> int:
    """Images per chunk: as many as fit in COLUMN_BYTES of columns, at least one."""
    return max(1, min(x.shape[0], COLUMN_BYTES // max(1, rows * per_image * x.itemsize)))


def conv2d(x: np.ndarray, Wt: np.ndarray, b: np.ndarray | None, stride: int | Pair, pad: int | Pair,
           dilation: int | Pair = 1, groups: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Cross-correlation of x (B, C, H, W) with Wt (C_out, C/groups, Kh, Kw), plus b (C_out) if
    given. Returns ``(out, columns)``: the columns of the whole batch when it fit in one chunk
    (give them back to :func:`conv2d_grad`), else None."""
    x = np.ascontiguousarray(x)
    Wt = np.ascontiguousarray(Wt, dtype=x.dtype)
    b = np.zeros(Wt.shape[0], x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    (sh, sw), (ph, pw), (dh, dw) = _two(stride), _two(pad), _two(dilation)
    B, C = x.shape[:2]
    Co, cg, kh, kw = Wt.shape
    Ho, Wo = out_size(x.shape[2], kh, sh, ph, dh), out_size(x.shape[3], kw, sw, pw, dw)
    P = Ho * Wo
    out = np.empty((B, Co, Ho, Wo), x.dtype)
    w3 = Wt.reshape(groups, Co // groups, cg * kh * kw)
    step = _chunk(x, C * kh * kw, P)
    cols = None
    for n0 in range(0, B, step):
        xs = x[n0:n0 + step]
        cols = np.empty((C * kh * kw, len(xs) * P), x.dtype)
        im2col(xs, kh, kw, sh, sw, ph, pw, dh, dw, cols)
        y = np.matmul(w3, cols.reshape(groups, cg * kh * kw, len(xs) * P)).reshape(Co, len(xs) * P)
        to_images(y, b, out[n0:n0 + step].reshape(len(xs), Co, P))
    return out, (cols if step >= B else None)


def conv2d_grad(x: np.ndarray, Wt: np.ndarray, g: np.ndarray, stride: int | Pair, pad: int | Pair,
                dilation: int | Pair = 1, groups: int = 1, columns: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dW, db)`` for upstream gradient g (B, C_out, H', W'); ``columns``: what
    :func:`conv2d` returned for this x (gathered again when None)."""
    x = np.ascontiguousarray(x)
    Wt = np.ascontiguousarray(Wt, dtype=x.dtype)
    g = np.ascontiguousarray(g, dtype=x.dtype)
    (sh, sw), (ph, pw), (dh, dw) = _two(stride), _two(pad), _two(dilation)
    B, C = x.shape[:2]
    Co, cg, kh, kw = Wt.shape
    P = g.shape[2] * g.shape[3]
    ckk = cg * kh * kw
    w3 = Wt.reshape(groups, Co // groups, ckk)
    gx = np.empty_like(x)
    gW = np.zeros((groups, Co // groups, ckk), x.dtype)
    gb = np.zeros(Co, x.dtype)
    step = _chunk(x, C * kh * kw, P)
    for n0 in range(0, B, step):
        xs, gs = x[n0:n0 + step], g[n0:n0 + step]
        n = len(xs)
        cols = columns if (columns is not None and step >= B) else None
        if cols is None:
            cols = np.empty((C * kh * kw, n * P), x.dtype)
            im2col(xs, kh, kw, sh, sw, ph, pw, dh, dw, cols)
        gt = np.empty((Co, n * P), x.dtype)
        gbs = np.empty(Co, x.dtype)
        from_images(gs.reshape(n, Co, P), gt, gbs)
        gb += gbs
        gt3 = gt.reshape(groups, Co // groups, n * P)
        cols3 = cols.reshape(groups, ckk, n * P)
        gW += np.matmul(gt3, cols3.transpose(0, 2, 1))
        gcols = np.matmul(w3.transpose(0, 2, 1), gt3).reshape(C * kh * kw, n * P)
        col2im(gcols, kh, kw, sh, sw, ph, pw, dh, dw, gx[n0:n0 + step])
    return gx, gW.reshape(Wt.shape), gb


def maxpool2d(x: np.ndarray, kernel_size: int | Pair, stride: int | Pair, pad: int | Pair = 0,
              ceil: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(out, arg)``: window maxima and the flat (H·W) index each came from."""
    x = np.ascontiguousarray(x)
    (kh, kw), (sh, sw), (ph, pw) = _two(kernel_size), _two(stride), _two(pad)
    Ho, Wo = out_size(x.shape[2], kh, sh, ph, 1, ceil), out_size(x.shape[3], kw, sw, pw, 1, ceil)
    out = np.empty((x.shape[0], x.shape[1], Ho, Wo), x.dtype)
    arg = np.empty((x.shape[0], x.shape[1], Ho, Wo), np.int64)
    maxpool_forward(x, int(kh), int(kw), int(sh), int(sw), int(ph), int(pw), out, arg)
    return out, arg


def maxpool2d_grad(arg: np.ndarray, g: np.ndarray, H: int, W: int) -> np.ndarray:
    g = np.ascontiguousarray(g)
    gx = np.zeros((g.shape[0], g.shape[1], int(H) * int(W)), g.dtype)
    maxpool_backward(np.ascontiguousarray(arg, dtype=np.int64), g, gx)
    return gx.reshape(g.shape[0], g.shape[1], int(H), int(W))
