"""Central-difference gradient checks: for one block (the editor checks one node with it, see
:mod:`engine.nodecheck`) and for a whole graph.

The analytic gradient of a random projection ``L = Σ R ⊙ out`` (for a block) or of the loss (for
a graph) is compared with ``(L(x + εv) − L(x − εv)) / 2ε``: element by element for small
tensors, along random directions ``v`` for large ones. Run in float64.

Kinks. ReLU at exactly 0, a Max whose inputs tie and a max-pool window with two equal largest
values are points where the function has no derivative: the slope from the left differs from the
slope from the right, a central difference lands halfway between them, and no gradient can match
it. When a check misses its tolerance, each component that disagrees is probed again: from each
side separately, and with a ten times smaller step. A jump between the one-sided slopes that stays
as the step shrinks is a kink at this very point; the check then says "not differentiable here"
and whether the block's gradient is one of the one-sided slopes (or between them), which is what a
subgradient is. A jump that shrinks with the step is a kink *near* the point, and the smaller step
gives a difference to compare with instead. :meth:`Check.status` and :meth:`Check.explain` turn
this into the words the CLI and the editor's per-node check show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping

import numpy as np

from engine.blocks import Block, Context

MAX_ELEMENTS = 96  # up to this many elements: check every one; above: random directions
DIRECTIONS = 6
TOLERANCE = 1e-5  # the default largest relative error
MAX_PROBES = MAX_ELEMENTS  # disagreeing components probed for a kink, per tensor (worst first)
_SHRINK = 10.0  # the second, smaller step is ε / _SHRINK

OK, KINK, FAILED = "ok", "not differentiable here", "failed"


@dataclass(frozen=True)
class Kink:
    """A component at which the function is not differentiable: its one-sided slopes differ."""

    where: str  # "element (0, 2)" or "random direction 3"
    left: float  # slope from the left, (f(x) − f(x − h)) / h
    right: float  # slope from the right, (f(x + h) − f(x)) / h
    analytic: float  # what the block's backward gave for this component

    @property
    def subgradient(self) -> bool:
        """Whether the analytic value is one of the one-sided slopes or between them."""
        lo, hi = min(self.left, self.right), max(self.left, self.right)
        slack = 1e-6 * max(1.0, abs(self.left), abs(self.right))
        return lo - slack <= self.analytic <= hi + slack


@dataclass(frozen=True)
class Check:
    """One tensor's check. ``error`` is the central-difference relative error over all its
    components; ``kinks`` the components found at a kink; ``error_elsewhere`` the relative
    error over the other components (with the smaller step where it resolved a kink nearby),
    None when nothing was probed."""

    what: str  # "input x", "weight W", "node 'fc' weight W"
    error: float  # relative error ‖a − n‖ / max(‖a‖ + ‖n‖, floor)
    analytic_norm: float
    kinks: tuple[Kink, ...] = field(default=())
    error_elsewhere: float | None = None

    def status(self, tolerance: float = TOLERANCE) -> str:
        """:data:`OK`, :data:`KINK` (the only disagreement is at kinks, where the gradient is a
        one-sided one) or :data:`FAILED`."""
        if self.error <= tolerance:
            return OK
        if self.error_elsewhere is None or self.error_elsewhere > tolerance:
            return FAILED
        if not self.kinks:
            return OK  # a kink within ε of the point; the smaller step agrees
        return KINK if all(k.subgradient for k in self.kinks) else FAILED

    def explain(self, tolerance: float = TOLERANCE) -> str:
        """One line for a person: the verdict and, at a kink, where and which slopes."""
        status = self.status(tolerance)
        if status == OK:
            if self.error <= tolerance:
                return f"relative error {self.error:.2e}: ok"
            return (f"relative error {self.error:.2e} across a kink within ε of this point; with a step "
                    f"{_SHRINK:g} times smaller {self.error_elsewhere:.2e}: ok")
        if not self.kinks:
            return f"relative error {self.error:.2e}: TOO LARGE"
        k = self.kinks[0]
        more = f" (and {len(self.kinks) - 1} more)" if len(self.kinks) > 1 else ""
        where = (f"{k.where}{more} sits at a kink: slope {k.left:.4g} from the left, {k.right:.4g} from the right")
        if status == KINK:
            rest = "" if self.error_elsewhere is None else f"; elsewhere relative error {self.error_elsewhere:.2e}"
            return (f"not differentiable here: {where}; the gradient {k.analytic:.4g} is a one-sided slope, "
                    f"as the block defines it{rest}")
        bad = next((k for k in self.kinks if not k.subgradient), None)
        why = "" if bad is None else f"; at {bad.where} the gradient {bad.analytic:.4g} is neither slope"
        if self.error_elsewhere is not None and self.error_elsewhere > tolerance:
            why += f"; away from the kinks the relative error is {self.error_elsewhere:.2e}"
        return f"relative error {self.error:.2e}: TOO LARGE ({where}{why})"


def relative_error(a: np.ndarray, n: np.ndarray, floor: float = 1e-7) -> float:
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), floor))


@dataclass
class _Component:
    where: str
    index: int | None  # element mode: the flat index perturbed
    direction: np.ndarray | None  # direction mode: the unit vector
    analytic: float
    numeric: float
    hi: float  # f(x + ε·dir)
    lo: float  # f(x − ε·dir)


def _at(f: Callable[[], float], x: np.ndarray, c: _Component, t: float) -> float:
    """f with x moved by t along the component (x is restored exactly)."""
    if c.index is not None:
        flat = x.reshape(-1)
        old = flat[c.index]
        flat[c.index] = old + t
        try:
            return f()
        finally:
            flat[c.index] = old
    orig = x.copy()
    x[...] = orig + t * c.direction
    try:
        return f()
    finally:
        x[...] = orig


def _element(f: Callable[[], float], x: np.ndarray, flat_a: np.ndarray, i: int, eps: float) -> _Component:
    c = _Component(f"element {tuple(int(j) for j in np.unravel_index(i, x.shape))}", i, None, float(flat_a[i]), 0.0, 0.0, 0.0)
    c.hi, c.lo = _at(f, x, c, eps), _at(f, x, c, -eps)
    c.numeric = (c.hi - c.lo) / (2 * eps)
    return c


def _components(f: Callable[[], float], x: np.ndarray, analytic: np.ndarray, rng: np.random.Generator, eps: float) -> list[_Component]:
    """Numeric and analytic directional derivatives of ``f`` w.r.t. ``x`` (mutated, restored)."""
    if x.size <= MAX_ELEMENTS:
        flat_a = np.asarray(analytic).reshape(-1)
        return [_element(f, x, flat_a, i, eps) for i in range(x.size)]
    out = []
    for k in range(DIRECTIONS):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        c = _Component(f"random direction {k + 1}", None, v, float(np.sum(analytic * v)), 0.0, 0.0, 0.0)
        c.hi, c.lo = _at(f, x, c, eps), _at(f, x, c, -eps)
        c.numeric = (c.hi - c.lo) / (2 * eps)
        out.append(c)
    return out


def _probe(f: Callable[[], float], x: np.ndarray, comps: list[_Component], eps: float, tolerance: float) -> tuple[list[Kink], float]:
    """Probe the worst disagreeing components for kinks (see the module docstring); returns the
    kinks and the relative error over the other components."""
    a = np.array([c.analytic for c in comps])
    n = np.array([c.numeric for c in comps])
    scale = max(float(np.linalg.norm(a) + np.linalg.norm(n)), 1e-7)
    kinks: list[Kink] = []
    keep = np.ones(len(comps), dtype=bool)
    for i in np.argsort(-np.abs(a - n))[:MAX_PROBES]:
        c = comps[i]
        if abs(c.analytic - c.numeric) <= 0.1 * tolerance * scale:
            break
        f0 = _at(f, x, c, 0.0)
        right, left = (c.hi - f0) / eps, (f0 - c.lo) / eps
        jump = abs(right - left)
        if jump <= 1e-3 * max(abs(right), abs(left)) + 1e-7:
            continue  # smooth here: a real disagreement
        h = eps / _SHRINK
        right2, left2 = (_at(f, x, c, h) - f0) / h, (f0 - _at(f, x, c, -h)) / h
        if abs(right2 - left2) > 0.5 * jump:
            kinks.append(Kink(c.where, left2, right2, c.analytic))
            keep[i] = False
        else:
            n[i] = (right2 + left2) / 2  # the kink lies within ε: the smaller step sees one side only
    return kinks, (relative_error(a[keep], n[keep]) if keep.any() else 0.0)


def _check(what: str, f: Callable[[], float], x: np.ndarray, analytic: np.ndarray, rng: np.random.Generator,
           eps: float, tolerance: float) -> Check:
    comps = _components(f, x, analytic, rng, eps)
    error = relative_error(np.array([c.analytic for c in comps]), np.array([c.numeric for c in comps]))
    norm = float(np.linalg.norm(analytic))
    if error <= tolerance:
        return Check(what, error, norm)
    kinks, elsewhere = _probe(f, x, comps, eps, tolerance)
    if kinks and comps[0].index is None:
        # A random direction crosses several kinks at once, and along it the one-sided slopes
        # mix each element's two sides: no gradient need fall between them. Elements can be
        # judged one by one, so check a random sample of them instead.
        flat_a = np.asarray(analytic).reshape(-1)
        picked = rng.choice(x.size, size=min(MAX_ELEMENTS, x.size), replace=False)
        comps = [_element(f, x, flat_a, int(i), eps) for i in np.sort(picked)]
        sample = relative_error(np.array([c.analytic for c in comps]), np.array([c.numeric for c in comps]))
        if sample <= tolerance:
            return Check(what, error, norm, (), sample)
        kinks, elsewhere = _probe(f, x, comps, eps, tolerance)
    return Check(what, error, norm, tuple(kinks), elsewhere)


def check_block(block: Block, inputs: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], *, seed: int = 0,
                eps: float = 1e-6, tolerance: float = TOLERANCE, context: Context | None = None) -> list[Check]:
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
        checks.append(_check(f"input {name}", loss, inputs[name], g, rng, eps, tolerance))
    for name, g in gw.items():
        checks.append(_check(f"weight {name}", loss, weights[name], g, rng, eps, tolerance))
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
                only: Collection[tuple[str, str]] | None = None, tolerance: float = TOLERANCE) -> list[Check]:
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
            checks.append(_check(f"{label} weight {name}", f, w, grads[node][name], rng, eps, tolerance))
    return checks


__all__ = ["MAX_ELEMENTS", "DIRECTIONS", "TOLERANCE", "OK", "KINK", "FAILED", "Kink", "Check", "relative_error",
           "check_block", "learned_weights", "check_graph"]
