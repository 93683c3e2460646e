"""The machinery behind composite blocks: a block that *is* a graph of other blocks.

A subclass of :class:`CompositeBlock` implements one method, ``build(in_shapes) -> Graph``,
returning its inner graph for the given input shapes:

- one ``Input`` node per composite input port, whose node id and name are the port's name;
- one :class:`Output` marker per composite output port, likewise named after the port;
- the blocks in between, with short stable names (``attn``, ``norm1``, ``block3``), which are
  also their node ids.

Everything else follows from the inner graph: output shapes come from its shape inference;
weights are the inner nodes' weights named ``inner_node/weight`` (nested composites give
``block3/attn/Wq``); ``forward`` and ``backward`` run the inner graph with the engine's own
runtime, so a composite's gradients are exactly those of its parts (GUIDE.md: composites are
graphs of primitives first). :class:`GraphBuilder` lays inner graphs out left to right so the
editor can show them as they are.

The compiled inner program is memoised per input shapes (a cache, not state: two calls with the
same inputs give the same result); everything ``backward`` needs travels in ``saved``.

A composite passes its :class:`~engine.blocks.Context` on to its inner pass, so an inner
Dropout sees the training mode and draws a mask of its own (its path ends with the inner node's
id); the new buffer values of inner BatchNorms come back as the composite's own, with flat
``inner_node/buffer`` names.
"""

from __future__ import annotations

import copy
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import BUFFER_UPDATES, Arrays, Block, Category, Context, Example, Kind, Port, Shape, shape_str
from engine.errors import GraphError, ShapeError

if TYPE_CHECKING:
    from engine.compile import Program
    from engine.graph import Graph

# NOTE: engine.graph, engine.compile and engine.runtime import engine.blocks, which imports
# this module while it loads its families; so they are imported inside the functions below.

Source = str | tuple[str, str]  # a node (its first output) or (node, output port)

_MEMO_SIZE = 32  # inner programs kept per block instance (one per distinct input shapes)


@register
class Output(Block):
    """Marks a result of a graph and names it: the value passes through unchanged.

    Inside a composite block's inner graph there is one Output per output port of the
    composite, named after that port (``out``, ``logits``). In a top-level graph it simply
    labels a value. Example: x (2, 3) → out (2, 3)."""

    type_id = "Output"
    category = Category.DATA
    formula = "out = x;  ∂/∂x = g"
    inputs = (Port("x", Kind.ANY, doc="the value to name"),)
    outputs = (Port("out", Kind.ANY, doc="the same value"),)
    examples = (Example({}, {"x": (2, 3)}),)

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"out": self.require(in_shapes, "x")}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        return {"out": inputs["x"]}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        return {"x": gout["out"]}, {}


class GraphBuilder:
    """Builds an inner graph node by node, wiring with validation and laying nodes out in
    columns: a node goes one column to the right of its right-most source."""

    COLUMN = 220.0
    ROW = 130.0

    def __init__(self) -> None:
        from engine.graph import Graph

        self.graph = Graph()
        self._column: dict[str, int] = {}
        self._rows: dict[int, int] = {}

    def _place(self, column: int) -> tuple[float, float]:
        row = self._rows.get(column, 0)
        self._rows[column] = row + 1
        return (column * self.COLUMN, row * self.ROW)

    def input(self, name: str, shape: Shape, ids: bool = False) -> str:
        """An Input node fed from the composite's input port ``name``."""
        self.graph.add_node("Input", {"shape": tuple(shape), "dtype": "ids" if ids else "float"},
                            node_id=name, name=name, position=self._place(0))
        self._column[name] = 0
        return name

    def add(self, name: str, type_id: str, params: Mapping[str, Any] | None = None, **links: Source) -> str:
        """Add node ``name`` and link its inputs: ``x="embed"`` (the source's first output)
        or ``h0=("enc1", "last")``. Returns ``name``."""
        sources = {port: (src, "") if isinstance(src, str) else src for port, src in links.items()}
        column = 1 + max((self._column[src] for src, _ in sources.values()), default=0)
        node = self.graph.add_node(type_id, dict(params or {}), node_id=name, name=name, position=self._place(column))
        self._column[name] = column
        for port, (src, src_port) in sources.items():
            if not src_port:
                src_port = self.graph.node(src).output_ports()[0].name
            self.graph.connect(src, src_port, node.id, port)
        return name

    def output(self, name: str, src: Source) -> str:
        """The Output marker for the composite's output port ``name``."""
        return self.add(name, "Output", x=src)


@dataclass(frozen=True)
class _Inner:
    """An inner graph compiled for one set of input shapes."""

    graph: "Graph"
    program: "Program"
    inputs: tuple[str, ...]  # composite input ports (= Input node ids)
    outputs: tuple[str, ...]  # composite output ports (= Output node ids)
    out_shapes: Mapping[str, Shape]
    weights: tuple[tuple[str, str, str, Shape], ...]  # (flat name, node id, local name, shape)
    buffers: frozenset[str]  # flat names of the weights that are buffers


