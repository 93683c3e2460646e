"""The backprop lecture's building blocks: data leaves and elementary operations."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import (
    Arrays,
    Block,
    Category,
    Example,
    Kind,
    Param,
    ParamType,
    Port,
    Shape,
    WeightSpec,
    broadcast_shapes,
    shape_str,
)
from engine.kernels import elementwise, softmax

# --- data leaves ----------------------------------------------------------------------------


@register
class Input(Block):
    """A named tensor fed from outside: data, a data set, the user.

    Its ``shape`` includes the batch dimension. The runtime passes the fed array in as
    ``inputs["value"]``. Example: shape (4, 3), dtype float → out (4, 3)."""

    type_id = "Input"
    category = Category.DATA
    formula = "out = fed data"
    inputs = ()
    params = (
        Param("shape", ParamType.SHAPE, (1, 1), "shape including the batch dimension"),
        Param("dtype", ParamType.CHOICE, "float", "float for real numbers, ids for token ids / class labels", choices=("float", "ids")),
    )
    examples = (Example({"shape": (2, 3)}, {}),)

    def output_kind(self, port: str) -> Kind:
        return Kind.IDS if self.p["dtype"] == "ids" else Kind.FLOAT

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"out": tuple(self.p["shape"])}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        if "value" not in inputs:
            # Standalone use (tests, docs): a zero tensor of the declared shape.
            dtype = np.int64 if self.p["dtype"] == "ids" else np.float64
            return {"out": np.zeros(self.p["shape"], dtype)}, {}
        return {"out": inputs["value"]}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        return {}, {}


@register
class Constant(Block):
    """A fixed tensor stored in the graph (no gradient is kept for it).

    Example: value [[1, 2], [3, 4]] → out (2, 2)."""

    type_id = "Constant"
    category = Category.DATA
    formula = "out = value"
    inputs = ()
    params = (Param("value", ParamType.TENSOR, 1.0, "a number or nested lists of numbers"),)
    examples = (Example({"value": [[1.0, 2.0], [3.0, 4.0]]}, {}),)

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"out": np.shape(self.p["value"])}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        return {"out": np.array(self.p["value"], dtype=np.float64)}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        return {}, {}


@register
class Parameter(Block):
    """A learned tensor: the lecture's red leaf ``w``. Its weight is ``value``.

    ``init`` picks the starting point: zeros, ones, normal(0, scale), uniform(±scale), or the
    explicit ``values``. Example: shape (3,) → out (3,)."""

    type_id = "Parameter"
    category = Category.DATA
    formula = "out = w (learned)"
    inputs = ()
    params = (
        Param("shape", ParamType.SHAPE, (1,), "shape of the learned tensor"),
        Param("init", ParamType.CHOICE, "normal", "how the tensor starts", choices=("zeros", "ones", "normal", "uniform", "values")),
        Param("scale", ParamType.FLOAT, 0.1, "standard deviation (normal) or half-width (uniform)", minimum=0.0,
              applies_when=("init", ("normal", "uniform"))),
        Param("values", ParamType.TENSOR, 0.0, "starting values when init is 'values' (broadcast to shape)",
              applies_when=("init", ("values",))),
    )
    weights = (WeightSpec("value", "shape", "the learned tensor"),)
    output_weight = "value"
    examples = (Example({"shape": (3,)}, {}), Example({"shape": (2, 2), "init": "values", "values": [[1, 2], [3, 4]]}, {}))

    def check_params(self) -> None:
        if self.p["init"] == "values":
            try:
                np.broadcast_to(np.asarray(self.p["values"]), self.p["shape"])
            except ValueError:
                from engine.errors import ParamError

                raise ParamError(
                    f"Parameter: parameter 'values' has shape {shape_str(np.shape(self.p['values']))}, "
                    f"which does not fit 'shape' {shape_str(self.p['shape'])}"
                ) from None

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"out": tuple(self.p["shape"])}

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"value": tuple(self.p["shape"])}

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        shape, init, scale = tuple(self.p["shape"]), self.p["init"], self.p["scale"]
        if init == "zeros":
            v = np.zeros(shape)
        elif init == "ones":
            v = np.ones(shape)
        elif init == "normal":
            v = rng.normal(0.0, scale, size=shape)
        elif init == "uniform":
            v = rng.uniform(-scale, scale, size=shape)
        else:
            v = np.broadcast_to(np.asarray(self.p["values"], dtype=np.float64), shape).copy()
        return {"value": v}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        return {"out": weights["value"]}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        return {}, {"value": gout["out"]}


# --- binary elementwise -----------------------------------------------------------------------


class _Binary(Block):
    """Elementwise ``a ∘ b`` with numpy broadcasting; the base un-broadcasts the gradients."""

    category = Category.MATH
    inputs = (Port("a"), Port("b"))
    examples = (
        Example({}, {"a": (2, 3), "b": (2, 3)}),
        Example({}, {"a": (2, 3), "b": (3,)}),
        Example({}, {"a": (4, 1), "b": (1, 3)}),
    )

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        a = self.require(in_shapes, "a")
        b = self.require(in_shapes, "b")
        return {"out": broadcast_shapes(self, {"a": a, "b": b})}


@register
class Add(_Binary):
    """Elementwise sum, broadcasting like numpy. Example: a (2, 3) + b (3,) → out (2, 3)."""

    type_id = "Add"
    formula = "out = a + b;  ∂/∂a = 1, ∂/∂b = 1"

    array_form = True

    def forward_arrays(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return a + b

    def backward_arrays(self, g: np.ndarray, *arrays: Any) -> tuple[np.ndarray, ...]:
        return g, g

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        return {"out": self.forward_arrays(inputs["a"], inputs["b"])}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        ga, gb = self.backward_arrays(gout["out"])
        return {"a": ga, "b": gb}, {}


@register
class Subtract(_Binary):
    """Elementwise difference. Example: a (2, 3) − b (2, 3) → out (2, 3)."""

    type_id = "Subtract"
    formula = "out = a − b;  ∂/∂a = 1, ∂/∂b = −1"

    array_form = True

    def forward_arrays(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return a - b

    def backward_arrays(self, g: np.ndarray, *arrays: Any) -> tuple[np.ndarray, ...]:
        return g, -g

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        return {"out": self.forward_arrays(inputs["a"], inputs["b"])}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        ga, gb = self.backward_arrays(gout["out"])
        return {"a": ga, "b": gb}, {}


@register
class Multiply(_Binary):
    """Elementwise product. Example: a (2, 3) ⊙ b (2, 3) → out (2, 3)."""

    type_id = "Multiply"
    formula = "out = a ⊙ b;  ∂/∂a = b, ∂/∂b = a"

    array_form = True

    def forward_arrays(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return a * b

    def backward_arrays(self, g: np.ndarray, *arrays: Any) -> tuple[np.ndarray, ...]:
        a, b, _ = arrays
        return g * b, g * a

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        a, b = inputs["a"], inputs["b"]
        return {"out": self.forward_arrays(a, b)}, {"a": a, "b": b}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        ga, gb = self.backward_arrays(gout["out"], saved["a"], saved["b"], None)
        return {"a": ga, "b": gb}, {}


@register
class Divide(_Binary):
    """Elementwise quotient. Example: a (2, 3) / b (2, 3) → out (2, 3)."""

    type_id = "Divide"
    formula = "out = a / b;  ∂/∂a = 1/b, ∂/∂b = −a/b²"
    examples = tuple(Example(e.params, e.inputs, {"b": (0.5, 2.0)}) for e in _Binary.examples)

    array_form = True

    def forward_arrays(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return a / b

    def backward_arrays(self, g: np.ndarray, *arrays: Any) -> tuple[np.ndarray, ...]:
        _, b, out = arrays
        return g / b, -g * out / b

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        out = self.forward_arrays(inputs["a"], inputs["b"])
        return {"out": out}, {"b": inputs["b"], "out": out}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        ga, gb = self.backward_arrays(gout["out"], None, saved["b"], saved["out"])
        return {"a": ga, "b": gb}, {}


@register
class Max(_Binary):
    """Elementwise maximum. Example: max(a (2, 3), b (2, 3)) → out (2, 3)."""

    type_id = "Max"
    formula = "out = max(a, b);  ∂/∂a = 1[a ≥ b], ∂/∂b = 1[a < b]"

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        a, b = inputs["a"], inputs["b"]
        # NOTE: a tie sends the gradient to a, as the lecture's subgradient does.
        take_a = a >= b
        return {"out": np.where(take_a, a, b)}, {"take_a": take_a}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        g, take_a = gout["out"], saved["take_a"]
        return {"a": np.where(take_a, g, 0), "b": np.where(take_a, 0, g)}, {}


@register
class MatMul(Block):
    """Matrix product, batched over leading axes like numpy's ``@``.

    Both inputs need at least 2 dimensions (use Dot for vectors).
    Example: a (2, 4, 3) @ b (3, 5) → out (2, 4, 5)."""

    type_id = "MatMul"
    category = Category.MATH
    formula = "out = a @ b;  ∂/∂a = g bᵀ, ∂/∂b = aᵀ g"
    inputs = (Port("a"), Port("b"))
    examples = (Example({}, {"a": (4, 3), "b": (3, 5)}), Example({}, {"a": (2, 4, 3), "b": (3, 5)}), Example({}, {"a": (2, 1, 4, 3), "b": (3, 3, 2)}))

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        a = self.require(in_shapes, "a")
        b = self.require(in_shapes, "b")
        for port, s in (("a", a), ("b", b)):
            if len(s) < 2:
                raise self.shape_error(f"input '{port}' must have at least 2 dimensions, got {shape_str(s)}; use Dot for vectors")
        if a[-1] != b[-2]:
            raise self.shape_error(
                f"inner dimensions differ: 'a' has {a[-1]} columns (shape {shape_str(a)}) but 'b' has "
                f"{b[-2]} rows (shape {shape_str(b)})"
            )
        batch = broadcast_shapes(self, {"a": a[:-2], "b": b[:-2]}) if (len(a) > 2 or len(b) > 2) else ()
        return {"out": (*batch, a[-2], b[-1])}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        a, b = inputs["a"], inputs["b"]
        return {"out": a @ b}, {"a": a, "b": b}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        g, a, b = gout["out"], saved["a"], saved["b"]
        return {"a": g @ np.swapaxes(b, -1, -2), "b": np.swapaxes(a, -1, -2) @ g}, {}


@register
class Dot(Block):
    """Inner product over the last axis (the lecture's ``w · φ(x)``), broadcasting elsewhere.

    Example: a (4, 3) · b (3,) → out (4,)."""

    type_id = "Dot"
    category = Category.MATH
    formula = "out = Σ_k a_k b_k;  ∂/∂a = g b, ∂/∂b = g a"
    inputs = (Port("a"), Port("b"))
    examples = (Example({}, {"a": (3,), "b": (3,)}), Example({}, {"a": (4, 3), "b": (3,)}), Example({}, {"a": (2, 4, 3), "b": (2, 1, 3)}))

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        a = self.require(in_shapes, "a")
        b = self.require(in_shapes, "b")
        if not a or not b:
            raise self.shape_error("inputs need at least one dimension to take a dot product over")
        if a[-1] != b[-1]:
            raise self.shape_error(
                f"last dimensions differ: 'a' has {a[-1]} (shape {shape_str(a)}) but 'b' has {b[-1]} (shape {shape_str(b)})"
            )
        return {"out": broadcast_shapes(self, {"a": a[:-1], "b": b[:-1]}) if (len(a) > 1 or len(b) > 1) else ()}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        a, b = inputs["a"], inputs["b"]
        return {"out": np.sum(a * b, axis=-1)}, {"a": a, "b": b}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        g = np.asarray(gout["out"])[..., None]
        return {"a": g * saved["b"], "b": g * saved["a"]}, {}


# --- unary elementwise -----------------------------------------------------------------------


class _Unary(Block):
    category = Category.MATH
    inputs = (Port("a"),)
    examples = (Example({}, {"a": (2, 3)}), Example({}, {"a": (5,)}), Example({}, {"a": ()}))

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"out": self.require(in_shapes, "a")}


class _Activation(_Unary):
    """An activation with a fused Numba kernel (engine.kernels.elementwise)."""

    kernel_name = ""
    array_form = True

    def forward_arrays(self, a: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return elementwise.activation(self.kernel_name, a)

    def backward_arrays(self, g: np.ndarray, *arrays: Any) -> tuple[np.ndarray, ...]:
        a, out = arrays
        return (elementwise.activation_grad(self.kernel_name, a, out, g),)

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        a = inputs["a"]
        out = self.forward_arrays(a)
        return {"out": out}, {"a": a, "out": out}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        (ga,) = self.backward_arrays(gout["out"], saved["a"], saved["out"])
        return {"a": ga}, {}


@register
class Sigmoid(_Activation):
    """The logistic function. Example: a (2, 3) → out (2, 3)."""

    type_id = "Sigmoid"
    formula = "σ(a) = 1/(1+e^(−a));  ∂/∂a = σ(a)(1−σ(a))"
    kernel_name = "sigmoid"
    examples = (Example({}, {"a": (2, 3)}, {"a": (-4.0, 4.0)}), Example({}, {"a": ()}, {"a": (-4.0, 4.0)}))


@register
class Tanh(_Activation):
    """Hyperbolic tangent. Example: a (2, 3) → out (2, 3)."""

    type_id = "Tanh"
    formula = "tanh(a);  ∂/∂a = 1 − tanh²(a)"
    kernel_name = "tanh"


@register
class ReLU(_Activation):
    """Rectified linear unit. Example: a (2, 3) → out (2, 3)."""

    type_id = "ReLU"
    formula = "max(a, 0);  ∂/∂a = 1[a > 0]"
    kernel_name = "relu"


@register
class GELU(_Activation):
    """Gaussian error linear unit, exact erf form. Example: a (2, 3) → out (2, 3)."""

    type_id = "GELU"
    formula = "a·Φ(a);  ∂/∂a = Φ(a) + a·φ(a)"
    kernel_name = "gelu"
    examples = (Example({}, {"a": (2, 3)}, {"a": (-3.0, 3.0)}), Example({}, {"a": ()}, {"a": (-3.0, 3.0)}))


@register
class Square(_Unary):
    """Elementwise square. Example: a (2, 3) → out (2, 3)."""

    type_id = "Square"
    formula = "a²;  ∂/∂a = 2a"

    array_form = True

    def forward_arrays(self, a: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return a * a

    def backward_arrays(self, g: np.ndarray, *arrays: Any) -> tuple[np.ndarray, ...]:
        return (2 * arrays[0] * g,)

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        return {"out": self.forward_arrays(inputs["a"])}, {"a": inputs["a"]}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        (ga,) = self.backward_arrays(gout["out"], saved["a"], None)
        return {"a": ga}, {}


@register
class Negate(_Unary):
    """Change the sign: micrograd's ``-a``. Example: a (2, 3) → out (2, 3)."""

    type_id = "Negate"
    formula = "−a;  ∂/∂a = −1"

    array_form = True

    def forward_arrays(self, a: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return np.negative(a)

    def backward_arrays(self, g: np.ndarray, *arrays: Any) -> tuple[np.ndarray, ...]:
        return (np.negative(g),)

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        return {"out": self.forward_arrays(inputs["a"])}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        (ga,) = self.backward_arrays(gout["out"])
        return {"a": ga}, {}


@register
class Pow(_Unary):
    """Raise to a fixed power ``exponent`` p, any real number: a², a³, √a (p = 0.5), 1/a (p = −1).

    As in torch: 0^p is inf for p < 0; a negative base with a fractional p gives NaN; the
    gradient p·a^(p−1) is 0 when p = 0 (also at a = 0), and at a = 0 it is 0 for p > 1, 1 for
    p = 1 and ±inf for p < 1. Example: exponent 3, a (2, 3) → out (2, 3)."""

    type_id = "Pow"
    formula = "a^p;  ∂/∂a = p·a^(p−1)"
    params = (Param("exponent", ParamType.FLOAT, 2.0, "the power p (integer, fractional or negative)"),)
    examples = (
        Example({"exponent": 3.0}, {"a": (2, 3)}, {"a": (-2.0, 2.0)}),
        Example({"exponent": -1.5}, {"a": (4,)}, {"a": (0.5, 3.0)}),
        Example({"exponent": 0.5}, {"a": (2, 2)}, {"a": (0.2, 4.0)}),
        Example({"exponent": -2.0}, {"a": ()}, {"a": (0.5, 2.0)}),
        Example({"exponent": 0.0}, {"a": (3,)}),
    )

    array_form = True

    def forward_arrays(self, a: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return elementwise.power(a, self.p["exponent"])

    def backward_arrays(self, g: np.ndarray, *arrays: Any) -> tuple[np.ndarray, ...]:
        return (elementwise.power_grad(arrays[0], self.p["exponent"], g),)

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        a = inputs["a"]
        return {"out": self.forward_arrays(a)}, {"a": a}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        (ga,) = self.backward_arrays(gout["out"], saved["a"], None)
        return {"a": ga}, {}


@register
class Exp(_Unary):
    """Elementwise exponential. Example: a (2, 3) → out (2, 3)."""

    type_id = "Exp"
    formula = "eᵃ;  ∂/∂a = eᵃ"

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        with np.errstate(over="ignore"):  # overflow is reported as Inf by the runtime
            out = np.exp(inputs["a"])
        return {"out": out}, {"out": out}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        return {"a": gout["out"] * saved["out"]}, {}


@register
class Log(_Unary):
    """Natural logarithm (of positive numbers). Example: a (2, 3) → out (2, 3).

    NOTE: Log(Softmax(x)) underflows: where one score leads another by more than about 745
    (float64; about 104 in float32), softmax rounds that one's probability to 0 and its log is
    −∞. LogSoftmax computes the same thing exactly; use it (or CrossEntropy on the scores)."""

    type_id = "Log"
    formula = "ln a;  ∂/∂a = 1/a"
    examples = (Example({}, {"a": (2, 3)}, {"a": (0.5, 3.0)}),)

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        with np.errstate(divide="ignore", invalid="ignore"):  # log of ≤ 0 shows up as NaN/−Inf
            out = np.log(inputs["a"])
        return {"out": out}, {"a": inputs["a"]}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        with np.errstate(divide="ignore", invalid="ignore"):
            return {"a": gout["out"] / saved["a"]}, {}


@register
class Scale(_Unary):
    """Multiply by a fixed number. Example: a (2, 3) → out (2, 3)."""

    type_id = "Scale"
    formula = "a · factor;  ∂/∂a = factor"
    params = (Param("factor", ParamType.FLOAT, 1.0, "the multiplier"),)
    examples = (Example({"factor": -2.5}, {"a": (2, 3)}),)

    array_form = True

    def forward_arrays(self, a: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return a * a.dtype.type(self.p["factor"])

    def backward_arrays(self, g: np.ndarray, *arrays: Any) -> tuple[np.ndarray, ...]:
        return (g * g.dtype.type(self.p["factor"]),)

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        return {"out": self.forward_arrays(inputs["a"])}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        (ga,) = self.backward_arrays(gout["out"])
        return {"a": ga}, {}


@register
class Softmax(_Unary):
    """Softmax over the last axis, max-subtracted. Example: a (2, 5) → out (2, 5).

    An empty last axis gives an empty result. NOTE: probabilities smaller than the float's
    tiniest number round to 0, so Log(Softmax(a)) gives −∞ at large score gaps (1e4, say);
    LogSoftmax, or CrossEntropy on the scores, stays exact there."""

    type_id = "Softmax"
    formula = "softmax(a)_i = e^(a_i)/Σ_j e^(a_j);  ∂ = s ⊙ (g − Σ g⊙s)"
    examples = (Example({}, {"a": (2, 5)}), Example({}, {"a": (2, 3, 4)}, {"a": (-3.0, 3.0)}))

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"out": self.require(in_shapes, "a", ndim=tuple(range(1, 9)))}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        out = softmax.softmax(inputs["a"])
        return {"out": out}, {"out": out}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        return {"a": softmax.softmax_grad(saved["out"], gout["out"])}, {}


@register
class LogSoftmax(_Unary):
    """Log of the softmax over the last axis, computed stably as a − max − log Σ e^(a − max):
    exact at any score gap, where Log(Softmax(a)) gives −∞. Feed it to NLLLoss.

    Matches ``torch.log_softmax(a, -1)``. Example: a (2, 5) → out (2, 5)."""

    type_id = "LogSoftmax"
    formula = "a_i − log Σ_j e^(a_j);  ∂ = g − softmax(a)·Σ g"
    examples = (Example({}, {"a": (2, 5)}), Example({}, {"a": (2, 3, 4)}, {"a": (-3.0, 3.0)}), Example({}, {"a": (1,)}))

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"out": self.require(in_shapes, "a", ndim=tuple(range(1, 9)))}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        out = softmax.log_softmax(inputs["a"])
        return {"out": out}, {"out": out}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        return {"a": softmax.log_softmax_grad(saved["out"], gout["out"])}, {}


# --- reductions ----------------------------------------------------------------------------------


class _Reduce(_Unary):
    params = (
        Param("axes", ParamType.INTS, (), "axes to reduce (empty: all of them); negative counts from the end"),
        Param("keepdims", ParamType.BOOL, False, "keep reduced axes with size 1"),
    )
    examples = (
        Example({}, {"a": (2, 3)}),
        Example({"axes": (1,)}, {"a": (2, 3, 4)}),
        Example({"axes": (0, -1), "keepdims": True}, {"a": (2, 3, 4)}),
    )

    def _axes(self, ndim: int) -> tuple[int, ...]:
        axes = self.p["axes"] or tuple(range(ndim))
        bad = [a for a in axes if not -ndim <= a < ndim]
        if bad:
            raise self.shape_error(f"parameter 'axes' names axis {bad[0]}, but input 'a' has only {ndim} dimensions")
        return tuple(sorted({a % ndim for a in axes}))

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        a = self.require(in_shapes, "a")
        axes = self._axes(len(a))
        if self.p["keepdims"]:
            return {"out": tuple(1 if i in axes else s for i, s in enumerate(a))}
        return {"out": tuple(s for i, s in enumerate(a) if i not in axes)}

    def _count(self, shape: Shape) -> int:
        n = 1
        for i in self._axes(len(shape)):
            n *= shape[i]
        return n

    def _expand(self, g: np.ndarray, shape: Shape) -> np.ndarray:
        axes = self._axes(len(shape))
        if not self.p["keepdims"]:
            g = np.expand_dims(g, axes)
        return np.broadcast_to(g, shape)


@register
class Sum(_Reduce):
    """Sum over ``axes`` (default all). Example: a (2, 3, 4), axes [1] → out (2, 4)."""

    type_id = "Sum"
    formula = "Σ a over axes;  ∂/∂a = g broadcast back"

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        a = inputs["a"]
        return {"out": np.sum(a, axis=self._axes(a.ndim), keepdims=self.p["keepdims"])}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        return {"a": self._expand(gout["out"], saved["_in_shapes"]["a"])}, {}


@register
class Mean(_Reduce):
    """Mean over ``axes`` (default all). Example: a (2, 3, 4), axes [1] → out (2, 4).

    The mean over an empty axis is NaN, as in torch (0/0), and shows as a NaN in the run."""

    type_id = "Mean"
    formula = "mean of a over axes;  ∂/∂a = g / n broadcast back"

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        a = inputs["a"]
        axes = self._axes(a.ndim)
        if not self._count(a.shape):  # the mean of nothing is NaN (as torch), not a warning
            shape = self.infer_shapes({"a": a.shape})["out"]
            return {"out": np.full(shape, np.nan, a.dtype)}, {}
        return {"out": np.mean(a, axis=axes, keepdims=self.p["keepdims"])}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        shape = saved["_in_shapes"]["a"]
        g = gout["out"]
        n = self._count(shape)
        if not n:
            return {"a": np.zeros(shape, g.dtype)}, {}  # an empty input has an empty gradient
        return {"a": self._expand(g / g.dtype.type(n), shape)}, {}
