"""Image blocks: 2-D convolution (cross-correlation) and max pooling.

Sizes (kernel, stride, padding, dilation) are one number for a square, or two for (height,
width), as torch takes them.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import (
    Arrays,
    Block,
    Category,
    Example,
    Param,
    ParamType,
    Port,
    Shape,
    WeightSpec,
    shape_str,
)
from engine.errors import ParamError
from engine.kernels import conv as kern

Pair = tuple[int, int]


def _image(block: Block, in_shapes: Mapping[str, Shape]) -> Shape:
    return block.require(in_shapes, "x", 4, "(batch, channels, height, width)")


def _pair(block: Block, name: str, value: tuple[int, ...] | None = None) -> Pair:
    """A size param as (height, width): one number means both."""
    v = block.p[name] if value is None else value
    if len(v) not in (1, 2):
        raise ParamError(f"{block.type_id}: parameter '{name}' takes one number (a square) or two (height, width), got {list(v)}")
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _fmt(p: Pair) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}×{p[1]}"


def _spatial(block: Block, x: Shape, k: Pair, stride: Pair, pad: Pair, dilation: Pair = (1, 1), ceil: bool = False) -> Pair:
    """Output height and width, or a ShapeError naming 'kernel' when the window does not fit."""
    H, W = x[2], x[3]
    span = (dilation[0] * (k[0] - 1) + 1, dilation[1] * (k[1] - 1) + 1)
    if span[0] > H + 2 * pad[0] or span[1] > W + 2 * pad[1]:
        padded = f"{H + 2 * pad[0]}×{W + 2 * pad[1]} after padding {_fmt(pad)}" if any(pad) else f"{H}×{W}"
        what = f"({_fmt(k)})" if span == k else f"({_fmt(k)}, spanning {span[0]}×{span[1]} with dilation {_fmt(dilation)})"
        raise block.shape_error(
            f"parameter 'kernel' {what} is larger than the image ({padded}; input 'x' has shape {shape_str(x)}); "
            f"use a smaller kernel or more padding"
        )
    return (kern.out_size(H, k[0], stride[0], pad[0], dilation[0], ceil), kern.out_size(W, k[1], stride[1], pad[1], dilation[1], ceil))


_SIZE_DOC = "; two numbers for (height, width)"


@register
class Conv2d(Block):
    """2-D convolution as every deep-learning library computes it: cross-correlation, no kernel flip.

    ``out[b, o, i, j] = bias[o] + Σ_c Σ_ki Σ_kj W[o, c, ki, kj] · x_pad[b, g·C_g + c, i·s + ki·d, j·s + kj·d]``,
    where ``x_pad`` is x with ``padding`` zeros on every side, d the ``dilation`` (gaps between
    the kernel's taps) and g the group of filter o: with ``groups`` G, the C_in channels and
    the C_out filters split into G groups and each filter sees only its own group's C_g = C_in/G
    channels (G = C_in is a depthwise convolution). H' = ⌊(H + 2p − d(K − 1) − 1)/s⌋ + 1, W' alike.
    Kernel, stride, padding and dilation take one number or (height, width). Matches ``nn.Conv2d``.

    Example: out_channels 16, kernel 3, padding 1, x (8, 3, 28, 28) → out (8, 16, 28, 28)."""

    type_id = "Conv2d"
    category = Category.CONVOLUTION
    formula = "out[o,i,j] = b[o] + Σ_{c,ki,kj} W[o,c,ki,kj] · x[c, i·s+ki·d−p, j·s+kj·d−p]"
    inputs = (Port("x", doc="images (B, C_in, H, W)"),)
    outputs = (Port("out", doc="feature maps (B, C_out, H', W')"),)
    params = (
        Param("out_channels", ParamType.INT, 8, "number of filters C_out", minimum=1),
        Param("kernel", ParamType.INTS, (3,), "filter size K (K×K)" + _SIZE_DOC, minimum=1),
        Param("stride", ParamType.INTS, (1,), "step s between windows" + _SIZE_DOC, minimum=1),
        Param("padding", ParamType.INTS, (0,), "zeros added on every side" + _SIZE_DOC, minimum=0),
        Param("dilation", ParamType.INTS, (1,), "spacing d between the kernel's taps (1: adjacent)" + _SIZE_DOC, minimum=1),
        Param("groups", ParamType.INT, 1, "split channels and filters into this many independent groups", minimum=1),
        Param("bias", ParamType.BOOL, True, "add a learned bias per output channel"),
    )
    weights = (
        WeightSpec("W", "(C_out, C_in/groups, Kh, Kw)", "filters"),
        WeightSpec("b", "(C_out)", "bias per output channel (when bias is on)"),
    )
    examples = (
        Example({"out_channels": 2, "kernel": 3}, {"x": (2, 2, 4, 4)}),
        Example({"out_channels": 3, "kernel": 2, "stride": 2, "padding": 1, "bias": False}, {"x": (1, 2, 5, 5)}),
        Example({"out_channels": 2, "kernel": 3, "stride": 2, "padding": 2}, {"x": (2, 1, 5, 6)}),
        Example({"out_channels": 2, "kernel": 1}, {"x": (1, 3, 3, 2)}),
        Example({"out_channels": 4, "kernel": (2, 3), "stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 2},
                {"x": (2, 4, 5, 7)}),
        Example({"out_channels": 3, "kernel": (3, 1), "dilation": 2, "groups": 3}, {"x": (1, 3, 6, 3)}),
    )

    def check_params(self) -> None:
        for name in ("kernel", "stride", "padding", "dilation"):
            _pair(self, name)
        if self.p["out_channels"] % self.p["groups"]:
            raise ParamError(
                f"Conv2d: parameter 'groups' ({self.p['groups']}) must divide 'out_channels' ({self.p['out_channels']}); "
                f"each group gets out_channels / groups filters"
            )

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = _image(self, in_shapes)
        groups = self.p["groups"]
        if x[1] == 0 or x[1] % groups:
            raise self.shape_error(
                f"input 'x' has {x[1]} channels (shape {shape_str(x)}), which parameter 'groups' ({groups}) must divide "
                f"into groups of at least one channel"
            )
        Ho, Wo = _spatial(self, x, _pair(self, "kernel"), _pair(self, "stride"), _pair(self, "padding"), _pair(self, "dilation"))
        return {"out": (x[0], self.p["out_channels"], Ho, Wo)}

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = _image(self, in_shapes)
        kh, kw = _pair(self, "kernel")
        out: dict[str, Shape] = {"W": (self.p["out_channels"], x[1] // self.p["groups"], kh, kw)}
        if self.p["bias"]:
            out["b"] = (self.p["out_channels"],)
        return out

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        # torch's default bound 1/√fan_in with fan_in = C_in/groups·Kh·Kw (the base class would use
        # W.shape[0] = C_out, which is the wrong fan-in for a filter bank). Bias starts at zero.
        shapes = self.weight_shapes(in_shapes)
        bound = 1.0 / math.sqrt(max(1, math.prod(shapes["W"][1:])))
        out: Arrays = {"W": rng.uniform(-bound, bound, size=shapes["W"])}
        if "b" in shapes:
            out["b"] = np.zeros(shapes["b"])
        return out

    def _geometry(self) -> tuple[Pair, Pair, Pair, int]:
        return _pair(self, "stride"), _pair(self, "padding"), _pair(self, "dilation"), self.p["groups"]

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        self.infer_shapes({"x": x.shape})
        W = weights["W"]
        c_in = W.shape[1] * self.p["groups"]
        if c_in != x.shape[1]:
            raise self.shape_error(
                f"input 'x' dimension 1 (channels) should be {c_in}, the filters' C_in, got {x.shape[1]} "
                f"(shape {shape_str(x.shape)}); the weights were made for {c_in} channels"
            )
        out, columns = kern.conv2d(x, W, weights.get("b"), *self._geometry())
        return {"out": out}, {"x": x, "columns": columns}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        gx, gW, gb = kern.conv2d_grad(saved["x"], weights["W"], gout["out"], *self._geometry(), columns=saved["columns"])
        gw: Arrays = {"W": gW}
        if "b" in weights:
            gw["b"] = gb
        return {"x": gx}, gw


@register
class MaxPool2d(Block):
    """Maximum over each window: ``out[b, c, i, j] = max x_pad[b, c, i·s + ki, j·s + kj]``.

    ``padding`` adds −∞ on every side (it can never win; at most half the kernel, as torch asks).
    ``ceil_mode`` rounds the output size up, so a last, partial window covers what is left at
    the bottom and right edges: H' = ⌈(H + 2p − K)/s⌉ + 1 instead of ⌊…⌋ + 1, except that a
    window must start inside the image or its top/left padding (torch's rule).

    The gradient goes to the arg-max of each window only; on a tie, to the first maximum in
    row-major order (torch's choice); a window holding NaN outputs NaN so it stays visible.
    ``stride`` empty means stride = kernel (non-overlapping windows). Matches ``nn.MaxPool2d``.

    Example: kernel 2, x (8, 16, 28, 28) → out (8, 16, 14, 14)."""

    type_id = "MaxPool2d"
    category = Category.CONVOLUTION
    formula = "out[i,j] = max_{ki,kj} x[i·s+ki−p, j·s+kj−p];  gradient → the arg-max"
    inputs = (Port("x", doc="images (B, C, H, W)"),)
    outputs = (Port("out", doc="pooled maps (B, C, H', W')"),)
    params = (
        Param("kernel", ParamType.INTS, (2,), "window size K (K×K)" + _SIZE_DOC, minimum=1),
        Param("stride", ParamType.INTS, None, "step between windows; empty = kernel" + _SIZE_DOC, minimum=1, nullable=True),
        Param("padding", ParamType.INTS, (0,), "−∞ added on every side (at most half the kernel)" + _SIZE_DOC, minimum=0),
        Param("ceil_mode", ParamType.BOOL, False, "round the output size up: a partial last window covers the edge"),
    )
    examples = (
        Example({}, {"x": (2, 2, 4, 4)}),
        Example({"kernel": 3, "stride": 2}, {"x": (1, 2, 5, 7)}),
        Example({"kernel": 2, "stride": 1}, {"x": (2, 1, 3, 4)}),
        Example({"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}, {"x": (2, 2, 6, 5)}),
        Example({"kernel": (2, 3), "stride": (2, 2), "ceil_mode": True}, {"x": (1, 2, 5, 6)}),
        Example({"kernel": 2, "padding": 1}, {"x": (1, 1, 3, 3)}),
    )

    def check_params(self) -> None:
        k = _pair(self, "kernel")
        _pair(self, "padding")
        if self.p["stride"] is not None:
            _pair(self, "stride")
        pad = _pair(self, "padding")
        if pad[0] > k[0] // 2 or pad[1] > k[1] // 2:
            raise ParamError(
                f"MaxPool2d: parameter 'padding' ({_fmt(pad)}) must be at most half the kernel ({_fmt(k)}), "
                f"so that every window holds part of the image"
            )

    @property
    def stride(self) -> Pair:
        return _pair(self, "stride") if self.p["stride"] is not None else _pair(self, "kernel")

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = _image(self, in_shapes)
        Ho, Wo = _spatial(self, x, _pair(self, "kernel"), self.stride, _pair(self, "padding"), ceil=self.p["ceil_mode"])
        return {"out": (x[0], x[1], Ho, Wo)}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        self.infer_shapes({"x": x.shape})
        out, arg = kern.maxpool2d(x, _pair(self, "kernel"), self.stride, _pair(self, "padding"), self.p["ceil_mode"])
        return {"out": out}, {"arg": arg}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        H, W = saved["_in_shapes"]["x"][2:]
        return {"x": kern.maxpool2d_grad(saved["arg"], gout["out"], H, W)}, {}
