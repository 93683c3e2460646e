"""micrograd's two test expressions (karpathy/micrograd, test/test_engine.py: test_sanity_check
and test_more_ops), rebuilt as graphs of scalar (0-d) leaves, node by node as they read; values
and gradients equal torch's in float64, and the figures micrograd's README quotes.

Also the lecture's one-example loss (σ(w·φ(x)) − y)², which used to pass shape inference and
then fail at run time because Sigmoid turned its 0-d input into shape (1,).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.graph import Graph
from engine.runtime import Runtime


class Expr:
    """Builds a graph the way micrograd's Value operators build theirs: each operation is a node."""

    def __init__(self) -> None:
        self.graph = Graph()
        self.count = 0

    def node(self, type_id: str, params: dict[str, Any] | None = None, **inputs: str) -> str:
        self.count += 1
        n = self.graph.add_node(type_id, params or {}, name=f"{type_id.lower()}{self.count}")
        for port, src in inputs.items():
            self.graph.connect(src, "out", n.id, port)
        return n.id

    def leaf(self, value: float) -> str:
        """A learned scalar: micrograd's Value(data)."""
        return self.node("Parameter", {"shape": (), "init": "values", "values": value})

    def const(self, value: float) -> str:
        return self.node("Constant", {"value": value})

    def add(self, a: str, b: str) -> str:
        return self.node("Add", a=a, b=b)

    def sub(self, a: str, b: str) -> str:
        return self.node("Subtract", a=a, b=b)

    def mul(self, a: str, b: str) -> str:
        return self.node("Multiply", a=a, b=b)

    def div(self, a: str, b: str) -> str:
        return self.node("Divide", a=a, b=b)

    def pow(self, a: str, p: float) -> str:
        return self.node("Pow", {"exponent": p}, a=a)

    def neg(self, a: str) -> str:
        return self.node("Negate", a=a)

    def relu(self, a: str) -> str:
        return self.node("ReLU", a=a)

    def run(self, out: str) -> tuple[Runtime, Any]:
        runtime = Runtime(self.graph, dtype=np.float64)
        return runtime, runtime.forward_backward({}, out)


def _value(p, node: str) -> float:
    v = p.values[(node, "out")]
    assert v.shape == () and v.dtype == np.float64
    return float(v)


def _grad(p, node: str) -> float:
    g = p.weight_gradients()[node]["value"]
    assert g.shape == ()
    return float(g)


def sanity_check() -> tuple[Expr, str, str]:
    e = Expr()
    x = e.leaf(-4.0)
    z = e.add(e.add(e.mul(e.const(2.0), x), e.const(2.0)), x)  # z = 2 * x + 2 + x
    q = e.add(e.relu(z), e.mul(z, x))  # q = z.relu() + z * x
    h = e.relu(e.mul(z, z))  # h = (z * z).relu()
    y = e.add(e.add(h, q), e.mul(q, x))  # y = h + q + q * x
    return e, x, y


def more_ops() -> tuple[Expr, str, str, str]:
    e = Expr()
    a, b = e.leaf(-4.0), e.leaf(2.0)
    one = e.const(1.0)
    c = e.add(a, b)  # c = a + b
    d = e.add(e.mul(a, b), e.pow(b, 3))  # d = a * b + b**3
    c = e.add(e.add(c, c), one)  # c = c + c + 1
    c = e.add(e.add(e.add(c, one), c), e.neg(a))  # c = c + 1 + c + (-a)
    d = e.add(e.add(d, e.mul(d, e.const(2.0))), e.relu(e.add(b, a)))  # d = d + d * 2 + (b + a).relu()
    d = e.add(e.add(d, e.mul(e.const(3.0), d)), e.relu(e.sub(b, a)))  # d = d + 3 * d + (b - a).relu()
    f = e.pow(e.sub(c, d), 2)  # e = c - d; f = e**2
    g = e.div(f, e.const(2.0))  # g = f / 2.0
    g = e.add(g, e.div(e.const(10.0), f))  # g = g + 10.0 / f
    return e, a, b, g


