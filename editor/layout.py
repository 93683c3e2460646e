"""Auto-layout: layered, left to right, from networkx's topological generations.

Pure computation (no Qt): returns a position per node; :class:`editor.commands.MoveNodesCommand`
applies it as one undoable step.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import networkx as nx

from engine.graph import Graph

Size = tuple[float, float]
LANE_HEIGHT = 84.0  # room a skipping wire keeps in each column it crosses (scene units)


def layered_positions(graph: Graph, size_of: Callable[[str], Size] | None = None, *,
                      h_gap: float = 90.0, v_gap: float = 36.0,
                      origin: tuple[float, float] = (0.0, 0.0),
                      nodes: Iterable[str] | None = None,
                      alias: Mapping[str, str] | None = None,
                      scale: float | tuple[float, float] = 1.0,
                      wrap: int | None = None) -> dict[str, tuple[float, float]]:
    """Columns are topological generations (sources on the left); within a column nodes keep
    the order of the median of their parents' rows (one barycentre sweep) so wires cross less.
    Columns are centred vertically on each other. ``alias`` maps hidden nodes to the node that
    stands for them (a compact stack's members to its head), so their wires still count.
    ``scale`` is the scene's spread (scene units per document unit, one factor or one per axis):
    sizes and gaps are measured on screen, positions returned in document units. With ``wrap``,
    more than ``wrap`` columns fold into balanced rows of at most ``wrap`` columns."""
    keep = set(graph.nodes) if nodes is None else set(nodes)
    measure = size_of or (lambda _nid: (180.0, 90.0))
    sx, sy = scale if isinstance(scale, tuple) else (scale, scale)
    h_gap, v_gap = h_gap / sx, v_gap / sy

    def size_of(nid: str) -> Size:
        w, h = measure(nid)
        return (w / sx, h / sy)

    g = nx.DiGraph()
    g.add_nodes_from(n for n in graph.nodes if n in keep)
    alias = alias or {}
    for link in graph.links:
        a, b = alias.get(link.src, link.src), alias.get(link.dst, link.dst)
        if a != b and a in keep and b in keep:
            g.add_edge(a, b)
    order = {nid: i for i, nid in enumerate(graph.nodes)}
    generations = [sorted(gen, key=order.__getitem__) for gen in nx.topological_generations(g)]
    # Then pull every node right, to the column just before its first consumer (as late as
    # possible): a loss's target sits next to the loss, and an unrolled RNN's x_t next to its
    # cell instead of all x_t piling up in column 1. Reverse topological order settles
    # consumers first.
    column = {nid: i for i, gen in enumerate(generations) for nid in gen}
    for nid in reversed([n for gen in generations for n in gen]):
        if g.out_degree(nid) > 0:
            column[nid] = max(column[nid], min(column[s] for s in g.successors(nid)) - 1)
    n_cols = max(column.values(), default=-1) + 1
    cols: list[list[str]] = [[] for _ in range(n_cols)]
    for nid in sorted(column, key=order.__getitem__):
        cols[column[nid]].append(nid)
    # A wire skipping columns (a residual connection) gets a lane: an invisible placeholder in
    # every column it crosses (Sugiyama's dummy nodes), so the blocks it skips move aside
    # instead of sitting on top of it.
    parents: dict[str, list[str]] = {nid: [] for nid in column}
    lane: dict[str, Size] = {}
    for a, b in sorted(g.edges, key=lambda e: (order[e[0]], order[e[1]])):
        prev = a
        for c in range(column[a] + 1, column[b]):
            dummy = f"\0lane {len(lane)}"
            lane[dummy] = (0.0, LANE_HEIGHT / sy)
            order[dummy] = len(order)
            cols[c].append(dummy)
            parents[dummy] = [prev]
            prev = dummy
        parents[b].append(prev)

    def size(nid: str) -> Size:
        return lane[nid] if nid in lane else size_of(nid)

    rank: dict[str, float] = {}
    for c, members in enumerate(cols):
        def key(nid: str) -> tuple[float, int]:
            ranks = sorted(rank[p] for p in parents[nid] if p in rank)
            if not ranks:
                return (float(order[nid]) / max(1, len(order)) * len(members), order[nid])
            return (ranks[len(ranks) // 2], order[nid])
        members.sort(key=key)
        for i, nid in enumerate(members):
            rank[nid] = float(i)
    positions: dict[str, tuple[float, float]] = {}
    heights = [sum(size(n)[1] for n in members) + v_gap * max(0, len(members) - 1) for members in cols]
    # A long thin graph (a 24-block stack opened) reads better folded into rows of ``wrap``
    # columns than as one endless row. Only a chain, though: folding a graph whose columns hold
    # several nodes (an RNN unrolled through time: each cell with its x_t) sends its wires
    # across the fold and tangles them.
    real = sorted(sum(1 for n in members if n not in lane) for members in cols)
    chain_like = bool(real) and real[len(real) // 2] <= 1
    if wrap and chain_like and len(cols) > wrap:
        rows = -(-len(cols) // wrap)
        band = -(-len(cols) // rows)  # balanced rows: 10 columns fold 5 + 5, not 6 + 4
    else:
        band = max(1, len(cols))
    top = origin[1]
    for start in range(0, len(cols), band):
        tallest = max(heights[start:start + band], default=0.0)
        x = origin[0]
        for members, height in zip(cols[start:start + band], heights[start:start + band]):
            width = max((size(n)[0] for n in members), default=0.0)
            y = top + (tallest - height) / 2
            for nid in members:
                w, h = size(nid)
                if nid not in lane:
                    positions[nid] = (round(x + (width - w) / 2, 2), round(y, 2))
                y += h + v_gap
            x += width + h_gap
        top += tallest + 3 * v_gap
    return positions


def spread_factor(boxes: list[tuple[float, float, float, float]], *, h_gap: float = 70.0, v_gap: float = 16.0,
                  cap: float = 3.0) -> tuple[float, float]:
    """How much to spread document positions apart, per axis, so that boxes ``(x, y, w, h)``
    (positions in document units, sizes on screen) do not overlap. Files written for smaller
    nodes then open readable, and their positions are kept as they are.

    First Sx: boxes sharing a horizontal band are pulled apart along x (leaving ``h_gap`` for the
    wire's shape label); then Sy: boxes that still share a vertical band are pulled apart along y.
    Each factor is at least 1 and at most ``cap``."""
    order = sorted(boxes)
    widest = max((b[2] for b in boxes), default=0.0) + h_gap
    sx = 1.0
    for i, (x1, y1, w1, h1) in enumerate(order):
        for x2, y2, w2, h2 in order[i + 1:]:
            dx = x2 - x1
            if dx > 0 and widest / dx <= sx:
                break  # sorted by x: no later box can ask for more
            top_h = h1 if y1 <= y2 else h2
            if dx > 0 and abs(y2 - y1) < top_h + v_gap:
                sx = max(sx, min(cap, (w1 + h_gap) / dx))
    sy = 1.0
    for i, (x1, y1, w1, h1) in enumerate(order):
        for x2, y2, w2, h2 in order[i + 1:]:
            if (x2 - x1) * sx >= w1 + h_gap:
                break  # this and every later box are clear along x
            dy = abs(y2 - y1)
            top_h = h1 if y1 <= y2 else h2
            if dy > 0:
                sy = max(sy, min(cap, (top_h + v_gap) / dy))
    return sx, sy
