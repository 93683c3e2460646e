"""Central-difference gradient checks, for one block and for a whole graph.

The analytic gradient of a random projection ``L = Σ R ⊙ out`` is compared with
``(L(x + εv) − L(x − εv)) / 2ε``: element by element for small tensors, along random
directions ``v`` for large ones. Run in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping

import numpy as np

from engine.blocks import Block, Context

MAX_ELEMENTS = 96  # up to this many elements: check every one; above: random directions
DIRECTIONS = 6


@dataclass(frozen=True)
class Check:
    what: str  # "input x", "weight W", "node 'fc' weight W"
    error: float  # relative error ‖a − n‖ / max(‖a‖ + ‖n‖, floor)
    analytic_norm: float


def relative_error(a: np.ndarray, n: np.ndarray, floor: float = 1e-7) -> float:
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), floor))


def _numeric_vs_analytic(f: Callable[[], float], x: np.ndarray, analytic: np.ndarray, rng: np.random.Generator, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Numeric and analytic directional derivatives of ``f`` w.r.t. ``x`` (mutated in place)."""
    if x.size <= MAX_ELEMENTS:
        num = np.zeros(x.size)
        flat = x.reshape(-1)
        for i in range(x.size):
            old = flat[i]
            flat[i] = old + eps
            hi = f()
            flat[i] = old - eps
            lo = f()
            flat[i] = old
            num[i] = (hi - lo) / (2 * eps)
        return analytic.reshape(-1), num
    ana, num = np.zeros(DIRECTIONS), np.zeros(DIRECTIONS)
    orig = x.copy()
    for k in range(DIRECTIONS):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        x[...] = orig + eps * v
        hi = f()
        x[...] = orig - eps * v
        lo = f()
        x[...] = orig
        num[k] = (hi - lo) / (2 * eps)
        ana[k] = float(np.sum(analytic * v))
    return ana, num


def check_block(block: Block, inputs: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], *, seed: int = 0, eps: float = 1e-6,
                context: Context | None = None) -> list[Check]:
    """Gradient check of every float input and every weight of ``block`` (float64 arrays), in
    evaluation mode or in the given ``context`` (the same Dropout mask for every evaluation)."""
    rng = np.random.default_rng(seed)
    inputs = {k: np.array(v) for k, v in inputs.items()}
    weights = {k: np.array(v) for k, v in weights.items()}
    outs, saved = block.forward(inputs, weights, context)
    diff = {p.name for p in block.output_ports() if p.differentiable}
    proj = {k: rng.standard_normal(np.shape(v)) for k, v in outs.items() if k in diff and np.issubdtype(np.asarray(v).dtype, np.floating)}
    gin, gw = block.backward(proj, saved, weights)

    def loss() -> float:
        o, _ = block.forward(inputs, weights, context)
        return float(sum(np.sum(o[k] * r) for k, r in proj.items()))

    checks = []
    for name, g in gin.items():
        a, n = _numeric_vs_analytic(loss, inputs[name], g, rng, eps)
        checks.append(Check(f"input {name}", relative_error(a, n), float(np.linalg.norm(g))))
    for name, g in gw.items():
        a, n = _numeric_vs_analytic(loss, weights[name], g, rng, eps)
        checks.append(Check(f"weight {name}", relative_error(a, n), float(np.linalg.norm(g))))
    return checks


def learned_weights(runtime: Any) -> list[tuple[str, str]]:
    """Every ``(node, weight)`` of a runtime that has a gradient to check (buffers such as
    BatchNorm's running statistics have none)."""
    out = []
    for node, ws in runtime.weights.items():
        step = runtime.program.step(node)
        buffers = step.block.buffer_names(step.in_shapes)
        out.extend((node, name) for name in ws if name not in buffers)
    return out


def check_graph(runtime: Any, feeds: Mapping[str, np.ndarray], loss: Any, *, seed: int = 0, eps: float = 1e-6,
                only: Collection[tuple[str, str]] | None = None) -> list[Check]:
    """Gradient check of every weight of a float64 :class:`~engine.runtime.Runtime` (or of the
    ``(node, weight)`` pairs in ``only``)."""
    if runtime.dtype != np.float64:
        raise ValueError("gradient checks need a float64 runtime")
    rng = np.random.default_rng(seed)
    p = runtime.forward_backward(feeds, loss)
    grads = p.weight_gradients()
    key = runtime.loss_port(loss)

    def f() -> float:
        return float(runtime.forward(feeds).values[key])

    checks = []
    for node, ws in runtime.weights.items():
        label = runtime.program.step(node).label
        for name, w in ws.items():
            if (only is not None and (node, name) not in only) or name not in grads[node]:
                continue  # not asked for, or a buffer (no gradient)
            a, n = _numeric_vs_analytic(f, w, grads[node][name], rng, eps)
            checks.append(Check(f"{label} weight {name}", relative_error(a, n), float(np.linalg.norm(grads[node][name]))))
    return checks
