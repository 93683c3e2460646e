"""A gradient check for one node, on the values it had in a pass, with a verdict in plain words.

:func:`check_node` runs :func:`engine.gradcheck.check_block` (central differences against the
block's backward, in float64) on the node's own inputs and weights, and says what the numbers
mean: ``correct``, ``wrong`` or ``kink``. At a kink (ReLU at 0, a tie in Max, a hinge at its
corner) the slope from the left differs from the slope from the right, so central differences
cannot agree with any subgradient; the verdict says so instead of "failed".

The kink itself is found by :mod:`engine.gradcheck` (one-sided slopes probed where a check misses
its tolerance); this module turns its checks into one verdict for the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from engine.blocks import Block
from engine.gradcheck import FAILED, KINK, Check, check_block

TOLERANCE = 1e-5  # the CLI's gradcheck tolerance: float64 central differences of a correct block land far below
MAX_WEIGHTS = 8  # weights checked in a bigger block (a seeded sample; the verdict says so)


@dataclass(frozen=True)
class NodeCheck:
    checks: tuple[Check, ...]
    worst: float
    verdict: str  # "correct" | "wrong" | "kink" | "nothing"
    message: str  # one or two sentences for a person
    kinks: tuple[str, ...] = ()  # what sits at a kink: "input a", "weight W"
    sampled: tuple[int, int] | None = None  # (checked, total) weights when only a sample was

    @property
    def ok(self) -> bool:
        return self.verdict in ("correct", "kink", "nothing")


class _Subset:
    """The block seen as a function of some of its weights, the others held fixed (so a big
    composite can be checked on a sample of its weights)."""

    def __init__(self, block: Block, fixed: Mapping[str, np.ndarray]) -> None:
        self.block = block
        self.fixed = dict(fixed)

    def output_ports(self) -> Any:
        return self.block.output_ports()

    def forward(self, inputs: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], context: Any = None) -> Any:
        return self.block.forward(inputs, {**self.fixed, **weights}, context)

    def backward(self, gout: Mapping[str, np.ndarray], saved: Any, weights: Mapping[str, np.ndarray]) -> Any:
        gin, gw = self.block.backward(gout, saved, {**self.fixed, **weights})
        return gin, {k: v for k, v in gw.items() if k in weights}


def _float64(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (np.array(v, dtype=np.float64) if np.issubdtype(np.asarray(v).dtype, np.floating) else np.array(v))
            for k, v in values.items()}


def check_node(block: Block, inputs: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], *, seed: int = 0,
               tolerance: float = TOLERANCE, max_weights: int = MAX_WEIGHTS) -> NodeCheck:
    """Finite differences against backprop for every float input and weight of ``block`` at
    these inputs (a seeded sample of ``max_weights`` weights in a bigger block), in float64."""
    inputs, weights = _float64(inputs), _float64(weights)
    # buffers (BatchNorm's running statistics) are not learned: they have no gradient to check
    buffers = block.buffer_names({k: np.shape(v) for k, v in inputs.items()})
    names = [k for k in weights if k not in buffers]
    sampled = None
    target: Any = block
    checked = weights
    if buffers & set(weights):
        checked = {k: v for k, v in weights.items() if k not in buffers}
        target = _Subset(block, {k: v for k, v in weights.items() if k in buffers})
    if len(names) > max_weights:
        picked = sorted(np.random.default_rng(seed).choice(len(names), size=max_weights, replace=False))
        chosen = {names[i] for i in picked}
        checked = {k: v for k, v in weights.items() if k in chosen}
        target = _Subset(block, {k: v for k, v in weights.items() if k not in chosen})
        sampled = (max_weights, len(names))
    with np.errstate(all="ignore"):
        checks = tuple(check_block(target, inputs, checked, seed=seed, tolerance=tolerance))  # type: ignore[arg-type]
    if not checks:
        return NodeCheck((), 0.0, "nothing", "Nothing to check: this node has no float inputs or weights.", (), sampled)
    worst = max(c.error for c in checks)
    bad = [c for c in checks if not c.error <= tolerance]
    sample_note = f" (a sample of {sampled[0]} of its {sampled[1]} weights)" if sampled else ""
    if not bad:
        return NodeCheck(checks, worst, "correct",
                         f"Correct: backprop agrees with finite differences{sample_note}; largest relative error "
                         f"{worst:.1e}, below {tolerance:g}.", (), sampled)
    failed = [c for c in bad if c.status(tolerance) == FAILED]
    kinked = [c for c in bad if c.status(tolerance) == KINK]
    if not failed and kinked:
        at = tuple(c.what for c in kinked)
        k = kinked[0].kinks[0]
        return NodeCheck(checks, worst, "kink",
                         f"Not differentiable here: {', '.join(at)} sits at a kink (such as ReLU at 0 or a tie "
                         f"in Max): at {k.where} of {kinked[0].what} the slope is {k.left:.4g} from the left and "
                         f"{k.right:.4g} from the right. Backprop gives {k.analytic:.4g}, one of them (a "
                         f"subgradient), so finite differences cannot agree (relative error {worst:.1e}); this "
                         f"is not a bug.", at, sampled)
    if not failed:
        return NodeCheck(checks, worst, "correct",
                         f"Correct: backprop agrees with finite differences{sample_note} once the step is small "
                         f"enough to stay clear of a kink next to this point.", (), sampled)
    bad = failed
    names_bad = ", ".join(c.what for c in bad[:3]) + (" …" if len(bad) > 3 else "")
    return NodeCheck(checks, worst, "wrong",
                     f"Wrong: the gradient of {names_bad} does not match finite differences (relative error "
                     f"{worst:.1e}, tolerance {tolerance:g}){sample_note}; this block's backward is not the "
                     f"derivative of its forward.", (), sampled)
