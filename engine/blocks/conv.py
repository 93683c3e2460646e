"""Image blocks: 2-D convolution (cross-correlation) and max pooling."""

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
from engine.kernels import conv as kern


def _image(block: Block, in_shapes: Mapping[str, Shape]) -> Shape:
    return block.require(in_shapes, "x", 4, "(batch, channels, height, width)")


def _spatial(block: Block, x: Shape, K: int, stride: int, pad: int) -> tuple[int, int]:
    """Output height and width, or a ShapeError naming 'kernel' when the window does not fit."""
    H, W = x[2], x[3]
    if K > H + 2 * pad or K > W + 2 * pad:
        padded = f"{H + 2 * pad}×{W + 2 * pad} after padding {pad}" if pad else f"{H}×{W}"
        raise block.shape_error(
            f"parameter 'kernel' ({K}) is larger than the image ({padded}; input 'x' has shape {shape_str(x)}); "
            f"use a smaller kernel or more padding"
        )
    return kern.out_size(H, K, stride, pad), kern.out_size(W, K, stride, pad)


@register
class Conv2d(Block):
    """2-D convolution as every deep-learning library computes it: cross-correlation, no kernel flip.

    ``out[b, o, i, j] = bias[o] + Σ_c Σ_ki Σ_kj W[o, c, ki, kj] · x_pad[b, c, i·s + ki, j·s + kj]``,
    where ``x_pad`` is x with ``padding`` zeros on every side; H' = ⌊(H + 2p − K)/s⌋ + 1, W' alike.

    Example: out_channels 16, kernel 3, padding 1, x (8, 3, 28, 28) → out (8, 16, 28, 28)."""

    type_id = "Conv2d"
    category = Category.CONVOLUTION
    formula = "out[o,i,j] = b[o] + Σ_{c,ki,kj} W[o,c,ki,kj] · x[c, i·s+ki−p, j·s+kj−p]"
    inputs = (Port("x", doc="images (B, C_in, H, W)"),)
    outputs = (Port("out", doc="feature maps (B, C_out, H', W')"),)
    params = (
        Param("out_channels", ParamType.INT, 8, "number of filters C_out", minimum=1),
        Param("kernel", ParamType.INT, 3, "filter size K (K×K)", minimum=1),
        Param("stride", ParamType.INT, 1, "step s between windows", minimum=1),
        Param("padding", ParamType.INT, 0, "zeros added on every side", minimum=0),
        Param("bias", ParamType.BOOL, True, "add a learned bias per output channel"),
    )
    weights = (
        WeightSpec("W", "(C_out, C_in, K, K)", "filters"),
        WeightSpec("b", "(C_out)", "bias per output channel (when bias is on)"),
    )
    examples = (
        Example({"out_channels": 2, "kernel": 3}, {"x": (2, 2, 4, 4)}),
        Example({"out_channels": 3, "kernel": 2, "stride": 2, "padding": 1, "bias": False}, {"x": (1, 2, 5, 5)}),
        Example({"out_channels": 2, "kernel": 3, "stride": 2, "padding": 2}, {"x": (2, 1, 5, 6)}),
        Example({"out_channels": 2, "kernel": 1}, {"x": (1, 3, 3, 2)}),
    )

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = _image(self, in_shapes)
        Ho, Wo = _spatial(self, x, self.p["kernel"], self.p["stride"], self.p["padding"])
        return {"out": (x[0], self.p["out_channels"], Ho, Wo)}

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = _image(self, in_shapes)
        K = self.p["kernel"]
        out: dict[str, Shape] = {"W": (self.p["out_channels"], x[1], K, K)}
        if self.p["bias"]:
            out["b"] = (self.p["out_channels"],)
        return out

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        # torch's default bound 1/√fan_in with fan_in = C_in·K·K (the base class would use
        # W.shape[0] = C_out, which is the wrong fan-in for a filter bank). Bias starts at zero.
        shapes = self.weight_shapes(in_shapes)
        C_out, C_in, K, _ = shapes["W"]
        bound = 1.0 / math.sqrt(C_in * K * K)
        out: Arrays = {"W": rng.uniform(-bound, bound, size=shapes["W"])}
        if "b" in shapes:
            out["b"] = np.zeros(shapes["b"])
        return out

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        self.infer_shapes({"x": x.shape})
        W = weights["W"]
        if W.shape[1] != x.shape[1]:
            raise self.shape_error(
                f"input 'x' dimension 1 (channels) should be {W.shape[1]}, the filters' C_in, got {x.shape[1]} "
                f"(shape {shape_str(x.shape)}); the weights were made for {W.shape[1]} channels"
            )
        out = kern.conv2d(x, W, weights.get("b"), self.p["stride"], self.p["padding"])
        return {"out": out}, {"x": x}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        gx, gW, gb = kern.conv2d_grad(saved["x"], weights["W"], gout["out"], self.p["stride"], self.p["padding"])
        gw: Arrays = {"W": gW}
        if "b" in weights:
            gw["b"] = gb
        return {"x": gx}, gw


@register
class MaxPool2d(Block):
    """Maximum over each K×K window (no padding): ``out[b, c, i, j] = max x[b, c, i·s + ki, j·s + kj]``.

    The gradient goes to the arg-max of each window only; on a tie, to the first maximum in
    row-major order (torch's choice); a window holding NaN outputs NaN so it stays visible.
    ``stride`` empty means stride = kernel (non-overlapping windows).

    Example: kernel 2, x (8, 16, 28, 28) → out (8, 16, 14, 14)."""

    type_id = "MaxPool2d"
    category = Category.CONVOLUTION
    formula = "out[i,j] = max_{ki,kj} x[i·s+ki, j·s+kj];  gradient → the arg-max"
    inputs = (Port("x", doc="images (B, C, H, W)"),)
    outputs = (Port("out", doc="pooled maps (B, C, H', W')"),)
    params = (
        Param("kernel", ParamType.INT, 2, "window size K (K×K)", minimum=1),
        Param("stride", ParamType.INT, None, "step between windows; empty = kernel", minimum=1, nullable=True),
    )
    examples = (
        Example({}, {"x": (2, 2, 4, 4)}),
        Example({"kernel": 3, "stride": 2}, {"x": (1, 2, 5, 7)}),
        Example({"kernel": 2, "stride": 1}, {"x": (2, 1, 3, 4)}),
    )

    @property
    def stride(self) -> int:
        return self.p["stride"] or self.p["kernel"]

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = _image(self, in_shapes)
        Ho, Wo = _spatial(self, x, self.p["kernel"], self.stride, 0)
        return {"out": (x[0], x[1], Ho, Wo)}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        self.infer_shapes({"x": x.shape})
        out, arg = kern.maxpool2d(x, self.p["kernel"], self.stride)
        return {"out": out}, {"arg": arg}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        H, W = saved["_in_shapes"]["x"][2:]
        return {"x": kern.maxpool2d_grad(saved["arg"], gout["out"], H, W)}, {}
