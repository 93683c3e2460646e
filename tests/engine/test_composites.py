"""Composite blocks: the machinery (on a tiny composite of math blocks) and the real composites
(TransformerBlock, BERT, LanguageModel, SequenceToSequence, ConvNet) against their parts."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pytest

from engine import blocks
from engine.blocks._base import Port, Shape
from engine.blocks._composite import CompositeBlock, GraphBuilder
from engine.errors import ParamError, ShapeError
from engine.gradcheck import check_block
from engine.graph import Graph
from engine.runtime import Runtime

COMPOSITES = ["TransformerBlock", "TransformerDecoderBlock", "BERT", "ConvNet", "LanguageModel", "SequenceToSequence"]


class TinyComposite(CompositeBlock):
    """out = tanh(a @ w) + b, sq = b² — a test composite made of math blocks (not registered)."""

    type_id = "TinyComposite"
    formula = "out = tanh(a w) + b; sq = b²"
    inputs = (Port("a"), Port("b"))
    outputs = (Port("out"), Port("sq"))

    def build(self, in_shapes: Mapping[str, Shape]) -> Graph:
        d = in_shapes["a"][-1]
        g = GraphBuilder()
        g.input("a", in_shapes["a"])
        g.input("b", in_shapes["b"])
        g.add("w", "Parameter", {"shape": (d, d)})
        g.add("mm", "MatMul", a="a", b="w")
        g.add("act", "Tanh", a="mm")
        g.add("plus", "Add", a="act", b="b")
        g.add("square", "Square", a="b")
        g.output("out", "plus")
        g.output("sq", "square")
        return g.graph


def _inputs(rng: np.random.Generator, dtype: Any = np.float64) -> dict[str, np.ndarray]:
    return {"a": rng.standard_normal((2, 3)).astype(dtype), "b": rng.standard_normal((3,)).astype(dtype)}


# --- the machinery ----------------------------------------------------------------------------------


def test_tiny_composite_forward_matches_its_formula_and_names_weights_after_inner_nodes():
    block = TinyComposite()
    rng = np.random.default_rng(0)
    x = _inputs(rng)
    shapes = {k: v.shape for k, v in x.items()}
    assert block.infer_shapes(shapes) == {"out": (2, 3), "sq": (3,)}
    assert block.weight_shapes(shapes) == {"w/value": (3, 3)}
    w = block.init_weights(shapes, rng)
    assert set(w) == {"w/value"}
    outs, _ = block.forward(x, w)
    np.testing.assert_allclose(outs["out"], np.tanh(x["a"] @ w["w/value"]) + x["b"], rtol=1e-12)
    np.testing.assert_allclose(outs["sq"], x["b"] ** 2, rtol=1e-12)


def test_tiny_composite_gradients_match_central_differences_and_backward_is_repeatable():
    block = TinyComposite()
    rng = np.random.default_rng(1)
    x = _inputs(rng)
    w = block.init_weights({k: v.shape for k, v in x.items()}, rng)
    checks = check_block(block, x, w)
    assert {c.what for c in checks} == {"input a", "input b", "weight w/value"}
    assert all(c.error < 1e-7 for c in checks), checks
    outs, saved = block.forward(x, w)
    g = {"out": rng.standard_normal(outs["out"].shape)}
    first = block.backward(g, saved, w)
    second = block.backward(g, saved, w)  # no gradient left over from the first call
    for part in range(2):
        for k in first[part]:
            np.testing.assert_array_equal(first[part][k], second[part][k])
    # Only 'out' got a gradient: b's gradient is the sum of g over the batch (from the Add).
    np.testing.assert_allclose(first[0]["b"], g["out"].sum(axis=0))


def test_tiny_composite_runs_in_float32_and_keeps_no_state_between_calls():
    block = TinyComposite()
    rng = np.random.default_rng(2)
    x32 = _inputs(rng, np.float32)
    w32 = {k: v.astype(np.float32) for k, v in block.init_weights({k: v.shape for k, v in x32.items()}, rng).items()}
    outs, saved = block.forward(x32, w32)
    assert outs["out"].dtype == np.float32
    gin, gw = block.backward({"out": np.ones((2, 3), np.float32)}, saved, w32)
    assert gin["a"].dtype == np.float32 and gw["w/value"].dtype == np.float32
    # A second, different-shaped call compiles a second inner program and leaves the first intact.
    outs5, _ = block.forward({"a": np.ones((5, 3)), "b": np.zeros(3)}, {k: v.astype(np.float64) for k, v in w32.items()})
    assert outs5["out"].shape == (5, 3)
    again, _ = block.forward(x32, w32)
    np.testing.assert_array_equal(again["out"], outs["out"])


def test_composite_inner_shape_errors_are_shape_errors_naming_the_inner_node():
    block = TinyComposite()
    with pytest.raises(ShapeError, match="TinyComposite: inside.*'plus'"):
        block.infer_shapes({"a": (2, 3), "b": (4,)})
    with pytest.raises(ShapeError, match="input 'b' is not connected"):
        block.infer_shapes({"a": (2, 3)})


def test_graph_builder_lays_nodes_out_left_to_right_and_names_ports():
    graph = TinyComposite().build({"a": (2, 3), "b": (3,)})
    assert graph.infer().ok
    for link in graph.links:
        assert graph.nodes[link.src].position[0] < graph.nodes[link.dst].position[0]
    assert {n.id for n in graph.nodes.values() if n.type == "Input"} == {"a", "b"}
    assert {n.id for n in graph.nodes.values() if n.type == "Output"} == {"out", "sq"}
    positions = [n.position for n in graph.nodes.values()]
    assert len(set(positions)) == len(positions), "two nodes on the same spot"


@pytest.mark.parametrize("type_id", COMPOSITES)
def test_every_composite_expands_to_a_valid_graph_with_named_inputs_and_outputs(type_id):
    block = blocks.create(type_id)
    assert blocks.spec(type_id).composite and blocks.spec(type_id).category is blocks.Category.COMPOSITE
    graph = blocks.expand(type_id, {})
    report = graph.infer()
    assert report.ok, (report.errors, report.incomplete)
    inputs = {n.name for n in graph.nodes.values() if n.type == "Input"}
    outputs = {n.name for n in graph.nodes.values() if n.type == "Output"}
    # every required input, and the optional ones (masks) that the default expansion connects
    assert inputs == {p.name for p in block.input_ports() if not p.optional or p.name in block.default_in_shapes()}
    assert outputs == {p.name for p in block.output_ports()}
    for link in graph.links:
        assert graph.nodes[link.src].position[0] < graph.nodes[link.dst].position[0]


# --- TransformerBlock and BERT against their parts -------------------------------------------------------


def _split(flat: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, value in flat.items():
        node, weight = name.split("/", 1)
        out.setdefault(node, {})[weight] = value
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_transformer_block_equals_its_inner_graph_run_node_by_node(causal):
    params = {"dim": 8, "heads": 2, "hidden": 12, "causal": causal, "activation": "gelu"}
    block = blocks.create("TransformerBlock", **params)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 8))
    w = {k: v + rng.uniform(-0.3, 0.3, v.shape) for k, v in block.init_weights({"x": x.shape}, rng).items()}
    assert sorted(w) == sorted(["attn/Wq", "attn/Wk", "attn/Wv", "attn/Wo", "attn/bq", "attn/bk", "attn/bv", "attn/bo",
                                "norm1/gamma", "norm1/beta", "ffn/W1", "ffn/b1", "ffn/W2", "ffn/b2",
                                "norm2/gamma", "norm2/beta"])
    outs, saved = block.forward({"x": x}, w)
    g = rng.standard_normal(outs["out"].shape)
    gin, gw = block.backward({"out": g}, saved, w)

    # The same computation, one inner node at a time, by the engine's runtime on the expanded graph.
    graph = blocks.expand("TransformerBlock", params)
    graph.set_params("x", {"shape": x.shape})
    runtime = Runtime(graph, weights=_split(w), dtype=np.float64)
    run = runtime.start({"x": x}, trace=True)
    events = list(run.forward_steps())
    assert [e.node for e in events] == ["x", "attn", "norm1", "ffn", "norm2", "out"]
    np.testing.assert_allclose(outs["out"], run.values[("out", "out")], rtol=1e-12, atol=1e-12)
    run.seed(grads={("out", "out"): g})
    list(run.backward_steps())
    np.testing.assert_allclose(gin["x"], run.grads[("x", "out")], rtol=1e-10, atol=1e-12)
    grads = run.weight_gradients()
    for name, value in gw.items():
        node, weight = name.split("/", 1)
        np.testing.assert_allclose(value, grads[node][weight], rtol=1e-10, atol=1e-12, err_msg=name)

    # And by hand from the primitive blocks, as BLOCKS.md defines it.
    def part(type_id: str, p: dict, inputs: dict, prefix: str) -> dict:
        return blocks.create(type_id, **p).forward(inputs, {k.split("/", 1)[1]: v for k, v in w.items() if k.startswith(prefix + "/")})[0]

    a = part("Attention", {"heads": 2, "causal": causal}, {"x": x}, "attn")["out"]
    x1 = part("AddNorm", {}, {"x": x, "fx": a}, "norm1")["out"]
    f = part("FeedForward", {"hidden": 12, "activation": "gelu"}, {"x": x1}, "ffn")["out"]
    np.testing.assert_allclose(outs["out"], part("AddNorm", {}, {"x": x1, "fx": f}, "norm2")["out"], rtol=1e-12, atol=1e-12)


def test_bert_with_two_layers_equals_embedding_then_two_transformer_blocks():
    params = {"vocab": 11, "dim": 8, "heads": 4, "layers": 2, "hidden": 10, "max_len": 9}
    bert = blocks.create("BERT", **params)
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 11, size=(3, 6))
    w = bert.init_weights({"ids": ids.shape}, rng)
    assert "block2/attn/Wq" in w and "embed/P" in w and w["embed/P"].shape == (9, 8)
    outs, saved = bert.forward({"ids": ids}, w)
    assert outs["out"].shape == (3, 6, 8)

    def sub(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) + 1:]: v for k, v in w.items() if k.startswith(prefix + "/")}

    embed = blocks.create("EmbedToken", vocab=11, dim=8, position="learned", max_len=9)
    h = embed.forward({"ids": ids}, sub("embed"))[0]["out"]
    tb = blocks.create("TransformerBlock", dim=8, heads=4, hidden=10)
    saves = []
    for layer in ("block1", "block2"):
        out, s = tb.forward({"x": h}, sub(layer))
        saves.append(s)
        h = out["out"]
    np.testing.assert_allclose(outs["out"], h, rtol=1e-12, atol=1e-12)

    g = rng.standard_normal(h.shape)
    gin, gw = bert.backward({"out": g}, saved, w)
    assert gin == {}  # token ids get no gradient
    gin2, gw2 = tb.backward({"out": g}, saves[1], sub("block2"))
    for k, v in gw2.items():
        np.testing.assert_allclose(gw["block2/" + k], v, rtol=1e-10, atol=1e-12)
    gin1, gw1 = tb.backward({"out": gin2["x"]}, saves[0], sub("block1"))
    for k, v in gw1.items():
        np.testing.assert_allclose(gw["block1/" + k], v, rtol=1e-10, atol=1e-12)


def test_composite_inside_a_user_graph_trains_like_any_block():
    graph = Graph()
    x = graph.add_node("Input", {"shape": (2, 4, 8)}, name="x")
    y = graph.add_node("Input", {"shape": (2, 4, 8)}, name="y")
    tb = graph.add_node("TransformerBlock", {"dim": 8, "heads": 2, "hidden": 16}, name="tb")
    loss = graph.add_node("SquaredLoss", name="loss")
    graph.connect(x.id, "out", tb.id, "x")
    graph.connect(tb.id, "out", loss.id, "pred")
    graph.connect(y.id, "out", loss.id, "target")
    # 4 (d, d) attention maps + 4 biases, FeedForward 8·16+16+16·8+8, two norms 2·(8+8).
    assert graph.parameter_count() == 4 * 64 + 4 * 8 + (128 + 16 + 128 + 8) + 32
    rng = np.random.default_rng(5)
    feeds = {"x": rng.standard_normal((2, 4, 8)), "y": rng.standard_normal((2, 4, 8))}
    runtime = Runtime(graph, dtype=np.float64, seed=1)
    assert set(runtime.weights[tb.id]) >= {"attn/Wq", "ffn/W1", "norm2/gamma"}
    before = float(runtime.forward(feeds).values[(loss.id, "out")])
    for _ in range(20):
        grads = runtime.forward_backward(feeds, "loss").weight_gradients()
        for name, value in runtime.weights[tb.id].items():
            value -= 0.05 * grads[tb.id][name]
    after = float(runtime.forward(feeds).values[(loss.id, "out")])
    assert after < 0.9 * before
    from engine.gradcheck import check_graph

    bad = [c for c in check_graph(runtime, feeds, "loss") if not c.error < 1e-6]
    assert not bad, bad


# --- causality ------------------------------------------------------------------------------------------


def test_causal_transformer_language_model_does_not_look_ahead():
    lm = blocks.create("LanguageModel", vocab=9, dim=8, heads=2, layers=2, per_position=True, max_len=10)
    rng = np.random.default_rng(6)
    ids = rng.integers(0, 9, size=(2, 7))
    w = lm.init_weights({"x": ids.shape}, rng)
    base = lm.forward({"x": ids}, w)[0]["out"]
    assert base.shape == (2, 7, 9)
    changed = ids.copy()
    changed[:, 4] = (changed[:, 4] + 1) % 9
    after = lm.forward({"x": changed}, w)[0]["out"]
    np.testing.assert_allclose(after[:, :4], base[:, :4], rtol=1e-6, atol=1e-6)
    assert not np.allclose(after[:, 4:], base[:, 4:])


@pytest.mark.parametrize("model", ["transformer", "rnn", "lstm", "gru", "feedforward"])
def test_language_model_last_position_equals_per_position_last_row(model):
    params = {"vocab": 7, "dim": 4, "model": model, "layers": 2, "heads": 2, "hidden": 6, "max_len": 8}
    last = blocks.create("LanguageModel", **params)
    every = blocks.create("LanguageModel", **params, per_position=True)
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 7, size=(3, 5))
    w = last.init_weights({"x": ids.shape}, rng)
    assert set(w) == set(every.weight_shapes({"x": ids.shape}))
    a = last.forward({"x": ids}, w)[0]["out"]
    b = every.forward({"x": ids}, w)[0]["out"]
    assert a.shape == (3, 7) and b.shape == (3, 5, 7)
    np.testing.assert_allclose(a, b[:, -1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model", ["transformer", "rnn", "lstm", "gru"])
def test_sequence_to_sequence_decoder_is_causal_and_reads_the_source(model):
    s2s = blocks.create("SequenceToSequence", src_vocab=6, tgt_vocab=5, dim=4, model=model, layers=2, heads=2, max_len=8)
    rng = np.random.default_rng(8)
    src = rng.integers(0, 6, size=(2, 4))
    tgt = rng.integers(0, 5, size=(2, 5))
    w = s2s.init_weights({"src": src.shape, "tgt": tgt.shape}, rng)
    base = s2s.forward({"src": src, "tgt": tgt}, w)[0]["out"]
    assert base.shape == (2, 5, 5)
    later = tgt.copy()
    later[:, 3] = (later[:, 3] + 1) % 5
    out = s2s.forward({"src": src, "tgt": later}, w)[0]["out"]
    np.testing.assert_allclose(out[:, :3], base[:, :3], rtol=1e-10, atol=1e-10)
    other_src = (src + 1) % 6
    out = s2s.forward({"src": other_src, "tgt": tgt}, w)[0]["out"]
    assert not np.allclose(out[:, 0], base[:, 0]), "the first target position must depend on the source"


def test_sequence_to_sequence_weight_names_are_stable():
    s2s = blocks.create("SequenceToSequence", model="lstm", layers=2, dim=4)
    names = set(s2s.weight_shapes({"src": (1, 3), "tgt": (1, 2)}))
    assert {"src_embed/E", "tgt_embed/E", "enc1/Wx", "enc2/Wh", "dec1/b", "dec2/Wx", "generate/E", "generate/b"} <= names
    tr = blocks.create("SequenceToSequence", layers=1, dim=8, heads=2)
    names = set(tr.weight_shapes({"src": (1, 3), "tgt": (1, 2)}))
    assert {"enc1/attn/Wq", "dec1/self_attn/Wq", "dec1/cross_attn/Wk", "dec1/norm3/gamma", "tgt_embed/P"} <= names


def test_convnet_equals_its_stages():
    net = blocks.create("ConvNet", stages=2, channels=(3, 4), classes=5, hidden=6)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 1, 8, 8))
    w = net.init_weights({"x": x.shape}, rng)
    out = net.forward({"x": x}, w)[0]["out"]
    assert out.shape == (2, 5)

    def sub(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) + 1:]: v for k, v in w.items() if k.startswith(prefix + "/")}

    h = x
    for s, c in ((1, 3), (2, 4)):
        h = blocks.create("Conv2d", out_channels=c, kernel=3, padding=1).forward({"x": h}, sub(f"conv{s}"))[0]["out"]
        h = np.maximum(h, 0)
        h = blocks.create("MaxPool2d", kernel=2).forward({"x": h}, {})[0]["out"]
    h = h.reshape(2, -1)
    ref = blocks.create("FeedForward", hidden=6, out_features=5).forward({"x": h}, sub("ffn"))[0]["out"]
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


# --- errors a person can act on ----------------------------------------------------------------------------


@pytest.mark.parametrize("type_id,params,param", [
    ("TransformerBlock", {"dim": 10, "heads": 4}, "heads"),
    ("TransformerDecoderBlock", {"dim": 6, "heads": 4}, "heads"),
    ("BERT", {"dim": 6, "heads": 4}, "heads"),
    ("LanguageModel", {"dim": 6, "heads": 4}, "heads"),
    ("SequenceToSequence", {"dim": 6, "heads": 4}, "heads"),
    ("LanguageModel", {"vocab": 0}, "vocab"),
    ("BERT", {"vocab": 0}, "vocab"),
    ("SequenceToSequence", {"tgt_vocab": 0}, "tgt_vocab"),
    ("BERT", {"layers": 0}, "layers"),
    ("TransformerBlock", {"heads": 0}, "heads"),
    ("ConvNet", {"stages": 3, "channels": (4, 8)}, "channels"),
    ("LanguageModel", {"model": "mamba"}, "model"),
])
def test_bad_params_raise_param_errors_naming_the_param(type_id, params, param):
    with pytest.raises(ParamError, match=f"'{param}'"):
        blocks.create(type_id, **params)


def test_heads_only_matter_for_transformer_language_models():
    blocks.create("LanguageModel", model="lstm", dim=6, heads=4)  # no error: no attention inside


@pytest.mark.parametrize("type_id,params,in_shapes,words", [
    ("TransformerBlock", {"dim": 8, "heads": 2}, {"x": (2, 3, 6)}, ["'x'", "'dim'", "6", "8"]),
    ("TransformerBlock", {"dim": 8, "heads": 2}, {"x": (2, 8)}, ["'x'", "3 dimensions"]),
    ("TransformerDecoderBlock", {"dim": 4, "heads": 2}, {"x": (2, 3, 4), "context": (3, 5, 4)}, ["'context'", "batch"]),
    ("BERT", {"dim": 4, "heads": 2, "max_len": 4, "layers": 1}, {"ids": (1, 6)}, ["'ids'", "'max_len'"]),
    ("LanguageModel", {"dim": 4, "heads": 2, "max_len": 4}, {"x": (1, 5)}, ["'x'", "'max_len'"]),
    ("ConvNet", {"stages": 3, "channels": (2, 2, 2)}, {"x": (1, 1, 4, 4)}, ["'x'", "height", "stages"]),
])
def test_bad_shapes_raise_shape_errors_naming_port_and_param(type_id, params, in_shapes, words):
    with pytest.raises(ShapeError) as info:
        blocks.create(type_id, **params).infer_shapes(in_shapes)
    for word in words:
        assert word in str(info.value), str(info.value)
