"""Where wires run and where their texts go: pure geometry over the cards' rectangles.

- :func:`route` keeps a wire off the cards between its ends. A wire whose plain curve would
  cross a card (a residual connection skipping a block, a wire back to a folded row) runs along
  a free horizontal lane instead: out of its port, to the lane, along it, to the other port.
- :func:`place_labels` puts each wire text where it touches no card and no other text: it tries
  spots along its wire around the preferred one, then the text's shorter variants, and hides the
  text when nothing fits. Higher priority first, then short wires (they have the least room).

Both work on plain rectangles through :class:`Grid`, a spatial hash, so a graph of hundreds of
cards is placed in milliseconds. Both also remember, per wire and per text, what their answer
depended on (the grid cells they looked at and what those held, the lanes other wires had taken
near them): after an edit only the answers whose inputs changed are worked out again, so an edit
of a graph of thousands of nodes re-routes a few wires, not all of them, and gets exactly what a
pass from scratch would.
"""

from __future__ import annotations

import bisect
import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from PySide6.QtCore import QPointF, QRectF

STUB = 18.0  # how far a routed wire runs straight out of its port before turning
CLEAR = 6.0  # room kept between a routed wire and a card
LANE_CLEAR = 15.0  # a lane beside a card keeps this far from it, room for a text on the wire
LANE_SPACING = 12.0  # two wires in one gap run this far apart
LABEL_GAP = 2.0  # room kept around a label


Box = tuple[float, float, float, float, Any]
_EMPTY: list[Box] = []


class Grid:
    """Rectangles in buckets of ``cell`` scene units; answers "does this rectangle hit any?".

    While :meth:`tracing`, every question's rectangle is recorded, so a caller can tell which
    cells an answer depended on (:meth:`cells_of`) and later whether they still hold the same
    (:meth:`contents`, :meth:`holds`)."""

    def __init__(self, cell: float = 160.0) -> None:
        self.cell = cell
        self.buckets: dict[tuple[int, int], list[Box]] = {}
        self._trace: list[tuple[float, float, float, float]] | None = None

    def _keys(self, x1: float, y1: float, x2: float, y2: float) -> Iterable[tuple[int, int]]:
        c = self.cell
        for i in range(math.floor(x1 / c), math.floor(x2 / c) + 1):
            for j in range(math.floor(y1 / c), math.floor(y2 / c) + 1):
                yield i, j

    def add(self, rect: QRectF, owner: Any = None) -> None:
        box = (rect.left(), rect.top(), rect.right(), rect.bottom(), owner)
        for key in self._keys(*box[:4]):
            self.buckets.setdefault(key, []).append(box)

    def hits(self, rect: QRectF, ignore: Sequence[Any] = ()) -> bool:
        x1, y1, x2, y2 = rect.left(), rect.top(), rect.right(), rect.bottom()
        if self._trace is not None:
            self._trace.append((x1, y1, x2, y2))
        for key in self._keys(x1, y1, x2, y2):
            for bx1, by1, bx2, by2, owner in self.buckets.get(key, ()):
                if bx1 < x2 and x1 < bx2 and by1 < y2 and y1 < by2 and (not ignore or owner not in ignore):
                    return True
        return False

    def near(self, rect: QRectF) -> list[Box]:
        x1, y1, x2, y2 = rect.left(), rect.top(), rect.right(), rect.bottom()
        if self._trace is not None:
            self._trace.append((x1, y1, x2, y2))
        seen: dict[int, Box] = {}
        for key in self._keys(x1, y1, x2, y2):
            for box in self.buckets.get(key, ()):
                if box[0] < x2 and x1 < box[2] and box[1] < y2 and y1 < box[3]:
                    seen[id(box)] = box
        return list(seen.values())

    # --- what an answer depended on -------------------------------------------------------------

    @contextlib.contextmanager
    def tracing(self) -> Iterator[list[tuple[float, float, float, float]]]:
        """Record the rectangle of every question asked inside the block."""
        outer, self._trace = self._trace, []
        try:
            yield self._trace
        finally:
            if outer is not None:
                outer.extend(self._trace)
            self._trace = outer

    def cells_of(self, rects: Iterable[tuple[float, float, float, float]]) -> tuple[tuple[int, int], ...]:
        keys: set[tuple[int, int]] = set()
        for r in rects:
            keys.update(self._keys(*r))
        return tuple(sorted(keys))

    def contents(self, keys: Sequence[tuple[int, int]]) -> tuple[list[Box], ...]:
        """What the cells ``keys`` hold now (copies): see :meth:`holds`."""
        buckets = self.buckets
        return tuple(list(buckets.get(key, ())) for key in keys)

    def holds(self, keys: Sequence[tuple[int, int]], contents: Sequence[list[Box]]) -> bool:
        """True when the cells ``keys`` hold what :meth:`contents` said they held: then every
        question confined to those cells gets the answer it got then. (Compares in place,
        allocating nothing: it runs for every wire after every edit.)"""
        buckets = self.buckets
        for key, held in zip(keys, contents):
            if buckets.get(key, _EMPTY) != held:
                return False
        return True


