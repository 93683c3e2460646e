"""Dense network blocks: Linear, FeedForward and Flatten.

Every block here acts on the last axis and treats all leading axes as a batch of vectors, so the
same Linear serves (B, d), (B, L, d) and a single (d,) vector. The arithmetic is in the fused
kernels of :mod:`engine.kernels.dense` (and the activations of :mod:`engine.kernels.elementwise`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import Arrays, Block, Category, Example, Param, ParamType, Port, Shape, WeightSpec, shape_str
from engine.kernels import dense, elementwise

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid")


def torch_uniform(rng: np.random.Generator, fan_in: int, shape: Shape) -> np.ndarray:
    """``nn.Linear``'s default initialisation: uniform in ±1/√fan_in (weights and biases alike)."""
    bound = 1.0 / math.sqrt(max(1, fan_in))
    return rng.uniform(-bound, bound, size=shape)


@register
class Linear(Block):
    """An affine map of the last axis: the lecture's ``w · φ(x)`` with many outputs at once.

    Example: x (32, 10), out_features 3 → out (32, 3); x (2, 5, 16) → out (2, 5, 3)."""

    type_id = "Linear"
    category = Category.DENSE
    formula = "out = x W + b;  ∂/∂x = g Wᵀ, ∂/∂W = xᵀ g, ∂/∂b = Σ g"
    inputs = (Port("x", doc="vectors on the last axis (…, d_in)"),)
    outputs = (Port("out", doc="(…, out_features)"),)
    params = (
        Param("out_features", ParamType.INT, 1, "size of each output vector", minimum=1),
        Param("bias", ParamType.BOOL, True, "add a learned bias b"),
    )
    weights = (
        WeightSpec("W", "(d_in, d_out)", "the weight matrix; torch's nn.Linear.weight is Wᵀ"),
        WeightSpec("b", "(d_out,)", "the bias (only when bias is on)"),
    )
    examples = (
        Example({"out_features": 3}, {"x": (4, 5)}),
        Example({"out_features": 4}, {"x": (2, 3, 5)}),
        Example({"out_features": 2, "bias": False}, {"x": (3, 4)}),
        Example({"out_features": 1}, {"x": (6,)}),
    )

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = self.require_features(in_shapes, "x")
        return {"out": (*x[:-1], self.p["out_features"])}

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        d_in, d_out = self.require(in_shapes, "x")[-1], self.p["out_features"]
        shapes: dict[str, Shape] = {"W": (d_in, d_out)}
        if self.p["bias"]:
            shapes["b"] = (d_out,)
        return shapes

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        shapes = self.weight_shapes(in_shapes)
        d_in = shapes["W"][0]
        return {name: torch_uniform(rng, d_in, shape) for name, shape in shapes.items()}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        self.expect_dim("x", x.shape, -1, weights["W"].shape[0], "d_in, the rows of W")
        out = dense.linear(x, weights["W"], weights.get("b") if self.p["bias"] else None)
        return {"out": out}, {"x": x}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        dx, dw, db = dense.linear_grad(saved["x"], weights["W"], gout["out"], bias=self.p["bias"])
        gw = {"W": dw}
        if db is not None:
            gw["b"] = db
        return {"x": dx}, gw


