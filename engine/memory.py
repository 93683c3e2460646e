"""How much memory a graph needs, worked out from its inferred shapes before anything is allocated.

:func:`estimate` adds up, per node, the bytes of its own weights and of every value it outputs
(inside a composite block: every inner node's outputs too, since a backward pass keeps them all).
One forward and backward pass holds each of those once more as a gradient, so
:attr:`MemoryEstimate.needed` is twice the sum: the number ``info`` prints and the editor's status
bar shows. It leaves out what a block keeps privately for its backward pass and what an optimiser
keeps (Adam: two more copies of the weights), so read it as "about", not "at most".

:func:`check` refuses a graph whose estimate is over the limit, with a
:class:`~engine.errors.MemoryLimitError` naming the node that needs the most and the numbers.
:class:`~engine.runtime.Runtime` calls it before allocating any weight, so an absurd size
(``vocab`` 10⁹) gets a message instead of a MemoryError or a machine that swaps.

The limit is ``BACKPROP_STUDIO_MEMORY_LIMIT`` when set (bytes, or a size such as ``8G``,
``512M``, ``1.5GiB``; ``0`` or ``none`` turns the check off), else half of this machine's memory,
or half of what the process may still allocate under an address-space limit (``ulimit -v``),
whichever is less.
"""

from __future__ import annotations

import math
import os
import re
import resource
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.archive import size_text
from engine.blocks import Kind
from engine.errors import MemoryLimitError
from engine.graph import Graph

LIMIT_ENV = "BACKPROP_STUDIO_MEMORY_LIMIT"
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_ID_BYTES = np.dtype(np.int64).itemsize  # token ids are int64 whatever the float type


@dataclass(frozen=True)
class Tensor:
    """One tensor of a node: ``what`` is ``"weight 'E'"``, ``"output 'attn'"`` or, inside a
    composite, ``"inner block3/ffn output 'out'"``."""

    what: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class NodeMemory:
    node: str
    label: str
    type: str
    weights: int  # bytes of its own weights
    activations: int  # bytes of its outputs (and of every inner node's outputs, for a composite)
    biggest: Tensor | None

    @property
    def total(self) -> int:
        return self.weights + self.activations


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per node and in all, for one float type. ``complete`` is False when some nodes'
    shapes are not known yet (unwired inputs, shape errors): they are not counted."""

    dtype: np.dtype
    nodes: tuple[NodeMemory, ...]
    complete: bool

    @property
    def weights(self) -> int:
        return sum(n.weights for n in self.nodes)

    @property
    def activations(self) -> int:
        return sum(n.activations for n in self.nodes)

    @property
    def needed(self) -> int:
        """About what one forward and backward pass holds: every value and its gradient."""
        return 2 * (self.weights + self.activations)

    def largest(self) -> NodeMemory | None:
        return max(self.nodes, key=lambda n: n.total, default=None)

    def to_json(self) -> dict[str, Any]:
        return {"dtype": str(self.dtype), "weights_bytes": self.weights, "activations_bytes": self.activations,
                "needed_bytes": self.needed, "complete": self.complete}


def _nbytes(shape: tuple[int, ...], itemsize: int) -> int:
    return math.prod(int(s) for s in shape) * itemsize  # Python ints: never overflows


def _inner_outputs(block: Any, in_shapes: dict, itemsize: int, prefix: str) -> tuple[int, Tensor | None]:
    """Bytes of every value a composite's inner graph computes (recursively), and the biggest."""
    inner = block.inner(in_shapes)
    total, biggest = 0, None
    for step in inner.program.steps:
        if step.type in ("Input", "Output"):
            continue  # the composite's own inputs and outputs: counted outside
        name = f"{prefix}{inner.graph.nodes[step.node].name}"
        for port, shape in step.out_shapes.items():
            size = _nbytes(shape, _ID_BYTES if step.block.output_kind(port) is Kind.IDS else itemsize)
            total += size
            if biggest is None or size > biggest.nbytes:
                biggest = Tensor(f"inner {name} output '{port}'", tuple(shape), size)
        if step.block.composite:
            more, big = _inner_outputs(step.block, dict(step.in_shapes), itemsize, f"{name}/")
            total += more
            if big is not None and (biggest is None or big.nbytes > biggest.nbytes):
                biggest = big
    return total, biggest


