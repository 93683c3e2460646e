"""SequenceRNN unrolled through time: its inner graph (TimeStep → RNNCell ×L, tied → StackSteps)
run by the engine's runtime computes what the fused block computes, forward and backward."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import blocks, serialize
from engine.errors import ShapeError
from engine.graph import Graph
from engine.runtime import Runtime

CASES = [
    pytest.param({"cell": "SimpleRNN", "hidden": 3}, False, id="SimpleRNN"),
    pytest.param({"cell": "SimpleRNN", "hidden": 3, "activation": "sigmoid"}, True, id="SimpleRNN-sigmoid-h0"),
    pytest.param({"cell": "LSTM", "hidden": 3}, False, id="LSTM"),
    pytest.param({"cell": "LSTM", "hidden": 2}, True, id="LSTM-h0-c0"),
    pytest.param({"cell": "GRU", "hidden": 3}, False, id="GRU"),
    pytest.param({"cell": "GRU", "hidden": 2}, True, id="GRU-h0"),
]


@pytest.mark.parametrize("params,with_state", CASES)
def test_unrolled_graph_equals_the_fused_block_forward_and_backward(params, with_state):
    block = blocks.create("SequenceRNN", **params)
    h = params["hidden"]
    rng = np.random.default_rng(7)
    B, L, d = 2, 5, 3
    inputs = {"x": rng.uniform(-1, 1, (B, L, d))}
    if with_state:
        inputs["h0"] = rng.uniform(-1, 1, (B, h))
        if block.is_lstm:
            inputs["c0"] = rng.uniform(-1, 1, (B, h))
    shapes = {k: v.shape for k, v in inputs.items()}
    w = {k: v + rng.uniform(-0.3, 0.3, v.shape) for k, v in block.init_weights(shapes, rng).items()}
    outs, saved = block.forward(inputs, w)
    gout = {k: rng.standard_normal(v.shape) for k, v in outs.items()}
    gin, gw = block.backward(gout, saved, w)

    graph = block.build(shapes)
    cells = [n for n in graph.nodes.values() if n.type == "RNNCell"]
    assert len(cells) == L
    assert [c.params["tie_to"] for c in cells] == [""] + ["cell_1"] * (L - 1)
    runtime = Runtime(graph, weights={"cell_1": w}, dtype=np.float64)
    assert list(runtime.weights) == ["cell_1"], "only the first cell owns weights"
    run = runtime.start(inputs).run_forward()
    for port, value in outs.items():
        np.testing.assert_allclose(run.values[(port, "out")], value, rtol=1e-12, atol=1e-13, err_msg=port)

    run.run_backward(grads={(port, "out"): g for port, g in gout.items()})
    for port, g in gin.items():
        np.testing.assert_allclose(run.grads[(port, "out")], g, rtol=1e-10, atol=1e-12, err_msg=f"input {port}")
    # The runtime adds every tied cell's gradient to cell_1's: the sum over time steps that BPTT computes.
    grads = run.weight_gradients()["cell_1"]
    assert sorted(grads) == sorted(gw)
    for name, g in gw.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-12, err_msg=f"weight {name}")


def test_expand_lstm_gives_a_valid_unrolled_graph():
    graph = blocks.expand("SequenceRNN", {"cell": "LSTM"})
    assert isinstance(graph, Graph)
    report = graph.infer()
    assert report.ok, (report.errors, report.incomplete)
    types = [n.type for n in graph.nodes.values()]
    assert types.count("TimeStep") == types.count("RNNCell") == 4 and types.count("StackSteps") == 1
    assert {n.name for n in graph.nodes.values() if n.type == "Output"} == {"seq", "last", "last_c"}
    assert {n.name for n in graph.nodes.values() if n.type == "Input"} == {"x"}
    assert sorted(n.name for n in graph.nodes.values() if n.type == "Constant") == ["c_0 = 0", "h_0 = 0"]
    # h (and c) chain from one cell to the next.
    for t in range(2, 5):
        for port in ("h", "c"):
            link = graph.link_into(f"cell_{t}", port)
            assert (link.src, link.src_port) == (f"cell_{t - 1}", port)
    # One set of weights, the SequenceRNN's, however many steps are drawn.
    block = blocks.create("SequenceRNN", cell="LSTM")
    x = graph.nodes["x"].params["shape"]
    own = {k: v for k, v in block.weight_shapes({"x": x}).items()}
    assert graph.weight_shapes("cell_1") == own
    assert all(graph.weight_shapes(f"cell_{t}") == {} for t in range(2, 5))
    assert graph.parameter_count() == sum(int(np.prod(s)) for s in own.values())
    for link in graph.links:
        assert graph.nodes[link.src].position[0] < graph.nodes[link.dst].position[0]
    # Drawn as the lecture draws it: the cells in one row, each x_t below its cell.
    pos = {nid: n.position for nid, n in graph.nodes.items()}
    assert len(set(pos.values())) == len(pos), "two nodes on the same spot"
    assert len({pos[f"cell_{t}"][1] for t in range(1, 5)}) == 1
    assert all(pos[f"x_{t}"][1] > pos[f"cell_{t}"][1] and pos[f"x_{t}"][0] > pos[f"cell_{t - 1}"][0] for t in range(2, 5))


def test_long_sequences_and_bidirectional_networks_say_what_is_not_drawn():
    block = blocks.create("SequenceRNN", cell="GRU", hidden=4, bidirectional=True)
    graph = block.build({"x": (2, 30, 3), "h0": (2, 8)})
    assert graph.infer().ok
    assert sum(n.type == "RNNCell" for n in graph.nodes.values()) == 12
    names = {n.id: n.name for n in graph.nodes.values()}
    assert names["seq"] == "seq (first 12 of 30 steps drawn; forward direction only)"
    assert names["last"].startswith("last (first 12 of 30")
    # A (B, 2h) h0 holds both directions; the forward-only picture starts from zero and says so.
    assert names["h_0"] == "h_0 = 0 (the wired h0 (2, 8) holds both directions: not drawn)"
    # A (B, h) h0 is shared by both directions, so it is drawn as the Input it is.
    graph = block.build({"x": (2, 3, 3), "h0": (2, 4)})
    assert graph.link_into("cell_1", "h").src == "h0" and graph.nodes["h0"].type == "Input"
    assert graph.nodes["seq"].name == "seq (forward direction only)"


def test_build_reports_the_outer_block_shape_errors():
    block = blocks.create("SequenceRNN", cell="LSTM", hidden=4)
    with pytest.raises(ShapeError, match="SequenceRNN: input 'h0' dimension 1"):
        block.build({"x": (2, 3, 3), "h0": (2, 5)})


def test_a_tied_cell_checks_the_owner_weights_against_its_own_input():
    graph = Graph()
    graph.add_node("Input", {"shape": (2, 3)}, node_id="a")
    graph.add_node("Input", {"shape": (2, 5)}, node_id="b")
    graph.add_node("Input", {"shape": (2, 4)}, node_id="h")
    graph.add_node("RNNCell", {"cell": "GRU", "hidden": 4}, node_id="owner")
    graph.add_node("RNNCell", {"cell": "GRU", "hidden": 4, "tie_to": "owner"}, node_id="tied")
    for dst, x in (("owner", "a"), ("tied", "b")):
        graph.connect(x, "out", dst, "x")
        graph.connect("h", "out", dst, "h")
    report = graph.infer()
    assert "owner" not in report.errors
    assert "shares weight 'Wx'" in report.errors["tied"] and "(d_in, k·h) = (3, 12)" in report.errors["tied"]


def test_rnn_cell_and_step_blocks_name_what_is_wrong():
    cell = blocks.create("RNNCell", cell="LSTM", hidden=4)
    with pytest.raises(ShapeError, match="input 'c' is not connected"):
        cell.infer_shapes({"x": (2, 3), "h": (2, 4)})
    with pytest.raises(ShapeError, match=r"input 'h' dimension 0 \(batch\) should be 2.*got 3"):
        cell.infer_shapes({"x": (2, 3), "h": (3, 4), "c": (2, 4)})
    with pytest.raises(ShapeError, match=r"input 'h' dimension 1 \(state size = parameter 'hidden'\) should be 4"):
        cell.infer_shapes({"x": (2, 3), "h": (2, 5), "c": (2, 4)})
    assert [p.name for p in blocks.create("RNNCell", cell="GRU").output_ports()] == ["h"]
    with pytest.raises(ShapeError, match="parameter 't' is 4, but input 'x' has only 4 steps"):
        blocks.create("TimeStep", t=4).infer_shapes({"x": (2, 4, 3)})
    stack = blocks.create("StackSteps", steps=3)
    assert [p.name for p in stack.input_ports()] == ["h1", "h2", "h3"]
    with pytest.raises(ShapeError, match=r"input 'h3' has shape \(2, 5\), but 'h1' has \(2, 4\)"):
        stack.infer_shapes({"h1": (2, 4), "h2": (2, 4), "h3": (2, 5)})


def test_time_step_and_stack_steps_undo_each_other():
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    steps = [blocks.create("TimeStep", t=t).forward({"x": x}, {})[0]["out"] for t in range(3)]
    out, _ = blocks.create("StackSteps", steps=3).forward({f"h{i + 1}": s for i, s in enumerate(steps)}, {})
    np.testing.assert_array_equal(out["out"], x)


def test_the_unrolled_graph_survives_save_and_load():
    # StackSteps' ports follow its params and tie_to names a node: both must come back from a file.
    graph = blocks.expand("SequenceRNN", {"cell": "GRU", "hidden": 4})
    saved = serialize.graph_to_dict(graph)
    again = serialize.graph_from_dict(json.loads(json.dumps(saved)))
    assert again.infer().ok and serialize.graph_to_dict(again) == saved
    assert again.nodes["cell_3"].block.shared_weights() == {k: ("cell_1", k) for k in ("Wx", "Wh", "bx", "bh")}
