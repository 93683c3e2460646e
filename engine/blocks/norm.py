"""Normalisation: LayerNorm, AddNorm (the residual connection around it, post-norm) and BatchNorm.

LayerNorm and AddNorm normalise each vector on the last axis to mean 0 and variance 1 (biased
variance, as torch), then scale by ``gamma`` and shift by ``beta``; the arithmetic is in the
fused kernels of :mod:`engine.kernels.norm`. BatchNorm normalises each channel over the batch
instead (:mod:`engine.kernels.batchnorm`) and keeps running statistics for evaluation.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import (
    BUFFER_UPDATES,
    Arrays,
    Block,
    Category,
    Context,
    Example,
    Param,
    ParamType,
    Port,
    Shape,
    WeightSpec,
    broadcast_shapes,
    shape_str,
)
from engine.errors import RuntimeFailure
from engine.kernels import batchnorm, norm

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

    def _normalise(self, s: np.ndarray, weights: Arrays, res: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        self.expect_dim(self.inputs[0].name, s.shape, -1, weights["gamma"].shape[0], "d, the size of gamma")
        out, xhat, rstd = norm.layernorm(s, weights["gamma"], weights["beta"], self.p["eps"], res)
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
        x, fx = inputs["x"], inputs["fx"]
        if (x.__class__ is np.ndarray and fx.__class__ is np.ndarray and x.shape == fx.shape
                and x.dtype == fx.dtype and x.dtype.kind == "f"):  # the add in the kernel's pass over the rows
            out, saved = self._normalise(x, weights, fx)
        else:
            out, saved = self._normalise(x + fx, weights)
        return {"out": out}, saved

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        ds, gw = self._grads(gout["out"], saved, weights)
        # The base sums ds back to each input's own shape when they were broadcast.
        return {"x": ds, "fx": ds}, gw


@register
class BatchNorm(Block):
    """Normalise each channel over the batch, then scale and shift it; ``nn.BatchNorm1d`` for
    feature vectors (B, C) and sequences (B, C, L), ``nn.BatchNorm2d`` for images (B, C, H, W).

    Training: μ_c and σ²_c are the mean and (biased) variance of channel c over the batch (and
    every position of an image), out = γ ⊙ (x − μ)/√(σ² + eps) + β, and the running statistics
    move towards the batch's: running_mean ← (1 − momentum)·running_mean + momentum·μ,
    running_var ← (1 − momentum)·running_var + momentum·σ²·M/(M − 1) (unbiased, M values per
    channel), exactly as torch. Evaluation: the running statistics take the batch's place, so an
    example's output no longer depends on the others in its batch.

    ``running_mean`` and ``running_var`` are buffers: saved with the weights, but they get no
    gradient and no optimiser touches them. Channels are on axis 1 (torch's layout).
    Example: x (8, 16, 28, 28) → out (8, 16, 28, 28), statistics of each of the 16 channels."""

    type_id = "BatchNorm"
    category = Category.DENSE
    formula = "out = γ ⊙ (x − μ)/√(σ² + eps) + β  (μ, σ² per channel: the batch's while training, running in evaluation)"
    inputs = (Port("x", doc="(B, C), (B, C, L) or (B, C, H, W): channels on axis 1"),)
    outputs = (Port("out", doc="the same shape"),)
    params = (
        _EPS,
        Param("momentum", ParamType.FLOAT, 0.1, "how far the running statistics move towards each batch's", minimum=0.0, maximum=1.0),
    )
    weights = (
        WeightSpec("gamma", "(C,)", "per-channel scale, starts at 1; torch's weight"),
        WeightSpec("beta", "(C,)", "per-channel shift, starts at 0; torch's bias"),
        WeightSpec("running_mean", "(C,)", "mean used in evaluation (a buffer: no gradient), starts at 0", trainable=False),
        WeightSpec("running_var", "(C,)", "variance used in evaluation (a buffer: no gradient), starts at 1", trainable=False),
    )
    uses_context = True
    examples = (
        Example({}, {"x": (6, 4)}, training=True),
        Example({"momentum": 0.3}, {"x": (3, 2, 4, 5)}, training=True),
        Example({"eps": 1e-3}, {"x": (2, 3, 5)}, training=True),
        Example({}, {"x": (4, 3)}),
        Example({}, {"x": (2, 2, 3, 3)}),
    )

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"out": self.require(in_shapes, "x", (2, 3, 4, 5), "(batch, channels, …)")}

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        c = self.require(in_shapes, "x", (2, 3, 4, 5), "(batch, channels, …)")[1]
        return {name: (c,) for name in ("gamma", "beta", "running_mean", "running_var")}

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        c = self.weight_shapes(in_shapes)["gamma"][0]
        return {"gamma": np.ones(c), "beta": np.zeros(c), "running_mean": np.zeros(c), "running_var": np.ones(c)}

    def compute(self, inputs: Arrays, weights: Arrays, context: Context) -> tuple[Arrays, dict[str, Any]]:  # type: ignore[override]
        x = np.asarray(inputs["x"])
        self.infer_shapes({"x": x.shape})
        self.expect_dim("x", x.shape, 1, weights["gamma"].shape[0], "channels, the size of gamma")
        dt = x.dtype
        eps, momentum = self.p["eps"], self.p["momentum"]
        m = x.size // max(1, x.shape[1]) if x.shape[1] else 0
        saved: dict[str, Any] = {"batch_stats": context.training}
        if context.training:
            if m == 1:
                raise RuntimeFailure(
                    f"{self.type_id}: while training it needs more than one value per channel to take statistics "
                    f"over, but input 'x' {shape_str(x.shape)} has one; use a larger batch (or LayerNorm)"
                )
            mean, var = batchnorm.stats(x)
            if m > 1:
                # Python floats (double), then the weights' dtype: as torch, which updates in opmath.
                rm, rv = (np.asarray(weights[k], np.float64) for k in ("running_mean", "running_var"))
                new_mean = (1.0 - momentum) * rm + momentum * mean.astype(np.float64)
                new_var = (1.0 - momentum) * rv + momentum * var.astype(np.float64) * (m / (m - 1))
                saved[BUFFER_UPDATES] = {"running_mean": new_mean.astype(weights["running_mean"].dtype),
                                         "running_var": new_var.astype(weights["running_var"].dtype)}
        else:
            mean, var = (np.asarray(weights[k], dt) for k in ("running_mean", "running_var"))
        rstd = (1.0 / np.sqrt(var.astype(np.float64) + eps)).astype(dt)
        out, xhat = batchnorm.apply(x, mean, rstd, weights["gamma"], weights["beta"])
        saved.update(xhat=xhat, rstd=rstd)
        return {"out": out}, saved

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        dx, dgamma, dbeta = batchnorm.grad(saved["xhat"], saved["rstd"], weights["gamma"], gout["out"], saved["batch_stats"])
        return {"x": dx}, {"gamma": dgamma, "beta": dbeta}
