"""A compiled execution plan: the runtime's bookkeeping done once per program, not once per node
per pass.

:class:`~engine.runtime.Pass` works out, for every node of every pass, where its inputs come
from, which weights it gets, what its block's ``forward``/``backward`` wrappers must check, and
it runs a composite block by building a runtime and a pass for its inner graph. That is what the
editor steps through, one node at a time, and reads after each node. Training and ``run`` repeat
the same pass thousands of times and read only its results; for them a :class:`Plan` does all
of that once:

- composite blocks are inlined: the inner graph of every composite (and of composites inside
  it) becomes part of one flat schedule, so a TransformerBlock costs its four blocks and nothing
  more; an inner ``Input`` or ``Output`` marker costs nothing at all (its value is its source's);
- every value lives in a numbered slot; each step knows the slots of its inputs and outputs,
  where its weights are (for an inner node: the composite's ``inner/weight`` entries), the
  context path its Dropout would see, and which of its gradients to route where;
- each step calls its block's ``compute`` and ``vjp`` directly, with what ``Block.forward`` and
  ``Block.backward`` would have added (the input and output shapes and dtypes, zero gradients
  for outputs that got none, un-broadcasting, buffers left out) taken from the first pass;
- in the code the plan writes (after a few passes, see :func:`_generate`), an elementwise block
  (``Block.array_form``: Add, Multiply, the activations, ...) is one call of its own
  ``forward_arrays`` on the input slots and one of ``backward_arrays`` on the gradient, the
  inputs and the output (no dicts, nothing saved: the slots hold what its backward reads), with
  the un-broadcasting axes worked out once; a Parameter (``Block.output_weight``) is its weight,
  and its gradient goes straight to that weight's. That is what a user's graph of primitive
  blocks is made of: a node costs about what torch eager costs per op
  (benchmarks/bench_node_overhead.py).

The numbers are the same, bit for bit: the same block methods run on the same arrays in the
same order, and gradients are summed in the same order. A plan never replaces a stepped pass: a
pass with a trace, or with the NaN/Inf check (which must name the inner node), runs on
:class:`~engine.runtime.Pass`, and so does any pass that fails (it runs again there and raises
the error the plain pass gives). The result of a plan is a :class:`~engine.runtime.Pass` whose
``values``, ``grads`` and ``weight_grads`` hold what the plain pass would hold (top-level ports
only) and whose ``weight_gradients()`` and ``buffer_updates()`` work as usual; it is not meant
to be stepped again.

No buffer is reused between passes: each pass allocates its arrays as the plain pass does, so a
pass's results stay valid for as long as the caller keeps them (the runtime tunes malloc so
that this costs no page faults, see :func:`engine.runtime.tune_malloc`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from engine.blocks import BUFFER_UPDATES, Block, Context
from engine.blocks._base import shapes_and_dtypes, unbroadcast
from engine.blocks._composite import CompositeBlock

if TYPE_CHECKING:
    from engine.compile import Program
    from engine.runtime import Pass, PortKey, Runtime

_EMPTY: Mapping[str, np.ndarray] = {}


BLOCK, ALIAS, ENTER, EXIT = range(4)

#: Passes run by the plan's loops before it writes its code: compiling the code costs about what
#: a few passes cost (~0.1 s for the 24-layer BERT lesson), which a command running one pass
#: should not pay; training runs thousands.
GENERATE_AFTER = 3


class _Step:
    """One entry of the flat schedule: a block (``kind`` BLOCK), or the bookkeeping a composite
    block's own pass would do at its edges: ``ENTER`` hands its inputs to its inner graph (and,
    going back, its inner gradients to its sources, zeros where none arrived), ``EXIT`` starts
    its backward pass (zeros for outputs that got no gradient, or the whole composite skipped
    when none did), ``ALIAS`` is an inner Output marker."""

    __slots__ = ("kind", "label", "type", "block", "compute", "vjp", "uses_context", "path", "ins", "outs", "owner",
                 "names", "borrowed", "buffers", "top", "meta", "float_ins", "grad_outs", "has_backward", "edges",
                 "enter", "weightless", "meta_saved", "routes")

    def __init__(self, kind: int, block: Block | None = None, label: str = "", type_: str = "",
                 path: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.block = block
        self.label = label
        self.type = type_
        self.compute = block.compute if block is not None else None
        self.vjp = block.vjp if block is not None else None
        self.uses_context = block.uses_context if block is not None else False
        self.path = path
        self.ins: tuple[tuple[str, int], ...] = ()
        self.outs: tuple[tuple[str, int], ...] = ()
        self.owner = ""  # the runtime node that holds this step's weights
        self.names: tuple[tuple[str, str], ...] | None = None  # (local, owner's name); None: the same names
        self.borrowed: tuple[tuple[str, str, str], ...] = ()  # (local, owner node, owner's name)
        self.buffers: frozenset[str] = frozenset()
        self.top = ""  # the top-level node this step is (a primitive block), else ""
        self.meta: tuple[Any, ...] | None = None  # (in_shapes, in_dtypes), (out_shapes, out_dtypes), from the first pass
        self.float_ins: tuple[tuple[str, int, tuple[int, ...], np.dtype], ...] = ()
        self.grad_outs: tuple[tuple[str, int, bool, tuple[int, ...], np.dtype], ...] = ()
        self.has_backward = True
        # ENTER: (outer slot, inner slot); EXIT: (inner slot,) per output; ALIAS: ((source, slot),)
        self.edges: tuple[tuple[int, ...], ...] = ()
        self.enter = -1  # EXIT: index of its ENTER
        self.weightless = False  # no weights at all (most math blocks): an empty dict each time
        self.meta_saved: dict[str, Any] = {}  # the four entries Block.forward adds to ``saved``
        # per weight the block gets: (local name, owner node, owner's name, is a buffer)
        self.routes: tuple[tuple[str, str, str, bool], ...] = ()


class Plan:
    """A program flattened for fast repeated passes (see the module docstring)."""

    def __init__(self, program: "Program") -> None:
        self.program = program
        self.steps: list[_Step] = []
        self.slots = 0
        self.port_slot: dict[tuple[str, str], int] = {}  # top-level (node, port) -> slot
        self.feeds: list[tuple[str, int]] = []  # top-level Input node -> slot
        self.composites: list[str] = []  # top-level composite nodes (for buffer updates)
        self._flatten(program, {}, "", None, ())
        self.ready = False  # per-step metadata (shapes, dtypes) is taken from the first pass
        # Straight-line Python for both passes, written once the first pass gave the metadata
        # (see _generate): the same statements the loops run, with every index a constant.
        self._fwd_code: Any = None
        self._bwd_code: Any = None
        self.source = ""  # the text of that code, once written
        self._passes = 0
        keys = list(self.port_slot)
        slots = [self.port_slot[k] for k in keys]
        # (keys, a function picking their values out of the slots), for Pass.values
        self._ports = (keys, (lambda vals, slots=slots: [vals[i] for i in slots]))
        self._top_steps = [(i, s.top) for i, s in enumerate(self.steps) if s.kind == BLOCK and s.top]
        # the inner steps that may return new buffer values (blocks with buffers)
        self._buffered = [i for i, s in enumerate(self.steps) if s.kind == BLOCK and not s.top and s.buffers]

    # --- building ---------------------------------------------------------------------------------

    def _slot(self) -> int:
        self.slots += 1
        return self.slots - 1

    def _flatten(self, program: "Program", inputs: Mapping[str, int], owner: str, route: Mapping[str, str] | None,
                 path: tuple[str, ...]) -> dict[str, int]:
        """Append the steps of ``program``. ``inputs``: slots of its Input nodes (empty at the
        top level, where Inputs are fed); ``route``: ``inner node\0weight`` -> the weight's name
        in ``owner`` (None at the top level). Returns the slots of its Output markers by name."""
        local: dict[tuple[str, str], int] = {}
        outputs: dict[str, int] = {}
        top = route is None
        for step in program.steps:
            if step.type == "Input":
                slot = inputs[step.node] if not top else self._slot()
                if top:
                    self.feeds.append((step.node, slot))
                    self.port_slot[(step.node, "out")] = slot
                local[(step.node, "out")] = slot
                continue
            if not top and step.type == "Output":
                alias = _Step(ALIAS)
                slot = self._slot()
                alias.edges = ((local[step.sources["x"]], slot),)
                self.steps.append(alias)
                local[(step.node, "out")] = slot
                outputs[step.node] = slot
                continue
            sources = {port: local[src] for port, src in step.sources.items()}
            block = step.block
            if isinstance(block, CompositeBlock) and type(block).compute is CompositeBlock.compute:
                outs = self._inline(step, block, sources, owner if not top else step.node, route, path)
                for port in step.out_shapes:
                    local[(step.node, port)] = outs[port]
                    if top:
                        self.port_slot[(step.node, port)] = outs[port]
                if top:
                    self.composites.append(step.node)
                continue
            s = _Step(BLOCK, block, step.label, step.type, (*path, step.node))
            s.ins = tuple(sources.items())
            outs_t = []
            for port in step.out_shapes:
                slot = self._slot()
                local[(step.node, port)] = slot
                outs_t.append((port, slot))
                if top:
                    self.port_slot[(step.node, port)] = slot
            s.outs = tuple(outs_t)
            s.buffers = block.buffer_names(step.in_shapes)
            if top:
                s.owner = s.top = step.node
                s.borrowed = tuple((name, o, n) for name, (o, n) in step.shared.items())
            else:
                s.owner = owner
                s.names = tuple((name, route[f"{step.node}\0{name}"]) for name in step.weight_shapes)
                s.borrowed = tuple((name, owner, route[f"{o}\0{n}"]) for name, (o, n) in step.shared.items())
            # Pass.backward_steps skips data leaves (no inputs, no weights): nothing to send back.
            s.has_backward = bool(step.sources or step.weight_shapes or step.shared)
            s.weightless = not (step.weight_shapes or step.shared)
            self.steps.append(s)
        return outputs

    def _inline(self, step: Any, block: CompositeBlock, sources: Mapping[str, int], owner: str,
                route: Mapping[str, str] | None, path: tuple[str, ...]) -> dict[str, int]:
        """ENTER, the composite's inner steps, EXIT; returns the slots of its outputs."""
        inner = block.inner(step.in_shapes)
        # The composite's weight "attn/Wq" is its inner node attn's "Wq"; in the owner it is
        # "attn/Wq" (top level) or whatever the enclosing route calls this composite's "attn/Wq".
        sub_route = {f"{node}\0{name}": (flat if route is None else route[f"{step.node}\0{flat}"])
                     for node, pairs in inner.routing for name, flat in pairs}
        enter = _Step(ENTER, label=step.label, type_=step.type)
        edges, inner_inputs = [], {}
        for port in inner.inputs:
            slot = self._slot()
            inner_inputs[port] = slot
            edges.append((sources[port], slot))
        enter.edges = tuple(edges)
        enter.block = block
        enter_index = len(self.steps)
        self.steps.append(enter)
        outs = self._flatten(inner.program, inner_inputs, owner, sub_route, (*path, step.node))
        exit_ = _Step(EXIT, label=step.label, type_=step.type)
        exit_.edges = tuple((outs[port],) for port in step.out_shapes)
        exit_.enter = enter_index
        self.steps.append(exit_)
        return outs

    # --- running ---------------------------------------------------------------------------------

    def forward(self, p: "Pass") -> None:
        """Run the forward pass of ``p``'s runtime on ``p``'s feeds, filling ``p`` (and keeping
        what the backward pass needs on it)."""
        values: list[Any] = [None] * self.slots
        for node, slot in self.feeds:
            values[slot] = p.feeds[node]
        saved_all: list[Any] = [None] * len(self.steps)
        weights_all: list[Any] = [None] * len(self.steps)
        written = self._fwd_code is not None  # the backward pass must run the same form as this
        if written:
            self._fwd_code(values, saved_all, weights_all, p.runtime.weights, p.context, p.runtime.dtype)
        else:
            self._forward(p.runtime, p.context, values, saved_all, weights_all)
            self._passes += 1
            if self._passes >= GENERATE_AFTER:
                _generate(self)
        keys, take = self._ports
        p.values.update(zip(keys, take(values)))
        for i, node in self._top_steps:
            p.saved[node] = saved_all[i]
        if self.composites:
            self._composite_saved(p, saved_all)
        p._plan_state = (values, saved_all, weights_all, written)
        p.forward_done = True

    def backward(self, p: "Pass", loss: "PortKey | None" = None, grads: Mapping["PortKey", np.ndarray] | None = None) -> None:
        """The backward pass of ``p`` (after :meth:`forward`), seeded as :meth:`Pass.seed` takes it."""
        values, saved_all, weights_all, written = p._plan_state
        p.seed(loss, grads)
        gslots: list[Any] = [None] * self.slots
        for key, g in p.grads.items():
            gslots[self.port_slot[key]] = g
        if written:
            self._bwd_code(values, saved_all, weights_all, gslots, p.weight_grads)
        else:
            self._backward(values, saved_all, weights_all, gslots, p.weight_grads)
        p.grads.clear()
        for key, slot in self.port_slot.items():
            if gslots[slot] is not None:
                p.grads[key] = gslots[slot]
        p.backward_done = True

    def _weights(self, s: _Step, all_weights: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        held = all_weights.get(s.owner, _EMPTY)
        if s.names is None:
            w = dict(held)
        else:
            w = {local: held[name] for local, name in s.names}
        for local, owner, name in s.borrowed:
            w[local] = all_weights[owner][name]
        return w

    def _forward(self, runtime: "Runtime", context: Context, values: list[Any], saved_all: list[Any],
                 weights_all: list[Any]) -> None:
        # NOTE: plain loops and locals, no comprehensions (each is a function call in Python
        # 3.11): this loop is most of what a pass costs on small tensors.
        dtype = runtime.dtype
        all_weights = runtime.weights
        ready = self.ready
        ndarray = np.ndarray
        i = -1
        for s in self.steps:
            i += 1
            kind = s.kind
            if kind != BLOCK:
                if kind == ENTER:
                    for outer, inner in s.edges:
                        values[inner] = values[outer]
                elif kind == ALIAS:
                    src, dst = s.edges[0]
                    values[dst] = values[src]
                continue
            inputs = {}
            for port, slot in s.ins:
                inputs[port] = values[slot]
            # The same dict goes to compute and vjp (blocks never change it): the runtime's
            # arrays, looked up once per pass.
            weights = {} if s.weightless else self._weights(s, all_weights)
            weights_all[i] = weights
            if s.uses_context:
                ctx = Context(context.training, context.seed, context.step, (*context.path, *s.path))
                outs, saved = s.compute(inputs, weights, ctx)  # type: ignore[misc]
            else:
                outs, saved = s.compute(inputs, weights)  # type: ignore[misc]
            saved = dict(saved)
            if not ready:
                s.meta = (shapes_and_dtypes(inputs), shapes_and_dtypes(outs))
                (ins, in_dtypes), (outs_shapes, out_dtypes) = s.meta
                s.meta_saved = {"_in_shapes": ins, "_in_dtypes": in_dtypes, "_out_shapes": outs_shapes, "_out_dtypes": out_dtypes}
            saved.update(s.meta_saved)
            for port, slot in s.outs:
                value = outs[port]
                if value.__class__ is not ndarray:
                    value = np.asarray(value)
                vdt = value.dtype
                if vdt is not dtype and vdt.kind == "f" and vdt != dtype:
                    value = value.astype(dtype)
                values[slot] = value
            saved_all[i] = saved
        if not ready:
            self._prepare_backward(values)
            self.ready = True

    def _prepare_backward(self, values: list[Any]) -> None:
        """What Block.backward works out per call, once: output gradients to fill with zeros,
        float inputs (and composite inputs and outputs) with their shapes and dtypes."""
        for s in self.steps:
            if s.kind == BLOCK:
                (in_shapes, in_dtypes), (out_shapes, out_dtypes) = s.meta  # type: ignore[misc]
                ports = {p.name: p for p in s.block.output_ports()}  # type: ignore[union-attr]
                s.grad_outs = tuple((port, slot, port in ports and ports[port].differentiable, out_shapes[port], out_dtypes[port])
                                    for port, slot in s.outs)
                slots = dict(s.ins)
                s.float_ins = tuple((p.name, slots[p.name], in_shapes[p.name], in_dtypes[p.name])
                                    for p in s.block.input_ports()  # type: ignore[union-attr]
                                    if p.name in slots and in_dtypes[p.name].kind == "f")
                own = dict(s.names) if s.names is not None else None
                borrowed = {local: (owner, name) for local, owner, name in s.borrowed}
                locals_ = list(own) if own is not None else None
                s.routes = tuple(
                    (local, *(borrowed[local] if local in borrowed else (s.owner, own[local] if own is not None else local)),
                     local in s.buffers)
                    for local in self._weight_names(s, locals_))
            elif s.kind == ENTER:
                # (outer, inner, shape, dtype) of the composite's float inputs, in its ports' order
                edges = []
                for outer, inner in s.edges:
                    v = values[inner]
                    if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                        edges.append((outer, inner, v.shape, v.dtype))
                s.float_ins = tuple(edges)  # type: ignore[assignment]
            elif s.kind == EXIT:
                s.grad_outs = tuple((slot, values[slot].shape, values[slot].dtype) for (slot,) in s.edges)  # type: ignore[assignment]
            elif s.kind == ALIAS:
                s.has_backward = values[s.edges[0][1]].dtype.kind == "f"  # an ids value sends nothing back

    def _weight_names(self, s: _Step, own: list[str] | None) -> list[str]:
        """The local names of the weights a step's block gets, in the order of that dict."""
        if s.weightless:
            return []
        if own is None:
            names = list(self.program.step(s.top).weight_shapes)
        else:
            names = list(own)
        return names + [local for local, _, _ in s.borrowed if local not in names]

    def _backward(self, values: list[Any], saved_all: list[Any], weights_all: list[Any], grads: list[Any],
                  weight_grads: dict[str, dict[str, np.ndarray]]) -> None:
        i = len(self.steps) - 1
        while i >= 0:
            s = self.steps[i]
            kind = s.kind
            if kind == EXIT:
                if all(grads[slot] is None for slot, _, _ in s.grad_outs):  # type: ignore[misc]
                    i = s.enter - 1  # no gradient reached the composite: its pass does not run
                    continue
                for slot, shape, dtype in s.grad_outs:  # type: ignore[misc]
                    if grads[slot] is None:
                        grads[slot] = np.zeros(shape, dtype)
            elif kind == ALIAS:
                src, dst = s.edges[0]
                g = grads[dst]
                if g is not None and s.has_backward:
                    prev = grads[src]
                    grads[src] = g if prev is None else prev + g
            elif kind == ENTER:
                for outer, inner, shape, dtype in s.float_ins:  # type: ignore[misc]
                    g = grads[inner]
                    if g is None:
                        g = np.zeros(shape, dtype)
                    prev = grads[outer]
                    grads[outer] = g if prev is None else prev + g
            elif s.has_backward:
                self._block_backward(s, saved_all[i], weights_all[i], grads, weight_grads)
            i -= 1

    @staticmethod
    def _block_backward(s: _Step, saved: dict[str, Any], weights: dict[str, np.ndarray], grads: list[Any],
                        weight_grads: dict[str, dict[str, np.ndarray]]) -> None:
        full = {}
        got = False
        for port, slot, differentiable, shape, dtype in s.grad_outs:
            g = grads[slot]
            if g is not None:
                got = True
                full[port] = g if differentiable else np.zeros(shape, dtype)
            else:
                full[port] = np.zeros(shape, dtype)
        if not got:
            return
        gin, gw = s.vjp(full, saved, weights)  # type: ignore[misc]
        ndarray = np.ndarray
        for port, slot, shape, dtype in s.float_ins:
            g = gin.get(port)
            if g is None:
                g = np.zeros(shape, dtype)
            else:
                if g.__class__ is not ndarray or g.dtype != dtype:
                    g = np.asarray(g, dtype)
                if g.shape != shape:
                    g = unbroadcast(g, shape)
            prev = grads[slot]
            grads[slot] = g if prev is None else prev + g
        # Weight gradients as Block.backward and Pass.backward_steps treat them: zeros for those
        # that got none, buffers left out, each added to its owner's (shared weights included).
        for local, owner, name, buffer in s.routes:
            if buffer:
                continue
            w = weights[local]
            g = gw.get(local)
            if g is None:
                g = np.zeros_like(w)
            elif g.__class__ is not ndarray or g.dtype != w.dtype or g.shape != w.shape:
                g = np.asarray(g, w.dtype).reshape(w.shape)
            bucket = weight_grads.get(owner)
            if bucket is None:
                bucket = weight_grads[owner] = {}
            bucket[name] = bucket[name] + g if name in bucket else g

    def _composite_saved(self, p: "Pass", saved_all: list[Any]) -> None:
        """``saved`` of top-level composites: only what Pass.buffer_updates reads (their inner
        blocks' new buffer values, under the composite's names for them)."""
        updates: dict[str, dict[str, np.ndarray]] = {node: {} for node in self.composites}
        for i in self._buffered:
            s, saved = self.steps[i], saved_all[i]
            ups = saved.get(BUFFER_UPDATES) if saved else None
            if ups:
                names = dict(s.names or ())
                updates.setdefault(s.owner, {}).update({names[name]: value for name, value in ups.items()})
        for node in self.composites:
            p.saved[node] = {BUFFER_UPDATES: updates[node]} if updates[node] else {}


class _Source:
    """Python source being written, safe by construction: the text holds only what this module
    writes (statements, its own identifiers) and whole numbers it computed (slot and step
    indices). Everything else (port, node and weight names, shapes, dtypes, blocks' methods:
    anything a project file can influence) is a constant in the namespace the code runs in,
    named ``k0``, ``k1``, …; no string from the program ever enters the text."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.depth = 1
        self.ns = namespace

    def __call__(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def k(self, value: Any) -> str:
        """The name of a new constant holding ``value``."""
        name = f"k{len(self.ns)}"
        assert name not in self.ns
        self.ns[name] = value
        return name

    @staticmethod
    def n(value: int) -> str:
        """A whole number this module computed (a slot or step index), as text."""
        if type(value) is not int:  # not a bool, a numpy integer, a str: never written in
            raise TypeError(f"not an index: {value!r}")
        return str(value)


def _array_step(s: _Step) -> bool:
    """Whether the code may call ``s``'s block's :meth:`~engine.blocks.Block.forward_arrays` and
    ``backward_arrays`` directly: an elementwise block with every input connected, one
    differentiable output, no weights or context, and every input and the output of one float
    dtype (the runtime's: then the output needs no cast)."""
    block = s.block
    if block is None or not block.array_form or s.uses_context or not s.weightless or s.buffers:
        return False
    (in_shapes, in_dtypes), (out_shapes, out_dtypes) = s.meta  # type: ignore[misc]
    ports = [p.name for p in block.input_ports()]
    if [port for port, _ in s.ins] != ports or [port for port, _ in s.outs] != ["out"]:
        return False
    dtype = out_dtypes["out"]
    if dtype.kind != "f" or any(in_dtypes[port] != dtype for port in ports):
        return False
    return [port for port, *_ in s.float_ins] == ports and len(s.grad_outs) == 1 and s.grad_outs[0][2]


def _weight_step(s: _Step) -> bool:
    """Whether ``s`` is a block whose output is its one trainable weight (Parameter)."""
    block = s.block
    if block is None or not block.output_weight or s.uses_context or s.ins or s.borrowed:
        return False
    return (len(s.routes) == 1 and s.routes[0][0] == block.output_weight and not s.routes[0][3]
            and [port for port, _ in s.outs] == ["out"] and len(s.grad_outs) == 1 and s.grad_outs[0][2])


def _reduce_axes(g_shape: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes :func:`~engine.blocks._base.unbroadcast` sums ``g_shape`` over to reach ``shape``."""
    extra = len(g_shape) - len(shape)
    return tuple(range(extra)) + tuple(i + extra for i, s in enumerate(shape) if s == 1 and g_shape[i + extra] != 1)


def _no_gradient(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The gradient a non-differentiable output (Attention's ``attn``) hands its block's vjp:
    zeros, as a read-only view of one zero (np.zeros of the attention weights' shape was 8 MiB
    to fill per pass at B8 L256; the vjp never reads it)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _generate(plan: "Plan") -> None:
    """Write the forward and backward passes of ``plan`` as straight-line Python functions: per
    step, the statements :meth:`Plan._forward` and :meth:`Plan._block_backward` run, with every
    slot a number and every name, shape and dtype a constant (no loops over tuples, no lookups of
    the step's attributes). A composite whose outputs got no gradient is skipped by an ``if``
    around its inner steps, as EXIT/ENTER do in the loop.

    Project files come from strangers: see :class:`_Source` for why nothing in them can reach
    the text that is compiled (tests/engine/test_plan.py loads a graph whose names and params
    are Python code and checks the code written is the same as for plain names)."""
    ns: dict[str, Any] = {"ndarray": np.ndarray, "asarray": np.asarray, "zeros": np.zeros,
                          "zeros_like": np.zeros_like, "unbroadcast": unbroadcast, "Context": Context, "EMPTY": _EMPTY,
                          "add_reduce": np.add.reduce}
    f = _Source(ns)
    n, k = f.n, f.k
    # Elementwise blocks and Parameters are written as direct calls (see _array_step and
    # _weight_step); they keep nothing in ``saved`` (their backward reads the slots).
    direct: set[int] = set()
    for i, s in enumerate(plan.steps):
        if s.kind == BLOCK and _array_step(s):
            f(f"# step {n(i)}")
            out_slot = s.outs[0][1]
            f(f"v = {k(s.block.forward_arrays)}(" + ", ".join(f"values[{n(slot)}]" for _, slot in s.ins) + ")")  # type: ignore[union-attr]
            if s.meta[1][0]["out"] == ():  # type: ignore[index]
                f("if v.__class__ is not ndarray:")  # numpy returns a scalar for 0-d operands
                f("    v = asarray(v)")
            f(f"values[{n(out_slot)}] = v")
            direct.add(i)
            continue
        if s.kind == BLOCK and _weight_step(s):
            f(f"# step {n(i)}")
            _, owner, name, _ = s.routes[0]
            f(f"v = all_weights[{k(owner)}][{k(name)}]")
            f(f"weights_all[{n(i)}] = v")
            f("if v.__class__ is not ndarray:")
            f("    v = asarray(v)")
            f("vd = v.dtype")
            f("if vd is not dtype and vd.kind == 'f' and vd != dtype:")
            f("    v = v.astype(dtype)")
            f(f"values[{n(s.outs[0][1])}] = v")
            direct.add(i)
            continue
        if s.kind == ENTER:
            for outer, inner in s.edges:
                f(f"values[{n(inner)}] = values[{n(outer)}]")
        elif s.kind == ALIAS:
            src, dst = s.edges[0]
            f(f"values[{n(dst)}] = values[{n(src)}]")
        elif s.kind == BLOCK:
            f(f"# step {n(i)}")
            f("ins = {" + ", ".join(f"{k(port)}: values[{n(slot)}]" for port, slot in s.ins) + "}")
            if s.weightless:
                f("w = {}")
            else:
                f(f"held = all_weights.get({k(s.owner)}, EMPTY)")
                if s.names is None:
                    f("w = dict(held)")
                else:
                    f("w = {" + ", ".join(f"{k(local)}: held[{k(name)}]" for local, name in s.names) + "}")
                for local, owner, name in s.borrowed:
                    f(f"w[{k(local)}] = all_weights[{k(owner)}][{k(name)}]")
            c = k(s.compute)
            if s.uses_context:
                f(f"outs, sv = {c}(ins, w, Context(ctx.training, ctx.seed, ctx.step, (*ctx.path, *{k(s.path)})))")
            else:
                f(f"outs, sv = {c}(ins, w)")
            f("sv = dict(sv)")
            f(f"sv.update({k(s.meta_saved)})")
            for port, slot in s.outs:
                f(f"v = outs[{k(port)}]")
                f("if v.__class__ is not ndarray:")
                f("    v = asarray(v)")
                f("vd = v.dtype")
                f("if vd is not dtype and vd.kind == 'f' and vd != dtype:")
                f("    v = v.astype(dtype)")
                f(f"values[{n(slot)}] = v")
            f(f"saved_all[{n(i)}] = sv")
            f(f"weights_all[{n(i)}] = w")
    forward_src = "def forward(values, saved_all, weights_all, all_weights, ctx, dtype):\n" + "\n".join(f.lines or ["    pass"])

    # How many steps send each weight a gradient: one (most weights) is a plain store; a weight
    # several steps use (tied weights) sums them in the order the loops do. The backward pass
    # starts with no weight gradients (a fresh Pass).
    routed: dict[tuple[str, str], int] = {}
    for s in plan.steps:
        for _local, owner, name, buffer in s.routes:
            if not buffer:
                routed[(owner, name)] = routed.get((owner, name), 0) + 1
    b = _Source(ns)
    for i in range(len(plan.steps) - 1, -1, -1):
        s = plan.steps[i]
        if s.kind == EXIT:
            cond = " or ".join(f"grads[{n(slot)}] is not None" for slot, _, _ in s.grad_outs) or "False"  # type: ignore[misc]
            b(f"if {cond}:  # composite, steps {n(s.enter)} to {n(i)}")
            b.depth += 1
            b("pass")
            for slot, shape, dtype in s.grad_outs:  # type: ignore[misc]
                b(f"if grads[{n(slot)}] is None:")
                b(f"    grads[{n(slot)}] = zeros({k(shape)}, {k(dtype)})")
        elif s.kind == ENTER:
            for outer, inner, shape, dtype in s.float_ins:  # type: ignore[misc]
                b(f"g = grads[{n(inner)}]")
                b("if g is None:")
                b(f"    g = zeros({k(shape)}, {k(dtype)})")
                b(f"prev = grads[{n(outer)}]")
                b(f"grads[{n(outer)}] = g if prev is None else prev + g")
            b.depth -= 1
        elif s.kind == ALIAS and s.has_backward:
            src, dst = s.edges[0]
            b(f"g = grads[{n(dst)}]")
            b("if g is not None:")
            b(f"    prev = grads[{n(src)}]")
            b(f"    grads[{n(src)}] = g if prev is None else prev + g")
        elif i in direct and s.ins:
            b(f"# step {n(i)}")
            out_slot = s.outs[0][1]
            out_shape = s.grad_outs[0][3]
            b(f"g = grads[{n(out_slot)}]")
            b("if g is not None:")
            b.depth += 1
            args = "".join(f", values[{n(slot)}]" for _, slot in s.ins)
            b(f"gs = {k(s.block.backward_arrays)}(g{args}, values[{n(out_slot)}])")  # type: ignore[union-attr]
            for j, (port, slot, shape, dtype) in enumerate(s.float_ins):
                b(f"g = gs[{n(j)}]")
                if shape == () or out_shape == ():  # numpy may return a scalar, or a 0-d g may be one
                    b(f"if g.__class__ is not ndarray or g.dtype != {k(dtype)}:")
                    b(f"    g = asarray(g, {k(dtype)})")
                if shape != out_shape:
                    axes = _reduce_axes(out_shape, shape)
                    kept = tuple(d for a, d in enumerate(out_shape) if a not in axes)
                    b(f"if g.shape != {k(shape)}:")
                    b(f"    g = add_reduce(g, {k(axes)})" + ("" if kept == shape else f".reshape({k(shape)})"))
                b(f"prev = grads[{n(slot)}]")
                b(f"grads[{n(slot)}] = g if prev is None else prev + g")
            b.depth -= 1
        elif i in direct:
            b(f"# step {n(i)}")
            _, owner, name, _ = s.routes[0]
            ow, nm = k(owner), k(name)
            b(f"g = grads[{n(s.outs[0][1])}]")
            b("if g is not None:")
            b(f"    wv = weights_all[{n(i)}]")
            b("    if g.__class__ is not ndarray or g.dtype != wv.dtype or g.shape != wv.shape:")
            b("        g = asarray(g, wv.dtype).reshape(wv.shape)")
            b(f"    bucket = weight_grads.get({ow})")
            b("    if bucket is None:")
            b(f"        bucket = weight_grads[{ow}] = {{}}")
            b(f"    bucket[{nm}] = bucket[{nm}] + g if {nm} in bucket else g")
        elif s.kind == BLOCK and s.has_backward:
            b(f"# step {n(i)}")
            outs = s.grad_outs
            if len(outs) == 1:
                port, slot, differentiable, shape, dtype = outs[0]
                b(f"g = grads[{n(slot)}]")
                b("if g is not None:")
                b.depth += 1
                if differentiable:
                    b(f"full = {{{k(port)}: g}}")
                else:
                    b(f"full = {{{k(port)}: {k(_no_gradient(shape, dtype))}}}")
            else:
                b("if " + (" or ".join(f"grads[{n(slot)}] is not None" for _, slot, _, _, _ in outs) or "False") + ":")
                b.depth += 1
                b("full = {}")
                for port, slot, differentiable, shape, dtype in outs:
                    p, sh, dt = k(port), k(shape), k(dtype)
                    if differentiable:
                        b(f"g = grads[{n(slot)}]")
                        b(f"full[{p}] = g if g is not None else zeros({sh}, {dt})")
                    else:
                        b(f"full[{p}] = {k(_no_gradient(shape, dtype))}")
            b(f"w = weights_all[{n(i)}]")
            b(f"gin, gw = {k(s.vjp)}(full, saved_all[{n(i)}], w)")
            for port, slot, shape, dtype in s.float_ins:
                sh, dt = k(shape), k(dtype)
                b(f"g = gin.get({k(port)})")
                b("if g is None:")
                b(f"    g = zeros({sh}, {dt})")
                b("else:")
                b(f"    if g.__class__ is not ndarray or g.dtype != {dt}:")
                b(f"        g = asarray(g, {dt})")
                b(f"    if g.shape != {sh}:")
                b(f"        g = unbroadcast(g, {sh})")
                b(f"prev = grads[{n(slot)}]")
                b(f"grads[{n(slot)}] = g if prev is None else prev + g")
            fetched: set[str] = set()  # owners whose bucket this step has in ``bucket`` (one at a time)
            for local, owner, name, buffer in s.routes:
                if buffer:
                    continue
                lo, nm = k(local), k(name)
                b(f"wv = w[{lo}]")
                b(f"g = gw.get({lo})")
                b("if g is None:")
                b("    g = zeros_like(wv)")
                b("elif g.__class__ is not ndarray or g.dtype != wv.dtype or g.shape != wv.shape:")
                b("    g = asarray(g, wv.dtype).reshape(wv.shape)")
                if owner not in fetched:
                    ow = k(owner)
                    b(f"bucket = weight_grads.get({ow})")
                    b("if bucket is None:")
                    b(f"    bucket = weight_grads[{ow}] = {{}}")
                    fetched = {owner}
                if routed[(owner, name)] == 1:  # no other step sends this weight a gradient
                    b(f"bucket[{nm}] = g")
                else:
                    b(f"bucket[{nm}] = bucket[{nm}] + g if {nm} in bucket else g")
            b.depth -= 1
    backward_src = "def backward(values, saved_all, weights_all, grads, weight_grads):\n" + "\n".join(b.lines or ["    pass"])
    plan.source = forward_src + "\n\n" + backward_src + "\n"
    code = compile(plan.source, "<execution plan>", "exec")
    exec(code, ns)  # noqa: S102 - text written above from this module's statements and indices only (see _Source)
    plan._fwd_code = ns["forward"]
    plan._bwd_code = ns["backward"]
    # the steps written as direct calls keep no ``saved``: none for Pass.saved (only
    # Pass.buffer_updates reads it, and they have no buffers)
    plan._top_steps = [(i, node) for i, node in plan._top_steps if i not in direct]


def plan_for(runtime: "Runtime") -> Plan:
    """The plan of ``runtime``'s program (built once per program and dtype, kept with it)."""
    program = runtime.program
    cache = program.plans  # type: ignore[attr-defined]
    key = runtime.dtype.str
    plan = cache.get(key)
    if plan is None:
        plan = Plan(program)
        cache[key] = plan
    return plan


__all__ = ["Plan", "plan_for"]
