"""Recurrent sequence models: SimpleRNN, LSTM and GRU cells run over a sequence (BPTT).

``SequenceRNN`` runs the whole sequence in one fused kernel call; ``RNNCell`` is one step of the
same cell (the same kernels over a length-1 sequence). ``SequenceRNN.expand()`` draws the
network unrolled through time with RNNCells that share the first one's weights, the lecture's
picture ``h_t = cell(h_{t−1}, x_t)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import (
    Arrays,
    Block,
    Category,
    Example,
    Param,
    ParamType,
    Port,
    Shape,
    Variant,
    WeightSpec,
    shape_str,
)
from engine.blocks._composite import GraphBuilder, Source
from engine.kernels import recurrent as kern

if TYPE_CHECKING:
    from engine.graph import Graph

#: Gate blocks per cell: the weight matrices have ``GATES[cell] · hidden`` columns.
GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}

#: Sequence length of the unrolled picture :meth:`SequenceRNN.expand` draws.
EXPAND_LENGTH = 4
#: The unrolled picture draws at most this many steps (a longer sequence: the first ones).
MAX_DRAWN_STEPS = 12


def _init_cell_weights(shapes: Mapping[str, Shape], h: int, is_lstm: bool, rng: np.random.Generator) -> Arrays:
    """Initial weights of a recurrent cell (SequenceRNN and RNNCell alike).

    torch's rule for every recurrent matrix: uniform ±1/√h (not ±1/√fan_in), so the recurrent
    dynamics start the same whatever d_in is. Biases start at zero, except the LSTM forget gate
    at 1 so the cell remembers by default (Jozefowicz et al. 2015)."""
    bound = 1.0 / math.sqrt(h)
    out: Arrays = {}
    for name, shape in shapes.items():
        if name.startswith("W"):
            out[name] = rng.uniform(-bound, bound, size=shape)
        else:
            out[name] = np.zeros(shape)
            if is_lstm:
                out[name][h:2 * h] = 1.0
    return out


#: The cell's params and weights, shared by SequenceRNN (the whole sequence) and RNNCell (one step).
CELL_PARAMS = (
        Param("cell", ParamType.CHOICE, "LSTM", "the recurrent cell", choices=("SimpleRNN", "LSTM", "GRU")),
        Param("hidden", ParamType.INT, 16, "state size h", minimum=1),
        Param("activation", ParamType.CHOICE, "tanh", "SimpleRNN only: the cell's nonlinearity", choices=("tanh", "relu", "sigmoid"),
              applies_when=("cell", ("SimpleRNN",))),
)
CELL_WEIGHTS = (
        WeightSpec("Wx", "(d_in, k·h)", "input weights; k = 1 (SimpleRNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)"),
        WeightSpec("Wh", "(h, k·h)", "recurrent weights, same gate blocks as Wx"),
        WeightSpec("b", "(k·h)", "SimpleRNN and LSTM bias (LSTM forget gate starts at 1)"),
        WeightSpec("bx", "(3h)", "GRU only: input-side bias"),
        WeightSpec("bh", "(3h)", "GRU only: recurrent-side bias (inside r ⊙ (…) for n)"),
)


@register
class SequenceRNN(Block):
    """A recurrent network over a sequence: ``h_t = cell(h_{t−1}, x_t)``, ``h_0 = h0`` or 0.

    Cells (weights; gate blocks of width h side by side, torch's order):

    - SimpleRNN: ``h_t = act(x_t Wx + h_{t−1} Wh + b)``; Wx (d_in, h), Wh (h, h), b (h).
    - LSTM: ``z = x_t Wx + h_{t−1} Wh + b``, gates i, f, g, o; ``i, f, o = σ(·)``, ``g = tanh(·)``;
      ``c_t = f ⊙ c_{t−1} + i ⊙ g``; ``h_t = o ⊙ tanh(c_t)``; Wx (d_in, 4h), Wh (h, 4h), b (4h),
      forget-gate bias starts at 1. No peepholes (as torch).
    - GRU (torch's formula): gates r, z, n; ``r, z = σ(x Wx + bx + h Wh + bh)`` parts;
      ``n = tanh(x Wx_n + bx_n + r ⊙ (h Wh_n + bh_n))``; ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``;
      Wx (d_in, 3h), Wh (h, 3h), bx (3h), bh (3h).

    ``activation`` applies to the SimpleRNN cell only (LSTM and GRU ignore it).

    Outputs: ``seq`` holds every h_t, ``last`` the final state h_L (``last_c`` = c_L for LSTM).

    Bidirectional: a second, independent cell with weights suffixed ``_rev`` reads the sequence
    from the end to the start. ``seq[:, t]`` is ``[h→_t ; h←_t]`` (B, L, 2h), and ``last`` is
    ``[h→_L ; h←_1]`` (B, 2h): each direction's *final* state (the backward direction finishes
    at position 0), as torch's ``h_n`` concatenated over directions; ``last_c`` likewise.
    ``h0`` / ``c0`` may then be (B, h), shared by both directions, or (B, 2h) laid out like
    ``last``, so one bidirectional RNN's ``last`` can start another.

    The backward pass reports ``time_grad_norms``: ‖dL/dh_t‖ over the batch (both directions
    together when bidirectional) of the total gradient reaching each step, for the
    vanishing-gradient view.

    Example: cell LSTM, hidden 8, x (2, 5, 3) → seq (2, 5, 8), last (2, 8), last_c (2, 8)."""

    type_id = "SequenceRNN"
    category = Category.SEQUENCE
    formula = "h_t = cell(h_{t−1}, x_t);  SimpleRNN: h_t = act(x_t Wx + h_{t−1} Wh + b)"
    inputs = (
        Port("x", doc="the sequence (B, L, d_in)"),
        Port("h0", optional=True, doc="initial state (B, h), or (B, 2h) when bidirectional; zero if absent"),
        Port("c0", optional=True, doc="LSTM only: initial cell state, shaped like h0; zero if absent"),
    )
    outputs = (
        Port("seq", doc="every state h_1 … h_L: (B, L, h), or (B, L, 2h) when bidirectional"),
        Port("last", doc="final state h_L (B, h); bidirectional: [forward h_L ; backward h_1] (B, 2h)"),
        Port("last_c", doc="LSTM only: final cell state, laid out like last"),
    )
    params = (
        *CELL_PARAMS,
        Param("bidirectional", ParamType.BOOL, False, "also read the sequence backwards (weights suffixed _rev); doubles the output width"),
    )
    weights = (
        *CELL_WEIGHTS,
        WeightSpec("Wx_rev", "(d_in, k·h)", "bidirectional only: the backward direction's copy of each weight (…_rev)"),
    )
    variants = (
        Variant("SimpleRNN", {"cell": "SimpleRNN"}),
        Variant("LSTM", {"cell": "LSTM"}),
        Variant("GRU", {"cell": "GRU"}),
    )
    examples = (
        Example({"cell": "SimpleRNN", "hidden": 3}, {"x": (2, 4, 2)}),
        Example({"cell": "SimpleRNN", "hidden": 3, "activation": "relu"}, {"x": (2, 3, 2), "h0": (2, 3)}),
        Example({"cell": "SimpleRNN", "hidden": 2, "activation": "sigmoid", "bidirectional": True}, {"x": (2, 3, 2), "h0": (2, 4)}),
        Example({"cell": "LSTM", "hidden": 2}, {"x": (2, 3, 2)}),
        Example({"cell": "LSTM", "hidden": 2}, {"x": (2, 3, 2), "h0": (2, 2), "c0": (2, 2)}),
        Example({"cell": "LSTM", "hidden": 2, "bidirectional": True}, {"x": (2, 3, 2), "h0": (2, 2), "c0": (2, 4)}),
        Example({"cell": "GRU", "hidden": 2}, {"x": (2, 3, 2)}),
        Example({"cell": "GRU", "hidden": 2, "bidirectional": True}, {"x": (2, 3, 2), "h0": (2, 4)}),
    )

    # --- ports depend on the cell ------------------------------------------------------------

    @property
    def is_lstm(self) -> bool:
        return self.p["cell"] == "LSTM"

    @property
    def directions(self) -> tuple[str, ...]:
        """Weight-name suffix of each direction: ``("",)`` or ``("", "_rev")``."""
        return ("", "_rev") if self.p["bidirectional"] else ("",)

    def input_ports(self) -> tuple[Port, ...]:
        return self.inputs if self.is_lstm else self.inputs[:2]

    def output_ports(self) -> tuple[Port, ...]:
        return self.outputs if self.is_lstm else self.outputs[:2]

    # --- shapes ---------------------------------------------------------------------------------

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = self.require(in_shapes, "x", 3, "(batch, length, features)")
        B, L, _ = x
        if L < 1:
            raise self.shape_error(f"input 'x' has an empty sequence (length 0, shape {shape_str(x)}); it needs at least one step")
        h = self.p["hidden"]
        width = h * len(self.directions)
        for port in ("h0", "c0") if self.is_lstm else ("h0",):
            if port not in in_shapes:
                continue
            s = self.require(in_shapes, port, 2, "(batch, hidden)")
            self.expect_dim(port, s, 0, B, "batch, as in 'x'")
            if s[1] not in (h, width):
                allowed = f"{h} (hidden)" if width == h else f"{h} (shared by both directions) or {width} (forward ; backward)"
                raise self.shape_error(f"input '{port}' dimension 1 (state size) should be {allowed}, got {s[1]} (shape {shape_str(s)})")
        out = {"seq": (B, L, width), "last": (B, width)}
        if self.is_lstm:
            out["last_c"] = (B, width)
        return out

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        d_in = self.require(in_shapes, "x", 3)[2]
        h, k = self.p["hidden"], GATES[self.p["cell"]]
        out: dict[str, Shape] = {}
        for sfx in self.directions:
            out["Wx" + sfx] = (d_in, k * h)
            out["Wh" + sfx] = (h, k * h)
            if self.p["cell"] == "GRU":
                out["bx" + sfx] = (k * h,)
                out["bh" + sfx] = (k * h,)
            else:
                out["b" + sfx] = (k * h,)
        return out

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        return _init_cell_weights(self.weight_shapes(in_shapes), self.p["hidden"], self.is_lstm, rng)

    # --- forward / backward -----------------------------------------------------------------------

    def _initial(self, value: np.ndarray | None, B: int, dtype: Any) -> list[np.ndarray]:
        """Per-direction initial states from an optional (B, h) or (B, 2h) input."""
        h = self.p["hidden"]
        if value is None:
            return [np.zeros((B, h), dtype) for _ in self.directions]
        value = np.asarray(value, dtype)
        if value.shape[1] == h:
            return [value for _ in self.directions]
        return [value[:, i * h:(i + 1) * h] for i in range(len(self.directions))]

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        self.infer_shapes({k: np.shape(v) for k, v in inputs.items() if k in ("x", "h0", "c0")})
        dtype = x.dtype
        B = x.shape[0]
        cell, act = self.p["cell"], self.p["activation"]
        h0s = self._initial(inputs.get("h0"), B, dtype)
        c0s = self._initial(inputs.get("c0"), B, dtype) if self.is_lstm else [None] * len(self.directions)
        seqs, lasts, last_cs, states = [], [], [], []
        for i, sfx in enumerate(self.directions):
            w = {k: weights[k + sfx] for k in kern.CELL_WEIGHTS[cell]}
            # The backward direction is the same cell run over the time-reversed sequence.
            xs = x if not sfx else np.ascontiguousarray(x[:, ::-1])
            seq, state = kern.run_forward(cell, act, xs, h0s[i], c0s[i], w)
            states.append(state)
            lasts.append(seq[:, -1])
            if self.is_lstm:
                last_cs.append(state["c_seq"][:, -1])
            seqs.append(seq if not sfx else seq[:, ::-1])
        outs = {
            "seq": seqs[0] if len(seqs) == 1 else np.concatenate(seqs, axis=-1),
            "last": np.concatenate(lasts, axis=-1),
        }
        if self.is_lstm:
            outs["last_c"] = np.concatenate(last_cs, axis=-1)
        saved = {"states": states}
        return outs, saved

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        cell, act, h = self.p["cell"], self.p["activation"], self.p["hidden"]
        dtype = saved["states"][0]["x"].dtype
        gseq = np.asarray(gout["seq"], dtype)  # (B, L, width)
        glast = np.asarray(gout["last"], dtype)
        glast_c = np.asarray(gout["last_c"], dtype) if self.is_lstm else None
        gx = None
        gh0s, gc0s, sq_norms = [], [], None
        gw: Arrays = {}
        for i, sfx in enumerate(self.directions):
            cols = slice(i * h, (i + 1) * h)
            gs = gseq if len(self.directions) == 1 else gseq[:, :, cols]
            if sfx:
                gs = gs[:, ::-1]
            dx, dh0, dc0, dw, norms = kern.run_backward(
                cell, act, saved["states"][i], {k: weights[k + sfx] for k in kern.CELL_WEIGHTS[cell]},
                gs, glast[:, cols], None if glast_c is None else glast_c[:, cols],
            )
            if sfx:
                dx, norms = dx[:, ::-1], norms[::-1]
            gx = dx if gx is None else gx + dx
            sq_norms = norms ** 2 if sq_norms is None else sq_norms + norms ** 2
            gh0s.append(dh0)
            gc0s.append(dc0)
            gw.update({k + sfx: v for k, v in dw.items()})
        gin: Arrays = {"x": np.ascontiguousarray(gx)}
        in_shapes = saved["_in_shapes"]
        for port, grads in (("h0", gh0s), ("c0", gc0s)):
            if port in in_shapes and port in {p.name for p in self.input_ports()}:
                # A (B, h) start shared by both directions collects both gradients.
                gin[port] = sum(grads[1:], grads[0]) if in_shapes[port][1] == h else np.concatenate(grads, axis=-1)
        # tolist: the Python floats in one call, not a float() per numpy scalar (a Python loop per step)
        saved["_trace_extras"] = {"time_grad_norms": np.sqrt(sq_norms).tolist()}
        return gin, gw

    # --- the lecture's picture: the cell unrolled through time ----------------------------------

    def expand(self) -> "Graph":
        """The network unrolled over a short sequence, x (1, 4, hidden): see :meth:`build`."""
        return self.build({"x": (1, EXPAND_LENGTH, self.p["hidden"])})

    def build(self, in_shapes: Mapping[str, Shape], *, max_steps: int = MAX_DRAWN_STEPS) -> "Graph":
        """The network unrolled through time, for these input shapes: the same cell at every step.

        ``x → TimeStep x_t → RNNCell cell_t`` for t = 1 … L, chained through h (and c), where
        ``cell_1`` owns the weights (named as this block's: Wx, Wh, b / bx, bh) and every later
        cell shares them (``tie_to``); ``StackSteps`` gathers h_1 … h_L into ``seq``, and the last
        cell gives ``last`` (and ``last_c``). The initial state is the ``h0`` / ``c0`` Input when
        wired, else a zero Constant.

        Only what fits a picture is drawn, and the Output names say what is left out: the first
        :data:`MAX_DRAWN_STEPS` steps of a longer sequence (``max_steps`` draws more: the
        editor's step-through replays every step), and the forward direction of a bidirectional
        network (its ``_rev`` cell reads the same sequence backwards)."""
        x = self.require(in_shapes, "x", 3, "(batch, length, features)")
        self.infer_shapes(in_shapes)
        h, length = self.p["hidden"], x[1]
        steps = min(length, max(1, max_steps))
        g = GraphBuilder()
        g.input("x", x)
        state: dict[str, Source] = {}
        for port in ("h", "c") if self.is_lstm else ("h",):
            given = in_shapes.get(port + "0")
            if given is not None and given[1] == h:
                state[port] = g.input(port + "0", given)
            else:
                state[port] = g.add(f"{port}_0", "Constant", {"value": [[0.0] * h]})
                note = "" if given is None else f" (the wired {port}0 {shape_str(given)} holds both directions: not drawn)"
                g.graph.rename(state[port], f"{port}_0 = 0{note}")
        cell_params = {"cell": self.p["cell"], "hidden": h, "activation": self.p["activation"]}
        for t in range(1, steps + 1):
            g.add(f"x_{t}", "TimeStep", {"t": t - 1}, x="x")
            tied = cell_params if t == 1 else {**cell_params, "tie_to": "cell_1"}
            g.add(f"cell_{t}", "RNNCell", tied, x=f"x_{t}", **state)
            state = {port: (f"cell_{t}", port) for port in state}
        g.add("stack", "StackSteps", {"steps": steps}, **{f"h{t}": (f"cell_{t}", "h") for t in range(1, steps + 1)})
        g.output("seq", "stack")
        for port, out in (("h", "last"), ("c", "last_c")):
            if port in state:
                g.output(out, state[port])
        notes = []
        if steps < length:
            notes.append(f"first {steps} of {length} steps drawn")
        if self.p["bidirectional"]:
            notes.append("forward direction only")
        if notes:
            for out in ("seq", "last", "last_c"):
                if out in g.graph.nodes:
                    g.graph.rename(out, f"{out} ({'; '.join(notes)})")
        _lecture_layout(g.graph, steps)
        return g.graph


def _lecture_layout(graph: "Graph", steps: int) -> None:
    """Place the unrolled network as the lecture draws it: the cells in one row, left to right,
    each x_t just below and before its cell, the initial state at the row's start, and the
    outputs after the last cell. (GraphBuilder's columns would stack every x_t in one column
    far from its cell.) Every link still runs left to right."""
    col, row = GraphBuilder.COLUMN, GraphBuilder.ROW
    place = {"x": (0.0, 3.0), "h0": (1.0, 0.0), "h_0": (1.0, 0.0), "c0": (1.0, 1.0), "c_0": (1.0, 1.0),
             "last": (steps + 2.0, 0.0), "last_c": (steps + 2.0, 1.0),
             "stack": (steps + 2.0, 2.0), "seq": (steps + 3.0, 2.0)}
    for t in range(1, steps + 1):
        place[f"cell_{t}"] = (t + 1.0, 0.0)
        place[f"x_{t}"] = (t + 0.5, 2.0)
    for node, (c, r) in place.items():
        if node in graph.nodes:
            graph.move(node, (c * col, r * row))


@register
class RNNCell(Block):
    """One time step of a recurrent cell: ``h_t = cell(h_{t−1}, x_t)``.

    The same cells as SequenceRNN, with the same weights (see there): SimpleRNN
    ``h_t = act(x_t Wx + h_{t−1} Wh + b)``; LSTM gates i, f, g, o with a cell state
    ``c_t = f ⊙ c_{t−1} + i ⊙ g``, ``h_t = o ⊙ tanh(c_t)``; GRU gates r, z, n. A SequenceRNN
    is this cell repeated at every step; its inner graph draws it so.

    With ``tie_to`` naming another RNNCell node, this cell uses that node's weights (and adds
    its gradient to them): the unrolled network's "same cell at every step". ``h`` (and ``c``)
    may have batch 1, shared by the whole batch (a zero initial state).

    Example: cell LSTM, hidden 8, x (2, 3), h (2, 8), c (2, 8) → h (2, 8), c (2, 8)."""

    type_id = "RNNCell"
    category = Category.SEQUENCE
    formula = "h_t = cell(h_{t−1}, x_t);  SimpleRNN: h_t = act(x_t Wx + h_{t−1} Wh + b)"
    inputs = (
        Port("x", doc="this step's input x_t (B, d_in)"),
        Port("h", doc="the previous state h_{t−1} (B, h), or (1, h) for the whole batch"),
        Port("c", doc="LSTM only: the previous cell state c_{t−1}, shaped like h"),
    )
    outputs = (
        Port("h", doc="the new state h_t (B, h)"),
        Port("c", doc="LSTM only: the new cell state c_t (B, h)"),
    )
    params = (
        *CELL_PARAMS,
        Param("tie_to", ParamType.NODE, "", "an RNNCell node whose weights this cell shares (empty: own weights)"),
    )
    weights = (
        *CELL_WEIGHTS,
    )
    examples = (
        Example({"cell": "SimpleRNN", "hidden": 3}, {"x": (2, 2), "h": (2, 3)}),
        Example({"cell": "SimpleRNN", "hidden": 3, "activation": "relu"}, {"x": (2, 2), "h": (1, 3)}),
        Example({"cell": "SimpleRNN", "hidden": 2, "activation": "sigmoid"}, {"x": (3, 2), "h": (3, 2)}),
        Example({"cell": "LSTM", "hidden": 2}, {"x": (2, 3), "h": (2, 2), "c": (2, 2)}),
        Example({"cell": "LSTM", "hidden": 2}, {"x": (2, 3), "h": (1, 2), "c": (1, 2)}),
        Example({"cell": "GRU", "hidden": 2}, {"x": (2, 3), "h": (2, 2)}),
        Example({"cell": "GRU", "hidden": 3}, {"x": (2, 2), "h": (1, 3)}),
    )

    @property
    def is_lstm(self) -> bool:
        return self.p["cell"] == "LSTM"

    @property
    def states(self) -> tuple[str, ...]:
        """The state ports: ``("h", "c")`` for the LSTM, ``("h",)`` otherwise."""
        return ("h", "c") if self.is_lstm else ("h",)

    def input_ports(self) -> tuple[Port, ...]:
        return self.inputs if self.is_lstm else self.inputs[:2]

    def output_ports(self) -> tuple[Port, ...]:
        return self.outputs if self.is_lstm else self.outputs[:1]

    # --- weights, possibly borrowed ---------------------------------------------------------------

    @property
    def tied(self) -> bool:
        return bool(self.p["tie_to"])

    def _all_weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        d_in = self.require(in_shapes, "x", 2)[1]
        h, k = self.p["hidden"], GATES[self.p["cell"]]
        shapes: dict[str, Shape] = {"Wx": (d_in, k * h), "Wh": (h, k * h)}
        shapes.update({"bx": (k * h,), "bh": (k * h,)} if self.p["cell"] == "GRU" else {"b": (k * h,)})
        return shapes

    def shared_weights(self) -> dict[str, tuple[str, str]]:
        return {name: (self.p["tie_to"], name) for name in kern.CELL_WEIGHTS[self.p["cell"]]} if self.tied else {}

    def shared_weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return self._all_weight_shapes(in_shapes) if self.tied else {}

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {} if self.tied else self._all_weight_shapes(in_shapes)

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        return _init_cell_weights(self.weight_shapes(in_shapes), self.p["hidden"], self.is_lstm, rng)

    # --- shapes and one step --------------------------------------------------------------------------

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = self.require(in_shapes, "x", 2, "(batch, features)")
        B, h = x[0], self.p["hidden"]
        for port in self.states:
            s = self.require(in_shapes, port, 2, "(batch, hidden)")
            if s[0] not in (1, B):
                raise self.shape_error(
                    f"input '{port}' dimension 0 (batch) should be {B}, as in 'x', or 1 (shared by the batch); "
                    f"got {s[0]} (shape {shape_str(s)})"
                )
            self.expect_dim(port, s, 1, h, "state size = parameter 'hidden'")
        return {port: (B, h) for port in self.states}

    def _weights(self, x: Shape, weights: Arrays) -> dict[str, np.ndarray]:
        """The cell's weights, checked: a tied owner's can disagree with this cell's input."""
        w = {k: weights[k] for k in kern.CELL_WEIGHTS[self.p["cell"]]}
        for name, want in self._all_weight_shapes({"x": x}).items():
            if w[name].shape != want:
                owner = f" (shared from node {self.p['tie_to']!r})" if self.tied else ""
                raise self.shape_error(
                    f"weight '{name}'{owner} has shape {shape_str(w[name].shape)}, but input 'x' {shape_str(x)} and "
                    f"hidden {self.p['hidden']} need {shape_str(want)}"
                )
        return w

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        self.infer_shapes({k: np.shape(v) for k, v in inputs.items()})
        w = self._weights(x.shape, weights)
        B, h = x.shape[0], self.p["hidden"]
        start = {port: np.broadcast_to(np.asarray(inputs[port], x.dtype), (B, h)) for port in self.states}
        # One step is the whole-sequence kernel over a sequence of length 1: no third copy of the maths.
        seq, state = kern.run_forward(self.p["cell"], self.p["activation"], x[:, None], start["h"], start.get("c"), w)
        outs = {"h": seq[:, 0]}
        if self.is_lstm:
            outs["c"] = state["c_seq"][:, 0]
        return outs, {"state": state}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        state = saved["state"]
        gh = gout["h"]
        B, _, d_in = state["x"].shape
        gseq = np.zeros((B, 1, gh.shape[1]), state["x"].dtype)  # the step's output arrives as "last"
        dx, dh, dc, dw, _ = kern.run_backward(
            self.p["cell"], self.p["activation"], state, self._weights((B, d_in), weights),
            gseq, gh, gout.get("c"),
        )
        gin = {"x": dx[:, 0], "h": dh}
        if self.is_lstm:
            gin["c"] = dc
        return gin, dw
