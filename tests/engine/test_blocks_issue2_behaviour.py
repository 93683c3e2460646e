"""Behaviour of the network blocks and losses that the registry-generated tests do not reach:
tied weights through a real graph and runtime, run-time id checks, the sinusoidal table, the
sampler, parameter and shape errors, and numerically awkward inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import blocks, kernels
from engine.compile import compile_graph
from engine.errors import ParamError, RuntimeFailure, ShapeError
from engine.gradcheck import check_graph
from engine.graph import Graph
from engine.runtime import Runtime

VOCAB, DIM, B, L = 6, 4, 3, 5


def tied_lm(*, tied: bool = True, gen_vocab: int = VOCAB, per_position: bool = False, width: int | None = None) -> tuple[Graph, dict[str, str]]:
    """ids → EmbedToken → [Collapse] → [Linear] → GenerateToken (tied to the embedding) → CrossEntropy."""
    g = Graph()
    ids = g.add_node("Input", {"shape": (B, L), "dtype": "ids"}, name="ids")
    tgt = g.add_node("Input", {"shape": (B, L) if per_position else (B,), "dtype": "ids"}, name="target")
    emb = g.add_node("EmbedToken", {"vocab": VOCAB, "dim": DIM, "position": "learned", "max_len": 8}, name="embed")
    gen = g.add_node("GenerateToken", {"vocab": gen_vocab, "tie_to": emb.id if tied else ""}, name="generate")
    loss = g.add_node("CrossEntropy", {}, name="loss")
    g.connect(ids.id, "out", emb.id, "ids")
    src = emb.id
    if not per_position:
        col = g.add_node("Collapse", {"mode": "mean"}, name="collapse")
        g.connect(src, "out", col.id, "x")
        src = col.id
    if width is not None:
        lin = g.add_node("Linear", {"out_features": width}, name="proj")
        g.connect(src, "out", lin.id, "x")
        src = lin.id
    g.connect(src, "out", gen.id, "x")
    g.connect(gen.id, "logits", loss.id, "logits")
    g.connect(tgt.id, "out", loss.id, "target")
    return g, {"embed": emb.id, "generate": gen.id}


def feeds(per_position: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(B, L))
    return {"ids": ids, "target": rng.integers(0, VOCAB, size=(B, L) if per_position else (B,))}


# --- tied GenerateToken through graph + runtime -------------------------------------------------


@pytest.mark.parametrize("per_position", [False, True])
def test_tied_embedding_gradient_matches_finite_differences(per_position):
    graph, ids = tied_lm(per_position=per_position)
    rt = Runtime(graph, dtype=np.float64, seed=3)
    assert set(rt.weights[ids["generate"]]) == {"b"}, "a tied GenerateToken must not own an E"
    rt.weights[ids["generate"]]["b"] += np.random.default_rng(1).uniform(-0.5, 0.5, VOCAB)
    checks = check_graph(rt, feeds(per_position), "loss")
    assert {c.what for c in checks} >= {"'embed' weight E", "'embed' weight P", "'generate' weight b"}
    bad = [f"{c.what}: {c.error:.2e}" for c in checks if not c.error < 1e-6]
    assert not bad, bad


@pytest.mark.parametrize("per_position", [False, True])
def test_tied_embedding_gradient_is_the_sum_of_both_uses(per_position):
    tied_graph, t = tied_lm(per_position=per_position)
    free_graph, f = tied_lm(tied=False, per_position=per_position)
    tied = Runtime(tied_graph, dtype=np.float64, seed=0)
    free = Runtime(free_graph, dtype=np.float64, seed=0)
    # The same numbers in both graphs, the untied GenerateToken holding a copy of the embedding's E.
    free.load_weights({f["embed"]: tied.weights[t["embed"]], f["generate"]: {"E": tied.weights[t["embed"]]["E"], "b": tied.weights[t["generate"]]["b"]}})
    data = feeds(per_position)
    gt = tied.forward_backward(data, "loss").weight_gradients()
    gf = free.forward_backward(data, "loss").weight_gradients()
    from_embed, from_generate = gf[f["embed"]]["E"], gf[f["generate"]]["E"]
    assert np.linalg.norm(from_embed) > 1e-3 and np.linalg.norm(from_generate) > 1e-3
    np.testing.assert_allclose(gt[t["embed"]]["E"], from_embed + from_generate, rtol=1e-12, atol=1e-14)
    assert "E" not in gt[t["generate"]]


def test_tied_graph_runs_in_float32_and_trains_the_shared_table():
    graph, ids = tied_lm(per_position=True)
    rt = Runtime(graph, dtype=np.float32, seed=0)
    data = feeds(True)
    p = rt.forward_backward(data, "loss", check=True)
    assert p.values[(ids["generate"], "logits")].dtype == np.float32
    before = float(p.values[rt.loss_port("loss")])
    grads = p.weight_gradients()
    for node, ws in rt.weights.items():
        for name in ws:
            ws[name] -= np.float32(0.5) * grads[node][name]
    after = float(rt.forward(data).values[rt.loss_port("loss")])
    assert after < before


def test_tied_vocab_mismatch_is_a_shape_error_naming_both_nodes():
    graph, ids = tied_lm(gen_vocab=VOCAB + 3)
    report = graph.infer()
    msg = report.errors[ids["generate"]]
    assert "'generate'" in msg and "'embed'" in msg and "(vocab, dim)" in msg and "dimension 0" in msg, msg
    with pytest.raises(ShapeError, match="'embed'"):
        compile_graph(graph)


def test_tied_dim_mismatch_is_a_shape_error_naming_both_nodes():
    graph, ids = tied_lm(width=DIM + 2)  # a Linear changes the width before GenerateToken
    msg = graph.infer().errors[ids["generate"]]
    assert "'generate'" in msg and "'embed'" in msg and "dimension 1" in msg, msg
    # Fixing the width clears the error.
    graph.set_params(graph.find("proj").id, {"out_features": DIM})
    assert graph.infer().ok


def test_tie_to_a_missing_node_or_a_node_without_e_is_refused_and_a_lost_owner_is_a_shape_error():
    graph, ids = tied_lm()
    with pytest.raises(ParamError, match="not in this graph"):
        graph.set_params(ids["generate"], {"tie_to": "nope"})
    with pytest.raises(ParamError, match="has no weight 'E'"):
        graph.set_params(ids["generate"], {"tie_to": graph.find("collapse").id})
    other = graph.add_node("EmbedToken", {"vocab": VOCAB, "dim": DIM}, name="other")
    graph.set_params(ids["generate"], {"tie_to": other.id})
    graph.remove_node(other.id)  # the owner goes: the tie now points nowhere
    assert "not in this graph" in graph.infer().errors[ids["generate"]]


def test_tied_generate_token_declares_its_borrowed_weight():
    gen = blocks.create("GenerateToken", vocab=5, tie_to="abc")
    assert gen.shared_weights() == {"E": ("abc", "E")}
    assert gen.weight_shapes({"x": (2, 3)}) == {"b": (5,)}
    assert set(gen.init_weights({"x": (2, 3)}, np.random.default_rng(0))) == {"b"}
    assert gen.shared_weight_shapes({"x": (2, 3)}) == {"E": (5, 3)}
    untied = blocks.create("GenerateToken", vocab=5)
    assert untied.shared_weights() == {} and untied.weight_shapes({"x": (2, 3)}) == {"E": (5, 3), "b": (5,)}


# --- EmbedToken ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [6, -1, 100])
@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_embed_token_rejects_ids_outside_the_vocabulary(bad, backend):
    block = blocks.create("EmbedToken", vocab=6, dim=3)
    w = block.init_weights({"ids": (2, 4)}, np.random.default_rng(0))
    ids = np.zeros((2, 4), np.int64)
    ids[1, 2] = bad
    with kernels.using(backend), pytest.raises(RuntimeFailure) as err:
        block.forward({"ids": ids}, w)
    msg = str(err.value)
    assert f"token id {bad}" in msg and "(1, 2)" in msg and "vocab" in msg and "0…5" in msg, msg


def test_embed_token_bad_ids_through_the_runtime_are_a_runtime_failure():
    graph, _ = tied_lm()
    rt = Runtime(graph)
    data = feeds()
    data["ids"][0, 0] = VOCAB
    with pytest.raises(RuntimeFailure, match="outside the vocabulary"):
        rt.forward(data)


def test_embed_token_longer_than_max_len_is_a_shape_error_naming_max_len():
    block = blocks.create("EmbedToken", vocab=5, dim=2, max_len=4)
    assert block.infer_shapes({"ids": (2, 4)}) == {"out": (2, 4, 2)}
    with pytest.raises(ShapeError, match="max_len"):
        block.infer_shapes({"ids": (2, 5)})
    with pytest.raises(ShapeError, match="'ids'"):
        block.infer_shapes({"ids": (2, 5, 1)})


@pytest.mark.parametrize("dim", [6, 7])
def test_sinusoidal_positions_follow_the_formula(dim):
    block = blocks.create("EmbedToken", vocab=3, dim=dim, position="sinusoidal")
    zero_table = {"E": np.zeros((3, dim))}
    out, _ = block.forward({"ids": np.zeros((1, 12), np.int64)}, zero_table)
    p = out["out"][0]
    np.testing.assert_allclose(p[0, 0::2], 0.0, atol=0)  # position 0: sin 0 = 0, cos 0 = 1
    np.testing.assert_allclose(p[0, 1::2], 1.0, atol=0)
    for i, j in [(1, 0), (3, 1), (7, 2), (11, 1)]:
        angle = i / 10000 ** (2 * j / dim)
        assert p[i, 2 * j] == pytest.approx(math.sin(angle), abs=1e-15)
        assert p[i, 2 * j + 1] == pytest.approx(math.cos(angle), abs=1e-15)
    # Fixed: no P weight and no position gradient, only E's.
    assert set(block.weight_shapes({"ids": (1, 12)})) == {"E"}


def test_embed_token_float32_stays_float32():
    block = blocks.create("EmbedToken", vocab=4, dim=3, position="sinusoidal")
    w = {k: v.astype(np.float32) for k, v in block.init_weights({"ids": (2, 3)}, np.random.default_rng(0)).items()}
    out, saved = block.forward({"ids": np.array([[0, 1, 3], [3, 3, 2]])}, w)
    assert out["out"].dtype == np.float32
    gin, gw = block.backward({"out": np.ones((2, 3, 3), np.float32)}, saved, w)
    assert gw["E"].dtype == np.float32
    np.testing.assert_array_equal(gw["E"][:, 0], [1, 1, 1, 3])  # token 3 used three times


# --- Collapse -----------------------------------------------------------------------------------


def test_collapse_max_sends_the_gradient_to_the_first_of_tied_maxima():
    x = np.array([[[1.0, 5.0], [3.0, 5.0], [3.0, 2.0]]])  # feature 0: max at 1 and 2; feature 1: at 0 and 1
    block = blocks.create("Collapse", mode="max")
    out, saved = block.forward({"x": x}, {})
    np.testing.assert_array_equal(out["out"], [[3.0, 5.0]])
    gin, _ = block.backward({"out": np.array([[10.0, 20.0]])}, saved, {})
    np.testing.assert_array_equal(gin["x"], [[[0, 20], [10, 0], [0, 0]]])


def test_collapse_needs_a_sequence():
    with pytest.raises(ShapeError, match="'x'"):
        blocks.create("Collapse").infer_shapes({"x": (2, 3)})


# --- GenerateToken.sample -------------------------------------------------------------------------


def test_sample_at_temperature_zero_is_the_argmax():
    gen = blocks.create("GenerateToken", vocab=4, temperature=0.0)
    logits = np.array([[0.1, 2.0, -1.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    ids = gen.sample(logits, np.random.default_rng(0))
    assert ids.dtype == np.int64 and ids.tolist() == [1, 0]  # first of tied maxima


def test_sample_follows_softmax_over_temperature():
    logits = np.array([1.0, 0.0, -1.0, 2.0])
    for t in (1.0, 2.0):
        gen = blocks.create("GenerateToken", vocab=4, temperature=t)
        draws = gen.sample(np.broadcast_to(logits, (40000, 4)), np.random.default_rng(1))
        freq = np.bincount(draws, minlength=4) / draws.size
        p = np.exp(logits / t) / np.exp(logits / t).sum()
        np.testing.assert_allclose(freq, p, atol=0.01)


def test_sample_keeps_leading_shape_and_survives_tiny_temperatures():
    gen = blocks.create("GenerateToken", vocab=5, temperature=1e-30)
    logits = np.random.default_rng(2).normal(size=(2, 3, 5)) * 50
    ids = gen.sample(logits, np.random.default_rng(3))
    assert ids.shape == (2, 3)
    np.testing.assert_array_equal(ids, logits.argmax(-1))
    with pytest.raises(ShapeError, match="vocab"):
        gen.sample(np.zeros((2, 4)), np.random.default_rng(0))


# --- losses ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,port", [("SquaredLoss", "pred"), ("HingeLoss", "score"), ("LogisticLoss", "score")])
def test_pair_losses_need_equal_shapes(name, port):
    block = blocks.create(name)
    assert block.infer_shapes({port: (4, 1), "target": (4, 1)}) == {"out": ()}
    with pytest.raises(ShapeError) as err:
        block.infer_shapes({port: (4, 1), "target": (4,)})
    msg = str(err.value)
    assert name in msg and f"'{port}'" in msg and "(4, 1)" in msg and "(4,)" in msg, msg


def test_hinge_and_logistic_values_by_hand():
    s = np.array([2.0, 0.5, -1.0])
    y = np.array([1.0, 1.0, 1.0])
    hinge, _ = blocks.create("HingeLoss").forward({"score": s, "target": y}, {})
    assert hinge["out"] == pytest.approx((0 + 0.5 + 2.0) / 3)
    logistic, _ = blocks.create("LogisticLoss").forward({"score": s, "target": -y}, {})
    assert logistic["out"] == pytest.approx(np.mean(np.log1p(np.exp(s))))


def test_cross_entropy_target_checks():
    block = blocks.create("CrossEntropy")
    with pytest.raises(ShapeError, match=r"should have shape \(2, 3\)"):
        block.infer_shapes({"logits": (2, 3, 5), "target": (2, 5)})
    with pytest.raises(RuntimeFailure, match="class id 5"):
        block.forward({"logits": np.zeros((2, 5)), "target": np.array([1, 5])}, {})
    with pytest.raises(RuntimeFailure, match="class id -2"):
        block.forward({"logits": np.zeros((2, 5)), "target": np.array([-2, 0])}, {})
    # ignore_index itself is fine even though it is not a class.
    out, _ = block.forward({"logits": np.zeros((2, 5)), "target": np.array([-1, 0])}, {})
    assert out["out"] == pytest.approx(math.log(5))


def test_cross_entropy_ignores_padding_in_the_mean():
    block = blocks.create("CrossEntropy", ignore_index=0)
    logits = np.random.default_rng(0).normal(size=(4, 3))
    full, _ = block.forward({"logits": logits, "target": np.array([1, 2, 0, 0])}, {})
    kept, _ = blocks.create("CrossEntropy").forward({"logits": logits[:2], "target": np.array([1, 2])}, {})
    assert full["out"] == pytest.approx(kept["out"])


# --- norm ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_layernorm_of_a_constant_row_is_beta(backend):
    block = blocks.create("LayerNorm")
    w = {"gamma": np.full(4, 2.0, np.float32), "beta": np.array([1, 2, 3, 4], np.float32)}
    with kernels.using(backend):
        out, saved = block.forward({"x": np.full((2, 4), 7.0, np.float32)}, w)
        gin, _ = block.backward({"out": np.ones((2, 4), np.float32)}, saved, w)
    np.testing.assert_allclose(out["out"], np.broadcast_to(w["beta"], (2, 4)))
    assert np.all(np.isfinite(gin["x"]))


def test_addnorm_lets_x_survive_junk():
    block = blocks.create("AddNorm")
    w = block.init_weights({"x": (2, 4), "fx": (2, 4)}, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(2, 4))
    out, _ = block.forward({"x": x, "fx": np.zeros((2, 4))}, w)
    ref, _ = blocks.create("LayerNorm").forward({"x": x}, w)
    np.testing.assert_allclose(out["out"], ref["out"])
    with pytest.raises(ShapeError, match="broadcast"):
        block.infer_shapes({"x": (2, 4), "fx": (2, 5)})


# --- dense --------------------------------------------------------------------------------------------


def test_linear_shape_errors_name_the_port():
    with pytest.raises(ShapeError, match="'x'"):
        blocks.create("Linear", out_features=3).infer_shapes({"x": ()})
    with pytest.raises(ShapeError, match="'x'"):
        blocks.create("Flatten").infer_shapes({"x": (5,)})
    lin = blocks.create("Linear", out_features=2)
    with pytest.raises(ShapeError, match="d_in"):
        lin.forward({"x": np.zeros((3, 4))}, {"W": np.zeros((5, 2)), "b": np.zeros(2)})


def test_feedforward_defaults_to_4d_hidden_and_d_out():
    ff = blocks.create("FeedForward")
    assert ff.weight_shapes({"x": (2, 3, 8)}) == {"W1": (8, 32), "b1": (32,), "W2": (32, 8), "b2": (8,)}
    assert ff.infer_shapes({"x": (2, 3, 8)}) == {"out": (2, 3, 8)}


# --- params -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_id,params,name", [
    ("EmbedToken", {"vocab": 0}, "vocab"),
    ("EmbedToken", {"dim": 0}, "dim"),
    ("EmbedToken", {"max_len": 0}, "max_len"),
    ("EmbedToken", {"position": "rotary"}, "position"),
    ("GenerateToken", {"vocab": 0}, "vocab"),
    ("GenerateToken", {"temperature": -0.5}, "temperature"),
    ("GenerateToken", {"tie_to": 3}, "tie_to"),
    ("Linear", {"out_features": 0}, "out_features"),
    ("Linear", {"bias": "yes"}, "bias"),
    ("FeedForward", {"hidden": 0}, "hidden"),
    ("FeedForward", {"out_features": -2}, "out_features"),
    ("FeedForward", {"activation": "swish"}, "activation"),
    ("LayerNorm", {"eps": -1e-5}, "eps"),
    ("AddNorm", {"eps": float("nan")}, "eps"),
    ("Collapse", {"mode": "sum"}, "mode"),
    ("CrossEntropy", {"ignore_index": 1.5}, "ignore_index"),
])
def test_bad_params_raise_param_error_naming_the_param(type_id, params, name):
    with pytest.raises(ParamError) as err:
        blocks.create(type_id, **params)
    msg = str(err.value)
    assert type_id in msg and f"'{name}'" in msg, msg
