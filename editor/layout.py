"""Auto-layout: layered, left to right, from networkx's topological generations.

Pure computation (no Qt): returns a position per node; :class:`editor.commands.MoveNodesCommand`
applies it as one undoable step.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import networkx as nx

from engine.graph import Graph

Size = tuple[float, float]


def layered_positions(graph: Graph, size_of: Callable[[str], Size] | None = None, *,
                      h_gap: float = 90.0, v_gap: float = 36.0,
                      origin: tuple[float, float] = (0.0, 0.0),
                      nodes: Iterable[str] | None = None,
                      alias: Mapping[str, str] | None = None) -> dict[str, tuple[float, float]]:
    """Columns are topological generations (sources on the left); within a column nodes keep
    the order of the median of their parents' rows (one barycentre sweep) so wires cross less.
    Columns are centred vertically on each other. ``alias`` maps hidden nodes to the node that
    stands for them (a compact stack's members to its head), so their wires still count."""
    keep = set(graph.nodes) if nodes is None else set(nodes)
    size_of = size_of or (lambda _nid: (180.0, 90.0))
    g = nx.DiGraph()
    g.add_nodes_from(n for n in graph.nodes if n in keep)
    alias = alias or {}
    for link in graph.links:
        a, b = alias.get(link.src, link.src), alias.get(link.dst, link.dst)
        if a != b and a in keep and b in keep:
            g.add_edge(a, b)
    order = {nid: i for i, nid in enumerate(graph.nodes)}
    generations = [sorted(gen, key=order.__getitem__) for gen in nx.topological_generations(g)]
    # Pull each node as far right as its consumers allow would look nicer for inputs feeding late
    # nodes (targets of a loss): place every source in the column just before its first consumer.
    column = {nid: i for i, gen in enumerate(generations) for nid in gen}
    for nid in g.nodes:
        if g.in_degree(nid) == 0 and g.out_degree(nid) > 0:
            column[nid] = max(column[nid], min(column[s] for s in g.successors(nid)) - 1)
    n_cols = max(column.values(), default=-1) + 1
    cols: list[list[str]] = [[] for _ in range(n_cols)]
    for nid in sorted(column, key=order.__getitem__):
        cols[column[nid]].append(nid)
    rank: dict[str, float] = {}
    for c, members in enumerate(cols):
        def key(nid: str) -> tuple[float, int]:
            parents = [rank[p] for p in g.predecessors(nid) if p in rank]
            if not parents:
                return (float(order[nid]) / max(1, len(order)) * len(members), order[nid])
            parents.sort()
            return (parents[len(parents) // 2], order[nid])
        members.sort(key=key)
        for i, nid in enumerate(members):
            rank[nid] = float(i)
    positions: dict[str, tuple[float, float]] = {}
    x = origin[0]
    heights = []
    for members in cols:
        heights.append(sum(size_of(n)[1] for n in members) + v_gap * max(0, len(members) - 1))
    tallest = max(heights, default=0.0)
    for members, height in zip(cols, heights):
        width = max((size_of(n)[0] for n in members), default=0.0)
        y = origin[1] + (tallest - height) / 2
        for nid in members:
            w, h = size_of(nid)
            positions[nid] = (x + (width - w) / 2, y)
            y += h + v_gap
        x += width + h_gap
    return positions
