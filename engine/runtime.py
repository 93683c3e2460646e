"""Run a compiled graph forward and backward, all at once or one node at a time.

The engine, not the blocks, does the bookkeeping here: topological order, summing gradients at
fan-out, routing shared (tied) weights, and emitting one :class:`TraceEvent` per node execution.
The editor's animation and the CLI read the same events.

A pass runs in evaluation mode unless it is given a training :class:`~engine.blocks.Context`
(the trainer does that); each node receives the pass's context extended by its own id. Buffers
(weights declared ``trainable=False``) get no gradient; the new values a training pass computes
for them are collected by :meth:`Pass.buffer_updates`.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from engine.blocks import BUFFER_UPDATES, EVAL, Context
from engine.compile import Program, Step, compile_graph
from engine.errors import NonFiniteError, RuntimeFailure
from engine.graph import Graph

PortKey = tuple[str, str]
Weights = dict[str, dict[str, np.ndarray]]


@dataclass(frozen=True)
class TensorStats:
    shape: tuple[int, ...]
    norm: float
    min: float
    max: float
    nan: bool
    inf: bool

    @property
    def finite(self) -> bool:
        return not (self.nan or self.inf)

    @staticmethod
    def of(a: np.ndarray) -> "TensorStats":
        a = np.asarray(a)
        if a.size == 0:
            return TensorStats(a.shape, 0.0, 0.0, 0.0, False, False)
        if not np.issubdtype(a.dtype, np.floating):
            return TensorStats(a.shape, float(np.linalg.norm(a.astype(np.float64))), float(a.min()), float(a.max()), False, False)
        nan = bool(np.isnan(a).any())
        inf = bool(np.isinf(a).any())
        finite = a[np.isfinite(a)] if (nan or inf) else a
        lo = float(finite.min()) if finite.size else math.nan
        hi = float(finite.max()) if finite.size else math.nan
        with np.errstate(over="ignore", invalid="ignore"):
            norm = float(np.sqrt(np.sum(np.square(a, dtype=np.float64))))
        return TensorStats(a.shape, norm, lo, hi, nan, inf)


@dataclass(frozen=True)
class TraceEvent:
    """One node execution. Forward: ``outputs`` are the node's output values. Backward:
    ``outputs`` are the gradients arriving at its outputs, ``inputs`` the gradients it sends
    to its inputs and ``weights`` its weight gradients. ``extras`` carries block-specific
    detail (a recurrent block's per-time-step gradient norms)."""

    node: str
    label: str
    type: str
    phase: str  # "forward" | "backward"
    index: int  # 0-based position of this event within its phase
    outputs: Mapping[str, TensorStats]
    inputs: Mapping[str, TensorStats] = field(default_factory=dict)
    weights: Mapping[str, TensorStats] = field(default_factory=dict)
    seconds: float = 0.0
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def finite(self) -> bool:
        return all(t.finite for group in (self.outputs, self.inputs, self.weights) for t in group.values())

    def to_json(self) -> dict[str, Any]:
        def group(g: Mapping[str, TensorStats]) -> dict[str, Any]:
            return {k: {"shape": list(t.shape), "norm": t.norm, "min": t.min, "max": t.max, "nan": t.nan, "inf": t.inf} for k, t in g.items()}

        return {
            "event": "trace", "node": self.node, "label": self.label, "type": self.type, "phase": self.phase,
            "index": self.index, "outputs": group(self.outputs), "inputs": group(self.inputs),
            "weights": group(self.weights), "seconds": self.seconds,
            "extras": {k: v for k, v in self.extras.items()},
        }


def node_rng(seed: int, node_id: str) -> np.random.Generator:
    """A generator per node, so adding a node does not change the others' initial weights."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(node_id.encode()),)))


def init_weights(program: Program, seed: int = 0, dtype: Any = np.float32) -> Weights:
    weights: Weights = {}
    for step in program.steps:
        if not step.weight_shapes:
            continue
        raw = step.block.init_weights(step.in_shapes, node_rng(seed, step.node))
        weights[step.node] = {k: np.asarray(v, dtype=dtype, order="C") for k, v in raw.items() if k not in step.shared}  # asarray: keeps 0-d weights 0-d
    return weights


def _finite(a: np.ndarray) -> bool:
    return not np.issubdtype(a.dtype, np.floating) or bool(np.isfinite(a).all())


class Pass:
    """One forward pass (and optionally one backward pass) over a program, advanced node by
    node with :meth:`forward_steps` / :meth:`backward_steps`, or all at once."""

    def __init__(self, runtime: "Runtime", feeds: Mapping[str, np.ndarray], *, trace: bool = False, check: bool = False,
                 context: Context | None = None) -> None:
        self.runtime = runtime
        self.program = runtime.program
        self.trace = trace
        self.check = check
        self.context = context or EVAL
        self.feeds = runtime.resolve_feeds(feeds)
        self.values: dict[PortKey, np.ndarray] = {}
        self.saved: dict[str, dict[str, Any]] = {}
        self.grads: dict[PortKey, np.ndarray] = {}
        self.weight_grads: Weights = {}
        self.forward_done = False
        self.backward_done = False

    # --- forward ---------------------------------------------------------------------------

    def _weights_for(self, step: Step) -> dict[str, np.ndarray]:
        w = dict(self.runtime.weights.get(step.node, {}))
        for local, (owner, name) in step.shared.items():
            w[local] = self.runtime.weights[owner][name]
        return w

    def forward_steps(self) -> Iterator[TraceEvent]:
        dtype = self.runtime.dtype
        for i, step in enumerate(self.program.steps):
            if step.type == "Input":
                inputs = {"value": self.feeds[step.node]}
            else:
                inputs = {port: self.values[src] for port, src in step.sources.items()}
            t0 = time.perf_counter()
            try:
                context = self.context.child(step.node) if step.block.uses_context else None
                outs, saved = step.block.forward(inputs, self._weights_for(step), context)
            except (ValueError, IndexError, FloatingPointError, ZeroDivisionError) as exc:
                raise RuntimeFailure(f"{step.label} ({step.type}) failed in the forward pass: {exc}") from exc
            seconds = time.perf_counter() - t0
            for port, value in outs.items():
                value = np.asarray(value)
                if np.issubdtype(value.dtype, np.floating) and value.dtype != dtype:
                    value = value.astype(dtype)
                self.values[(step.node, port)] = value
                if self.check and not _finite(value):
                    raise NonFiniteError(
                        f"the forward pass produced NaN or Inf first at {step.label} ({step.type}) output '{port}'",
                        step.node, "forward",
                    )
            self.saved[step.node] = saved
            if self.trace:
                yield TraceEvent(step.node, step.label, step.type, "forward", i,
                                 {p: TensorStats.of(self.values[(step.node, p)]) for p in outs}, seconds=seconds)
        self.forward_done = True

    def run_forward(self) -> "Pass":
        for _ in self.forward_steps():
            pass
        return self

    # --- backward ----------------------------------------------------------------------------

    def seed(self, loss: PortKey | None = None, grads: Mapping[PortKey, np.ndarray] | None = None) -> None:
        """Seed the backward pass: d loss / d loss = 1 for a scalar loss, or given gradients."""
        if not self.forward_done:
            self.run_forward()
        if loss is not None:
            value = self.values.get(loss)
            if value is None:
                raise RuntimeFailure(f"no output {loss[1]!r} on node {loss[0]!r} to take the loss from")
            if value.shape != ():
                label = self.program.step(loss[0]).label
                raise RuntimeFailure(f"the loss must be a scalar, but {label} output '{loss[1]}' has shape {value.shape}")
            self.grads[loss] = np.ones((), value.dtype)
        for key, g in (grads or {}).items():
            self.grads[key] = np.asarray(g, self.values[key].dtype).reshape(self.values[key].shape)

    def backward_steps(self) -> Iterator[TraceEvent]:
        """Reverse schedule over the nodes that a gradient reaches; call :meth:`seed` first."""
        index = 0
        for step in reversed(self.program.steps):
            gout = {p: self.grads[(step.node, p)] for p in step.out_shapes if (step.node, p) in self.grads}
            if not gout:
                continue
            weights = self._weights_for(step)
            t0 = time.perf_counter()
            gin, gw = step.block.backward(gout, self.saved[step.node], weights)
            seconds = time.perf_counter() - t0
            for port, g in gin.items():
                src = step.sources.get(port)
                if src is None:
                    continue
                self.grads[src] = self.grads[src] + g if src in self.grads else g
            for name, g in gw.items():
                owner, wname = step.shared.get(name, (step.node, name))
                bucket = self.weight_grads.setdefault(owner, {})
                bucket[wname] = bucket[wname] + g if wname in bucket else g
            if self.check:
                for what, group in (("input", gin), ("weight", gw)):
                    for port, g in group.items():
                        if not _finite(g):
                            raise NonFiniteError(
                                f"the backward pass produced NaN or Inf first at {step.label} ({step.type}): "
                                f"gradient of {what} '{port}'", step.node, "backward",
                            )
            if self.trace:
                extras = self.saved[step.node].get("_trace_extras", {})
                yield TraceEvent(
                    step.node, step.label, step.type, "backward", index,
                    {p: TensorStats.of(g) for p, g in gout.items()},
                    {p: TensorStats.of(g) for p, g in gin.items()},
                    {n: TensorStats.of(g) for n, g in gw.items()},
                    seconds, extras,
                )
            index += 1
        self.backward_done = True

    def run_backward(self, loss: PortKey | None = None, grads: Mapping[PortKey, np.ndarray] | None = None) -> "Pass":
        self.seed(loss, grads)
        for _ in self.backward_steps():
            pass
        return self

    def weight_gradients(self) -> Weights:
        """A gradient for every weight of the runtime (zeros where none arrived); buffers have none."""
        out: Weights = {}
        for node, ws in self.runtime.weights.items():
            got = self.weight_grads.get(node, {})
            step = self.program.step(node)
            buffers = step.block.buffer_names(step.in_shapes)
            out[node] = {n: got.get(n, np.zeros_like(w)) for n, w in ws.items() if n not in buffers}
        return out

    def buffer_updates(self) -> Weights:
        """New values of buffers computed by this (training) pass, ``{node: {name: array}}``."""
        return {node: dict(saved[BUFFER_UPDATES]) for node, saved in self.saved.items() if saved.get(BUFFER_UPDATES)}


class Runtime:
    """A compiled graph plus its weights. ``dtype`` is the float type everything runs in."""

    def __init__(self, graph: Graph, *, weights: Weights | None = None, seed: int = 0, dtype: Any = np.float32) -> None:
        self.graph = graph
        self.dtype = np.dtype(dtype)
        self.program = compile_graph(graph)
        self.weights: Weights = init_weights(self.program, seed, self.dtype)
        if weights is not None:
            self.load_weights(weights)

    @classmethod
    def bound(cls, graph: Graph, weights: Weights, *, dtype: Any, program: Program | None = None) -> "Runtime":
        """A runtime that uses ``weights`` as given: no random initialisation, no copies, no
        checks. For callers that already hold every weight at the right shape and dtype and run
        the same compiled program many times (composite blocks, generation)."""
        runtime = cls.__new__(cls)
        runtime.graph = graph
        runtime.dtype = np.dtype(dtype)
        runtime.program = program if program is not None else compile_graph(graph)
        runtime.weights = weights
        return runtime

    def load_weights(self, weights: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Replace weights by name, checking shapes; unknown nodes/names are an error."""
        for node, ws in weights.items():
            if node not in self.weights:
                raise RuntimeFailure(f"weights given for node {node!r}, which has no weights in this graph")
            for name, value in ws.items():
                mine = self.weights[node].get(name)
                if mine is None:
                    raise RuntimeFailure(f"{self.program.step(node).label} has no weight {name!r}")
                value = np.asarray(value)
                if value.shape != mine.shape:
                    raise RuntimeFailure(
                        f"{self.program.step(node).label} weight {name!r} should have shape {mine.shape}, got {value.shape}"
                    )
                self.weights[node][name] = np.asarray(value, dtype=self.dtype, order="C")

    def resolve_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Map feeds keyed by Input node id or name onto node ids, checking shape and kind."""
        by_key: dict[str, np.ndarray] = {}
        for key, value in feeds.items():
            by_key[self.graph.find(key).id] = value
        out: dict[str, np.ndarray] = {}
        for step in self.program.input_nodes:
            if step.node not in by_key:
                raise RuntimeFailure(f"no data for Input {step.label} (shape {step.out_shapes['out']})")
            value = np.asarray(by_key[step.node])
            want = step.out_shapes["out"]
            if value.shape != want:
                raise RuntimeFailure(f"data for Input {step.label} has shape {value.shape}, but the node declares {want}")
            if step.block.output_kind("out").value == "ids":
                if not (np.issubdtype(value.dtype, np.integer) or (value.size and np.all(value == np.round(value)))):
                    raise RuntimeFailure(f"Input {step.label} takes token ids (integers)")
                value = value.astype(np.int64)
            else:
                value = np.asarray(value, dtype=self.dtype, order="C")
            out[step.node] = value
        return out

    def start(self, feeds: Mapping[str, np.ndarray], *, trace: bool = False, check: bool = False,
              context: Context | None = None) -> Pass:
        return Pass(self, feeds, trace=trace, check=check, context=context)

    def forward(self, feeds: Mapping[str, np.ndarray], *, check: bool = False, context: Context | None = None) -> Pass:
        return self.start(feeds, check=check, context=context).run_forward()

    def loss_port(self, loss: str | PortKey) -> PortKey:
        """A loss given as a node id/name (its first output) or as (node, port)."""
        if isinstance(loss, tuple):
            return (self.graph.find(loss[0]).id, loss[1])
        node = self.graph.find(loss)
        return (node.id, node.output_ports()[0].name)

    def forward_backward(self, feeds: Mapping[str, np.ndarray], loss: str | PortKey, *, check: bool = False,
                         context: Context | None = None) -> Pass:
        p = self.start(feeds, check=check, context=context)
        p.run_forward()
        p.run_backward(self.loss_port(loss))
        return p

    def steps(self, feeds: Mapping[str, np.ndarray], loss: str | PortKey | None, *,
              context: Context | None = None) -> Iterator[TraceEvent]:
        """Every forward event in topological order, then every backward event in reverse."""
        p = self.start(feeds, trace=True, context=context)
        yield from p.forward_steps()
        if loss is not None:
            p.seed(self.loss_port(loss))
            yield from p.backward_steps()
