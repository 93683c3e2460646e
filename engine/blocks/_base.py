"""The block protocol: one class per block, holding everything about it.

A block declares its ports, params and weights as class attributes (frozen dataclasses), and
implements four methods:

- ``infer_shapes(in_shapes)``: output shapes from input shapes, without computing any numbers;
  raises :class:`ShapeError` naming the port and dimension.
- ``weight_shapes(in_shapes)``: the shape of every weight (so parameter counts need no arrays).
- ``compute(inputs, weights) -> (outputs, saved)``: pure; what the VJP needs travels in ``saved``.
- ``vjp(gout, saved, weights) -> (gin, gw)``: one gradient per float input and per weight.

The public ``forward`` / ``backward`` wrap these with the shared machinery that no block repeats:
zero-filling missing upstream gradients, summing gradients back to the shape of a broadcast input
(tinygrad's central "un-broadcast"), dropping gradients of integer inputs and completing missing
weight gradients with zeros.

Training and evaluation. A few blocks compute something different while a model trains
(Dropout drops units, BatchNorm uses the batch's statistics). They set ``uses_context`` and
their ``compute`` takes a third argument, a :class:`Context`: the mode (training or evaluation),
the run's seed, the training step and the path of node ids that leads to the block. The context
is an argument like the inputs, never state on the block, so ``forward`` stays pure: the same
inputs, weights and context give the same result, bit for bit (a Dropout mask is drawn from a
generator seeded by ``(seed, step, path)``). ``forward(inputs, weights)`` without a context runs
in evaluation mode, which is what inference, the CLI's ``run`` and the protocol's plain calls want;
the trainer passes ``Context(training=True, seed=…, step=…)``.

Buffers. A weight declared with ``WeightSpec(..., trainable=False)`` (BatchNorm's running mean
and variance) is stored, saved and loaded with the weights, but gets no gradient and is never
touched by an optimiser. A block changes its buffers only by returning their new values in
``saved[BUFFER_UPDATES]`` from a training-mode ``compute``; the trainer writes them back after
the step (``Pass.buffer_updates``).
"""

from __future__ import annotations

import enum
import math
import zlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from engine.errors import ParamError, ShapeError

if TYPE_CHECKING:
    from engine.graph import Graph

Shape = tuple[int, ...]
Arrays = dict[str, np.ndarray]
#: whole-number params without a declared range stay within ±INT_LIMIT
INT_LIMIT = 2**31 - 1

#: The key of ``saved`` under which a training-mode ``compute`` returns new values of its buffers.
BUFFER_UPDATES = "_buffer_updates"


@dataclass(frozen=True)
class Context:
    """How a pass runs: evaluation (the default) or training, and what seeds its randomness.

    ``path`` holds the ids of the nodes that lead to a block (the outer node, then the inner
    nodes of composites), so every Dropout of a model draws its own mask; :meth:`rng` gives the
    same numbers for the same ``(seed, step, path)``, whatever else the graph holds."""

    training: bool = False
    seed: int = 0
    step: int = 0
    path: tuple[str, ...] = ()

    def child(self, node: str) -> "Context":
        """The context of node ``node`` inside the one this context belongs to."""
        return Context(self.training, self.seed, self.step, (*self.path, node))

    def rng(self) -> np.random.Generator:
        """A generator for this node and step, reproducible bit for bit."""
        key = (int(self.step), *(zlib.crc32(p.encode()) for p in self.path))
        return np.random.default_rng(np.random.SeedSequence(entropy=int(self.seed), spawn_key=key))


EVAL = Context()


class Kind(enum.Enum):
    """What a port carries."""

    FLOAT = "float"  # real-valued tensors; gradients flow
    IDS = "ids"  # int64 token ids or class labels; no gradient
    ANY = "any"  # accepts either (loss targets)

    def accepts(self, other: "Kind") -> bool:
        return self is Kind.ANY or other is Kind.ANY or self is other


class Category(str, enum.Enum):
    """Palette groups, in display order."""

    DATA = "Data"
    MATH = "Math"
    LOSSES = "Losses"
    DENSE = "Dense"
    SEQUENCE = "Sequence"
    ATTENTION = "Attention"
    CONVOLUTION = "Convolution"
    COMPOSITE = "Composite"


@dataclass(frozen=True)
class Port:
    """An input or output of a block."""

    name: str
    kind: Kind = Kind.FLOAT
    optional: bool = False
    differentiable: bool = True  # False for display-only outputs such as Attention's ``attn``
    doc: str = ""