class CompositeBlock(Block):
    """A block defined by an inner graph; subclasses implement :meth:`build`."""

    category = Category.COMPOSITE
    composite = True
    uses_context = True  # an inner Dropout or BatchNorm needs the mode

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._memo: OrderedDict[tuple, _Inner] = OrderedDict()
        # The editor infers shapes on the GUI thread while training runs on a worker.
        self._memo_lock = threading.Lock()

    # --- what subclasses provide ---------------------------------------------------------------

    def build(self, in_shapes: Mapping[str, Shape]) -> "Graph":
        """The inner graph for these input shapes (see the module docstring)."""
        raise NotImplementedError

    def check_shapes(self, in_shapes: Mapping[str, Shape]) -> None:
        """Checks with a clearer message than an inner node's (rank, width = ``dim``)."""

    def default_in_shapes(self) -> dict[str, Shape]:
        """Input shapes for :meth:`expand`: the first example's, unless a subclass knows better."""
        return {k: tuple(v) for k, v in self.examples[0].inputs.items()}

    # --- the inner graph -------------------------------------------------------------------------

    def expand(self) -> "Graph":
        return self.build(self.default_in_shapes())

    def inner(self, in_shapes: Mapping[str, Shape]) -> _Inner:
        """The inner graph compiled for ``in_shapes`` (memoised)."""
        key = tuple(sorted((k, tuple(int(s) for s in v)) for k, v in in_shapes.items()))
        with self._memo_lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                return hit
        for port in self.input_ports():
            if not port.optional:
                self.require(in_shapes, port.name)
        self.check_shapes(in_shapes)
        from engine.compile import compile_graph

        try:
            graph = self.build(dict(key))
            program = compile_graph(graph)
        except ShapeError as exc:
            raise self.shape_error(f"inside, {exc}") from None
        except GraphError as exc:
            raise ShapeError(f"{self.type_id}: inside, {exc}") from None
        out_shapes = {p.name: program.step(p.name).out_shapes["out"] for p in self.output_ports()}
        weights = tuple(
            (f"{graph.nodes[step.node].name}/{name}", step.node, name, tuple(shape))
            for step in program.steps for name, shape in step.weight_shapes.items()
        )
        buffers = frozenset(
            f"{graph.nodes[step.node].name}/{name}"
            for step in program.steps for name in step.block.buffer_names(step.in_shapes) if name in step.weight_shapes
        )
        inputs = tuple(p.name for p in self.input_ports() if p.name in in_shapes)
        result = _Inner(graph, program, inputs, tuple(out_shapes), out_shapes, weights, buffers)
        with self._memo_lock:
            self._memo[key] = result
            if len(self._memo) > _MEMO_SIZE:
                self._memo.popitem(last=False)
        return result

    def split_weights(self, inner: _Inner, weights: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Flat ``node/weight`` names → the runtime's ``{node: {weight: array}}``."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for flat, node, name, _ in inner.weights:
            if flat not in weights:
                raise ShapeError(f"{self.type_id}: weight '{flat}' is missing")
            out.setdefault(node, {})[name] = weights[flat]
        return out

    # --- the protocol ------------------------------------------------------------------------------

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return dict(self.inner(in_shapes).out_shapes)

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {flat: shape for flat, _, _, shape in self.inner(in_shapes).weights}

    def buffer_names(self, in_shapes: Mapping[str, Shape]) -> frozenset[str]:
        return self.inner(in_shapes).buffers

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        inner = self.inner(in_shapes)
        seed = int(rng.integers(0, 2**63 - 1))
        out: Arrays = {}
        for step in inner.program.steps:
            if not step.weight_shapes:
                continue
            # One generator per inner node, keyed by its name: changing one part of a composite
            # does not reshuffle the others' initial weights.
            node_rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(step.node.encode()),)))
            raw = step.block.init_weights(step.in_shapes, node_rng)
            name = inner.graph.nodes[step.node].name
            out.update({f"{name}/{k}": v for k, v in raw.items() if k not in step.shared})
        return out

    def compute(self, inputs: Arrays, weights: Arrays, context: Context) -> tuple[Arrays, dict[str, Any]]:  # type: ignore[override]
        from engine.runtime import Runtime

        inner = self.inner({k: np.shape(v) for k, v in inputs.items()})
        floats = [v.dtype for v in inputs.values() if np.issubdtype(np.asarray(v).dtype, np.floating)]
        floats += [np.asarray(w).dtype for w in weights.values()]
        dtype = floats[0] if floats else np.dtype(np.float64)
        runtime = Runtime.bound(inner.graph, self.split_weights(inner, weights), dtype=dtype, program=inner.program)
        run = runtime.start({port: inputs[port] for port in inner.inputs}, context=context).run_forward()
        outs = {port: run.values[(port, "out")] for port in inner.outputs}
        saved: dict[str, Any] = {"run": run, "inner": inner}
        updates = {f"{inner.graph.nodes[node].name}/{name}": value
                   for node, ups in run.buffer_updates().items() for name, value in ups.items()}
        if updates:
            saved[BUFFER_UPDATES] = updates
        return outs, saved

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        from engine.runtime import Runtime

        inner: _Inner = saved["inner"]
        # A fresh backward over the saved forward values: backward may be called more than once.
        run = copy.copy(saved["run"])
        run.runtime = Runtime.bound(inner.graph, self.split_weights(inner, weights), dtype=run.runtime.dtype, program=inner.program)
        run.grads, run.weight_grads, run.backward_done = {}, {}, False
        run.run_backward(grads={(port, "out"): g for port, g in gout.items()})
        kinds = {p.name: p.kind for p in self.input_ports()}
        gin = {port: run.grads[(port, "out")] for port in inner.inputs
               if kinds[port] is not Kind.IDS and (port, "out") in run.grads}
        gw = {flat: run.weight_grads[node][name] for flat, node, name, _ in inner.weights
              if name in run.weight_grads.get(node, {})}
        return gin, gw

    # --- helpers for subclasses ----------------------------------------------------------------------

    def check_width(self, in_shapes: Mapping[str, Shape], port: str, param: str = "dim") -> None:
        """The last dimension of ``port`` must equal the ``param`` parameter."""
        shape = in_shapes[port]
        if shape[-1] != self.p[param]:
            raise self.shape_error(
                f"input '{port}' has width {shape[-1]} (shape {shape_str(shape)}), but parameter "
                f"'{param}' is {self.p[param]}; make them equal"
            )
