"""Turn a :class:`~engine.graph.Graph` into a :class:`Program`: a topological schedule with every
port's shape known. Compiled once per graph revision and reused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from engine.blocks import Block
from engine.errors import GraphError, ShapeError
from engine.graph import Graph

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Step:
    """One node of the schedule: its block, where each input comes from, and its shapes."""

    node: str
    label: str
    type: str
    block: Block
    sources: Mapping[str, tuple[str, str]]  # input port -> (src node, src port)
    in_shapes: Mapping[str, Shape]
    out_shapes: Mapping[str, Shape]
    weight_shapes: Mapping[str, Shape]  # own weights only
    shared: Mapping[str, tuple[str, str]]  # borrowed weights: local name -> (owner, name)


@dataclass(frozen=True)
class Program:
    revision: int
    steps: tuple[Step, ...]
    index: Mapping[str, int]  # node id -> position in ``steps``
    #: execution plans of this program per dtype (engine.plan), built on first use
    plans: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    def step(self, node_id: str) -> Step:
        return self.steps[self.index[node_id]]

    @property
    def input_nodes(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.type == "Input")


def compile_graph(graph: Graph) -> Program:
    """Schedule ``graph``; raises GraphError/ShapeError naming the first node that cannot run."""
    cached = graph._cache.get("program")
    if cached and cached[0] == graph.revision:
        return cached[1]
    if not graph.nodes:
        raise GraphError("the graph is empty: add an Input and a few blocks first")
    report = graph.infer()
    order = graph.topological_order()
    for nid in order:
        node = graph.nodes[nid]
        if nid in report.errors:
            cls = ShapeError if node.block is not None else GraphError
            raise cls(node.about(report.errors[nid]))
        if nid in report.incomplete:
            missing = [p.name for p in node.input_ports() if not p.optional and graph.link_into(nid, p.name) is None]
            if missing:
                raise GraphError(f"{node.label}: input '{missing[0]}' is not connected")
    steps = []
    for nid in order:
        node = graph.nodes[nid]
        if nid in report.incomplete:
            continue  # downstream of something unconnected: reported above
        assert node.block is not None
        sources = {}
        for port in node.block.input_ports():
            link = graph.link_into(nid, port.name)
            if link is not None:
                sources[port.name] = (link.src, link.src_port)
        in_shapes = graph.input_shapes(nid, report) or {}
        out_shapes = {p.name: report.shapes[(nid, p.name)] for p in node.block.output_ports() if (nid, p.name) in report.shapes}
        steps.append(Step(
            nid, node.label, node.type, node.block, sources, in_shapes, out_shapes,
            graph.weight_shapes(nid, report), node.block.shared_weights(),
        ))
    program = Program(graph.revision, tuple(steps), {s.node: i for i, s in enumerate(steps)})
    graph._cache["program"] = (graph.revision, program)
    return program