class ParamType(str, enum.Enum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    CHOICE = "choice"
    STR = "str"
    SHAPE = "shape"  # tuple of positive ints
    INTS = "ints"  # tuple of ints (axes, channel lists); may be empty
    TENSOR = "tensor"  # nested lists of numbers
    NODE = "node"  # the id of another node in the same graph, or "" for none


@dataclass(frozen=True)
class Param:
    """A block parameter: what the inspector edits and the file stores."""

    name: str
    type: ParamType
    default: Any
    doc: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False  # ``None`` allowed (meaning "automatic", e.g. hidden = 4·d)
    # Used only when another param has one of some values: ("init", ("values",)). The inspector
    # shows the param only then, so a field never sits there unexplained.
    applies_when: tuple[str, tuple[Any, ...]] | None = None

    def applies(self, params: Mapping[str, Any]) -> bool:
        """True when this param has an effect given the block's other ``params``."""
        if self.applies_when is None:
            return True
        other, values = self.applies_when
        return params.get(other) in values

    def coerce(self, block: str, value: Any) -> Any:
        """Return ``value`` in canonical form, or raise :class:`ParamError` naming the param."""
        where = f"{block}: parameter '{self.name}'"
        if value is None:
            if self.nullable:
                return None
            raise ParamError(f"{where} needs a value")
        t = self.type
        if t is ParamType.BOOL:
            if not isinstance(value, (bool, np.bool_)):
                raise ParamError(f"{where} must be true or false, got {value!r}")
            return bool(value)
        if t is ParamType.INT:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise ParamError(f"{where} must be a whole number, got {value!r}")
            value = int(value)
            self._check_int(where, value)
            return value
        if t is ParamType.FLOAT:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ParamError(f"{where} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ParamError(f"{where} must be finite, got {value!r}")
            self._check_range(where, value)
            return value
        if t is ParamType.CHOICE:
            if value not in self.choices:
                raise ParamError(f"{where} must be one of {', '.join(self.choices)}; got {value!r}")
            return str(value)
        if t in (ParamType.STR, ParamType.NODE):
            if not isinstance(value, str):
                raise ParamError(f"{where} must be text, got {value!r}")
            return value
        if t in (ParamType.SHAPE, ParamType.INTS):
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                value = (int(value),)
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
            ):
                raise ParamError(f"{where} must be a list of whole numbers, got {value!r}")
            value = tuple(int(v) for v in value)
            if t is ParamType.SHAPE and any(v <= 0 for v in value):
                raise ParamError(f"{where} must contain sizes ≥ 1, got {list(value)}")
            for v in value:
                self._check_int(where, v)
            return value
        if t is ParamType.TENSOR:
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise ParamError(f"{where} must be a number or nested lists of numbers") from None
            if not np.all(np.isfinite(arr)):
                raise ParamError(f"{where} must contain finite numbers only")
            return arr.tolist()
        raise AssertionError(t)

    def _check_int(self, where: str, value: int) -> None:
        """A declared range, else :data:`INT_LIMIT` either way: every whole-number param then
        fits the kernels' int64 and the editor's 32-bit spin boxes."""
        low = self.minimum if self.minimum is not None else -INT_LIMIT
        high = self.maximum if self.maximum is not None else INT_LIMIT

        def text(v: float) -> str:
            return f"{int(v):,}" if abs(v) < 1e15 else f"{v:.3g}"

        if value < low:
            raise ParamError(f"{where} must be ≥ {text(low)}, got {text(value)}")
        if value > high:
            raise ParamError(f"{where} must be ≤ {text(high)}, got {text(value)}")

    def _check_range(self, where: str, value: float) -> None:
        if self.minimum is not None and value < self.minimum:
            raise ParamError(f"{where} must be ≥ {self.minimum:g}, got {value:g}")
        if self.maximum is not None and value > self.maximum:
            raise ParamError(f"{where} must be ≤ {self.maximum:g}, got {value:g}")


@dataclass(frozen=True)
class WeightSpec:
    """A learned tensor: its name and a human-readable shape such as ``(d_in, d_out)``.

    ``trainable=False`` declares a buffer: saved and loaded with the weights, but it gets no
    gradient and no optimiser update (BatchNorm's running statistics)."""

    name: str
    shape: str
    doc: str = ""
    trainable: bool = True


@dataclass(frozen=True)
class Variant:
    """A palette entry that is a block with some params preset (LSTM = SequenceRNN cell=LSTM)."""

    label: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    """A shape example (docs) and a test case (the registry-generated tests run every one).

    Float inputs are drawn uniformly from ``ranges[port]`` (default (-1, 1)); integer inputs
    from ``range(*ranges[port])``; a port in ``choices`` draws from that list instead.
    ``training`` runs the example in training mode (see :class:`Context`)."""

    params: Mapping[str, Any]
    inputs: Mapping[str, tuple[int, ...]]
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    choices: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    training: bool = False

    def context(self, seed: int = 0) -> Context:
        """The context the example runs in."""
        return Context(training=self.training, seed=seed)

    def sample(self, block: "Block", rng: np.random.Generator, dtype: Any = np.float64) -> dict[str, np.ndarray]:
        kinds = {p.name: p.kind for p in block.input_ports()}
        out: dict[str, np.ndarray] = {}
        for port, shape in self.inputs.items():
            if port in self.choices:
                out[port] = rng.choice(np.asarray(self.choices[port]), size=shape).astype(dtype)
            elif kinds.get(port) is Kind.IDS:
                lo, hi = self.ranges.get(port, (0, 2))
                out[port] = rng.integers(int(lo), int(hi), size=shape).astype(np.int64)
            else:
                lo, hi = self.ranges.get(port, (-1.0, 1.0))
                out[port] = rng.uniform(lo, hi, size=shape).astype(dtype)
        return out


@dataclass(frozen=True)
class BlockSpec:
    """Everything the palette, inspector, docs and file loader need to know about a block type."""

    type_id: str
    version: int
    category: Category
    formula: str
    doc: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    params: tuple[Param, ...]
    weights: tuple[WeightSpec, ...]
    variants: tuple[Variant, ...]
    composite: bool
    examples: tuple[Example, ...]
    uses_context: bool = False  # computes differently in training and evaluation

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


class Block:
    """Base class of every block. Subclasses set the class attributes and implement the
    protocol methods; see the module docstring."""

    type_id: ClassVar[str] = ""
    version: ClassVar[int] = 1
    category: ClassVar[Category] = Category.MATH
    formula: ClassVar[str] = ""
    inputs: ClassVar[tuple[Port, ...]] = ()
    outputs: ClassVar[tuple[Port, ...]] = (Port("out"),)
    params: ClassVar[tuple[Param, ...]] = ()
    weights: ClassVar[tuple[WeightSpec, ...]] = ()
    variants: ClassVar[tuple[Variant, ...]] = ()
    composite: ClassVar[bool] = False
    examples: ClassVar[tuple[Example, ...]] = ()
    #: True when ``compute`` takes a :class:`Context` (it differs in training and evaluation).
    uses_context: ClassVar[bool] = False
    #: True for an elementwise block whose whole maths is a function of its input arrays (in the
    #: order of its ``inputs``): :meth:`forward_arrays` and :meth:`backward_arrays`, which its
    #: ``compute`` and ``vjp`` call. The execution plan (engine.plan) calls them directly, without
    #: the dicts of ``compute``/``vjp``: the same operations on the same arrays either way.
    array_form: ClassVar[bool] = False
    #: The name of the weight that is this block's one output ``out`` (Parameter), else "": the
    #: execution plan reads it from the runtime's weights and sends its gradient straight there.
    output_weight: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            choices = ", ".join(known) or "none"
            raise ParamError(
                f"{self.type_id} has no parameter {', '.join(repr(u) for u in unknown)} "
                f"(its parameters: {choices})"
            )
        values = {name: p.coerce(self.type_id, params.get(name, p.default)) for name, p in known.items()}
        self.p: Mapping[str, Any] = MappingProxyType(values)
        self.check_params()

    # --- declaration helpers -------------------------------------------------------------

    @classmethod
    def spec(cls) -> BlockSpec:
        doc = (cls.__doc__ or "").strip()
        return BlockSpec(
            cls.type_id, cls.version, cls.category, cls.formula, doc, cls.inputs, cls.outputs,
            cls.params, cls.weights, cls.variants, cls.composite, cls.examples, cls.uses_context,
        )

    def check_params(self) -> None:
        """Cross-parameter checks (raise :class:`ParamError` naming the parameter)."""

    def input_ports(self) -> tuple[Port, ...]:
        """The inputs this instance has (some depend on params, e.g. LSTM's ``c0``)."""
        return self.inputs

    def output_ports(self) -> tuple[Port, ...]:
        return self.outputs

    def output_kind(self, port: str) -> Kind:
        return self._port(self.output_ports(), port).kind

    def shared_weights(self) -> dict[str, tuple[str, str]]:
        """Weights borrowed from another node: ``{local_name: (node_id, weight_name)}``.
        The runtime passes the owner's array in and adds the gradient to the owner's."""
        return {}

    def shared_weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        """The shapes this block needs of its borrowed weights, ``{local_name: shape}``; the
        graph checks the owner's weight against them. Empty: no check beyond existence."""
        return {}

    def buffer_names(self, in_shapes: Mapping[str, Shape]) -> frozenset[str]:
        """The weights that are buffers (``trainable=False``): no gradient, no optimiser."""
        return frozenset(w.name for w in self.weights if not w.trainable)

    def expand(self) -> "Graph | None":
        """The inner graph of a composite block (None for primitives)."""
        return None

    @staticmethod
    def _port(ports: tuple[Port, ...], name: str) -> Port:
        for p in ports:
            if p.name == name:
                return p
        raise KeyError(name)

    # --- the protocol ----------------------------------------------------------------------

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        raise NotImplementedError

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {}

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        """Default initialisation: biases and ``beta`` zero, ``gamma`` one, matrices
        uniform in ±1/√fan_in (torch's ``nn.Linear`` rule). Blocks override where the
        lecture or torch says otherwise."""
        out: Arrays = {}
        for name, shape in self.weight_shapes(in_shapes).items():
            if name == "gamma":
                out[name] = np.ones(shape)
            elif name.startswith("b") and len(shape) == 1:
                out[name] = np.zeros(shape)
            else:
                bound = 1.0 / math.sqrt(max(1, shape[0]))
                out[name] = rng.uniform(-bound, bound, size=shape)
        return out

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        raise NotImplementedError

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        raise NotImplementedError

    def forward_arrays(self, *inputs: np.ndarray) -> np.ndarray:
        """``out`` from the input arrays, in the order of ``inputs`` (blocks with ``array_form``)."""
        raise NotImplementedError

    def backward_arrays(self, g: np.ndarray, *arrays: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """One gradient per input (in the order of ``inputs``, broadcast shape: the engine
        un-broadcasts) from the output's gradient ``g``, the inputs and the output ``out``
        (blocks with ``array_form``; ``vjp`` passes None for what it did not keep)."""
        raise NotImplementedError

    def forward(self, inputs: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
                context: Context | None = None) -> tuple[Arrays, dict[str, Any]]:
        """Run the block. Returns ``(outputs, saved)``; nothing is kept on ``self``.

        ``context`` (default: evaluation mode) matters only to blocks that set ``uses_context``."""
        if self.uses_context:
            outs, saved = self.compute(dict(inputs), dict(weights), context or EVAL)  # type: ignore[call-arg]
        else:
            outs, saved = self.compute(dict(inputs), dict(weights))
        saved = dict(saved)
        # NOTE: plain loops, not np.shape/np.asarray per entry: this runs once per node per pass,
        # and at lesson sizes the bookkeeping costs more than the arithmetic.
        saved["_in_shapes"], saved["_in_dtypes"] = shapes_and_dtypes(inputs)
        saved["_out_shapes"], saved["_out_dtypes"] = shapes_and_dtypes(outs)
        return outs, saved

    def backward(self, gout: Mapping[str, np.ndarray], saved: dict[str, Any], weights: Mapping[str, np.ndarray]) -> tuple[Arrays, Arrays]:
        """Gradients for every float input (input-shaped) and every weight (buffers excepted).

        Upstream gradients missing from ``gout`` count as zero."""
        full: Arrays = {}
        out_shapes, out_dtypes = saved["_out_shapes"], saved["_out_dtypes"]
        for port in self.output_ports():
            name = port.name
            if name not in out_shapes:
                continue
            g = gout.get(name)
            if g is not None and port.differentiable:
                full[name] = g
            else:
                full[name] = np.zeros(out_shapes[name], out_dtypes[name])
        gin, gw = self.vjp(full, saved, dict(weights))
        result: Arrays = {}
        in_shapes, in_dtypes = saved["_in_shapes"], saved["_in_dtypes"]
        for port in self.input_ports():
            name = port.name
            dtype = in_dtypes.get(name)
            if dtype is None or dtype.kind != "f":
                continue
            shape = in_shapes[name]
            g = gin.get(name)
            if g is None:
                result[name] = np.zeros(shape, dtype)
            else:
                if not (isinstance(g, np.ndarray) and g.dtype == dtype):
                    g = np.asarray(g, dtype)
                result[name] = g if g.shape == shape else unbroadcast(g, shape)
        grads_w: Arrays = {}
        buffers = self.buffer_names(saved["_in_shapes"])
        for name, w in weights.items():
            if name in buffers:
                continue  # buffers get no gradient
            g = gw.get(name)
            if g is None:
                grads_w[name] = np.zeros_like(w)
            elif isinstance(g, np.ndarray) and g.dtype == w.dtype and g.shape == w.shape:
                grads_w[name] = g
            else:
                grads_w[name] = np.asarray(g, w.dtype).reshape(w.shape)
        return result, grads_w

    # --- helpers for subclasses -------------------------------------------------------------

    def shape_error(self, message: str) -> ShapeError:
        return ShapeError(f"{self.type_id}: {message}")

    def require(self, in_shapes: Mapping[str, Shape], port: str, ndim: int | tuple[int, ...] | None = None, what: str = "") -> Shape:
        """Fetch the shape of a required input and check its rank."""
        if port not in in_shapes:
            raise self.shape_error(f"input '{port}' is not connected")
        shape = tuple(in_shapes[port])
        if ndim is not None:
            allowed = (ndim,) if isinstance(ndim, int) else ndim
            if len(shape) not in allowed:
                want = " or ".join(str(n) for n in allowed)
                hint = f" {what}" if what else ""
                raise self.shape_error(
                    f"input '{port}' must have {want} dimensions{hint}, got shape {shape_str(shape)}"
                )
        return shape

    def require_features(self, in_shapes: Mapping[str, Shape], port: str = "x") -> Shape:
        """The shape of an input of vectors on the last axis: at least one dimension, and at
        least one feature (a map from zero features would be its bias alone)."""
        shape = self.require(in_shapes, port)
        if not shape:
            raise self.shape_error(f"input '{port}' needs at least one dimension (the features), got a scalar ()")
        if shape[-1] == 0:
            raise self.shape_error(f"input '{port}' has no features: its last dimension is 0 (shape {shape_str(shape)})")
        return shape

    def expect_dim(self, port: str, shape: Shape, axis: int, expected: int, meaning: str = "") -> None:
        """Raise a ShapeError unless ``shape[axis] == expected``."""
        got = shape[axis]
        if got != expected:
            what = f" ({meaning})" if meaning else ""
            raise self.shape_error(
                f"input '{port}' dimension {axis % len(shape)}{what} should be {expected}, "
                f"got {got} (shape {shape_str(shape)})"
            )


def shapes_and_dtypes(arrays: Mapping[str, Any]) -> tuple[dict[str, Shape], dict[str, np.dtype]]:
    """The shape and dtype of every array (what a block's backward needs of its inputs and
    outputs); also used by the execution plan (engine/plan.py)."""
    shapes: dict[str, Shape] = {}
    dtypes: dict[str, np.dtype] = {}
    for k, v in arrays.items():
        if not isinstance(v, np.ndarray):
            v = np.asarray(v)
        shapes[k] = v.shape
        dtypes[k] = v.dtype
    return shapes, dtypes


def shape_str(shape: Shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def broadcast_shapes(block: Block, shapes: Mapping[str, Shape]) -> Shape:
    """numpy broadcasting of the named input shapes, with a message naming the dimension."""
    items = list(shapes.items())
    result: list[int] = []
    ndim = max(len(s) for _, s in items)
    for axis in range(-1, -ndim - 1, -1):
        size = 1
        owner = None
        for name, s in items:
            if -axis <= len(s) and s[axis] != 1:
                if size != 1 and s[axis] != size:
                    detail = ", ".join(f"{n} {shape_str(sh)}" for n, sh in items)
                    raise block.shape_error(
                        f"inputs cannot broadcast: dimension {axis} is {size} in '{owner}' but "
                        f"{s[axis]} in '{name}' ({detail})"
                    )
                size, owner = s[axis], name
        result.append(size)
    return tuple(reversed(result))


def unbroadcast(g: np.ndarray, shape: Shape) -> np.ndarray:
    """Sum ``g`` back down to ``shape`` (the inverse of numpy broadcasting), in one reduction."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra < 0:
        raise ValueError(f"gradient of shape {g.shape} cannot reduce to {shape}")
    axes = tuple(range(extra)) + tuple(i + extra for i, s in enumerate(shape) if s == 1 and g.shape[i + extra] != 1)
    return g.sum(axis=axes).reshape(shape)
