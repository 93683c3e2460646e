"""Sequence models that are not recurrent: the n-gram-like feed-forward sequence model."""

from __future__ import annotations

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
)
from engine.kernels import elementwise

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid")


@register
class FeedForwardSequenceModel(Block):
    """A FeedForward applied to a sliding window of the last n vectors (causal, n-gram-like).

    out_i = FeedForward([x_{i−n+1}; …; x_i]): the n most recent vectors, oldest first, are
    concatenated into one vector of width n·d; positions before the start count as zero
    vectors. The FeedForward is act(z W1 + b1) W2 + b2 with d_in = n·d. ``hidden`` defaults
    to 4·d and ``out_features`` to d.

    Example: window 3, hidden 16, x (2, 5, 4) → out (2, 5, 4) with W1 (12, 16)."""

    type_id = "FeedForwardSequenceModel"
    category = Category.SEQUENCE
    formula = "out_i = act([x_{i−n+1}; …; x_i] W1 + b1) W2 + b2, zeros before the start"
    inputs = (Port("x", doc="a sequence of vectors (B, L, d)"),)
    outputs = (Port("out", doc="(B, L, d_out)"),)
    params = (
        Param("window", ParamType.INT, 3, "n: how many of the latest vectors each output sees", minimum=1),
        Param("hidden", ParamType.INT, None, "width of the hidden layer (empty: 4·d)", minimum=1, nullable=True),
        Param("out_features", ParamType.INT, None, "size of each output vector (empty: d)", minimum=1, nullable=True),
        Param("activation", ParamType.CHOICE, "relu", "the nonlinearity between the two maps", choices=ACTIVATIONS),
    )
    weights = (
        WeightSpec("W1", "(n·d, hidden)", "first map, over the concatenated window"),
        WeightSpec("b1", "(hidden,)", "first bias"),
        WeightSpec("W2", "(hidden, d_out)", "second map"),
        WeightSpec("b2", "(d_out,)", "second bias"),
    )
    examples = (
        Example({"window": 3, "hidden": 5}, {"x": (2, 4, 3)}),
        Example({"window": 1, "hidden": 4, "out_features": 2, "activation": "tanh"}, {"x": (2, 3, 3)}),
        Example({"window": 4, "hidden": 3, "activation": "gelu"}, {"x": (1, 2, 2)}, {"x": (-2.0, 2.0)}),
    )

    def _sizes(self, x: Shape) -> tuple[int, int, int, int]:
        d = x[2]
        n = self.p["window"]
        hidden = self.p["hidden"] if self.p["hidden"] is not None else 4 * d
        d_out = self.p["out_features"] if self.p["out_features"] is not None else d
        return n, d, hidden, d_out

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = self.require(in_shapes, "x", 3, "(batch, length, width)")
        self.require_features(in_shapes, "x")
        return {"out": (x[0], x[1], self._sizes(x)[3])}

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        n, d, hidden, d_out = self._sizes(self.require(in_shapes, "x", 3))
        return {"W1": (n * d, hidden), "b1": (hidden,), "W2": (hidden, d_out), "b2": (d_out,)}

    @staticmethod
    def _windows(x: np.ndarray, n: int) -> np.ndarray:
        """(B, L, d) → (B·L, n·d): row i holds [x_{i−n+1}; …; x_i], zeros before the start."""
        batch, length, d = x.shape
        padded = np.zeros((batch, length + n - 1, d), x.dtype)
        padded[:, n - 1:] = x
        z = np.empty((batch, length, n, d), x.dtype)
        for j in range(n):
            z[:, :, j] = padded[:, j:j + length]
        return z.reshape(batch * length, n * d)

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        self.infer_shapes({"x": x.shape})
        n = self.p["window"]
        self.expect_dim("x", x.shape, 2, weights["W1"].shape[0] // n, "d: the rows of W1 are window·d")
        batch, length, _ = x.shape
        z = self._windows(x, n)
        pre = z @ weights["W1"]
        pre += weights["b1"]
        h = elementwise.activation(self.p["activation"], pre)
        out = h @ weights["W2"]
        out += weights["b2"]
        return {"out": out.reshape(batch, length, out.shape[-1])}, {"z": z, "pre": pre, "h": h}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        batch, length, d = saved["_in_shapes"]["x"]
        n = self.p["window"]
        z, pre, h = saved["z"], saved["pre"], saved["h"]
        g = np.ascontiguousarray(gout["out"], dtype=h.dtype).reshape(batch * length, weights["W2"].shape[1])
        gw: Arrays = {"W2": h.T @ g, "b2": g.sum(axis=0)}
        dh = g @ weights["W2"].T
        dpre = elementwise.activation_grad(self.p["activation"], pre, h, dh)
        gw["W1"] = z.T @ dpre
        gw["b1"] = dpre.sum(axis=0)
        dz = (dpre @ weights["W1"].T).reshape(batch, length, n, d)
        # Each x_t appears in n windows (once per slot j); sum those contributions back.
        gpad = np.zeros((batch, length + n - 1, d), dz.dtype)
        for j in range(n):
            gpad[:, j:j + length] += dz[:, :, j]
        return {"x": gpad[:, n - 1:]}, gw