def _segment(a: QPointF, b: QPointF, pad: float = CLEAR / 2) -> QRectF:
    return QRectF(QPointF(min(a.x(), b.x()) - pad, min(a.y(), b.y()) - pad),
                  QPointF(max(a.x(), b.x()) + pad, max(a.y(), b.y()) + pad))


def curve_is_clear(path: Any, grid: Grid, ignore: Sequence[Any], samples: int = 24) -> bool:
    """True when the sampled curve stays off every card but its own two."""
    if not any(box[4] not in ignore for box in grid.near(path.boundingRect())):
        return True  # no other card anywhere near it (most wires: neighbours in a layout)
    for i in range(1, samples):
        p = path.pointAtPercent(i / samples)
        if grid.hits(QRectF(p.x() - 2, p.y() - 2, 4, 4), ignore):
            return False
    return True


Lane = tuple[float, float, float]  # (y, x from, x to): a horizontal leg of a routed wire


@dataclass(frozen=True)
class Route:
    """A wire's route and what it depended on: the grid cells it looked at and what they held,
    and (when it looked for a lane) the window in which other wires' lanes counted and those
    lanes. :func:`still_valid` tells whether the same question would get the same answer."""

    via: list[QPointF] | None
    lanes: tuple[Lane, ...]  # its own horizontal legs (others must not run on them)
    cells: tuple[tuple[int, int], ...]
    contents: tuple
    lane_window: tuple[float, float, float, float] | None  # (x from, x to, y top, y bottom)
    near_lanes: tuple[Lane, ...]


def lanes_of(via: Sequence[QPointF] | None) -> tuple[Lane, ...]:
    """The horizontal legs between a routed wire's waypoints."""
    if not via:
        return ()
    return tuple((a.y(), min(a.x(), b.x()), max(a.x(), b.x())) for a, b in zip(via, via[1:])
                 if abs(a.y() - b.y()) < 0.5 and abs(a.x() - b.x()) > 0.5)


def _near_lanes(taken: Sequence[Lane], window: tuple[float, float, float, float]) -> list[Lane]:
    lo_x, hi_x, top, bottom = window
    return [t for t in taken if min(hi_x, t[2]) - max(lo_x, t[1]) > 1
            and top - LANE_SPACING <= t[0] <= bottom + LANE_SPACING]


def still_valid(plan: Route, grid: Grid, taken: Sequence[Lane]) -> bool:
    """True when :func:`plan_route` asked again (same ends) would return ``plan``'s route."""
    if not grid.holds(plan.cells, plan.contents):
        return False
    return plan.lane_window is None or tuple(_near_lanes(taken, plan.lane_window)) == plan.near_lanes


def plan_route(p1: QPointF, p2: QPointF, grid: Grid, ends: Sequence[Any], direct_path: Any,
               taken: Sequence[Lane] = ()) -> Route:
    """:func:`route`, remembering what the answer depended on (see :class:`Route`)."""
    window: list[tuple[float, float, float, float] | None] = [None]
    near: list[Lane] = []
    with grid.tracing() as trace:
        via = route(p1, p2, grid, ends, direct_path, taken, _seen=(window, near))
    cells = grid.cells_of(trace)
    return Route(via, lanes_of(via), cells, grid.contents(cells), window[0], tuple(near))


