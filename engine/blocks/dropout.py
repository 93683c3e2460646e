"""Dropout: while training, zero each number with probability p and scale the rest by 1/(1 − p)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import Arrays, Block, Category, Context, Example, Param, ParamType, Port, Shape
from engine.kernels import elementwise


@register
class Dropout(Block):
    """Randomly switch numbers off while training, so that no unit can rely on any other.

    Training: out = x ⊙ m / (1 − p), where each m_i is 0 with probability p and 1 otherwise
    (inverted dropout: the expected output equals x, so evaluation needs no rescaling).
    Evaluation: out = x. The gradient takes the same mask: ∂/∂x = m / (1 − p).

    The mask is drawn from a generator seeded by the run's seed, the training step and the
    node's path (:class:`~engine.blocks.Context`), so the same run drops the same units, bit for
    bit, and float32 and float64 runs drop the same ones; ``forward`` without a training context
    is the identity, as ``nn.Dropout`` in ``eval()`` mode. p = 1 drops everything (out = 0).
    Example: p 0.5, x (4, 8) → out (4, 8), about half of it 0 while training."""

    type_id = "Dropout"
    category = Category.DENSE
    formula = "training: out = x ⊙ m/(1 − p), m_i ~ Bernoulli(1 − p);  evaluation: out = x"
    inputs = (Port("x", doc="any tensor"),)
    outputs = (Port("out", doc="the same shape"),)
    params = (Param("p", ParamType.FLOAT, 0.5, "probability of zeroing each number while training", minimum=0.0, maximum=1.0),)
    uses_context = True
    examples = (
        Example({"p": 0.3}, {"x": (4, 5)}, training=True),
        Example({"p": 0.5}, {"x": (2, 3, 4)}, training=True),
        Example({"p": 0.5}, {"x": (3, 4)}),
        Example({"p": 1.0}, {"x": (2, 3)}, training=True),
        Example({"p": 0.2}, {"x": ()}, training=True),
    )

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"out": self.require(in_shapes, "x")}

    def mask(self, shape: Shape, context: Context) -> np.ndarray:
        """The keep-mask (True = kept) that ``context`` gives for an input of ``shape``."""
        # float64 draws whatever the data's dtype: float32 and float64 runs drop the same units.
        return context.rng().random(shape) >= self.p["p"]

    def compute(self, inputs: Arrays, weights: Arrays, context: Context) -> tuple[Arrays, dict[str, Any]]:  # type: ignore[override]
        x = inputs["x"]
        p = self.p["p"]
        if not context.training or p == 0.0:
            return {"out": x}, {"keep": None}
        x = np.asarray(x)
        keep = self.mask(x.shape, context)
        scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
        return {"out": elementwise.dropout(x, keep, scale)}, {"keep": keep, "scale": scale}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        g = gout["out"]
        if saved["keep"] is None:
            return {"x": g}, {}
        return {"x": elementwise.dropout(np.asarray(g), saved["keep"], saved["scale"])}, {}