def estimate(graph: Graph, dtype: Any = np.float32) -> MemoryEstimate:
    """The memory ``graph`` needs in float type ``dtype`` (see the module docstring). Computes
    no numbers and allocates nothing; uses the graph's cached shape inference."""
    dtype = np.dtype(dtype)
    key = f"memory:{dtype.str}"
    cached = graph._cache.get(key)  # once per revision, like the shape report it is made from
    if cached and cached[0] == graph.revision:
        return cached[1]
    report = graph.infer()
    nodes = []
    complete = True
    for nid in graph.topological_order():
        node = graph.nodes[nid]
        if node.block is None or nid in report.errors or nid in report.incomplete:
            complete = False
            continue
        biggest: Tensor | None = None
        weights = 0
        for name, shape in graph.weight_shapes(nid, report).items():
            size = _nbytes(shape, dtype.itemsize)
            weights += size
            if biggest is None or size > biggest.nbytes:
                biggest = Tensor(f"weight '{name}'", tuple(shape), size)
        activations = 0
        for port in node.output_ports():
            shape = report.shapes.get((nid, port.name))
            if shape is None:
                continue
            size = _nbytes(shape, _ID_BYTES if node.output_kind(port.name) is Kind.IDS else dtype.itemsize)
            activations += size
            if biggest is None or size > biggest.nbytes:
                biggest = Tensor(f"output '{port.name}'", tuple(shape), size)
        if node.block.composite:
            in_shapes = graph.input_shapes(nid, report)
            if in_shapes is not None:
                more, big = _inner_outputs(node.block, in_shapes, dtype.itemsize, "")
                activations += more
                if big is not None and (biggest is None or big.nbytes > biggest.nbytes):
                    biggest = big
        nodes.append(NodeMemory(nid, node.label, node.type, weights, activations, biggest))
    result = MemoryEstimate(dtype, tuple(nodes), complete)
    graph._cache[key] = (graph.revision, result)
    return result


def parse_size(text: str) -> int:
    """``"8G"``, ``"512 MiB"``, ``"1.5g"``, ``"2000000"`` → bytes; ValueError otherwise."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtb]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise ValueError(text)
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _physical() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_left() -> int | None:
    """What the process may still map under ``ulimit -v`` (None: no such limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    used = 0
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    used = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(0, soft - used)


@dataclass(frozen=True)
class Limit:
    """The memory limit in bytes (None: no check) and a phrase saying where it comes from."""

    nbytes: int | None
    source: str


def limit() -> Limit:
    """The configured limit (see the module docstring). Raises MemoryLimitError when
    ``BACKPROP_STUDIO_MEMORY_LIMIT`` is set to something that is not a size."""
    configured = os.environ.get(LIMIT_ENV, "").strip()
    if configured:
        if configured.lower() in ("0", "none", "off"):
            return Limit(None, f"{LIMIT_ENV}={configured} turns the limit off")
        try:
            return Limit(parse_size(configured), f"set by {LIMIT_ENV}={configured}")
        except ValueError:
            raise MemoryLimitError(f"{LIMIT_ENV}={configured!r} is not a size; write it like 8G, 512M or 2000000000") from None
    how = f"set {LIMIT_ENV}, e.g. to 16G, to change it"
    physical, left = _physical(), _address_space_left()
    if left is not None and (physical is None or left < physical):
        return Limit(left // 2, f"half of the {size_text(left)} this process may still allocate (ulimit -v); {how}")
    if physical is not None:
        return Limit(physical // 2, f"half of this machine's {size_text(physical)}; {how}")
    return Limit(None, "this system does not say how much memory it has")


def check(graph: Graph, dtype: Any = np.float32, *, limit_bytes: int | None = None) -> MemoryEstimate:
    """The estimate, or MemoryLimitError when it is over ``limit_bytes`` (default: :func:`limit`),
    naming the node that needs the most."""
    est = estimate(graph, dtype)
    lim = Limit(limit_bytes, f"{size_text(limit_bytes)} given") if limit_bytes is not None else limit()
    if lim.nbytes is None or est.needed <= lim.nbytes:
        return est
    top = est.largest()
    detail = ""
    if top is not None:
        detail = f"; {top.label} ({top.type}) alone needs {size_text(top.total)}"
        if top.biggest is not None:
            shape = "(" + ", ".join(f"{s:,}" for s in top.biggest.shape) + ")"
            detail += f", its {top.biggest.what} {shape} {size_text(top.biggest.nbytes)}"
    raise MemoryLimitError(
        f"this graph needs about {size_text(est.needed)} for a forward and backward pass in {est.dtype} "
        f"(weights {size_text(est.weights)}, values {size_text(est.activations)}, and a gradient for each), more than "
        f"the memory limit of {size_text(lim.nbytes)} ({lim.source}){detail}"
    )


__all__ = ["LIMIT_ENV", "Tensor", "NodeMemory", "MemoryEstimate", "Limit", "estimate", "limit", "check", "parse_size"]