@register
class FeedForward(Block):
    """Two affine maps with an activation between them, applied to every vector on its own.

    ``hidden`` defaults to 4·d and ``out_features`` to d (so a sequence keeps its width).
    Example: x (2, 5, 8) → hidden 32 → out (2, 5, 8)."""

    type_id = "FeedForward"
    category = Category.DENSE
    formula = "out = act(x W1 + b1) W2 + b2"
    inputs = (Port("x", doc="vectors on the last axis (…, d)"),)
    outputs = (Port("out", doc="(…, out_features)"),)
    params = (
        Param("hidden", ParamType.INT, None, "width of the hidden layer (empty: 4·d)", minimum=1, nullable=True),
        Param("out_features", ParamType.INT, None, "size of each output vector (empty: d, the input width)", minimum=1, nullable=True),
        Param("activation", ParamType.CHOICE, "relu", "the nonlinearity between the two maps", choices=ACTIVATIONS),
    )
    weights = (
        WeightSpec("W1", "(d, hidden)", "first map"),
        WeightSpec("b1", "(hidden,)", "first bias"),
        WeightSpec("W2", "(hidden, d_out)", "second map"),
        WeightSpec("b2", "(d_out,)", "second bias"),
    )
    examples = (
        Example({}, {"x": (4, 3)}),
        Example({"hidden": 6, "out_features": 2, "activation": "gelu"}, {"x": (2, 3, 4)}, {"x": (-2.0, 2.0)}),
        Example({"hidden": 5, "activation": "tanh"}, {"x": (3, 4)}),
        Example({"hidden": 5, "out_features": 3, "activation": "sigmoid"}, {"x": (5, 2)}, {"x": (-3.0, 3.0)}),
    )

    def _sizes(self, x: Shape) -> tuple[int, int, int]:
        d = x[-1]
        hidden = self.p["hidden"] if self.p["hidden"] is not None else 4 * d
        d_out = self.p["out_features"] if self.p["out_features"] is not None else d
        return d, hidden, d_out

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = self.require_features(in_shapes, "x")
        return {"out": (*x[:-1], self._sizes(x)[2])}

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        d, hidden, d_out = self._sizes(self.require(in_shapes, "x"))
        return {"W1": (d, hidden), "b1": (hidden,), "W2": (hidden, d_out), "b2": (d_out,)}

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        s = self.weight_shapes(in_shapes)
        d, hidden = s["W1"]
        # Two nn.Linear layers: each draws its weight, then its bias, with its own fan-in.
        return {
            "W1": torch_uniform(rng, d, s["W1"]), "b1": torch_uniform(rng, d, s["b1"]),
            "W2": torch_uniform(rng, hidden, s["W2"]), "b2": torch_uniform(rng, hidden, s["b2"]),
        }

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        self.expect_dim("x", x.shape, -1, weights["W1"].shape[0], "d, the rows of W1")
        # NOTE: (rows, d) inside, one view in and one out: the kernels' wrappers then make none.
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
        pre = dense.linear(x2, weights["W1"], weights["b1"])
        h = elementwise.activation(self.p["activation"], pre)
        out = dense.linear(h, weights["W2"], weights["b2"])
        return {"out": out.reshape(*x.shape[:-1], out.shape[-1]) if x.ndim != 2 else out}, {"x": x2, "pre": pre, "h": h}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        g = gout["out"]
        flat = g.ndim != 2
        g2 = g.reshape(-1, g.shape[-1]) if flat else g
        dh, dw2, db2 = dense.linear_grad(saved["h"], weights["W2"], g2, bias=True)
        dpre = elementwise.activation_grad(self.p["activation"], saved["pre"], saved["h"], dh)
        dx, dw1, db1 = dense.linear_grad(saved["x"], weights["W1"], dpre, bias=True)
        return {"x": dx.reshape(*g.shape[:-1], dx.shape[-1]) if flat else dx}, {"W1": dw1, "b1": db1, "W2": dw2, "b2": db2}


@register
class Flatten(Block):
    """Keep the batch axis, flatten everything else into one feature vector.

    Example: x (8, 3, 4, 4) → out (8, 48), like ``torch.flatten(x, 1)``."""

    type_id = "Flatten"
    category = Category.DENSE
    formula = "out[b] = x[b] as one vector;  ∂/∂x = g reshaped back"
    inputs = (Port("x", doc="(B, …)"),)
    outputs = (Port("out", doc="(B, n), n = product of the other dimensions"),)
    examples = (
        Example({}, {"x": (2, 3, 4)}),
        Example({}, {"x": (2, 2, 3, 3)}),
        Example({}, {"x": (3, 5)}),
    )

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = self.require(in_shapes, "x")
        if len(x) < 2:
            raise self.shape_error(
                f"input 'x' needs a batch axis and at least one more dimension, got shape {shape_str(x)}"
            )
        return {"out": (x[0], math.prod(x[1:]))}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        return {"out": x.reshape(x.shape[0], -1) if x.shape[0] else x.reshape(0, math.prod(x.shape[1:]))}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        return {"x": np.reshape(gout["out"], saved["_in_shapes"]["x"])}, {}
