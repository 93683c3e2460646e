"""How each block type becomes PyTorch code: the exporter table, keyed by block type id.

An exporter is a small function that looks at one node (:class:`NodeView`: its params, shapes and
the Python expressions of its inputs) and returns a :class:`Torch`: the expression that computes
the node's outputs, and optionally the submodule (a class of :mod:`engine.export.torch_lib`), the
``nn.Parameter`` or the buffer it owns, and how its weights map onto torch's state-dict keys.

Why a table here rather than a method on each block: the blocks describe our maths and know
nothing of torch; everything torch-specific about a block (which torch code, how its weights are
laid out) sits in this one file, next to the torch classes in ``torch_lib.py``, where it is read
and reviewed together. Adding a block costs one ``@exporter("Type", params=(...))`` function
here (often one line), or one entry in :data:`CANNOT_EXPORT` saying why it cannot be exported.
Composite blocks need nothing: they are exported as their inner graph. ``tests/engine/
test_export.py`` fails for any registered block that has neither an exporter nor a reason, and
for any block param that its exporter does not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from engine.blocks import Block

Shape = tuple[int, ...]
Arrays = Mapping[str, np.ndarray]

#: Block types that cannot be exported, with the reason shown to the user. Empty today: every
#: block of the app has a torch equivalent.
CANNOT_EXPORT: dict[str, str] = {}


class CannotExport(Exception):
    """Raised by an exporter for a parameter combination it cannot express; the message is the
    reason shown to the user (the caller adds the node's name)."""


@dataclass(frozen=True)
class NodeView:
    """What an exporter sees of one node."""

    name: str  # the node's name in the graph (for comments)
    type: str
    block: Block
    in_shapes: Mapping[str, Shape]
    out_shapes: Mapping[str, Shape]
    weight_shapes: Mapping[str, Shape]  # own weights only
    attr: str  # the node's identifier: its attribute ``self.<attr>`` and its variable
    args: Mapping[str, str]  # connected input port -> Python expression of its value
    owners: Mapping[str, str]  # node id -> identifier, for weights shared with another node

    @property
    def p(self) -> Mapping[str, Any]:
        return self.block.p

    @property
    def me(self) -> str:
        """The node's submodule (or parameter, or buffer) inside ``forward``."""
        return f"self.{self.attr}"

    def arg(self, port: str) -> str:
        return self.args[port]

    def call(self, first: str, *more: str) -> str:
        """``self.<attr>(x, context=c)``: the first port positionally, the others (often
        optional) by name, each only when it is connected."""
        args = [self.args[first], *(f"{p}={self.args[p]}" for p in more if p in self.args)]
        return f"{self.me}({', '.join(args)})"


@dataclass(frozen=True)
class Torch:
    """One node as torch code (see the module docstring).

    ``expr`` computes the node's outputs: one value, or a tuple in ``ports`` order (by default
    the block's output ports, in their declared order). Exactly one
    of ``module`` (a constructor call), ``parameter`` (a tensor expression made an
    ``nn.Parameter``) and ``buffer`` (a float64 tensor expression, cast with the model) may be
    set; it becomes ``self.<attr>``. ``weights`` turns the node's weights (our names) into
    state-dict entries below ``self.<attr>`` (key ``""`` is ``self.<attr>`` itself); by default
    every weight keeps its name. ``alias``: the node is just another name for ``expr`` and
    gets no line of its own (Input, Output)."""

    expr: str
    ports: tuple[str, ...] | None = None
    module: str | None = None
    parameter: str | None = None
    buffer: str | None = None
    weights: Callable[[Arrays], dict[str, np.ndarray]] | None = None
    alias: bool = False
    notes: tuple[str, ...] = field(default=())


Exporter = Callable[[NodeView], Torch]

#: The table: block type id -> exporter.
EXPORTERS: dict[str, Exporter] = {}
#: The params each exporter reads: block type id -> param names. A param a block gains later
#: (dilation, say) is refused with a clear message while it differs from its default, instead
#: of being silently left out, and the registry test lists it until its exporter handles it.
HANDLED: dict[str, frozenset[str]] = {}


def exporter(*type_ids: str, params: tuple[str, ...] = ()) -> Callable[[Exporter], Exporter]:
    """Register an exporter for these block types, which reads these block params."""

    def register(fn: Exporter) -> Exporter:
        for type_id in type_ids:
            if type_id in EXPORTERS:
                raise TypeError(f"two exporters for block type {type_id!r}")
            EXPORTERS[type_id] = fn
            HANDLED[type_id] = frozenset(params)
        return fn

    return register


def unhandled(type_id: str, values: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """Params set away from their default that the exporter of ``type_id`` does not read."""
    known = HANDLED.get(type_id, frozenset())
    return [name for name, value in values.items() if name not in known and value != defaults.get(name)]


def literal(value: Any) -> str:
    """Python source for a param value (numbers round-trip exactly through repr)."""
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def _shape(shape: Shape) -> str:
    return ", ".join(str(s) for s in shape)


# --- data leaves and markers --------------------------------------------------------------------


@exporter("Input", params=("shape", "dtype"))
def _input(n: NodeView) -> Torch:
    return Torch(n.attr, alias=True)  # a keyword argument of forward (or of an inner module)


@exporter("Output")
def _output(n: NodeView) -> Torch:
    return Torch(n.arg("x"), alias=True)


@exporter("Constant", params=("value",))
def _constant(n: NodeView) -> Torch:
    return Torch(n.me, buffer=f"torch.tensor({literal(n.p['value'])}, dtype=torch.float64)")


@exporter("Parameter", params=("shape", "init", "scale", "values"))
def _parameter(n: NodeView) -> Torch:
    shape, init, scale = tuple(n.p["shape"]), n.p["init"], n.p["scale"]
    dims = _shape(shape) or "()"
    f64 = "dtype=torch.float64"
    start = {
        "zeros": f"torch.zeros({dims}, {f64})",
        "ones": f"torch.ones({dims}, {f64})",
        "normal": f"torch.randn({dims}, {f64}) * {scale!r}",
        "uniform": f"torch.empty({dims}, {f64}).uniform_({-scale!r}, {scale!r})",
        "values": f"torch.tensor({literal(n.p['values'])}, {f64}).expand({dims}).clone()",
    }[init]
    return Torch(n.me, parameter=start, weights=lambda w: {"": w["value"]})


# --- elementwise and reductions: one line each ---------------------------------------------------

_BINARY = {"Add": "{a} + {b}", "Subtract": "{a} - {b}", "Multiply": "{a} * {b}", "Divide": "{a} / {b}",
           # NOTE: torch.maximum splits the gradient of a tie; where() sends it to a, as the lecture does
           "Max": "torch.where({a} >= {b}, {a}, {b})",
           "MatMul": "{a} @ {b}", "Dot": "({a} * {b}).sum(dim=-1)"}
_UNARY = {"Sigmoid": "torch.sigmoid({a})", "Tanh": "torch.tanh({a})", "ReLU": "torch.relu({a})",
          "GELU": "F.gelu({a})", "Square": "{a} * {a}", "Exp": "torch.exp({a})", "Log": "torch.log({a})",
          "Softmax": "torch.softmax({a}, dim=-1)", "LogSoftmax": "torch.log_softmax({a}, dim=-1)", "Negate": "-{a}"}


@exporter(*_BINARY)
def _binary(n: NodeView) -> Torch:
    return Torch(_BINARY[n.type].format(a=n.arg("a"), b=n.arg("b")))


@exporter(*_UNARY)
def _unary(n: NodeView) -> Torch:
    return Torch(_UNARY[n.type].format(a=n.arg("a")))


@exporter("Pow", params=("exponent",))
def _pow(n: NodeView) -> Torch:
    return Torch(f"torch.pow({n.arg('a')}, {n.p['exponent']!r})")


@exporter("Dropout", params=("p",))
def _dropout(n: NodeView) -> Torch:
    # torch draws its own masks: the same rate and scaling, not the app's units
    return Torch(f"F.dropout({n.arg('x')}, p={n.p['p']!r}, training=self.training)",
                 notes=("in model.train() torch draws its own masks (the same p, other units than the app's)",))


@exporter("PaddingMask", params=("pad_id",))
def _padding_mask(n: NodeView) -> Torch:
    return Torch(f"({n.arg('ids')} != {n.p['pad_id']}).long()")


@exporter("Scale", params=("factor",))
def _scale(n: NodeView) -> Torch:
    return Torch(f"{n.arg('a')} * {n.p['factor']!r}")


@exporter("Sum", "Mean", params=("axes", "keepdims"))
def _reduce(n: NodeView) -> Torch:
    ndim = len(n.in_shapes["a"])
    axes = tuple(sorted({a % ndim for a in n.p["axes"]})) if n.p["axes"] else tuple(range(ndim))
    fn = "sum" if n.type == "Sum" else "mean"
    keep = ", keepdim=True" if n.p["keepdims"] else ""
    return Torch(f"torch.{fn}({n.arg('a')}, dim={axes!r}{keep})")


@exporter("Flatten")
def _flatten(n: NodeView) -> Torch:
    return Torch(f"{n.arg('x')}.flatten(1)")


@exporter("TimeStep", params=("t",))
def _time_step(n: NodeView) -> Torch:
    return Torch(f"{n.arg('x')}[:, {n.p['t']}]")


@exporter("StackSteps", params=("steps",))
def _stack_steps(n: NodeView) -> Torch:
    steps = ", ".join(n.arg(f"h{i}") for i in range(1, n.p["steps"] + 1))
    return Torch(f"torch.stack([{steps}], dim=1)")


# --- losses ---------------------------------------------------------------------------------------


def _target(n: NodeView, pred: str) -> str:
    # an integer target is cast to the prediction's dtype first, as the block does
    return f"{n.arg('target')}.to({n.arg(pred)}.dtype)"


@exporter("SquaredLoss")
def _squared_loss(n: NodeView) -> Torch:
    return Torch(f"(({n.arg('pred')} - {_target(n, 'pred')}) ** 2).mean()")


@exporter("HingeLoss")
def _hinge_loss(n: NodeView) -> Torch:
    return Torch(f"torch.relu(1 - {n.arg('score')} * {_target(n, 'score')}).mean()")


@exporter("LogisticLoss")
def _logistic_loss(n: NodeView) -> Torch:
    return Torch(f"-F.logsigmoid({n.arg('score')} * {_target(n, 'score')}).mean()")


def _class_loss_args(n: NodeView) -> str:
    args = f", ignore_index={n.p['ignore_index']}"
    if len(n.p["weight"]):
        args += f", weight={literal(n.p['weight'])}"
    if n.p.get("label_smoothing"):
        args += f", label_smoothing={n.p['label_smoothing']!r}"
    return args


@exporter("CrossEntropy", params=("ignore_index", "label_smoothing", "weight"))
def _cross_entropy(n: NodeView) -> Torch:
    return Torch(f"cross_entropy({n.arg('logits')}, {n.arg('target')}{_class_loss_args(n)})")


@exporter("NLLLoss", params=("ignore_index", "weight"))
def _nll_loss(n: NodeView) -> Torch:
    return Torch(f"class_loss({n.arg('logprob')}, {n.arg('target')}{_class_loss_args(n)})")


# --- network blocks: a submodule each -------------------------------------------------------------


@exporter("Linear", params=("out_features", "bias"))
def _linear(n: NodeView) -> Torch:
    d_in = n.in_shapes["x"][-1]
    return Torch(n.call("x"), module=f"Linear({d_in}, {n.p['out_features']}, bias={n.p['bias']})")


@exporter("FeedForward", params=("hidden", "out_features", "activation"))
def _feed_forward(n: NodeView) -> Torch:
    d, hidden = n.weight_shapes["W1"]
    d_out = n.weight_shapes["W2"][1]
    return Torch(n.call("x"), module=f"FeedForward({d}, {hidden}, {d_out}, activation={n.p['activation']!r})")


@exporter("FeedForwardSequenceModel", params=("window", "hidden", "out_features", "activation"))
def _ff_sequence(n: NodeView) -> Torch:
    d = n.in_shapes["x"][-1]
    hidden, d_out = n.weight_shapes["W2"]
    return Torch(n.call("x"), module=f"FeedForwardSequenceModel({d}, window={n.p['window']}, hidden={hidden}, "
                                     f"d_out={d_out}, activation={n.p['activation']!r})")


@exporter("BatchNorm", params=("eps", "momentum"))
def _batch_norm(n: NodeView) -> Torch:
    c = n.weight_shapes["gamma"][0]
    return Torch(n.call("x"), module=f"BatchNorm({c}, eps={n.p['eps']!r}, momentum={n.p['momentum']!r})")


@exporter("LayerNorm", "AddNorm", params=("eps",))
def _norm(n: NodeView) -> Torch:
    d = n.weight_shapes["gamma"][0]
    return Torch(n.call("x", "fx"), module=f"{n.type}({d}, eps={n.p['eps']!r})")


@exporter("EmbedToken", params=("vocab", "dim", "position", "max_len"))
def _embed(n: NodeView) -> Torch:
    p = n.p
    return Torch(n.call("ids"), module=f"EmbedToken({p['vocab']}, {p['dim']}, position={p['position']!r}, max_len={p['max_len']})")


@exporter("Collapse", params=("mode",))
def _collapse(n: NodeView) -> Torch:
    return Torch(n.call("x"), module=f"Collapse({n.p['mode']!r})")


@exporter("GenerateToken", params=("vocab", "tie_to", "temperature"))
def _generate(n: NodeView) -> Torch:
    d, vocab = n.in_shapes["x"][-1], n.p["vocab"]
    if n.p["tie_to"]:
        owner = n.owners[n.p["tie_to"]]
        return Torch(f"{n.me}({n.arg('x')}, E=self.{owner}.E)", module=f"GenerateToken({d}, {vocab}, tied=True)",
                     notes=(f"its E is {owner}'s (tied)",))
    return Torch(n.call("x"), module=f"GenerateToken({d}, {vocab})")


@exporter("Attention", params=("heads", "causal", "bias"))
def _attention(n: NodeView) -> Torch:
    d = n.in_shapes["x"][-1]
    p = n.p
    return Torch(n.call("x", "context", "mask"),
                 module=f"Attention({d}, heads={p['heads']}, causal={p['causal']}, bias={p['bias']})")


def _pair(value: tuple[int, ...]) -> tuple[int, int]:
    """A size param, one number (a square) or (height, width), as a pair."""
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


@exporter("Conv2d", params=("out_channels", "kernel", "stride", "padding", "dilation", "groups", "bias"))
def _conv2d(n: NodeView) -> Torch:
    p = n.p
    c_out, _, kh, kw = n.weight_shapes["W"]
    c_in = n.in_shapes["x"][1]
    return Torch(n.call("x"), module=f"Conv2d({c_in}, {c_out}, kernel={(kh, kw)}, stride={_pair(p['stride'])}, "
                                     f"padding={_pair(p['padding'])}, dilation={_pair(p['dilation'])}, groups={p['groups']}, "
                                     f"bias={p['bias']})")


@exporter("MaxPool2d", params=("kernel", "stride", "padding", "ceil_mode"))
def _max_pool(n: NodeView) -> Torch:
    p = n.p
    k = _pair(p["kernel"])
    stride = _pair(p["stride"]) if p["stride"] else k
    return Torch(f"F.max_pool2d({n.arg('x')}, kernel_size={k}, stride={stride}, padding={_pair(p['padding'])}, "
                 f"ceil_mode={p['ceil_mode']})")


# --- recurrent -------------------------------------------------------------------------------------


def _cell_args(n: NodeView, d_in: int) -> str:
    p = n.p
    return f"{d_in}, {p['hidden']}, cell={p['cell']!r}, activation={p['activation']!r}"


@exporter("RNNCell", params=("cell", "hidden", "activation", "tie_to"))
def _rnn_cell(n: NodeView) -> Torch:
    inputs = ", ".join(n.arg(p) for p in ("x", "h", "c") if p in n.args)
    if n.p["tie_to"]:
        # the same cell at every step: call the owner's module, so its weights are shared
        owner = n.owners[n.p["tie_to"]]
        return Torch(f"self.{owner}({inputs})", notes=(f"the same cell as {owner} (shared weights)",))
    return Torch(f"{n.me}({inputs})", module=f"RNNCell({_cell_args(n, n.in_shapes['x'][-1])})")


def _rnn_weights(cell: str, bidirectional: bool, fused: bool) -> Callable[[Arrays], dict[str, np.ndarray]]:
    """Our Wx (d_in, k·h), Wh (h, k·h), b / bx, bh as the torch module's state: nn.RNN-family
    ``weight_ih_l0 = Wxᵀ``, ``weight_hh_l0 = Whᵀ``, ``bias_ih_l0 = b``, ``bias_hh_l0 = 0``
    (GRU: ``bx``, ``bh``), ``_rev`` → ``_reverse``; or, for the SimpleRNN that runs step by step
    (sigmoid), the same names under ``steps.<direction>``."""

    def convert(w: Arrays) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i, sfx in enumerate(("", "_rev") if bidirectional else ("",)):
            if not fused:
                out.update({f"steps.{i}.{k}": w[k + sfx] for k in ("Wx", "Wh", "b")})
                continue
            t = "_reverse" if sfx else ""
            out[f"rnn.weight_ih_l0{t}"] = np.ascontiguousarray(w["Wx" + sfx].T)
            out[f"rnn.weight_hh_l0{t}"] = np.ascontiguousarray(w["Wh" + sfx].T)
            if cell == "GRU":
                out[f"rnn.bias_ih_l0{t}"] = w["bx" + sfx]
                out[f"rnn.bias_hh_l0{t}"] = w["bh" + sfx]
            else:
                out[f"rnn.bias_ih_l0{t}"] = w["b" + sfx]
                out[f"rnn.bias_hh_l0{t}"] = np.zeros_like(w["b" + sfx])
        return out

    return convert


@exporter("SequenceRNN", params=("cell", "hidden", "activation", "bidirectional"))
def _sequence_rnn(n: NodeView) -> Torch:
    p = n.p
    fused = not (p["cell"] == "SimpleRNN" and p["activation"] == "sigmoid")
    module = f"SequenceRNN({_cell_args(n, n.in_shapes['x'][-1])}, bidirectional={p['bidirectional']})"
    return Torch(n.call("x", "h0", "c0"), module=module, weights=_rnn_weights(p["cell"], p["bidirectional"], fused))


def snake(type_id: str) -> str:
    """``FeedForward`` → ``feed_forward``: a fallback identifier for an unnamed node."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type_id).lower()
