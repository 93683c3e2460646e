"""Run a compiled graph forward and backward, all at once or one node at a time.

The engine, not the blocks, does the bookkeeping here: topological order, summing gradients at
fan-out, routing shared (tied) weights, and emitting one :class:`TraceEvent` per node execution.
The editor's animation and the CLI read the same events.

A pass runs in evaluation mode unless it is given a training :class:`~engine.blocks.Context`
(the trainer does that); each node receives the pass's context extended by its own id. Buffers
(weights declared ``trainable=False``) get no gradient; the new values a training pass computes
for them are collected by :meth:`Pass.buffer_updates`.

A pass run all at once (:meth:`Pass.run_forward`, :meth:`Pass.run_backward`, and so
:meth:`Runtime.forward` and :meth:`Runtime.forward_backward`, what training and ``run`` use)
without a trace or the NaN/Inf check runs on the program's execution plan (:mod:`engine.plan`):
the same blocks on the same arrays, with the bookkeeping done once per program and composite
blocks inlined. A pass stepped node by node (:meth:`Pass.forward_steps`,
:meth:`Pass.backward_steps`, the editor) runs as written here. Either way a pass's ``values``,
``grads`` and ``weight_grads`` are arrays of its own: they stay valid after the next pass starts.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from engine import memory
from engine.blocks import BUFFER_UPDATES, EVAL, Context
from engine.compile import Program, Step, compile_graph
from engine.errors import NonFiniteError, RuntimeFailure
from engine.graph import Graph
from engine.plan import plan_for

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
    return a.dtype.kind != "f" or bool(np.isfinite(a).all())


_EMPTY: Mapping[str, np.ndarray] = {}
_malloc_lock = threading.Lock()
_malloc_tuned = False


def tune_malloc() -> bool:
    """Keep glibc's malloc from handing every large freed array back to the kernel.

    By default glibc serves blocks above a (self-adjusting) threshold from fresh ``mmap``s and
    trims the heap's top as soon as it is free, so a pass that frees and re-allocates the same
    activations page-faults on every page of them again (~1,000 minor faults per BERT pass,
    measured in benchmarks/bench_transformer.py). This sets what
    ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=67108864``
    would: blocks up to 16 MiB are reused from the heap, which keeps up to 64 MiB of free top.
    Done once per process, by the first :class:`Runtime`; skipped where the user set malloc
    tunables themselves, off glibc, or with ``BACKPROP_STUDIO_MALLOC=system``. Returns whether it
    changed anything."""
    global _malloc_tuned
    with _malloc_lock:
        if _malloc_tuned:
            return False
        _malloc_tuned = True
        if (not sys.platform.startswith("linux") or "malloc" in os.environ.get("GLIBC_TUNABLES", "")
                or os.environ.get("BACKPROP_STUDIO_MALLOC", "").strip().lower() == "system"):
            return False
        try:
            libc = ctypes.CDLL("libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False  # not glibc (musl, ...): nothing to tune
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(mallopt(m_mmap_threshold, 16 << 20)) and bool(mallopt(m_trim_threshold, 64 << 20))


class Pass:
    """One forward pass (and optionally one backward pass) over a program, advanced node by
    node with :meth:`forward_steps` / :meth:`backward_steps`, or all at once."""

    def __init__(self, runtime: "Runtime", feeds: Mapping[str, np.ndarray], *, trace: bool = False, check: bool = False,
                 context: Context | None = None, resolved: bool = False) -> None:
        """``resolved``: ``feeds`` are already keyed by Input node id with the declared shapes and
        the runtime's dtypes (composite blocks feeding their inner graph), so they are not
        checked again."""
        self.runtime = runtime
        self.program = runtime.program
        if not _malloc_tuned:
            tune_malloc()
        self.trace = trace
        self.check = check
        self.context = context or EVAL
        self.feeds = dict(feeds) if resolved else runtime.resolve_feeds(feeds)
        self.values: dict[PortKey, np.ndarray] = {}
        self.saved: dict[str, dict[str, Any]] = {}
        self.grads: dict[PortKey, np.ndarray] = {}
        self.weight_grads: Weights = {}
        self.forward_done = False
        self.backward_done = False
        self._plan_state: Any = None  # what the execution plan's forward pass left for its backward pass

    # --- forward ---------------------------------------------------------------------------

    def _weights_for(self, step: Step) -> Mapping[str, np.ndarray]:
        if not step.shared:
            return self.runtime.weights.get(step.node, _EMPTY)  # read only: blocks copy what they keep
        w = dict(self.runtime.weights.get(step.node, {}))
        for local, (owner, name) in step.shared.items():
            w[local] = self.runtime.weights[owner][name]
        return w

    def forward_steps(self) -> Iterator[TraceEvent]:
        self._plan_state = None
        dtype = self.runtime.dtype
        values = self.values
        trace = self.trace
        all_weights = self.runtime.weights
        for i, step in enumerate(self.program.steps):
            if step.type == "Input":
                inputs = {"value": self.feeds[step.node]}
            else:
                inputs = {port: values[src] for port, src in step.sources.items()}
            weights = self._weights_for(step) if step.shared else all_weights.get(step.node, _EMPTY)
            t0 = time.perf_counter() if trace else 0.0
            try:
                context = self.context.child(step.node) if step.block.uses_context else None
                outs, saved = step.block.forward(inputs, weights, context)
            except (ValueError, IndexError, FloatingPointError, ZeroDivisionError) as exc:
                raise RuntimeFailure(f"{step.label} ({step.type}) failed in the forward pass: {exc}") from exc
            seconds = time.perf_counter() - t0 if trace else 0.0
            for port, value in outs.items():
                if not isinstance(value, np.ndarray):
                    value = np.asarray(value)
                if value.dtype.kind == "f" and value.dtype != dtype:
                    value = value.astype(dtype)
                values[(step.node, port)] = value
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
        if not (self.trace or self.check) and self._plan_forward():
            return self
        for _ in self.forward_steps():
            pass
        return self

    def _plan_forward(self) -> bool:
        """The forward pass on the execution plan; False (nothing kept) when it fails, so that
        the plain pass runs again and reports the failure as it does."""
        try:
            plan_for(self.runtime).forward(self)
        except Exception:  # noqa: BLE001 - the plain pass raises the real error
            self._reset()
            return False
        return True

    def _reset(self) -> None:
        self.values.clear()
        self.saved.clear()
        self.grads.clear()
        self.weight_grads.clear()
        self.forward_done = self.backward_done = False
        self._plan_state = None

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
        if self._plan_state is not None:
            # The plan kept no per-node state for stepping: compute the forward pass again as
            # written here (the same values), keeping the gradients seeded so far.
            seeds = dict(self.grads)
            self.run_forward_steps()
            self.grads.update(seeds)
        index = 0
        trace = self.trace
        grads = self.grads
        for step in reversed(self.program.steps):
            if not trace and not step.sources and not step.weight_shapes and not step.shared:
                continue  # a data leaf (Input, Constant): nothing to send a gradient to
            gout = {}
            for p in step.out_shapes:
                g = grads.get((step.node, p))
                if g is not None:
                    gout[p] = g
            if not gout:
                continue
            weights = self._weights_for(step) if step.shared else self.runtime.weights.get(step.node, _EMPTY)
            t0 = time.perf_counter() if trace else 0.0
            gin, gw = step.block.backward(gout, self.saved[step.node], weights)
            seconds = time.perf_counter() - t0 if trace else 0.0
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
        if self._plan_state is not None and not (self.trace or self.check) and not self.grads:
            try:
                plan_for(self.runtime).backward(self, loss, grads)
                return self
            except Exception:  # noqa: BLE001 - the plain pass raises the real error
                self._reset()
                self.run_forward_steps()
        self.seed(loss, grads)
        for _ in self.backward_steps():
            pass
        return self

    def run_forward_steps(self) -> "Pass":
        """The forward pass node by node, as written here (never on the execution plan)."""
        for _ in self.forward_steps():
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
        self._feed_ids: dict[str, Any] = {}  # feed keys (ids or names) -> node ids, per graph revision
        self._inputs: Any = None  # (program, its Input steps): looked up once, not at every pass
        memory.check(graph, self.dtype)  # before the first allocation: a clear refusal, not a MemoryError
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
        runtime._feed_ids = {}
        runtime._inputs = None
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
        ids = self._feed_ids
        if ids.get("") != self.graph.revision:  # names may change with the graph
            ids.clear()
            ids[""] = self.graph.revision
        for key, value in feeds.items():
            nid = ids.get(key)
            if nid is None:
                nid = ids[key] = self.graph.find(key).id
            by_key[nid] = value
        out: dict[str, np.ndarray] = {}
        inputs = self._inputs
        if inputs is None or inputs[0] is not self.program:
            inputs = self._inputs = (self.program, self.program.input_nodes)
        for step in inputs[1]:
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
              context: Context | None = None, resolved: bool = False) -> Pass:
        return Pass(self, feeds, trace=trace, check=check, context=context, resolved=resolved)

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
