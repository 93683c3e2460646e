"""Driving a pass without a person: wait for it, and put the cursor at ``PHASE:N`` (for
``backprop-studio screenshot --step``, the tests and the benchmarks)."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtWidgets import QApplication

from editor.run.controller import RunController


class StepError(ValueError):
    """A ``--step`` that does not name a point of the pass."""


def wait(controller: RunController, timeout: float = 600.0) -> bool:
    """Process events until the pass being computed is finished (True) or ``timeout`` s pass."""
    end = time.perf_counter() + timeout
    while controller.busy or controller.timeline is None or not controller.timeline.finished:
        if time.perf_counter() > end:
            return False
        QApplication.processEvents()
        time.sleep(0.005)
    QApplication.processEvents()
    return True


def run_and_wait(controller: RunController, timeout: float = 600.0) -> bool:
    if controller.timeline is None or controller.stale:
        controller.run_pass()
    return wait(controller, timeout)


def parse_step(spec: str) -> tuple[str, int | None]:
    """``forward:3`` → ("forward", 3); ``backward:end`` → ("backward", None)."""
    phase, _, n = spec.partition(":")
    phase = phase.strip().lower()
    if phase not in ("forward", "backward") or not n:
        raise StepError(f"--step {spec!r}: write PHASE:N with PHASE forward or backward and N a number or end "
                        "(forward:3, backward:end)")
    if n.strip().lower() == "end":
        return phase, None
    try:
        k = int(n)
    except ValueError:
        raise StepError(f"--step {spec!r}: N must be a whole number or end") from None
    if k < 0:
        raise StepError(f"--step {spec!r}: N must be 0 or more")
    return phase, k


def go_to(controller: RunController, spec: str) -> dict[str, Any]:
    """Run the pass (if needed) and show the state after the N-th node of ``phase`` at the shown
    level (N = 0: just before that phase). Returns what ``--json`` prints."""
    phase, k = parse_step(spec)
    if not run_and_wait(controller):
        raise StepError("the pass did not finish in time")
    tl = controller.timeline
    assert tl is not None
    if tl.error:
        raise StepError(f"the pass failed: {tl.error}")
    order = [i for i in tl.visible(controller.level) if tl.frames[i].phase == phase]
    if phase == "backward" and not order:
        raise StepError("this graph has no backward pass (no single-number output to take gradients of)")
    if k is None:
        k = len(order)
    if k > len(order):
        raise StepError(f"--step {spec}: the {phase} pass has only {len(order)} steps here")
    if k == 0:
        before = [i for i in tl.visible(controller.level) if i < (order[0] if order else 0)]
        controller.seek(before[-1] if before else -1)
    else:
        controller.seek(order[k - 1])
    QApplication.processEvents()
    return summary(controller)


def summary(controller: RunController) -> dict[str, Any]:
    tl = controller.timeline
    f = controller.frame()
    phase, step = "start", 0
    if f is not None and tl is not None:
        phase = f.phase
        step = sum(1 for i in tl.visible(controller.level) if i <= controller.cursor and tl.frames[i].phase == phase)
    return {
        "loss": None if tl is None else tl.loss,
        "events": 0 if tl is None else len(tl.visible(controller.level)),
        "phase": phase,
        "step": step,
        "node": None if f is None else controller.labels.get(f.path[0], f.event.label.strip("'")) if f.depth == 0
        else f.event.label.strip("'"),
        "problems": 0 if tl is None else len(tl.problems),
    }
