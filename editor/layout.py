"""Auto-layout: layered, left to right, fitted to the view. Pure computation (no Qt): returns a
position per node; :class:`editor.commands.MoveNodesCommand` applies it as one undoable step,
and read-only views apply it directly.

How a graph is drawn (:func:`arrange`):

- **Columns** are topological generations (sources on the left), and every node moves right to
  the column just before its first consumer: a loss's target sits next to the loss, an unrolled
  RNN's x_t next to its cell.
- **The spine**, the longest path, runs straight along one line of cards. Every other node goes next to the nodes it is wired to, above or below
  the spine in its column (side inputs, parallel branches). A wire that skips columns (a
  residual connection) gets a lane reserved beside the blocks it bypasses.
- **Folding to the view**: given the view's size, a graph too wide for it at a readable zoom is
  folded. A chain of blocks (an opened stack, a ConvNet) becomes a *snake* of columns, down one
  column and up the next, so every wire stays short; any other graph folds into rows, read like
  lines of text, cut where the fewest wires cross. The fold that shows the graph largest wins,
  and no fold when one row is readable already.
- **Buses**: in a read-only view, a node wired to four or more nodes that lie in four or more
  columns along the spine (an unrolled RNN's input sequence, its stack of states) is drawn as a
  bar under (inputs) or over (outputs) them, so its wires are short and vertical: the lecture's
  picture of a row of cells with x_t below and h_t above.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import networkx as nx

from engine.graph import Graph

Size = tuple[float, float]
LANE_HEIGHT = 34.0  # room a skipping wire keeps in each column it crosses (scene units)
BUS_MIN = 4  # a node wired to this many nodes in this many columns becomes a bus
FRAME = 40.0  # margin the view keeps around a graph when it frames it (scene units)


@dataclass
class Arrangement:
    """Positions (document units) and, for read-only views, which nodes are buses: node id →
    (side, width in scene units), side "top" (wires leave its top edge) or "bottom"."""

    positions: dict[str, tuple[float, float]]
    buses: dict[str, tuple[str, float]] = field(default_factory=dict)
    zoom: float = 1.0  # the zoom that shows all of it in the view given (1.0 without one)
    folds: int = 0


def _dag(graph: Graph, keep: set[str], alias: Mapping[str, str]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(n for n in graph.nodes if n in keep)
    for link in graph.links:
        a, b = alias.get(link.src, link.src), alias.get(link.dst, link.dst)
        if a != b and a in keep and b in keep:
            g.add_edge(a, b)
    return g


def _columns(g: nx.DiGraph, order: Mapping[str, int]) -> dict[str, int]:
    generations = [sorted(gen, key=order.__getitem__) for gen in nx.topological_generations(g)]
    column = {nid: i for i, gen in enumerate(generations) for nid in gen}
    # Pull every node right, to the column just before its first consumer (reverse topological
    # order settles consumers first).
    for nid in reversed([n for gen in generations for n in gen]):
        if g.out_degree(nid) > 0:
            column[nid] = max(column[nid], min(column[s] for s in g.successors(nid)) - 1)
    return column


def find_buses(graph: Graph, nodes: Iterable[str] | None = None,
               alias: Mapping[str, str] | None = None) -> dict[str, str]:
    """Nodes to draw as buses (node id → "top" or "bottom", see the module's docstring)."""
    keep = set(graph.nodes) if nodes is None else set(nodes)
    alias = alias or {}
    g = _dag(graph, keep, alias)
    order = {nid: i for i, nid in enumerate(graph.nodes)}
    column = _columns(g, order)
    buses: dict[str, str] = {}
    for nid in g.nodes:
        outs, ins = list(g.successors(nid)), list(g.predecessors(nid))
        if len(outs) >= BUS_MIN and len({column[s] for s in outs}) >= BUS_MIN and len(ins) == 0:
            buses[nid] = "top"  # feeds a row from below: its wires leave its top edge
        elif len(ins) >= BUS_MIN and len({column[p] for p in ins}) >= BUS_MIN:
            buses[nid] = "bottom"  # gathers a row from above: its wires enter its bottom edge
    return buses


def arrange(graph: Graph, size_of: Callable[[str], Size] | None = None, *,
            h_gap: float = 56.0, v_gap: float = 30.0,
            origin: tuple[float, float] = (0.0, 0.0),
            nodes: Iterable[str] | None = None,
            alias: Mapping[str, str] | None = None,
            scale: float | tuple[float, float] = 1.0,
            viewport: tuple[float, float] | None = None,
            readable: float = 0.9,
            buses: Mapping[str, str] | None = None,
            label_width: Callable[[str, str], float] | None = None,
            port_offset: Callable[[str, str, bool], float] | None = None) -> Arrangement:
    """Lay out ``graph`` (or just ``nodes``; ``alias`` maps hidden nodes to the node standing for
    them, e.g. a compact stack's members to its head). Sizes (``size_of``, scene units) and gaps
    are on screen; positions come back in document units (``scale`` is the scene's spread).

    ``viewport`` (pixels) lets the layout fold to fit it; ``readable`` is the zoom it aims for
    (a graph that fits at that zoom in one row is not folded). ``buses`` (from
    :func:`find_buses`) are drawn as bars. ``label_width(src, dst)`` is the width of the text on
    a wire, so the gap it crosses can hold it; ``port_offset(node, port, is_output)`` is a
    port's height on its card, so side inputs line up with the port they feed."""
    keep = set(graph.nodes) if nodes is None else set(nodes)
    alias = dict(alias or {})
    measure = size_of or (lambda _nid: (180.0, 90.0))
    sx, sy = scale if isinstance(scale, tuple) else (scale, scale)
    buses = {n: s for n, s in (buses or {}).items() if n in keep}

    g = _dag(graph, keep, alias)
    order = {nid: i for i, nid in enumerate(graph.nodes)}
    column = _columns(g, order)
    sizes = {nid: measure(nid) for nid in g.nodes}
    ports: dict[tuple[str, str], tuple[str, str]] = {}  # (a, b) -> (a's port, b's port), first link
    for link in graph.links:
        a, b = alias.get(link.src, link.src), alias.get(link.dst, link.dst)
        if a in g and b in g and a != b:
            ports.setdefault((a, b), (link.src_port, link.dst_port))

    def offset(nid: str, port: str, is_output: bool) -> float:
        if port_offset is not None:
            return port_offset(nid, port, is_output)
        return sizes[nid][1] / 2

    main = nx.DiGraph(g)
    main.remove_nodes_from(buses)
    columns_used = sorted({column[n] for n in main.nodes})
    remap = {c: i for i, c in enumerate(columns_used)}
    col = {n: remap[column[n]] for n in main.nodes}
    n_cols = len(columns_used)
    if n_cols == 0:
        return Arrangement({})

    # --- vertical placement along the spine -------------------------------------------------------
    # The spine: the longest path, not through the nodes a bus feeds (an RNN's x_t sit under
    # the row of cells, which is the spine).
    fed_by_bus = {s for nid, side in buses.items() if side == "top" for s in g.successors(nid)}
    feeds_bus = {p for nid, side in buses.items() if side == "bottom" for p in g.predecessors(nid)}
    for a, b in main.edges:
        main.edges[a, b]["w"] = 0.25 if a in fed_by_bus else 1.0
    spine = nx.dag_longest_path(main, weight="w", topo_order=list(nx.lexicographical_topological_sort(main, key=order.__getitem__)))
    top: dict[str, float] = {}
    occupied: list[list[tuple[float, float]]] = [[] for _ in range(n_cols)]  # per column: (top, bottom)

    def claim(c: int, y: float, h: float) -> None:
        occupied[c].append((y, y + h))

    def free_spot(cs: list[int], want: float, h: float, prefer_above: bool, side: str = "") -> float:
        """The top closest to ``want`` where a box of height ``h`` fits in every column of ``cs``
        (only below or above ``want`` when ``side`` says so)."""
        blocks = [iv for c in cs for iv in occupied[c]]
        candidates = {want}
        for a, b in blocks:
            candidates.add(a - v_gap - h)
            candidates.add(b + v_gap)

        def clear(y: float) -> bool:
            return all(y + h + v_gap <= a or y >= b + v_gap for a, b in blocks)

        ok = [y for y in candidates if clear(y)]
        if side == "below":
            ok = [y for y in ok if y >= want] or ok
        elif side == "above":
            ok = [y for y in ok if y <= want] or ok
        return min(ok, key=lambda y: (abs(y - want), (y > want) if prefer_above else (y < want)))

    for nid in spine:  # one level row of cards (a wire into a lower port bends a little)
        top[nid] = 0.0
        claim(col[nid], 0.0, sizes[nid][1])

    # Lanes for wires that skip columns: a band beside the blocks they bypass, above them by choice.
    lanes: list[tuple[str, str, list[int], float]] = []
    for a, b in sorted(main.edges, key=lambda e: (order[e[0]], order[e[1]])):
        if col[b] - col[a] > 1:
            lanes.append((a, b, list(range(col[a] + 1, col[b])), 0.0))

    def _feeds_higher(nid: str) -> bool:
        """True when ``nid`` feeds a consumer through a port above the one a placed node of its
        own column feeds (w into Multiply's a, beside h into its b): it then goes above that node,
        so their wires do not cross."""
        for s_ in main.successors(nid):
            mine = ports.get((nid, s_), ("", ""))[1]
            for m in main.predecessors(s_):
                if m != nid and m in top and col[m] == col[nid]:
                    theirs = ports.get((m, s_), ("", ""))[1]
                    if offset(s_, mine, False) < offset(s_, theirs, False):
                        return True
        return False

    # Others: nearest to the placed nodes first (breadth-first from the spine).
    undirected = main.to_undirected(as_view=True)
    placed_lanes: set[int] = set()
    remaining = [n for n in main.nodes if n not in top]
    while remaining or len(placed_lanes) < len(lanes):
        # lanes whose source is placed go first: they keep the room beside the spine
        progressed = False
        for k, (a, b, cs, _) in enumerate(lanes):
            if k in placed_lanes or a not in top:
                continue
            pa, _pb = ports.get((a, b), ("out", ""))
            want = top[a] + offset(a, pa, True) - LANE_HEIGHT / 2
            yl = free_spot(cs, want, LANE_HEIGHT, prefer_above=True)
            for c in cs:
                claim(c, yl, LANE_HEIGHT)
            placed_lanes.add(k)
            progressed = True
        ready = [n for n in remaining if any(m in top for m in undirected.neighbors(n))]
        if not ready and remaining:
            ready = [min(remaining, key=order.__getitem__)]
        if not ready:
            if not progressed:
                break
            continue
        # inputs last: they fit around the flows they feed (a label shared by two losses)
        ready.sort(key=lambda n: (main.in_degree(n) == 0, col[n], order[n]))
        nid = ready[0]
        wants = []
        for p in main.predecessors(nid):
            if p in top:
                pa, pb = ports.get((p, nid), ("out", ""))
                wants.append(top[p] + offset(p, pa, True) - offset(nid, pb, False))
        for s in main.successors(nid):
            if s in top:
                pa, pb = ports.get((nid, s), ("out", ""))
                wants.append(top[s] + offset(s, pb, False) - offset(nid, pa, True))
        if wants:
            want = sorted(wants)[len(wants) // 2]
        else:
            want = max((b for iv in occupied[col[nid]] for b in iv), default=0.0) + v_gap
        side = "below" if nid in fed_by_bus else ("above" if nid in feeds_bus or _feeds_higher(nid) else "")
        top[nid] = free_spot([col[nid]], want, sizes[nid][1], prefer_above=False, side=side)
        claim(col[nid], top[nid], sizes[nid][1])
        remaining.remove(nid)

    # --- horizontal placement --------------------------------------------------------------------------
    members: list[list[str]] = [[] for _ in range(n_cols)]
    for nid in main.nodes:
        members[col[nid]].append(nid)
    widths = [max((sizes[n][0] for n in m), default=0.0) for m in members]
    gaps = [h_gap] * max(0, n_cols - 1)
    if label_width is not None:
        for a, b in main.edges:
            if col[b] == col[a] + 1:
                gaps[col[a]] = max(gaps[col[a]], label_width(a, b) + 22.0)

    chain = all(len(m) == 1 for m in members) and not lanes and all(
        main.out_degree(n) <= 1 and main.in_degree(n) <= 1 for n in main.nodes)
    extent = [(min(a for a, _ in occupied[c]), max(b for _, b in occupied[c])) for c in range(n_cols)]

    def zoom_of(w: float, h: float) -> float:
        if viewport is None:
            return 1.0
        return min(viewport[0] / (w + 2 * FRAME), viewport[1] / (h + 2 * FRAME), 1.0)

    if chain:
        place = _snake(members, sizes, widths, gaps, v_gap, zoom_of, readable, viewport is not None)
    else:
        # A bus spans its whole row: folding would break it (and an unrolled RNN reads in one row).
        place = _rows(members, col, top, sizes, extent, widths, gaps, v_gap, main, zoom_of, readable,
                      viewport is not None and not buses)
    xy, zoom, folds = place

    # --- buses ----------------------------------------------------------------------------------------
    bus_out: dict[str, tuple[str, float]] = {}
    for nid, side in buses.items():
        partners = [p for p in (list(g.successors(nid)) if side == "top" else list(g.predecessors(nid))) if p in xy]
        if not partners:
            xy[nid] = (0.0, 0.0)
            continue
        left = min(xy[p][0] for p in partners) - (24.0 if side == "top" else 0.0)
        right = max(xy[p][0] + sizes[p][0] for p in partners) + (24.0 if side == "bottom" else 0.0)
        width = max(right - left, sizes[nid][0])
        # the band of cards the bus spans (the spine row and what is stacked with it)
        span = [n for n in xy if n not in buses and xy[n][0] + sizes[n][0] > left and xy[n][0] < right]
        if side == "top":
            y = max(xy[n][1] + sizes[n][1] for n in span) + 2 * v_gap
        else:
            y = min(xy[n][1] for n in span) - 2 * v_gap - sizes[nid][1]
        xy[nid] = (left, y)
        bus_out[nid] = (side, width)

    # normalise to the origin, scene → document units
    min_x = min(x for x, _ in xy.values())
    min_y = min(y for _, y in xy.values())
    positions = {nid: (round((x - min_x) / sx + origin[0], 2), round((y - min_y) / sy + origin[1], 2))
                 for nid, (x, y) in xy.items()}
    return Arrangement(positions, bus_out, zoom, folds)


def _rows(members: list[list[str]], col: Mapping[str, int], top: Mapping[str, float], sizes: Mapping[str, Size],
          extent: list[tuple[float, float]], widths: list[float], gaps: list[float], v_gap: float,
          g: nx.DiGraph, zoom_of: Callable[[float, float], float], readable: float,
          fold: bool) -> tuple[dict[str, tuple[float, float]], float, int]:
    """Columns left to right, folded into rows (cut where the fewest wires cross) when that shows
    the graph larger in the view."""
    n = len(members)
    widths_of = {m: sizes[m][0] for m in sizes}
    sizes_h = {m: sizes[m][1] for m in sizes}

    def movers(cut: int) -> list[str]:
        """Inputs just before a cut that feed only the row after it: they open that row."""
        return [m for m in members[cut - 1] if g.in_degree(m) == 0 and all(col[s] >= cut for s in g.successors(m))]

    crossing = [0] * max(0, n - 1)  # wires crossing the cut after column c
    for c in range(n - 1):
        moving = set(movers(c + 1))
        crossing[c] = sum(1 for a, b in g.edges if col[a] <= c < col[b] and a not in moving)
    row_gap = 3 * v_gap

    def layout(cuts: list[int]) -> tuple[dict[str, tuple[float, float]], float, float]:
        bands = [list(range(s, e)) for s, e in zip([0] + cuts, cuts + [n])]
        xy: dict[str, tuple[float, float]] = {}
        y0 = 0.0
        width = 0.0
        for k, band in enumerate(bands):
            lead = movers(band[0]) if k else []
            after = set(movers(bands[k + 1][0])) if k + 1 < len(bands) else set()
            cards = [m for c in band for m in members[c] if m not in after] + lead
            lo = min(min(extent[c][0] for c in band), *(top[m] for m in lead)) if lead else min(extent[c][0] for c in band)
            hi = max((top[m] + sizes_h[m] for m in cards), default=lo)
            x = 0.0
            if lead:
                lead_w = max(widths_of[m] for m in lead)
                for m in lead:
                    xy[m] = (x + lead_w - widths_of[m], y0 + top[m] - lo)
                x += lead_w + max(gaps[band[0] - 1], gaps[band[0]] if band[0] < n - 1 else 0.0)
            for c in band:
                for nid in members[c]:
                    if nid not in after:
                        xy[nid] = (x + (widths[c] - widths_of[nid]) / 2, y0 + top[nid] - lo)
                x += widths[c] + (gaps[c] if c < n - 1 and c != band[-1] else 0.0)
            width = max(width, x)
            y0 += hi - lo + row_gap
        return xy, width, y0 - row_gap

    # Never cut through a wire that skips columns: a residual connection must stay a bypass lane.
    allowed = [not any(col[a] <= c < col[b] for a, b in g.edges if col[b] - col[a] > 1) for c in range(n - 1)]
    best = layout([])
    best_zoom = zoom_of(best[1], best[2])
    best_cuts: list[int] = []
    if fold and best_zoom < readable and any(allowed):
        for rows in range(2, n + 1):
            cuts = _balanced_cuts(widths, gaps, crossing, rows, allowed)
            if len(cuts) < rows - 1:
                break  # no more places to cut
            trial = layout(cuts)
            z = zoom_of(trial[1], trial[2])
            # a fold must pay for itself: it breaks the line of reading
            if z > best_zoom + 0.05:
                best, best_zoom, best_cuts = trial, z, cuts
            if z >= readable:
                break
    return best[0], best_zoom, len(best_cuts)


def _balanced_cuts(widths: list[float], gaps: list[float], crossing: list[int], rows: int,
                   allowed: list[bool]) -> list[int]:
    """Where to cut ``len(widths)`` columns into ``rows`` rows of about equal width: at each
    target width, the allowed cut within a column of it that the fewest wires cross."""
    n = len(widths)
    total = sum(widths) + sum(gaps)
    ends = []  # right edge of each column
    x = 0.0
    for c in range(n):
        x += widths[c]
        ends.append(x)
        x += gaps[c] if c < n - 1 else 0.0
    cuts: list[int] = []
    for k in range(1, rows):
        target = total * k / rows
        # rows of about equal width: a cut at most half a row away from its target
        options = [c for c in range(n - 1) if allowed[c] and (not cuts or c + 1 > cuts[-1])
                   and abs(ends[c] - target) <= total / rows / 2]
        if not options:
            break
        near = min(options, key=lambda c: abs(ends[c] - target))
        window = [c for c in options if abs(c - near) <= 1]
        best = min(window, key=lambda c: (crossing[c], abs(ends[c] - target)))
        cuts.append(best + 1)
    return cuts


def _snake(members: list[list[str]], sizes: Mapping[str, Size], widths: list[float], gaps: list[float],
           v_gap: float, zoom_of: Callable[[float, float], float], readable: float,
           fold: bool) -> tuple[dict[str, tuple[float, float]], float, int]:
    """A chain: in a row when it is readable so, else a snake of columns of ``k`` cards, down one
    column and up the next (every wire joins neighbours), with the ``k`` that shows it largest."""
    chain = [m[0] for m in members]
    n = len(chain)

    def row() -> tuple[dict[str, tuple[float, float]], float, float]:
        xy, x = {}, 0.0
        tallest = max(sizes[c][1] for c in chain)
        for i, nid in enumerate(chain):
            xy[nid] = (x, (tallest - sizes[nid][1]) / 2)
            x += widths[i] + (gaps[i] if i < n - 1 else 0.0)
        return xy, x, tallest

    best = row()
    best_zoom = zoom_of(best[1], best[2])
    folds = 0
    if not fold or best_zoom >= readable:
        return best[0], best_zoom, 0
    gap_y = 2 * v_gap  # room for the wire that turns back under each card
    gap_x = max(gaps, default=56.0)
    for k in range(n, 1, -1):
        xy: dict[str, tuple[float, float]] = {}
        x = 0.0
        height = 0.0
        segments = [chain[s:s + k] for s in range(0, n, k)]
        for s, seg in enumerate(segments):
            w = max(sizes[c][0] for c in seg)
            ys = []
            y = 0.0
            for nid in seg:
                ys.append(y)
                y += sizes[nid][1] + gap_y
            height = max(height, y - gap_y)
            if s % 2:  # up the odd columns: the chain turns at the bottom
                ys = [height_of(segments[0], sizes, gap_y) - yy - sizes[nid][1] for yy, nid in zip(ys, seg)]
            for nid, yy in zip(seg, ys):
                xy[nid] = (x + (w - sizes[nid][0]) / 2, yy)
            x += w + gap_x
        z = zoom_of(x - gap_x, height)
        if z > best_zoom + 0.05:
            best, best_zoom, folds = (xy, x - gap_x, height), z, len(segments) - 1
    return best[0], best_zoom, folds


def height_of(seg: list[str], sizes: Mapping[str, Size], gap_y: float) -> float:
    return sum(sizes[n][1] for n in seg) + gap_y * (len(seg) - 1)


def layered_positions(graph: Graph, size_of: Callable[[str], Size] | None = None, *,
                      h_gap: float = 56.0, v_gap: float = 30.0,
                      origin: tuple[float, float] = (0.0, 0.0),
                      nodes: Iterable[str] | None = None,
                      alias: Mapping[str, str] | None = None,
                      scale: float | tuple[float, float] = 1.0,
                      viewport: tuple[float, float] | None = None,
                      readable: float = 0.9,
                      label_width: Callable[[str, str], float] | None = None,
                      port_offset: Callable[[str, str, bool], float] | None = None) -> dict[str, tuple[float, float]]:
    """The positions of :func:`arrange` (no buses)."""
    return arrange(graph, size_of, h_gap=h_gap, v_gap=v_gap, origin=origin, nodes=nodes, alias=alias, scale=scale,
                   viewport=viewport, readable=readable, label_width=label_width, port_offset=port_offset).positions


def spread_factor(boxes: list[tuple[float, float, float, float]], *, h_gap: float = 70.0, v_gap: float = 16.0,
                  cap: float = 3.0, budget: int = 4_000_000) -> tuple[float, float]:
    """How much to spread document positions apart, per axis, so that boxes ``(x, y, w, h)``
    (positions in document units, sizes on screen) do not overlap. Files written for smaller
    nodes then open readable, and their positions are kept as they are.

    First Sx: boxes sharing a horizontal band are pulled apart along x (leaving ``h_gap`` for the
    wire's shape label); then Sy: boxes that still share a vertical band are pulled apart along y.
    Each factor is at least 1 and at most ``cap``.

    Bounded for any file: boxes at one position count once (the largest there: they cannot be
    pulled apart by scaling anyway); a pair is only looked at when the boxes are close enough to
    matter (sorted by x for Sx, a grid of cells one reach wide for Sy), a factor that reached
    ``cap`` stops its search, and past ``budget`` pairs (thousands of nodes crowded into one spot)
    the factor is ``cap``: as spread as allowed, in bounded time."""
    merged: dict[tuple[float, float], tuple[float, float]] = {}
    for x, y, w, h in boxes:
        mw, mh = merged.get((x, y), (w, h))
        merged[(x, y)] = (max(mw, w), max(mh, h))
    order = sorted((x, y, w, h) for (x, y), (w, h) in merged.items())
    n = len(order)
    xs = [b[0] for b in order]
    widest = max((b[2] for b in order), default=0.0) + h_gap
    tallest = max((b[3] for b in order), default=0.0) + v_gap
    work = 0
    sx = 1.0
    for i, (x1, y1, w1, h1) in enumerate(order):
        if sx >= cap or work > budget:
            break
        for j in range(bisect.bisect_right(xs, x1, i + 1), n):  # the same x: nothing to pull apart along x
            x2, y2, w2, h2 = order[j]
            dx = x2 - x1
            if widest / dx <= sx:
                break  # sorted by x: no later box can ask for more
            work += 1
            top_h = h1 if y1 <= y2 else h2
            if abs(y2 - y1) < top_h + v_gap:
                sx = max(sx, min(cap, (w1 + h_gap) / dx))
    if work > budget:
        return cap, cap
    # Sy: a pair further apart than widest / sx along x is clear; one further apart than
    # ``tallest`` along y cannot ask for more than 1. So only neighbouring cells of that size meet.
    reach_x, reach_y = widest / sx, max(tallest, 1e-9)
    cells: dict[tuple[int, int], list[int]] = {}
    for k, (x, y, _, _) in enumerate(order):
        cells.setdefault((_cell(x, reach_x), _cell(y, reach_y)), []).append(k)
    sy = 1.0
    for i, (x1, y1, w1, h1) in enumerate(order):
        if sy >= cap:
            break
        cx, cy = _cell(x1, reach_x), _cell(y1, reach_y)
        for gx in (cx, cx + 1):  # a later box is never to the left
            for gy in (cy - 1, cy, cy + 1):
                for j in cells.get((gx, gy), ()):
                    work += 1
                    if j <= i:
                        continue
                    x2, y2, w2, h2 = order[j]
                    if (x2 - x1) * sx >= w1 + h_gap:
                        continue  # clear along x
                    dy = abs(y2 - y1)
                    if dy > 0:
                        top_h = h1 if y1 <= y2 else h2
                        sy = max(sy, min(cap, (top_h + v_gap) / dy))
        if work > budget:
            return sx, cap
    return sx, sy


def _cell(v: float, size: float) -> int:
    q = v / size
    return math.floor(q) if math.isfinite(q) else (2**62 if q > 0 else -(2**62))
