"""The graph model and the runtime: validation messages, fan-out, diamonds, broadcasting, order."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import (
    CycleError,
    GraphError,
    ParamError,
    PortError,
    PortKindError,
    PortOccupiedError,
    ShapeError,
    UnknownBlockError,
)
from engine.gradcheck import check_graph
from engine.graph import Graph
from engine.runtime import Runtime


def chain(g: Graph, *specs):
    return [g.add_node(t, p, name=n) for t, p, n in specs]


def test_unknown_block_and_param_are_named():
    g = Graph()
    with pytest.raises(UnknownBlockError, match="'Frobnicate'"):
        g.add_node("Frobnicate")
    with pytest.raises(ParamError, match=r"Scale has no parameter 'fator' \(its parameters: factor\)"):
        g.add_node("Scale", {"fator": 2})
    with pytest.raises(ParamError, match=r"Input: parameter 'shape' must contain sizes ≥ 1, got \[2, 0\]"):
        g.add_node("Input", {"shape": [2, 0]})
    assert not g.nodes and g.revision == 0


def test_cycle_is_refused_naming_every_node_on_it():
    g = Graph()
    x, a, b, c = chain(g, ("Input", {"shape": (2,)}, "x"), ("Add", {}, "a"), ("Tanh", {}, "b"), ("Square", {}, "c"))
    g.connect(x.id, "out", a.id, "a")
    g.connect(a.id, "out", b.id, "a")
    g.connect(b.id, "out", c.id, "a")
    before = (list(g.links), g.revision)
    with pytest.raises(CycleError) as err:
        g.connect(c.id, "out", a.id, "b")
    assert str(err.value) == "this link would make a cycle: 'a' → 'b' → 'c' → 'a'; a graph must flow one way"
    assert err.value.cycle == ["'a'", "'b'", "'c'", "'a'"]
    assert (list(g.links), g.revision) == before
    with pytest.raises(CycleError, match="to itself"):
        g.connect(b.id, "out", b.id, "a")


def test_shape_mismatch_names_port_dimension_expected_and_got():
    g = Graph()
    x, y, m = chain(g, ("Input", {"shape": (4, 3)}, "x"), ("Input", {"shape": (3, 5)}, "y"), ("MatMul", {}, "mm"))
    g.connect(x.id, "out", m.id, "b")
    with pytest.raises(ShapeError) as err:
        g.connect(y.id, "out", m.id, "a")
    assert str(err.value) == (
        "'mm' (MatMul): inner dimensions differ: 'a' has 5 columns (shape (3, 5)) but 'b' has 4 rows (shape (4, 3))"
    )
    assert g.link_into(m.id, "a") is None
    z = g.add_node("Input", {"shape": (2, 3)}, name="z")
    add = g.add_node("Add", name="sum")
    g.connect(x.id, "out", add.id, "a")
    with pytest.raises(ShapeError, match=r"cannot broadcast: dimension -2 is 4 in 'a' but 2 in 'b'"):
        g.connect(z.id, "out", add.id, "b")


def test_port_kind_occupied_and_missing_ports():
    g = Graph()
    ids, x, s, t = chain(g, ("Input", {"shape": (2, 3), "dtype": "ids"}, "ids"), ("Input", {"shape": (2, 3)}, "x"), ("Sigmoid", {}, "s"), ("Tanh", {}, "t"))
    with pytest.raises(PortKindError, match=r"'s' input 'a' takes real numbers, but 'ids' output 'out' gives token ids"):
        g.connect(ids.id, "out", s.id, "a")
    g.connect(x.id, "out", s.id, "a")
    with pytest.raises(PortOccupiedError, match="already connected to 'x' 'out'"):
        g.connect(t.id, "out", s.id, "a")
    with pytest.raises(PortError, match=r"'s' has no input 'b' \(inputs: a\)"):
        g.connect(x.id, "out", s.id, "b")
    # Dropping on an occupied input replaces the old link, returning it (for one undo step).
    g.connect(x.id, "out", t.id, "a")
    new, old = g.connect(t.id, "out", s.id, "a", replace=True)
    assert old.src == x.id and g.link_into(s.id, "a") == new


def test_param_change_that_breaks_shapes_is_reported_on_the_node():
    g = Graph()
    x, w, d = chain(g, ("Input", {"shape": (4, 3)}, "x"), ("Parameter", {"shape": (3,)}, "w"), ("Dot", {}, "d"))
    g.connect(x.id, "out", d.id, "a")
    g.connect(w.id, "out", d.id, "b")
    assert g.infer().ok
    g.set_params(w.id, {"shape": (5,)})
    report = g.infer()
    assert report.errors[d.id].startswith("Dot: last dimensions differ: 'a' has 3")
    with pytest.raises(ShapeError, match=r"^'d' \(Dot\): last dimensions differ"):
        Runtime(g)
    with pytest.raises(ParamError):
        g.set_params(w.id, {"shape": "big"})
    assert g.nodes[w.id].params["shape"] == (5,)


def test_unconnected_input_is_reported_by_compile():
    g = Graph()
    x, a = chain(g, ("Input", {"shape": (2,)}, "x"), ("Add", {}, "plus"))
    g.connect(x.id, "out", a.id, "a")
    assert a.id in g.infer().incomplete
    with pytest.raises(GraphError, match="'plus': input 'b' is not connected"):
        Runtime(g)


def _diamond():
    """x → (sq, tanh) → add → mean: x fans out to two branches that meet again."""
    g = Graph()
    x, sq, th, add, mean = chain(
        g, ("Input", {"shape": (3,)}, "x"), ("Square", {}, "sq"), ("Tanh", {}, "th"), ("Add", {}, "add"), ("Sum", {}, "loss"),
    )
    g.connect(x.id, "out", sq.id, "a")
    g.connect(x.id, "out", th.id, "a")
    g.connect(sq.id, "out", add.id, "a")
    g.connect(th.id, "out", add.id, "b")
    g.connect(add.id, "out", mean.id, "a")
    return g, x, mean


def test_fan_out_gradients_are_summed_in_a_diamond():
    g, x, loss = _diamond()
    r = Runtime(g, dtype=np.float64)
    xv = np.array([0.5, -1.0, 2.0])
    p = r.forward_backward({"x": xv}, "loss")
    np.testing.assert_allclose(p.values[(loss.id, "out")], np.sum(xv**2 + np.tanh(xv)))
    np.testing.assert_allclose(p.grads[(x.id, "out")], 2 * xv + 1 - np.tanh(xv) ** 2)


def test_self_fan_out_into_both_inputs_of_one_node():
    g = Graph()
    x, m, s = chain(g, ("Input", {"shape": (3,)}, "x"), ("Multiply", {}, "xx"), ("Sum", {}, "loss"))
    g.connect(x.id, "out", m.id, "a")
    g.connect(x.id, "out", m.id, "b")
    g.connect(m.id, "out", s.id, "a")
    xv = np.array([1.0, -2.0, 3.0])
    p = Runtime(g, dtype=np.float64).forward_backward({"x": xv}, "loss")
    np.testing.assert_allclose(p.grads[(x.id, "out")], 2 * xv)


def test_broadcasting_gradients_are_summed_back_to_the_input_shape():
    g = Graph()
    x, b, add, s = chain(g, ("Input", {"shape": (4, 3)}, "x"), ("Parameter", {"shape": (3,)}, "bias"), ("Add", {}, "add"), ("Sum", {}, "loss"))
    g.connect(x.id, "out", add.id, "a")
    g.connect(b.id, "out", add.id, "b")
    g.connect(add.id, "out", s.id, "a")
    r = Runtime(g, dtype=np.float64)
    p = r.forward_backward({"x": np.ones((4, 3))}, "loss")
    grads = p.weight_gradients()
    np.testing.assert_array_equal(grads[b.id]["value"], [4.0, 4.0, 4.0])
    assert p.grads[(x.id, "out")].shape == (4, 3)
    assert all(c.error < 1e-6 for c in check_graph(r, {"x": np.ones((4, 3))}, "loss"))


def test_step_mode_visits_topological_then_reverse_order():
    g, x, loss = _diamond()
    r = Runtime(g, dtype=np.float64)
    events = list(r.steps({"x": np.array([0.1, 0.2, 0.3])}, "loss"))
    forward = [e.label for e in events if e.phase == "forward"]
    backward = [e.label for e in events if e.phase == "backward"]
    assert forward == ["'x'", "'sq'", "'th'", "'add'", "'loss'"]
    assert backward == list(reversed(forward))
    assert [e.index for e in events if e.phase == "backward"] == list(range(5))
    last = events[-1]
    assert last.outputs["out"].shape == (3,) and last.outputs["out"].finite
    first_back = events[5]
    assert first_back.outputs["out"].norm == 1.0 and first_back.inputs["a"].shape == (3,)
    assert all(e.seconds >= 0 for e in events)
    # Nodes that do not reach the loss get no backward event.
    extra = g.add_node("Exp", name="unused")
    g.connect(x.id, "out", extra.id, "a")
    labels = [e.label for e in Runtime(g).steps({"x": np.zeros(3)}, "loss") if e.phase == "backward"]
    assert "'unused'" not in labels


def test_topological_order_is_cached_per_revision():
    g, _, _ = _diamond()
    first = g.topological_order()
    assert g.topological_order() is first
    g.add_node("Input", {"shape": (1,)})
    assert g.topological_order() is not first


def test_nan_is_located_at_the_first_bad_node():
    from engine.errors import NonFiniteError

    g = Graph()
    x, lg, s = chain(g, ("Input", {"shape": (2,)}, "x"), ("Log", {}, "log"), ("Sum", {}, "loss"))
    g.connect(x.id, "out", lg.id, "a")
    g.connect(lg.id, "out", s.id, "a")
    r = Runtime(g, dtype=np.float64)
    with pytest.raises(NonFiniteError, match=r"forward pass produced NaN or Inf first at 'log' \(Log\) output 'out'") as err:
        r.forward_backward({"x": np.array([1.0, -1.0])}, "loss", check=True)
    assert err.value.node == lg.id
    events = list(r.steps({"x": np.array([1.0, -1.0])}, "loss"))
    assert [e.label for e in events if not e.finite][0] == "'log'"


def test_runtime_feed_errors_are_clear():
    g, _, _ = _diamond()
    r = Runtime(g)
    with pytest.raises(Exception, match=r"no data for Input 'x' \(shape \(3,\)\)"):
        r.forward({})
    with pytest.raises(Exception, match=r"data for Input 'x' has shape \(4,\), but the node declares \(3,\)"):
        r.forward({"x": np.zeros(4)})
    with pytest.raises(Exception, match=r"the loss must be a scalar, but 'add' output 'out' has shape \(3,\)"):
        r.forward_backward({"x": np.zeros(3)}, "add")


def test_weights_are_seeded_per_node_and_reproducible():
    g = Graph()
    p1 = g.add_node("Parameter", {"shape": (3,)}, name="w1")
    a = Runtime(g, seed=7).weights[p1.id]["value"]
    g.add_node("Parameter", {"shape": (3,)}, name="w2")
    b = Runtime(g, seed=7).weights[p1.id]["value"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, Runtime(g, seed=8).weights[p1.id]["value"])


def test_remove_and_restore_many_nodes_in_one_pass_put_everything_back_in_place():
    g = Graph()
    ids = [g.add_node("Input", {"shape": (2, 3)}, name="x").id]
    for k in range(12):
        ids.append(g.add_node("ReLU" if k % 2 else "Tanh", name=f"n{k}").id)
        g.connect(ids[-2], "out", ids[-1], "a")
    extra = g.add_node("Add", name="sum")
    g.connect(ids[3], "out", extra.id, "a")
    g.connect(ids[9], "out", extra.id, "b")
    nodes, links, revision = list(g.nodes.items()), list(g.links), g.revision
    lone = g.links[0]
    removed = g.remove([ids[2], ids[9], ids[12], ids[5]], [lone])
    assert g.revision == revision + 1, "one change, however many nodes"
    assert [i for i, _ in removed.nodes] == [2, 5, 9, 12]
    assert lone not in g.links and all(ids[2] not in (l.src, l.dst) for l in g.links)
    assert len(g.nodes) == len(nodes) - 4
    g.restore(removed)
    assert list(g.nodes.items()) == nodes and g.links == links  # the very same objects, in the same order
    with pytest.raises(GraphError):
        g.restore(removed)  # they are back already
    with pytest.raises(GraphError):
        g.remove(["no such node"])


def test_a_restore_straight_after_a_remove_reuses_what_was_derived_before_and_only_then():
    from engine import memory

    def build() -> tuple[Graph, list[str]]:
        g = Graph()
        ids = [g.add_node("Input", {"shape": (2, 3)}, name="x").id]
        for k in range(4):
            ids.append(g.add_node("Linear", {"out_features": 5 + k}, name=f"l{k}").id)
            g.connect(ids[-2], "out", ids[-1], g.node(ids[-1]).input_ports()[0].name)
        return g, ids

    g, ids = build()
    report, order = g.infer(), g.topological_order()
    params, est = g.parameter_count(), memory.estimate(g)
    removed = g.remove(ids[2:])
    assert g.infer() is not report and g.parameter_count() < params
    g.restore(removed)
    # the very graph those were derived from: they come back as they were, not derived again
    assert g.infer() is report and g.topological_order() is order
    assert g.parameter_count() == params and memory.estimate(g) is est

    # an edit between the remove and the restore: everything is derived again, and right
    g, ids = build()
    report = g.infer()
    removed = g.remove(ids[3:])
    g.set_params(ids[1], {"out_features": 7})
    g.restore(removed)
    fresh = g.infer()
    assert fresh is not report and fresh.shapes[(ids[1], "out")] == (2, 7)
    assert fresh.shapes[(ids[-1], "out")] == report.shapes[(ids[-1], "out")]