def test_the_graphs_are_made_of_scalars_and_the_operators_as_written():
    e, _, _, g = more_ops()
    report = e.graph.infer()
    assert report.ok and all(shape == () for shape in report.shapes.values())
    types = sorted(n.type for n in e.graph.nodes.values())
    assert {"Pow", "Negate", "ReLU", "Divide", "Subtract"} <= set(types)
    assert types.count("Pow") == 2 and types.count("Negate") == 1


def test_more_ops_prints_micrograds_readme_figures():
    e, a, b, g = more_ops()
    _, p = e.run(g)
    # README: prints 24.7041 (forward), 138.8338 (dg/da), 645.5773 (dg/db)
    assert f"{_value(p, g):.4f}" == "24.7041"
    assert f"{_grad(p, a):.4f}" == "138.8338"
    assert f"{_grad(p, b):.4f}" == "645.5773"


@pytest.mark.torch
def test_sanity_check_equals_torch():
    torch = pytest.importorskip("torch")
    e, x, y = sanity_check()
    _, p = e.run(y)
    xt = torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)
    zt = 2 * xt + 2 + xt
    qt = zt.relu() + zt * xt
    ht = (zt * zt).relu()
    yt = ht + qt + qt * xt
    yt.backward()
    assert _value(p, y) == pytest.approx(yt.item(), rel=1e-10, abs=1e-10)
    assert _grad(p, x) == pytest.approx(xt.grad.item(), rel=1e-10, abs=1e-10)
    assert _value(p, y) == -20.0 and _grad(p, x) == 46.0  # both exact: small whole numbers throughout


@pytest.mark.torch
def test_more_ops_equals_torch():
    torch = pytest.importorskip("torch")
    e, a, b, g = more_ops()
    _, p = e.run(g)
    at = torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    ct = at + bt
    dt = at * bt + bt**3
    ct = ct + ct + 1
    ct = ct + 1 + ct + (-at)
    dt = dt + dt * 2 + (bt + at).relu()
    dt = dt + 3 * dt + (bt - at).relu()
    ft = (ct - dt) ** 2
    gt = ft / 2.0
    gt = gt + 10.0 / ft
    gt.backward()
    assert _value(p, g) == pytest.approx(gt.item(), rel=1e-10, abs=1e-10)
    assert _grad(p, a) == pytest.approx(at.grad.item(), rel=1e-10, abs=1e-10)
    assert _grad(p, b) == pytest.approx(bt.grad.item(), rel=1e-10, abs=1e-10)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_lectures_one_example_loss_runs_on_scalars(dtype):
    """(σ(w·φ(x)) − y)² for one example: Dot gives (), Sigmoid must keep it ()."""
    torch = pytest.importorskip("torch")
    g = Graph()
    phi = g.add_node("Input", {"shape": (3,)}, name="φ(x)")
    y = g.add_node("Input", {"shape": ()}, name="y")
    w = g.add_node("Parameter", {"shape": (3,), "init": "values", "values": [0.5, -1.0, 2.0]}, name="w")
    dot = g.add_node("Dot", name="score")
    sig = g.add_node("Sigmoid", name="σ")
    sub = g.add_node("Subtract", name="residual")
    sq = g.add_node("Square", name="loss")
    g.connect(w.id, "out", dot.id, "a")
    g.connect(phi.id, "out", dot.id, "b")
    g.connect(dot.id, "out", sig.id, "a")
    g.connect(sig.id, "out", sub.id, "a")
    g.connect(y.id, "out", sub.id, "b")
    g.connect(sub.id, "out", sq.id, "a")
    assert g.infer().shapes[(sq.id, "out")] == ()
    runtime = Runtime(g, dtype=dtype)
    p = runtime.forward_backward({"φ(x)": np.array([1.0, 2.0, 0.25]), "y": np.array(1.0)}, "loss")
    assert p.values[(sig.id, "out")].shape == () and p.values[(sq.id, "out")].shape == ()
    wt = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    loss = (torch.sigmoid(wt @ torch.tensor([1.0, 2.0, 0.25], dtype=torch.float64)) - 1.0) ** 2
    loss.backward()
    tol = 1e-10 if dtype == np.float64 else 1e-6
    assert float(p.values[(sq.id, "out")]) == pytest.approx(loss.item(), rel=tol)
    np.testing.assert_allclose(p.weight_gradients()[w.id]["value"], wt.grad.numpy(), rtol=tol, atol=tol)
