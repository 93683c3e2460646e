"""Normalisation: LayerNorm, and AddNorm (the residual connection around it, post-norm).

Both normalise each vector on the last axis to mean 0 and variance 1 (biased variance, as
torch), then scale by ``gamma`` and shift by ``beta``. The arithmetic is in the fused kernels of
:mod:`engine.kernels.norm`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import Arrays, Block, Category, Example, Param, ParamType, Port, Shape, WeightSpec, broadcast_shapes
from engine.kernels import norm

_EPS = Param("eps", ParamType.FLOAT, 1e-5, "added to the variance before the square root (keeps 1/σ finite)", minimum=0.0)
_WEIGHTS = (
    WeightSpec("gamma", "(d,)", "per-feature scale, starts at 1"),
    WeightSpec("beta", "(d,)", "per-feature shift, starts at 0"),
)


class _Norm(Block):
    category = Category.DENSE
    params = (_EPS,)
    weights = _WEIGHTS

    def _out_shape(self, in_shapes: Mapping[str, Shape]) -> Shape:
        raise NotImplementedError

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        d = self._out_shape(in_shapes)[-1]
        return {"gamma": (d,), "beta": (d,)}

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        d = self._out_shape(in_shapes)[-1]
        return {"gamma": np.ones(d), "beta": np.zeros(d)}

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"out": self._out_shape(in_shapes)}

    def _normalise(self, s: np.ndarray, weights: Arrays) -> tuple[np.ndarray, dict[str, Any]]:
        self.expect_dim(self.inputs[0].name, s.shape, -1, weights["gamma"].shape[0], "d, the size of gamma")
        out, xhat, rstd = norm.layernorm(s, weights["gamma"], weights["beta"], self.p["eps"])
        return out, {"xhat": xhat, "rstd": rstd}

    def _grads(self, g: np.ndarray, saved: dict[str, Any], weights: Arrays) -> tuple[np.ndarray, Arrays]:
        ds, dgamma, dbeta = norm.layernorm_grad(saved["xhat"], saved["rstd"], weights["gamma"], g)
        return ds, {"gamma": dgamma, "beta": dbeta}


@register
class LayerNorm(_Norm):
    """Normalise each vector on the last axis, then scale and shift it.

    Example: x (2, 5, 16) → out (2, 5, 16); statistics over the 16 features of each position."""

    type_id = "LayerNorm"
    formula = "out = γ ⊙ (x − μ)/√(σ² + eps) + β  (μ, σ² over the last axis)"
    inputs = (Port("x", doc="vectors on the last axis (…, d)"),)
    examples = (
        Example({}, {"x": (4, 6)}),
        Example({"eps": 1e-3}, {"x": (2, 3, 5)}),
        Example({}, {"x": (7,)}, {"x": (-3.0, 3.0)}),
    )

    def _out_shape(self, in_shapes: Mapping[str, Shape]) -> Shape:
        x = self.require(in_shapes, "x")
        if not x:
            raise self.shape_error("input 'x' needs at least one dimension to normalise over, got a scalar ()")
        return x

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        out, saved = self._normalise(inputs["x"], weights)
        return {"out": out}, saved

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        dx, gw = self._grads(gout["out"], saved, weights)
        return {"x": dx}, gw


@register
class AddNorm(_Norm):
    """Residual connection then LayerNorm (post-norm, as taught): "apply f safely: if f is junk,
    x survives". ``x`` and ``fx`` broadcast like numpy.

    Example: x (2, 5, 16), fx (2, 5, 16) → out (2, 5, 16)."""

    type_id = "AddNorm"
    formula = "out = LayerNorm(x + fx) = γ ⊙ (s − μ)/√(σ² + eps) + β, s = x + fx"
    inputs = (Port("x", doc="the residual stream (…, d)"), Port("fx", doc="f(x), the block's update (…, d)"))
    examples = (
        Example({}, {"x": (3, 4), "fx": (3, 4)}),
        Example({}, {"x": (2, 3, 5), "fx": (2, 3, 5)}),
        Example({"eps": 1e-3}, {"x": (2, 3, 4), "fx": (3, 4)}),
    )

    def _out_shape(self, in_shapes: Mapping[str, Shape]) -> Shape:
        x = self.require(in_shapes, "x")
        fx = self.require(in_shapes, "fx")
        s = broadcast_shapes(self, {"x": x, "fx": fx})
        if not s:
            raise self.shape_error("inputs 'x' and 'fx' need at least one dimension to normalise over, got scalars ()")
        return s

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        out, saved = self._normalise(inputs["x"] + inputs["fx"], weights)
        return {"out": out}, saved

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        ds, gw = self._grads(gout["out"], saved, weights)
        # The base sums ds back to each input's own shape when they were broadcast.
        return {"x": ds, "fx": ds}, gw
