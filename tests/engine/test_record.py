"""Recording a pass frame by frame (engine.record): the engine's order, the engine's numbers
(copied), each wire's own gradient at a fan-out, the inside of composites and unrolled RNNs
from the same pass, local derivatives, stopping, and a gradient check for one node."""

from __future__ import annotations

import numpy as np
import pytest

import presets
from engine import blocks, feeds, nodecheck, record, serialize
from engine.graph import Graph
from engine.runtime import Runtime


def _setup(name: str, **kw):
    return feeds.prepare(serialize.load(presets.path(name)), **kw)


def test_frames_follow_the_schedule_forward_then_reverse_with_the_engines_numbers():
    s = _setup("two_layer_net")
    frames = record.record(s.runtime, s.feeds, s.loss)
    order = [st.node for st in s.runtime.program.steps]
    fwd = [f.node for f in frames if f.phase == "forward"]
    bwd = [f.node for f in frames if f.phase == "backward"]
    assert fwd == order
    assert bwd == [n for n in reversed(order)]  # every node of this lesson gets a gradient
    p = s.runtime.forward_backward(s.feeds, s.loss)
    for f in frames:
        if f.phase == "forward":
            for port, v in f.outputs.items():
                np.testing.assert_array_equal(v, p.values[(f.node, port)])
        else:
            for port, g in f.outputs.items():
                np.testing.assert_array_equal(g, p.grads[(f.node, port)])
            for name, g in f.weights.items():
                np.testing.assert_array_equal(g, p.weight_grads[f.node][name])
    loss_frame = next(f for f in frames if f.phase == "forward" and f.node == s.loss[0])
    assert float(loss_frame.outputs["out"]) == float(p.values[s.loss])


def test_frames_keep_copies_not_the_runtimes_buffers():
    s = _setup("linear_regression")
    frames = record.record(s.runtime, s.feeds, s.loss)
    p = s.runtime.forward_backward(s.feeds, s.loss)
    for f in frames:
        for v in list(f.outputs.values()) + list(f.inputs.values()):
            for key in list(p.values) + list(p.grads):
                arr = p.values.get(key, p.grads.get(key))
                assert not np.shares_memory(v, arr)


def _fan_out() -> tuple[Graph, dict[str, str]]:
    """x feeds three Squares that are added up: three contributions arrive at x."""
    g = Graph()
    x = g.add_node("Input", {"shape": (2,)}, name="x")
    names = {"x": x.id}
    prev = None
    for i, factor in enumerate((1.0, 2.0, 3.0)):
        sc = g.add_node("Scale", {"factor": factor}, name=f"s{i}")
        sq = g.add_node("Square", name=f"q{i}")
        g.connect(x.id, "out", sc.id, "a")
        g.connect(sc.id, "out", sq.id, "a")
        names[f"s{i}"] = sc.id
        if prev is None:
            prev = sq.id
        else:
            add = g.add_node("Add", name=f"add{i}")
            g.connect(prev, "out", add.id, "a")
            g.connect(sq.id, "out", add.id, "b")
            prev = add.id
    loss = g.add_node("Sum", name="loss")
    g.connect(prev, "out", loss.id, "a")
    names["loss"] = loss.id
    return g, names


def test_each_wire_of_a_fan_out_carries_its_own_contribution_and_they_sum():
    g, ids = _fan_out()
    rt = Runtime(g, dtype=np.float64)
    x = np.array([0.5, -1.5])
    frames = record.record(rt, {ids["x"]: x}, (ids["loss"], "out"))
    back = {f.node: f for f in frames if f.phase == "backward"}
    contributions = [back[ids[f"s{i}"]].inputs["a"] for i in range(3)]
    for c, k in zip(contributions, (1.0, 2.0, 3.0)):
        np.testing.assert_allclose(c, 2 * k * k * x)  # d/dx (k x)^2
    np.testing.assert_allclose(sum(contributions), back[ids["x"]].outputs["out"])
    np.testing.assert_allclose(back[ids["x"]].outputs["out"], 2 * 14 * x)


