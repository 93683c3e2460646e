"""The frames of one recorded pass, indexed for the questions the canvas asks: what is the state
of this level's nodes at this point of the pass, which frames can the user step to here, and
what went wrong where. Plain Python (no Qt), so it is cheap to test.

A *level* is the graph the canvas shows: ``()`` for the top graph, ``("bert",)`` for the inside
of node ``bert``, ``("bert", "block3")`` deeper. A frame belongs to the level its path leads
into (``frame.path[:-1]``). The *cursor* is the index of the last frame that has happened
(−1: none yet); the canvas shows the state after it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from engine.record import Frame

Path = tuple[str, ...]

VANISHING = 1e-7  # a gradient norm below this is vanishing
EXPLODING = 1e3  # ... above this, exploding


@dataclass
class LevelIndex:
    """Where the frames of one level are: their indices in order, and per node."""

    order: list[int] = field(default_factory=list)
    forward: dict[str, int] = field(default_factory=dict)
    backward: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """Something a student should look at: NaN/Inf, a vanishing or an exploding gradient."""

    kind: str  # "nan" | "inf" | "vanishing" | "exploding"
    path: Path
    phase: str
    frame: int
    message: str
    origin: bool = True  # False: a NaN/Inf that came from elsewhere (only the wires show it)

    @property
    def node(self) -> str:
        return self.path[-1]


class Timeline:
    """Frames of one pass, appended as the worker records them."""

    def __init__(self, loss_node: str | None = None) -> None:
        self.frames: list[Frame] = []
        self.levels: dict[Path, LevelIndex] = {}
        self.problems: list[Problem] = []
        self.finished = False
        self.stopped = False
        self.error = ""
        self.loss: float | None = None
        self.loss_node = loss_node
        self._nan_seen: set[str] = set()

    def __len__(self) -> int:
        return len(self.frames)

    # --- growing ---------------------------------------------------------------------------------

    def extend(self, frames: Iterable[Frame]) -> None:
        for f in frames:
            i = len(self.frames)
            self.frames.append(f)
            level = self.levels.setdefault(f.path[:-1], LevelIndex())
            level.order.append(i)
            (level.forward if f.phase == "forward" else level.backward)[f.node] = i
            self._check(i, f)
            if f.phase == "forward" and f.depth == 0 and f.node == self.loss_node:
                t = f.event.outputs.get("out") or next(iter(f.event.outputs.values()), None)
                arr = f.outputs.get("out")
                self.loss = float(np.asarray(arr).reshape(-1)[0]) if arr is not None and np.size(arr) == 1 else \
                    (t.norm if t is not None else None)

    def _check(self, i: int, f: Frame) -> None:
        """NaN/Inf where they first appear (at any depth) and at every top-level node they reach;
        vanishing or exploding gradients of the top-level nodes' weights (a composite's weights
        are named after its inner nodes: 'block1/attn/Wq') and over a recurrent network's steps."""
        ev = f.event
        label = ev.label
        if f.phase == "forward":
            for k, w in f.weights.items():
                if "/" in k:
                    continue  # a composite's copy of an inner node's weight: told at that node
                if w is not None and np.issubdtype(w.dtype, np.floating) and not np.isfinite(w).all():
                    self._add(Problem("nan", f.path, f.phase, i, f"{label}: weight '{k}' contains NaN or Inf"))
                    self._nan_seen.add("nan:forward")  # what follows from it is not a new origin
        groups = [("output", ev.outputs)] if f.phase == "forward" else \
            [("the gradient at", ev.outputs), ("the gradient of weight", ev.weights)]
        bad = [(what, port, t) for what, group in groups for port, t in group.items() if t.nan or t.inf]
        if bad:
            kind = "nan" if any(t.nan for _, _, t in bad) else "inf"
            # A backward pass that starts from a NaN loss is NaN from its first node on: its
            # origin is the forward one.
            first = not self._nan_seen and not (f.phase == "backward" and any(k.endswith(":forward") for k in self._nan_seen))
            self._nan_seen.add(f"{kind}:{f.phase}")
            if first or f.depth == 0:
                what, port, _ = bad[0]
                more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
                where = "first appears here" if first else "comes from earlier"
                self._add(Problem(kind, f.path, f.phase, i,
                                  f"{label}: {what} '{port}'{more} is {'NaN' if kind == 'nan' else 'Inf'} ({f.phase}; {where})",
                                  origin=first))
        if f.phase != "backward" or f.depth != 0:
            return
        for name, t in ev.weights.items():
            # An exactly zero gradient is structural (an attention key bias, a unit nothing
            # reaches), not a gradient that faded away.
            if t.nan or t.inf or not math.prod(t.shape) or t.norm == 0:
                continue
            if t.norm < VANISHING:
                self._add(Problem("vanishing", f.path, f.phase, i,
                                  f"{label}: the gradient of weight '{name}' has norm {t.norm:.1e} (vanishing: below {VANISHING:g})"))
            elif t.norm > EXPLODING:
                self._add(Problem("exploding", f.path, f.phase, i,
                                  f"{label}: the gradient of weight '{name}' has norm {t.norm:.1e} (exploding: above {EXPLODING:g})"))
        norms = ev.extras.get("time_grad_norms")
        if norms:
            lo = min(range(len(norms)), key=lambda k: norms[k])
            hi = max(range(len(norms)), key=lambda k: norms[k])
            if 0 < norms[lo] < VANISHING:
                self._add(Problem("vanishing", f.path, f.phase, i,
                                  f"{label}: the gradient reaching step t = {lo + 1} has norm {norms[lo]:.1e} "
                                  f"(vanishing through time; at t = {len(norms)} it is {norms[-1]:.1e})"))
            if norms[hi] > EXPLODING:
                self._add(Problem("exploding", f.path, f.phase, i,
                                  f"{label}: the gradient reaching step t = {hi + 1} has norm {norms[hi]:.1e} "
                                  "(exploding through time)"))

    def _add(self, p: Problem) -> None:
        self.problems.append(p)

    # --- questions ---------------------------------------------------------------------------------

    def level(self, path: Path) -> LevelIndex:
        return self.levels.get(path, LevelIndex())

    def visible(self, path: Path) -> list[int]:
        """The frames the user steps through at this level, in order."""
        return self.level(path).order

    def next_visible(self, path: Path, cursor: int) -> int | None:
        order = self.visible(path)
        k = bisect.bisect_right(order, cursor)
        return order[k] if k < len(order) else None

    def previous_visible(self, path: Path, cursor: int) -> int:
        """The visible frame before ``cursor`` (−1 when there is none: the start)."""
        order = self.visible(path)
        k = bisect.bisect_left(order, cursor)
        return order[k - 1] if k > 0 else -1

    def position(self, path: Path, cursor: int) -> int:
        """How many visible frames of this level have happened at ``cursor``."""
        return bisect.bisect_right(self.visible(path), cursor)

    def forward_end(self) -> int | None:
        """The last forward frame, once the forward pass is complete."""
        last = None
        for i, f in enumerate(self.frames):
            if f.phase == "backward":
                return last
            last = i
        return last if self.finished else None

    def frame_of(self, path: Path, node: str, phase: str) -> int | None:
        idx = self.level(path)
        return (idx.forward if phase == "forward" else idx.backward).get(node)

    def value_frame(self, path: Path, node: str, cursor: int) -> Frame | None:
        i = self.level(path).forward.get(node)
        return self.frames[i] if i is not None and i <= cursor else None

    def grad_frame(self, path: Path, node: str, cursor: int) -> Frame | None:
        i = self.level(path).backward.get(node)
        return self.frames[i] if i is not None and i <= cursor else None

    def running(self, path: Path, cursor: int) -> tuple[str, str] | None:
        """(node at this level, phase) of the frame at ``cursor`` when it is at or below this
        level: a composite counts as running while its inside runs."""
        if not 0 <= cursor < len(self.frames):
            return None
        f = self.frames[cursor]
        n = len(path)
        if len(f.path) > n and f.path[:n] == path:
            return f.path[n], f.phase
        return None

    def phase_at(self, cursor: int) -> str:
        if cursor < 0 or not self.frames:
            return "start"
        return self.frames[min(cursor, len(self.frames) - 1)].phase

    def problems_until(self, cursor: int) -> list[Problem]:
        return [p for p in self.problems if p.frame <= cursor]
