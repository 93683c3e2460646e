"""The schedule is networkx's: ``Graph.topological_order`` (a few lines of stdlib, so that quick
commands need not import networkx) equals ``networkx.lexicographical_topological_sort`` keyed by
insertion order, on every lesson, inside every composite and on random DAGs."""

from __future__ import annotations

import random

import networkx as nx
import pytest

import presets
from engine import blocks  # noqa: F401 - registers the blocks
from engine.graph import Graph
from engine.serialize import load


def _networkx_order(g: Graph) -> tuple[str, ...]:
    position = {nid: i for i, nid in enumerate(g.nodes)}
    return tuple(nx.lexicographical_topological_sort(g.to_networkx(), key=position.__getitem__))


def _graphs(g: Graph):
    yield g
    for node in g.nodes.values():
        inner = node.block.expand() if node.block is not None else None
        if inner is not None:
            yield from _graphs(inner)


@pytest.mark.parametrize("name", presets.names())
def test_lessons_are_scheduled_as_networkx_would(name):
    for g in _graphs(load(presets.path(name)).graph):
        assert g.topological_order() == _networkx_order(g)


@pytest.mark.parametrize("seed", range(20))
def test_random_dags_are_scheduled_as_networkx_would(seed):
    rng = random.Random(seed)
    g = Graph()
    ids = [g.add_node("Input", {"shape": (2,)}, name="x0").id]
    for i in range(1, 25):
        a, b = rng.choice(ids), rng.choice(ids)
        ids.append(g.add_node("Add", {}, name=f"n{i}").id)
        g.connect(a, "out", ids[-1], "a")
        g.connect(b, "out", ids[-1], "b")
    order = list(g.nodes)
    rng.shuffle(order)  # insertion order is not the dependency order
    shuffled = Graph()
    for nid in order:
        n = g.nodes[nid]
        shuffled.add_node(n.type, dict(n.params), name=n.name, node_id=nid)
    for link in g.links:
        shuffled.connect(link.src, link.src_port, link.dst, link.dst_port)
    assert shuffled.topological_order() == _networkx_order(shuffled)
    assert g.topological_order() == _networkx_order(g)