def test_scalar_nodes_carry_their_local_derivatives():
    s = _setup("linear_regression", one_example=True)
    frames = record.record(s.runtime, s.feeds, s.loss)
    g = s.runtime.graph
    fwd = {f.node: f for f in frames if f.phase == "forward"}
    residual = float(fwd[g.find("residual").id].outputs["out"][0])
    assert fwd[g.find("residual").id].local == {"a": 1.0, "b": -1.0}
    assert fwd[g.find("squared").id].local["a"] == pytest.approx(2 * residual, rel=1e-6)
    assert fwd[g.find("score").id].local == {}  # φ(x) and w are vectors: no single number


def test_the_inside_of_a_composite_comes_from_the_same_pass():
    s = _setup("language_model")
    frames = record.record(s.runtime, s.feeds, s.loss)
    tb = s.runtime.graph.find("SequenceModel").id
    outer_f = next(f for f in frames if f.path == (tb,) and f.phase == "forward")
    outer_b = next(f for f in frames if f.path == (tb,) and f.phase == "backward")
    inner_f = {f.path[1]: f for f in frames if f.path[:1] == (tb,) and len(f.path) == 2 and f.phase == "forward"}
    inner_b = {f.path[1]: f for f in frames if f.path[:1] == (tb,) and len(f.path) == 2 and f.phase == "backward"}
    assert {"attn", "norm1", "ffn", "norm2", "x", "out"} <= set(inner_f)
    # the composite's output is its inner Output's value, bit for bit
    np.testing.assert_array_equal(inner_f["out"].outputs["out"], outer_f.outputs["out"])
    # inner weight gradients are the composite's own (named inner/weight)
    np.testing.assert_array_equal(inner_b["attn"].weights["Wq"], outer_b.weights["attn/Wq"])
    np.testing.assert_array_equal(inner_b["x"].outputs["out"], outer_b.inputs["x"])
    # inner frames come just before the composite's own frame, in both phases
    index = {id(f): i for i, f in enumerate(frames)}
    assert max(index[id(f)] for f in inner_f.values()) < index[id(outer_f)]
    assert max(index[id(f)] for f in inner_b.values()) < index[id(outer_b)]
    assert min(index[id(f)] for f in inner_b.values()) > index[id(outer_f)]


def test_bert_records_every_layer_of_its_stack():
    s = _setup("bert")
    frames = record.record(s.runtime, s.feeds, s.loss)
    bert = s.runtime.graph.find("BERT").id
    layers = [f for f in frames if len(f.path) == 2 and f.path[0] == bert and f.path[1].startswith("block") and f.phase == "backward"]
    assert [f.path[1] for f in layers] == [f"block{i}" for i in range(24, 0, -1)]
    deep = [f for f in frames if f.path[:2] == (bert, "block3") and len(f.path) == 3]
    assert {f.path[2] for f in deep} >= {"attn", "norm1", "ffn", "norm2"}


def test_an_unrolled_rnn_shows_every_step_of_the_same_pass():
    g = Graph()
    x = g.add_node("Input", {"shape": (2, 15, 3)}, name="x")
    rnn = g.add_node("SequenceRNN", {"cell": "LSTM", "hidden": 4}, name="rnn")
    loss = g.add_node("Mean", name="loss")
    g.connect(x.id, "out", rnn.id, "x")
    g.connect(rnn.id, "seq", loss.id, "a")
    rt = Runtime(g, dtype=np.float64)
    feed = np.random.default_rng(0).standard_normal((2, 15, 3))
    frames = record.record(rt, {x.id: feed}, (loss.id, "out"))
    outer_f = next(f for f in frames if f.path == (rnn.id,) and f.phase == "forward")
    outer_b = next(f for f in frames if f.path == (rnn.id,) and f.phase == "backward")
    cells_f = {f.path[1]: f for f in frames if len(f.path) == 2 and f.path[1].startswith("cell_") and f.phase == "forward"}
    cells_b = {f.path[1]: f for f in frames if len(f.path) == 2 and f.path[1].startswith("cell_") and f.phase == "backward"}
    assert len(cells_f) == 15  # all 15 steps, though the picture draws 12
    for t in range(1, 16):
        np.testing.assert_allclose(cells_f[f"cell_{t}"].outputs["h"], outer_f.outputs["seq"][:, t - 1], rtol=1e-12)
    norms = outer_b.event.extras["time_grad_norms"]
    got = [float(np.linalg.norm(cells_b[f"cell_{t}"].outputs["h"])) for t in range(1, 16)]
    np.testing.assert_allclose(got, norms, rtol=1e-9)


