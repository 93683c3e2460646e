"""Time-step plumbing for unrolled sequence models: pick one step, stack the steps back.

These are what an unrolled recurrent network is drawn with (SequenceRNN's inner graph, see
:mod:`engine.blocks.recurrent`): ``TimeStep`` takes ``x_t`` out of a sequence, a cell turns
``(h_{t−1}, x_t)`` into ``h_t``, and ``StackSteps`` puts ``h_1 … h_L`` back into a sequence.
They are pure indexing, so they need no kernels.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import Arrays, Block, Category, Example, Param, ParamType, Port, Shape, shape_str


@register
class TimeStep(Block):
    """One time step of a sequence: ``out = x[:, t]`` (t counts from 0).

    The gradient goes back to position t only; every other position gets zero.
    Example: t 2, x (2, 5, 3) → out (2, 3)."""

    type_id = "TimeStep"
    category = Category.SEQUENCE
    formula = "out = x_t = x[:, t];  ∂/∂x[:, t] = g, zero elsewhere"
    inputs = (Port("x", doc="a sequence (B, L, d)"),)
    outputs = (Port("out", doc="the vector at step t (B, d)"),)
    params = (Param("t", ParamType.INT, 0, "which step to pick, counting from 0", minimum=0),)
    examples = (
        Example({"t": 0}, {"x": (2, 4, 3)}),
        Example({"t": 3}, {"x": (2, 4, 3)}),
        Example({"t": 1}, {"x": (3, 2)}),
    )

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = self.require(in_shapes, "x")
        if len(x) < 2:
            raise self.shape_error(f"input 'x' must be (batch, length, …) with at least 2 dimensions, got shape {shape_str(x)}")
        if self.p["t"] >= x[1]:
            raise self.shape_error(
                f"parameter 't' is {self.p['t']}, but input 'x' has only {x[1]} steps (dimension 1 of "
                f"{shape_str(x)}); t must be below {x[1]}"
            )
        return {"out": (x[0], *x[2:])}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        self.infer_shapes({"x": x.shape})
        # A copy, not a view: downstream blocks may hold on to it while x is reused.
        return {"out": np.ascontiguousarray(x[:, self.p["t"]])}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        g = gout["out"]
        gx = np.zeros(saved["_in_shapes"]["x"], g.dtype)
        gx[:, self.p["t"]] = g
        return {"x": gx}, {}


@register
class StackSteps(Block):
    """Stacks N per-step vectors into a sequence: ``out[:, i] = h_{i+1}``.

    It has one input per step, ``h1 … hN`` (the number follows ``steps``); all must have the
    same shape. The gradient of ``h_i`` is the slice ``g[:, i−1]``.
    Example: steps 3, h1, h2, h3 (2, 4) → out (2, 3, 4)."""

    type_id = "StackSteps"
    category = Category.SEQUENCE
    formula = "out = [h_1, h_2, …, h_N] along axis 1;  ∂/∂h_i = g[:, i]"
    # The declared ports are those of the default (2 steps); an instance has h1 … h_steps.
    inputs = (Port("h1", doc="step 1 (B, d)"), Port("h2", doc="step 2 (B, d)"))
    outputs = (Port("out", doc="the steps as a sequence (B, N, d)"),)
    params = (Param("steps", ParamType.INT, 2, "N: how many steps (one input each)", minimum=1, maximum=1024),)
    examples = (
        Example({"steps": 3}, {"h1": (2, 4), "h2": (2, 4), "h3": (2, 4)}),
        Example({"steps": 1}, {"h1": (3, 2)}),
    )

    def input_ports(self) -> tuple[Port, ...]:
        return tuple(Port(f"h{i}", doc=f"step {i} (B, d)") for i in range(1, self.p["steps"] + 1))

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        first = self.require(in_shapes, "h1")
        if not first:
            raise self.shape_error("input 'h1' must have a batch dimension, got a scalar ()")
        for port in self.input_ports()[1:]:
            s = self.require(in_shapes, port.name)
            if tuple(s) != tuple(first):
                raise self.shape_error(
                    f"input '{port.name}' has shape {shape_str(s)}, but 'h1' has {shape_str(first)}; every step must have the same shape"
                )
        return {"out": (first[0], self.p["steps"], *first[1:])}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        names = [p.name for p in self.input_ports()]
        self.infer_shapes({n: np.shape(inputs[n]) for n in names if n in inputs})
        return {"out": np.stack([inputs[n] for n in names], axis=1)}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        g = gout["out"]
        return {p.name: np.ascontiguousarray(g[:, i]) for i, p in enumerate(self.input_ports())}, {}
