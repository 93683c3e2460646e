"""Conv2d's dilation, groups and rectangular kernels/strides/padding, and MaxPool2d's padding and
ceil_mode, against torch: shapes, forward and every gradient, float32 and float64 (1e-10)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import blocks, kernels
from engine.errors import ParamError, ShapeError

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.torch

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


def _tol(dtype):
    return {"rtol": 1e-4, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}


# (x shape, out_channels, kernel, stride, padding, dilation, groups, bias)
CONVS = [
    pytest.param((2, 3, 9, 8), 4, 3, 1, 2, 2, 1, True, id="dilation2"),
    pytest.param((1, 2, 11, 10), 3, (3, 2), 1, 0, (3, 2), 1, False, id="rect-dilation"),
    pytest.param((2, 4, 6, 7), 6, 3, 1, 1, 1, 2, True, id="groups2"),
    pytest.param((2, 3, 6, 6), 3, 3, 2, 1, 1, 3, True, id="depthwise"),
    pytest.param((2, 4, 5, 6), 8, 1, 1, 0, 1, 4, False, id="grouped-1x1"),
    pytest.param((1, 2, 7, 9), 2, (2, 4), (2, 3), (1, 2), 1, 1, True, id="rect-kernel-stride-pad"),
    pytest.param((2, 6, 10, 9), 4, (3, 1), (1, 2), (0, 1), (2, 1), 2, True, id="everything"),
    pytest.param((0, 2, 5, 5), 2, 3, 1, 1, 1, 1, True, id="empty-batch"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,c_out,k,stride,pad,dil,groups,bias", CONVS)
def test_conv2d_options_match_torch(shape, c_out, k, stride, pad, dil, groups, bias, dtype):
    rng = np.random.default_rng(sum(shape) + c_out)
    block = blocks.create("Conv2d", out_channels=c_out, kernel=k, stride=stride, padding=pad, dilation=dil, groups=groups, bias=bias)
    x = rng.uniform(-1, 1, shape).astype(dtype)
    w = {n: (v + rng.uniform(-0.3, 0.3, v.shape)).astype(dtype) for n, v in block.init_weights({"x": shape}, rng).items()}
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w["W"]).requires_grad_()
    tb = torch.from_numpy(w["b"]).requires_grad_() if bias else None
    ref = F.conv2d(tx, tw, tb, stride=stride, padding=pad, dilation=dil, groups=groups)
    assert block.infer_shapes({"x": shape})["out"] == tuple(ref.shape)
    assert tuple(w["W"].shape) == tuple(torch.nn.Conv2d(shape[1], c_out, k, groups=groups).weight.shape)
    g = rng.standard_normal(tuple(ref.shape)).astype(dtype)
    (ref * torch.from_numpy(g)).sum().backward()
    for backend in kernels.BACKENDS:
        with kernels.using(backend):
            outs, saved = block.forward({"x": x}, w)
            gin, gw = block.backward({"out": g}, saved, w)
        tol = _tol(dtype)
        assert outs["out"].dtype == dtype
        np.testing.assert_allclose(outs["out"], ref.detach().numpy(), err_msg=backend, **tol)
        np.testing.assert_allclose(gin["x"], tx.grad.numpy(), err_msg=backend, **tol)
        np.testing.assert_allclose(gw["W"], tw.grad.numpy(), err_msg=backend, **tol)
        if bias:
            np.testing.assert_allclose(gw["b"], tb.grad.numpy(), err_msg=backend, **tol)


# (x shape, kernel, stride, padding, ceil_mode)
POOLS = [
    pytest.param((2, 2, 6, 6), 2, None, 1, False, id="pad1"),
    pytest.param((2, 3, 7, 7), 3, 2, 1, False, id="k3-s2-pad1"),
    pytest.param((2, 2, 7, 7), 2, 2, 0, True, id="ceil-odd"),
    pytest.param((1, 2, 5, 8), 3, 2, 1, True, id="ceil-pad"),
    pytest.param((1, 1, 6, 6), 3, 3, 1, True, id="ceil-k3-s3-pad1"),
    pytest.param((1, 2, 5, 5), 2, 2, 1, True, id="ceil-drops-window-in-padding"),
    pytest.param((2, 2, 5, 9), (2, 3), (1, 2), (1, 1), False, id="rect"),
    pytest.param((1, 3, 7, 5), (3, 2), (2, 2), (1, 0), True, id="rect-ceil"),
    pytest.param((2, 2, 4, 4), 2, 1, 0, True, id="overlapping-ceil"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k,stride,pad,ceil", POOLS)
def test_maxpool2d_padding_and_ceil_mode_match_torch(shape, k, stride, pad, ceil, dtype):
    rng = np.random.default_rng(sum(shape) + 3 * ceil)
    block = blocks.create("MaxPool2d", kernel=k, stride=stride, padding=pad, ceil_mode=ceil)
    x = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[::7] = -np.inf  # a window made of −∞ and padding still picks a pixel of the image
    tx = torch.from_numpy(x).requires_grad_()
    ref = F.max_pool2d(tx, k, stride=stride, padding=pad, ceil_mode=ceil)
    assert block.infer_shapes({"x": shape})["out"] == tuple(ref.shape)
    g = rng.standard_normal(tuple(ref.shape)).astype(dtype)
    (ref * torch.from_numpy(g)).sum().backward()
    for backend in kernels.BACKENDS:
        with kernels.using(backend):
            outs, saved = block.forward({"x": x}, {})
            gin, _ = block.backward({"out": g}, saved, {})
        np.testing.assert_array_equal(outs["out"], ref.detach().numpy(), err_msg=backend)
        np.testing.assert_allclose(gin["x"], tx.grad.numpy(), err_msg=backend, **_tol(dtype))


def test_ceil_mode_follows_torchs_rule_that_a_window_starts_inside():
    # 5 rows, kernel 2, stride 2: ⌈(5 − 2)/2⌉ + 1 = 3 windows, the last one covering row 4 alone
    assert blocks.create("MaxPool2d", kernel=2, ceil_mode=True).infer_shapes({"x": (1, 1, 5, 5)})["out"] == (1, 1, 3, 3)
    assert blocks.create("MaxPool2d", kernel=2).infer_shapes({"x": (1, 1, 5, 5)})["out"] == (1, 1, 2, 2)
    # 5 rows, kernel 2, stride 2, padding 1: ⌈5/2⌉ + 1 = 4, but the 4th window would start in the bottom padding
    assert blocks.create("MaxPool2d", kernel=2, padding=1, ceil_mode=True).infer_shapes({"x": (1, 1, 5, 5)})["out"] == (1, 1, 3, 3)
    assert tuple(F.max_pool2d(torch.zeros(1, 1, 5, 5), 2, padding=1, ceil_mode=True).shape) == (1, 1, 3, 3)


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ParamError, match=r"'groups' \(3\) must divide 'out_channels' \(4\)"):
        blocks.create("Conv2d", out_channels=4, groups=3)
    with pytest.raises(ShapeError, match=r"input 'x' has 5 channels .* 'groups' \(2\) must divide"):
        blocks.create("Conv2d", out_channels=4, groups=2).infer_shapes({"x": (1, 5, 6, 6)})
    with pytest.raises(ParamError, match=r"'kernel' takes one number \(a square\) or two \(height, width\), got \[1, 2, 3\]"):
        blocks.create("Conv2d", kernel=(1, 2, 3))
    with pytest.raises(ShapeError, match=r"parameter 'kernel' \(3, spanning 5×5 with dilation 2\) is larger than the image \(4×4"):
        blocks.create("Conv2d", kernel=3, dilation=2).infer_shapes({"x": (1, 1, 4, 4)})
    with pytest.raises(ParamError, match=r"'padding' \(2\) must be at most half the kernel \(3\)"):
        blocks.create("MaxPool2d", kernel=3, padding=2)
    conv = blocks.create("Conv2d", out_channels=2, kernel=(2, 3))
    assert conv.p["kernel"] == (2, 3) and blocks.create("Conv2d", kernel=3).p["kernel"] == (3,)
    assert conv.weight_shapes({"x": (1, 4, 5, 5)}) == {"W": (2, 4, 2, 3), "b": (2,)}