def test_stop_ends_the_recording_between_nodes():
    s = _setup("bert")
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= 5

    rec = record.Recorder(s.runtime, s.feeds, s.loss, should_stop=stop)
    frames = list(rec.frames())
    assert rec.stopped and len(frames) == 5


def test_big_arrays_keep_statistics_only():
    s = _setup("two_layer_net")
    frames = record.record(s.runtime, s.feeds, s.loss, max_elements=10)
    f = next(f for f in frames if f.phase == "forward" and f.node == s.runtime.graph.find("h").id)
    assert f.outputs["out"] is None and f.event.outputs["out"].shape == (64, 4)


# --- the gradient check of one node ---------------------------------------------------------------


def test_a_correct_block_passes_its_gradient_check():
    b = blocks.create("Linear", out_features=3)
    rng = np.random.default_rng(0)
    w = b.init_weights({"x": (4, 5)}, rng)
    result = nodecheck.check_node(b, {"x": rng.standard_normal((4, 5))}, w)
    assert result.verdict == "correct" and result.worst < 1e-6 and "Correct" in result.message


def test_a_broken_backward_is_called_wrong(monkeypatch):
    b = blocks.create("Tanh")
    cls = type(b)
    original = cls.vjp

    def broken(self, gout, saved, weights):
        gin, gw = original(self, gout, saved, weights)
        return {k: 2 * v for k, v in gin.items()}, gw  # twice the true gradient

    monkeypatch.setattr(cls, "vjp", broken)
    result = nodecheck.check_node(b, {"a": np.random.default_rng(1).standard_normal((3, 4))}, {})
    assert result.verdict == "wrong" and result.worst > 0.1 and "input a" in result.message


@pytest.mark.parametrize("type_id, inputs", [
    ("ReLU", {"a": np.array([[0.0, 1.0, -2.0]])}),
    ("Max", {"a": np.array([1.0, 2.0]), "b": np.array([1.0, 0.5])}),
])
def test_a_kink_is_called_a_kink_not_a_failure(type_id, inputs):
    result = nodecheck.check_node(blocks.create(type_id), inputs, {})
    assert result.verdict == "kink" and result.ok
    assert "Not differentiable here" in result.message and "input a" in result.kinks


def test_a_big_composite_checks_a_sample_of_its_weights():
    b = blocks.create("TransformerBlock", dim=4, heads=2, hidden=6)
    rng = np.random.default_rng(0)
    w = b.init_weights({"x": (1, 3, 4)}, rng)
    result = nodecheck.check_node(b, {"x": rng.standard_normal((1, 3, 4))}, w, max_weights=3)
    assert result.sampled == (3, len(w)) and result.verdict == "correct"
    assert len(result.checks) == 4  # input x and three weights


def test_a_pass_keeps_copies_within_its_memory_budget():
    s = _setup("two_layer_net")
    rec = record.Recorder(s.runtime, s.feeds, s.loss, max_bytes=3000)
    frames = list(rec.frames())
    kept = [a for f in frames for group in (f.outputs, f.inputs, f.weights) for a in group.values() if a is not None]
    assert rec.kept_bytes <= 3000 and sum(a.nbytes for a in kept) == rec.kept_bytes
    assert any(a is None for f in frames for a in f.outputs.values())  # the rest: statistics only
    assert all(f.event.outputs for f in frames)