def route(p1: QPointF, p2: QPointF, grid: Grid, ends: Sequence[Any], direct_path: Any,
          taken: Sequence[Lane] = (), *, _seen: Any = None) -> list[QPointF] | None:
    """Waypoints for a wire from output ``p1`` (leaving right) to input ``p2`` (entering from the
    left) that keeps off every card, or None when the plain curve ``direct_path`` already does
    (or no lane is free: then the curve is the least bad). ``ends`` are the owners of the two
    cards the wire connects; their ports are allowed to touch it. ``taken`` are the lanes other
    wires run along, ``(y, x1, x2)``: a wire never runs on top of another one."""
    forward = p2.x() - p1.x() >= 2 * STUB
    if forward and curve_is_clear(direct_path, grid, ends):
        return None
    xa = p1.x() + STUB
    xb = p2.x() - STUB
    # Candidate lanes: the two ports' heights, and just above and below every card in the span.
    span = QRectF(QPointF(min(xa, xb) - STUB, min(p1.y(), p2.y()) - 400), QPointF(max(xa, xb) + STUB, max(p1.y(), p2.y()) + 400))
    lanes = {round(p1.y(), 1), round(p2.y(), 1)}
    boxes = grid.near(span)
    lo_x, hi_x = min(xa, xb), max(xa, xb)
    # (a row of cards shares its top and bottom: each pair once; sorted, so searches bisect)
    along = sorted({(y1, y2) for x1, y1, x2, y2, _o in boxes if x1 < hi_x and lo_x < x2})
    tops = [y1 for y1, _y2 in along]
    edges = sorted({y for pair in along for y in pair})
    for y1, y2 in along:
        lanes.add(round(y1 - LANE_CLEAR, 1))
        lanes.add(round(y2 + LANE_CLEAR, 1))
        k = bisect.bisect_right(tops, y2)
        if k < len(tops):  # the middle of the gap under this card, and beside it for a second wire
            middle = (y2 + tops[k]) / 2
            for j in (0, -1, 1, -2, 2):
                lanes.add(round(middle + j * LANE_SPACING, 1))
    lane_window = (lo_x, hi_x, span.top(), span.bottom())
    near_lanes = _near_lanes(taken, lane_window)
    if _seen is not None:
        _seen[0][0] = lane_window
        _seen[1].extend(near_lanes)
    for y, _x1, _x2 in near_lanes:  # beside a lane already taken
        lanes.add(round(y - LANE_SPACING, 1))
        lanes.add(round(y + LANE_SPACING, 1))

    def shares_a_lane(y: float) -> bool:
        return any(abs(y - ty) < LANE_SPACING - 0.5 for ty, _tx1, _tx2 in near_lanes)

    def clearance(y: float) -> float:  # to the nearest card edge along the span
        k = bisect.bisect_left(edges, y)
        return min((abs(y - edges[j]) for j in (k - 1, k) if 0 <= j < len(edges)), default=40.0)

    best: tuple[float, list[QPointF]] | None = None
    base = abs(xb - xa) + 2 * STUB

    def bound(y: float) -> float:  # no route through lane y costs less than this
        return base + abs(y - p1.y()) + abs(y - p2.y()) - 60.0 - 24.0

    for y in sorted(lanes, key=bound):
        if best is not None and bound(y) > best[0]:
            break  # the lanes left are all farther
        if abs(y - p1.y()) > 0.5 and abs(y - p2.y()) > 0.5 and shares_a_lane(y):
            continue
        points = [p1, QPointF(xa, p1.y()), QPointF(xa, y), QPointF(xb, y), QPointF(xb, p2.y()), p2]
        # drop zero-length legs (a lane at a port's height)
        pts = [points[0]]
        for q in points[1:]:
            if abs(q.x() - pts[-1].x()) > 0.5 or abs(q.y() - pts[-1].y()) > 0.5:
                pts.append(q)
        legs = list(zip(pts[1:-2], pts[2:-1]))  # the stubs at either end may touch their own card
        if any(grid.hits(_segment(a, b)) for a, b in legs):
            continue
        if grid.hits(_segment(pts[0], pts[1]), ends) or grid.hits(_segment(pts[-2], pts[-1]), ends):
            continue
        length = sum(abs(b.x() - a.x()) + abs(b.y() - a.y()) for a, b in zip(pts, pts[1:]))
        # short, few corners, and (for a lane) well clear of the cards beside it; a bypass runs
        # above the blocks it skips, as residual connections are drawn, when that costs little
        cost = length + 30.0 * (len(pts) - 2) - (2.0 * min(clearance(y), 30.0) if len(pts) > 4 else 0.0)
        if y < min(p1.y(), p2.y()) - 1:
            cost -= 24.0
        if best is None or cost < best[0]:
            best = (cost, pts[1:-1])
    return best[1] if best is not None else None


