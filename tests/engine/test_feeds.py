"""Where a pass's inputs come from (engine.feeds): the lesson's first batch exactly as ``run``
uses it, one example, and seeded random inputs for a graph without data."""

from __future__ import annotations

import json

import numpy as np
import pytest

import presets
from engine import cli, feeds, serialize
from engine.errors import GraphError
from engine.graph import Graph
from engine import kernels
from engine.serialize import Project

SCALAR_LESSONS = ("linear_regression", "hinge_loss", "two_layer_net")


def _load(name: str) -> Project:
    return serialize.load(presets.path(name))


@pytest.mark.parametrize("name", ["two_layer_net", "hinge_loss", "language_model"])
def test_lesson_pass_gives_the_loss_run_prints_to_the_last_digit(capsys, name):
    assert cli.main(["run", str(presets.path(name)), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])["loss"]
    setup = feeds.prepare(_load(name))
    assert setup.source == "lesson"
    with kernels.using(setup.ready().backend):  # the backend `run` picks for one pass of this graph
        loss = float(setup.runtime.forward(setup.feeds).values[setup.loss])
    assert loss == printed  # the same batch, seed and weights: the same float


def test_the_scalar_lessons_and_only_they_suit_one_example():
    for name in presets.names():
        assert feeds.suits_one_example(_load(name).graph) == (name in SCALAR_LESSONS), name


def test_one_example_is_the_first_row_with_a_batch_of_one():
    project = _load("two_layer_net")
    full = feeds.prepare(project)
    one = feeds.prepare(project, one_example=True)
    assert one.source == "one example" and "one example" in one.note
    x = project.graph.find("φ(x)").id
    assert one.feeds[x].shape == (1, 3)
    np.testing.assert_array_equal(one.feeds[x][0], full.feeds[x][0])
    p = one.runtime.forward_backward(one.feeds, one.loss)
    assert p.values[one.loss].shape == ()
    assert p.values[(project.graph.find("score").id, "out")].shape == (1,)
    # the same starting weights as the full lesson
    for node, ws in full.runtime.weights.items():
        for k, w in ws.items():
            np.testing.assert_array_equal(one.runtime.weights[node][k], w)


def test_one_example_refuses_a_graph_that_needs_its_batch():
    g = Graph()
    a = g.add_node("Input", {"shape": (4, 3)}, name="a")
    b = g.add_node("Constant", {"value": [[1.0, 2.0, 3.0, 4.0]] * 2}, name="b")
    mix = g.add_node("MatMul", name="mix")  # (2, 4) @ (4, 3): the batch is a matrix dimension here
    g.connect(b.id, "out", mix.id, "a")
    g.connect(a.id, "out", mix.id, "b")
    with pytest.raises(GraphError, match="one example"):
        feeds.single_example(Project(g))


def _user_graph() -> tuple[Graph, dict[str, str]]:
    g = Graph()
    ids = g.add_node("Input", {"shape": (2, 5), "dtype": "ids"}, name="ids")
    emb = g.add_node("EmbedToken", {"vocab": 7, "dim": 4}, name="emb")
    col = g.add_node("Collapse", name="col")
    lin = g.add_node("Linear", {"out_features": 3}, name="lin")
    target = g.add_node("Input", {"shape": (2,), "dtype": "ids"}, name="target")
    x = g.add_node("Input", {"shape": (2, 3)}, name="x")
    add = g.add_node("Add", name="add")
    loss = g.add_node("CrossEntropy", name="loss")
    g.connect(ids.id, "out", emb.id, "ids")
    g.connect(emb.id, "out", col.id, "x")
    g.connect(col.id, "out", lin.id, "x")
    g.connect(lin.id, "out", add.id, "a")
    g.connect(x.id, "out", add.id, "b")
    g.connect(add.id, "out", loss.id, "logits")
    g.connect(target.id, "out", loss.id, "target")
    return g, {n.name: n.id for n in g.nodes.values()}


def test_a_graph_without_data_runs_on_seeded_random_inputs_of_its_shapes():
    g, ids = _user_graph()
    setup = feeds.prepare(Project(g))
    assert setup.source == "random" and "random" in setup.note
    assert setup.loss == (ids["loss"], "out")  # the only scalar sink
    f = setup.feeds
    assert f[ids["ids"]].shape == (2, 5) and f[ids["ids"]].dtype == np.int64
    assert f[ids["ids"]].min() >= 0 and f[ids["ids"]].max() < 7  # within the vocabulary
    assert f[ids["target"]].max() < 3  # a class of the 3 scores
    assert f[ids["x"]].shape == (2, 3) and f[ids["x"]].dtype == np.float32
    again = feeds.prepare(Project(g))
    for k in f:
        np.testing.assert_array_equal(again.feeds[k], f[k])
    other = feeds.prepare(Project(g), seed=5)
    assert not np.array_equal(other.feeds[ids["x"]], f[ids["x"]])
    assert np.isfinite(float(setup.runtime.forward(f).values[setup.loss]))


def test_data_that_no_longer_fits_falls_back_to_random_inputs_and_says_why():
    project = _load("linear_regression")
    g = project.graph.copy()
    g.rename(g.find("y").id, "label")  # the data names y: it feeds nothing now
    setup = feeds.prepare(Project(g, data=project.data, training=project.training))
    assert setup.source == "random" and "does not fit" in setup.note


def test_inputs_typed_by_hand_replace_the_data_and_are_checked():
    g, ids = _user_graph()
    typed = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    setup = feeds.prepare(Project(g), overrides={ids["x"]: typed})
    np.testing.assert_array_equal(setup.feeds[ids["x"]], typed)
    assert "typed by hand: x" in setup.note
    with pytest.raises(Exception, match="shape"):
        feeds.prepare(Project(g), overrides={ids["x"]: np.zeros((3, 3))})
