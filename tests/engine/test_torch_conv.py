"""Conv2d and MaxPool2d against torch: forward and every gradient, float32 and float64.

Our Conv2d W (C_out, C_in, K, K) is torch's weight layout as is.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import blocks

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.torch

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]

# (x shape, out_channels, kernel, stride, padding, bias)
CONVS = [
    pytest.param((2, 3, 8, 8), 4, 3, 1, 0, True, id="plain"),
    pytest.param((2, 3, 8, 7), 4, 3, 1, 1, True, id="same-padding"),
    pytest.param((3, 2, 9, 10), 5, 3, 2, 1, True, id="stride2-pad1"),
    pytest.param((1, 4, 7, 7), 2, 2, 3, 0, False, id="stride3-no-bias"),
    pytest.param((2, 3, 5, 6), 3, 1, 1, 0, True, id="1x1"),
    pytest.param((2, 2, 4, 4), 3, 4, 1, 0, True, id="kernel-equals-image"),
    pytest.param((2, 2, 3, 3), 2, 5, 1, 1, True, id="kernel-fits-only-padded"),
    pytest.param((2, 3, 6, 6), 2, 3, 2, 3, True, id="padding-beyond-half-kernel"),
]


def _tol(dtype):
    return (1e-4, 1e-5) if dtype == np.float32 else (1e-10, 1e-11)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,c_out,k,stride,pad,bias", CONVS)
def test_conv2d_matches_torch(shape, c_out, k, stride, pad, bias, dtype):
    rng = np.random.default_rng(sum(shape) + 7 * k + stride + pad)
    block = blocks.create("Conv2d", out_channels=c_out, kernel=k, stride=stride, padding=pad, bias=bias)
    x = rng.uniform(-1, 1, shape).astype(dtype)
    w = {n: (v + rng.uniform(-0.3, 0.3, v.shape)).astype(dtype) for n, v in block.init_weights({"x": shape}, rng).items()}
    assert set(w) == ({"W", "b"} if bias else {"W"})
    outs, saved = block.forward({"x": x}, w)
    g = rng.standard_normal(outs["out"].shape).astype(dtype)
    gin, gw = block.backward({"out": g}, saved, w)

    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w["W"]).requires_grad_()
    tb = torch.from_numpy(w["b"]).requires_grad_() if bias else None
    ref = F.conv2d(tx, tw, tb, stride=stride, padding=pad)
    assert block.infer_shapes({"x": shape})["out"] == tuple(ref.shape)
    rtol, atol = _tol(dtype)
    assert outs["out"].dtype == dtype
    np.testing.assert_allclose(outs["out"], ref.detach().numpy(), rtol=rtol, atol=atol)
    (ref * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(gin["x"], tx.grad.numpy(), rtol=rtol, atol=atol, err_msg="dx")
    np.testing.assert_allclose(gw["W"], tw.grad.numpy(), rtol=rtol, atol=atol, err_msg="dW")
    if bias:
        np.testing.assert_allclose(gw["b"], tb.grad.numpy(), rtol=rtol, atol=atol, err_msg="db")
    assert all(a.dtype == dtype for a in (gin["x"], *gw.values()))


# (x shape, kernel, stride (None = kernel))
POOLS = [
    pytest.param((2, 3, 8, 8), 2, None, id="2x2"),
    pytest.param((2, 2, 7, 9), 2, None, id="odd-size-drops-edge"),
    pytest.param((1, 3, 7, 7), 3, 2, id="overlapping-3-stride-2"),
    pytest.param((2, 2, 5, 6), 2, 1, id="overlapping-2-stride-1"),
    pytest.param((1, 2, 9, 9), 3, None, id="3x3"),
    pytest.param((2, 1, 6, 6), 2, 3, id="gaps-stride-3"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("shape,k,stride", POOLS)
def test_maxpool2d_matches_torch(shape, k, stride, ties, dtype):
    """With ties (values drawn from {0, 1, 2}) torch and we both send the gradient to the first
    maximum of each window in row-major order; overlapping windows accumulate."""
    rng = np.random.default_rng(sum(shape) + k)
    block = blocks.create("MaxPool2d", kernel=k, stride=stride)
    x = (rng.integers(0, 3, shape) if ties else rng.uniform(-1, 1, shape)).astype(dtype)
    outs, saved = block.forward({"x": x}, {})
    g = rng.standard_normal(outs["out"].shape).astype(dtype)
    gin, _ = block.backward({"out": g}, saved, {})

    tx = torch.from_numpy(x).requires_grad_()
    ref = F.max_pool2d(tx, k, stride if stride is not None else k)
    (ref * torch.from_numpy(g)).sum().backward()
    assert outs["out"].dtype == dtype and gin["x"].dtype == dtype
    np.testing.assert_array_equal(outs["out"], ref.detach().numpy())
    rtol, atol = _tol(dtype)
    np.testing.assert_allclose(gin["x"], tx.grad.numpy(), rtol=rtol, atol=atol)


def test_conv_relu_pool_chain_matches_torch():
    """A small ConvNet stage end to end (stride, padding, pooling), gradients through all three."""
    rng = np.random.default_rng(3)
    conv = blocks.create("Conv2d", out_channels=4, kernel=3, padding=1, stride=1)
    relu = blocks.create("ReLU")
    pool = blocks.create("MaxPool2d", kernel=2)
    x = rng.uniform(-1, 1, (2, 3, 10, 10))
    w = conv.init_weights({"x": x.shape}, rng)
    w["b"] = rng.uniform(-0.2, 0.2, w["b"].shape)
    a, s1 = conv.forward({"x": x}, w)
    r, s2 = relu.forward({"a": a["out"]}, {})
    p, s3 = pool.forward({"x": r["out"]}, {})
    g = rng.standard_normal(p["out"].shape)
    gp, _ = pool.backward({"out": g}, s3, {})
    gr, _ = relu.backward({"out": gp["x"]}, s2, {})
    gx, gw = conv.backward({"out": gr["a"]}, s1, w)

    tx, tw, tb = (torch.from_numpy(v).requires_grad_() for v in (x, w["W"], w["b"]))
    ref = F.max_pool2d(F.relu(F.conv2d(tx, tw, tb, padding=1)), 2)
    np.testing.assert_allclose(p["out"], ref.detach().numpy(), rtol=1e-12, atol=1e-13)
    (ref * torch.from_numpy(g)).sum().backward()
    for ours, theirs in ((gx["x"], tx), (gw["W"], tw), (gw["b"], tb)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
