"""Record a pass event by event, with copies of every value and gradient it touched, for the
editor's step-through view (and anything else that wants to look back at a pass).

:func:`record` drives the public :class:`~engine.runtime.Pass` API (``forward_steps``, ``seed``,
``backward_steps``) and yields one :class:`Frame` per node execution, in the order the engine
runs them: every node forward in topological order, then every node that a gradient reaches
backward in reverse. A frame holds the engine's own :class:`~engine.runtime.TraceEvent` and
*copies* of the arrays (the runtime may reuse its buffers once a step is done).

Inside blocks: a block that has an inner graph (a composite such as BERT or a TransformerBlock,
or a SequenceRNN unrolled through time) also gets frames for its inner nodes, with ``path``
saying where they live: ``("bert",)`` is the top-level node, ``("bert", "block3", "attn")`` the
attention inside BERT's third block. They come from running the block's inner graph on the very
inputs, weights and output gradients the block had in this pass (a composite computes exactly
this inner graph, so the numbers are the block's own); the inner frames of a node come just
before the node's own frame, in both phases.

Scalar nodes (every float input and its one output a single number) also carry each input's
local derivative ``∂out/∂input``, the number the lecture writes on each edge.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from engine.blocks import Block
from engine.blocks._composite import CompositeBlock
from engine.compile import Step
from engine.errors import EngineError
from engine.runtime import Pass, PortKey, Runtime, TraceEvent

#: Arrays larger than this are not copied into frames (their TraceEvent statistics still are).
MAX_ELEMENTS = 4_000_000
#: Nor are any once a pass's copies reach this many bytes (a big model's pass stays in memory).
MAX_BYTES = 512 * 2**20

Path = tuple[str, ...]


@dataclass(frozen=True)
class Frame:
    """One node execution of a recorded pass.

    Forward: ``outputs`` are the node's output values and ``weights`` its weights. Backward:
    ``outputs`` are the gradients arriving at its outputs, ``inputs`` the gradients it sends to
    each input port (one contribution per wire), ``weights`` its weight gradients (its own part
    of a weight shared with other nodes, like the event's statistics). An array is
    None when it was too large to keep (:data:`MAX_ELEMENTS`); ``event`` always has its
    statistics."""

    path: Path
    event: TraceEvent
    outputs: Mapping[str, np.ndarray | None]
    inputs: Mapping[str, np.ndarray | None] = field(default_factory=dict)
    weights: Mapping[str, np.ndarray | None] = field(default_factory=dict)
    local: Mapping[str, float] = field(default_factory=dict)  # forward, scalar nodes: ∂out/∂input

    @property
    def node(self) -> str:
        return self.path[-1]

    @property
    def phase(self) -> str:
        return self.event.phase

    @property
    def depth(self) -> int:
        """0 for a node of the top graph, 1 for a node inside one, ..."""
        return len(self.path) - 1




def has_inside(block: Block | None) -> bool:
    """Whether the block has an inner graph to look into (a composite, an unrolled RNN)."""
    return block is not None and (isinstance(block, CompositeBlock) or callable(getattr(block, "build", None)))


def _weights_of(runtime: Runtime, step: Step) -> dict[str, np.ndarray]:
    w = dict(runtime.weights.get(step.node, {}))
    for local, (owner, name) in step.shared.items():
        w[local] = runtime.weights[owner][name]
    return w


def _local_derivatives(step: Step, inputs: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray]) -> dict[str, float]:
    """∂out/∂input for each float input of a node whose inputs and one output are single numbers."""
    floats = {k: v for k, v in inputs.items() if np.issubdtype(v.dtype, np.floating)}
    if not floats or len(step.out_shapes) != 1 or any(v.size != 1 for v in floats.values()):
        return {}
    (port, shape), = step.out_shapes.items()
    if int(np.prod(shape, dtype=np.int64)) != 1:
        return {}
    try:
        with np.errstate(all="ignore"):
            outs, saved = step.block.forward(inputs, weights)
            gin, _ = step.block.backward({port: np.ones_like(np.asarray(outs[port]))}, saved, weights)
    except (ValueError, ArithmeticError, EngineError):
        return {}
    return {k: float(np.asarray(g).reshape(-1)[0]) for k, g in gin.items() if k in floats and np.size(g) == 1}


@dataclass
class _Inside:
    """A block's inner graph run on the block's own inputs, kept for its backward."""

    path: Path
    run: Pass
    children: dict[str, "_Inside"]
    out_shapes: Mapping[str, tuple[int, ...]]


_BUILT: OrderedDict[tuple, Any] = OrderedDict()
_BUILT_LOCK = threading.Lock()
_BUILT_SIZE = 16


def _built(block: Block, in_shapes: Mapping[str, tuple[int, ...]]) -> Any:
    """``block.build(in_shapes)`` with every step of an unrolled network, memoised: validating
    the links of a 40-step unrolled LSTM takes a second, and every pass of a lesson needs the
    same graph. (A cache of immutable results, like a composite's own memo.)"""
    build = block.build  # type: ignore[attr-defined]
    length = max((s[1] for s in in_shapes.values() if len(s) >= 2), default=0)
    # An unrolled network draws only its first steps; to replay the whole pass, build them all.
    kwargs = {"max_steps": length} if "max_steps" in inspect.signature(build).parameters and length else {}
    key = (block.type_id, repr(sorted(block.p.items())), tuple(sorted(in_shapes.items())), length)
    with _BUILT_LOCK:
        if key in _BUILT:
            _BUILT.move_to_end(key)
            return _BUILT[key]
    graph = build(dict(in_shapes), **kwargs)
    with _BUILT_LOCK:
        _BUILT[key] = graph
        if len(_BUILT) > _BUILT_SIZE:
            _BUILT.popitem(last=False)
    return graph


def _inner_runtime(step: Step, weights: Mapping[str, np.ndarray], in_shapes: Mapping[str, tuple[int, ...]], dtype: Any) -> Runtime:
    block = step.block
    if isinstance(block, CompositeBlock):
        # Exactly the graph, program and weights the composite runs itself.
        inner = block.inner(in_shapes)
        return Runtime.bound(inner.graph, block.split_weights(inner, weights), dtype=dtype, program=inner.program)
    graph = _built(block, in_shapes)
    runtime = Runtime(graph, dtype=dtype)
    mapped: dict[str, dict[str, np.ndarray]] = {}
    for node_id, own in runtime.weights.items():
        name = graph.nodes[node_id].name
        for wname in own:
            value = weights.get(f"{name}/{wname}", weights.get(wname))
            if value is not None and np.shape(value) == own[wname].shape:
                mapped.setdefault(node_id, {})[wname] = value
    runtime.load_weights(mapped)
    return runtime


def _slice_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The leading part of ``g`` that fits ``shape`` (an inner graph that draws one direction
    of a bidirectional network has half the width)."""
    if g.shape == tuple(shape):
        return g
    return np.ascontiguousarray(g[tuple(slice(0, s) for s in shape)])


class Recorder:
    """Runs one pass and yields its :class:`Frame` objects; see the module docstring.

    ``inside`` also records the inner nodes of composites and unrolled networks; arrays are
    copied up to ``max_elements`` each and ``max_bytes`` in all (then statistics only);
    ``should_stop`` is asked between node executions, and the recording ends early when it
    says yes (:attr:`stopped` tells)."""

    def __init__(self, runtime: Runtime, feeds: Mapping[str, np.ndarray], loss: PortKey | None, *,
                 inside: bool = True, should_stop: Callable[[], bool] | None = None,
                 max_elements: int = MAX_ELEMENTS, max_bytes: int = MAX_BYTES, local: bool = True) -> None:
        self.runtime = runtime
        self.feeds = feeds
        self.loss = loss
        self.inside = inside
        self.should_stop = should_stop or (lambda: False)
        self.max_elements = max_elements
        self.max_bytes = max_bytes
        self.kept_bytes = 0
        self.local = local
        self.stopped = False
        self.loss_value: float | None = None

    def _copy(self, a: Any, *, fresh: bool = False) -> np.ndarray | None:
        """A copy of ``a`` to keep (``a`` itself when it is a ``fresh`` copy already), or None
        when it is too large or the pass's budget is spent."""
        a = np.asarray(a)
        if a.size > self.max_elements or self.kept_bytes + a.nbytes > self.max_bytes:
            return None
        self.kept_bytes += a.nbytes
        return a if fresh else np.array(a, copy=True)

    def _stop(self) -> bool:
        if self.should_stop():
            self.stopped = True
        return self.stopped

    def frames(self) -> Iterator[Frame]:
        """Every frame of the pass: forward, then (with a loss) backward."""
        p = self.runtime.start(self.feeds, trace=True)
        insides: dict[str, _Inside] = {}
        with np.errstate(all="ignore"):
            yield from self._forward(p, (), insides)
            if self.stopped or self.loss is None:
                return
            self.loss_value = float(p.values[self.loss])
            p.seed(self.loss)
            yield from self._backward(p, (), insides)

    # --- one level ---------------------------------------------------------------------------

    def _forward(self, p: Pass, prefix: Path, insides: dict[str, _Inside]) -> Iterator[Frame]:
        runtime = p.runtime
        for ev in p.forward_steps():
            step = runtime.program.step(ev.node)
            path = (*prefix, ev.node)
            weights = _weights_of(runtime, step)
            inputs = {port: p.values[src] for port, src in step.sources.items()}
            if self.inside and has_inside(step.block):
                inside = self._open(step, path, inputs, weights, runtime.dtype, getattr(p, "context", None))
                if inside is not None:
                    insides[ev.node] = inside
                    yield from self._forward(inside.run, path, inside.children)
                    if self.stopped:
                        return
            local = _local_derivatives(step, inputs, weights) if self.local else {}
            yield Frame(path, ev,
                        {k: self._copy(p.values[(ev.node, k)]) for k in ev.outputs},
                        {}, {k: self._copy(v) for k, v in weights.items()}, local)
            if self._stop():
                return

    def _backward(self, p: Pass, prefix: Path, insides: dict[str, _Inside]) -> Iterator[Frame]:
        for ev in self._backward_events(p):
            path = (*prefix, ev.step.node)
            step, gout, gin, gw = ev.step, ev.gout, ev.gin, ev.gw
            inside = insides.get(step.node)
            if inside is not None:
                seeds = {}
                for port, g in gout.items():
                    if port in inside.out_shapes and (port, "out") in inside.run.values:
                        seeds[(port, "out")] = _slice_to(np.asarray(g), inside.run.values[(port, "out")].shape)
                if seeds:
                    inside.run.seed(grads=seeds)
                    yield from self._backward(inside.run, path, inside.children)
                    if self.stopped:
                        return
            yield Frame(path, ev.event,
                        {k: self._copy(v, fresh=True) for k, v in gout.items()},
                        {k: self._copy(v, fresh=True) for k, v in gin.items()},
                        {k: self._copy(v, fresh=True) for k, v in gw.items()})
            if self._stop():
                return

    def _backward_events(self, p: Pass) -> Iterator["_Backward"]:
        """Backward events with the arrays behind them: the gradients arriving at a node's
        outputs are read before it runs, and the ones it sends are the difference it makes to
        each source's running sum (so a fan-out shows each wire's own contribution)."""
        program = p.runtime.program
        before: dict[PortKey, np.ndarray] = {}
        pending = list(reversed(program.steps))
        events = p.backward_steps()
        while True:
            # Which node runs next: the next one in reverse order that has a gradient.
            while pending and not any((pending[0].node, port) in p.grads for port in pending[0].out_shapes):
                pending.pop(0)
            if not pending:
                return
            step = pending.pop(0)
            gout = {port: np.array(p.grads[(step.node, port)], copy=True)
                    for port in step.out_shapes if (step.node, port) in p.grads}
            before = {src: np.array(p.grads[src], copy=True) for src in step.sources.values() if src in p.grads}
            w_before = {name: np.array(g, copy=True) for name, g in self._weight_grads(p, step).items()}
            try:
                ev = next(events)
            except StopIteration:
                return
            if ev.node != step.node:
                # The runtime chose another node than the reverse schedule predicts: take what is
                # left to read rather than show wrong arrays.
                step = program.step(ev.node)
                gout = {port: np.array(p.grads[(step.node, port)], copy=True)
                        for port in step.out_shapes if (step.node, port) in p.grads}
                before, w_before = {}, {}
                pending = [s for s in pending if s.node != ev.node]
            gin = {}
            for port, src in step.sources.items():
                if port not in ev.inputs or src not in p.grads:
                    continue
                now = p.grads[src]
                gin[port] = now - before[src] if src in before else np.array(now, copy=True)
            # A weight shared by several nodes (tied cells) collects every node's contribution in
            # one sum: each frame keeps its own node's part.
            gw = {name: (g - w_before[name] if name in w_before else np.array(g, copy=True))
                  for name, g in self._weight_grads(p, step).items() if name in ev.weights}
            yield _Backward(step, gout, gin, gw, ev)

    @staticmethod
    def _weight_grads(p: Pass, step: Step) -> dict[str, np.ndarray]:
        own = p.weight_grads.get(step.node, {})
        out = {k: v for k, v in own.items() if k not in step.shared}
        for local, (owner, name) in step.shared.items():
            if name in p.weight_grads.get(owner, {}):
                out[local] = p.weight_grads[owner][name]
        return out

    def _open(self, step: Step, path: Path, inputs: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
              dtype: Any, context: Any) -> _Inside | None:
        in_shapes = {k: tuple(np.shape(v)) for k, v in inputs.items()}
        try:
            runtime = _inner_runtime(step, weights, in_shapes, dtype)
            feeds = {s.node: np.array(inputs[s.node], copy=True) for s in runtime.program.input_nodes if s.node in inputs}
            # the context the block itself handed its inner pass (evaluation mode, this node's path)
            inner_context = context.child(step.node) if context is not None and step.block.uses_context else None
            run = runtime.start(feeds, trace=True, context=inner_context)
        except (EngineError, KeyError, ValueError, TypeError):
            return None  # nothing to show inside; the node's own frame still tells its story
        return _Inside(path, run, {}, dict(step.out_shapes))


@dataclass(frozen=True)
class _Backward:
    """One backward event with the arrays behind it."""

    step: Step
    gout: dict[str, np.ndarray]
    gin: dict[str, np.ndarray]
    gw: dict[str, np.ndarray]
    event: TraceEvent


def compiled_kernels() -> int:
    """How many fast kernels this process has compiled rather than loaded from the cache (a
    first run on a new machine compiles them once): lets the editor say so while it happens."""
    from engine.kernels import Kernel

    total = 0
    for k in Kernel.registry:
        stats = getattr(getattr(k.fast, "stats", None), "cache_misses", None)
        if stats:
            total += sum(stats.values())
    return total


def record(runtime: Runtime, feeds: Mapping[str, np.ndarray], loss: PortKey | None, **options: Any) -> list[Frame]:
    """Every frame of one pass, as a list (see :class:`Recorder` for the options)."""
    return list(Recorder(runtime, feeds, loss, **options).frames())