@dataclass(frozen=True)
class Spot:
    """Where a text went (``index`` of the variant shown, its centre and rectangle; None:
    hidden) and what that depended on: its inputs, and the cells of the cards' grid and of the
    texts placed before it that it looked at, with what they held."""

    key: tuple
    found: tuple[int, QPointF, QRectF] | None
    card_cells: tuple[tuple[int, int], ...]
    card_contents: tuple
    placed_cells: tuple[tuple[int, int], ...]
    placed_contents: tuple


def place_labels(labels: Sequence[Any], cards: Grid, fixed: Sequence[tuple[QRectF, Any]] = ()) -> int:
    """Position every label (see :class:`editor.items.link.WireLabel`) on its wire, or hide it;
    returns how many labels this moved, showed, hid or changed the text of.

    A label whose inputs (texts, preferred spot, wire), cards nearby and texts placed before it
    nearby are what they were last time keeps its spot without searching again (``label.spot``
    remembers it). ``fixed`` are other texts already written, (rectangle, owner): the labels
    keep off them as off each other."""
    placed = Grid(cell=120.0)
    for rect, owner in fixed:
        placed.add(rect.adjusted(-LABEL_GAP, -LABEL_GAP, LABEL_GAP, LABEL_GAP), owner)
    order = sorted(labels, key=lambda lb: (-lb.priority, lb.link_item.length()))
    changed = 0
    for label in order:
        link = label.link_item
        if not label.variants or not link.isVisible() or link.path.isEmpty():
            label.spot = None
            changed += label.show_variant(-1, None)
            continue
        key = (label.variants, label.where, link.geometry, label.size_key())
        memo: Spot | None = getattr(label, "spot", None)
        if memo is None or memo.key != key or not cards.holds(memo.card_cells, memo.card_contents) \
                or not placed.holds(memo.placed_cells, memo.placed_contents):
            with cards.tracing() as seen_cards, placed.tracing() as seen_placed:
                found = _find_spot(label, link.path, link.length(), cards, placed)
            card_cells, placed_cells = cards.cells_of(seen_cards), placed.cells_of(seen_placed)
            memo = Spot(key, found, card_cells, cards.contents(card_cells), placed_cells, placed.contents(placed_cells))
            label.spot = memo
        if memo.found is None:
            changed += label.show_variant(-1, None)
            continue
        index, at, rect = memo.found
        changed += label.show_variant(index, at)
        placed.add(rect.adjusted(-LABEL_GAP, -LABEL_GAP, LABEL_GAP, LABEL_GAP), label)
    return changed


def _find_spot(label: Any, path: Any, length: float, cards: Grid, placed: Grid) -> tuple[int, QPointF, QRectF] | None:
    where = min(0.9, max(0.1, label.where))
    offsets = [0.0]
    for k in range(1, 9):
        offsets += [k * 0.05, -k * 0.05]
    for index, text in enumerate(label.variants):
        local = label.rect_for(text)
        # the label must keep clear of the wire's two ports: half its width from either end
        margin = (local.width() / 2 + 10.0) / max(length, 1.0)
        if margin >= 0.5:
            continue
        for off in offsets:
            t = where + off
            if t < margin or t > 1 - margin:
                continue
            at = path.pointAtPercent(t)
            rect = local.translated(at)
            grown = rect.adjusted(-LABEL_GAP, -LABEL_GAP, LABEL_GAP, LABEL_GAP)
            if cards.hits(grown) or placed.hits(grown):
                continue
            return index, at, rect
    return None
