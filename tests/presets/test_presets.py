"""The lecture's presets: each loads, runs forward and backward with a finite loss, survives
save → load → save byte for byte, is built edge for edge like the slide, has gradients equal to
the slide's closed forms, and (slow) trains from the CLI until the loss falls by at least 90%."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import presets
from engine import cli, serialize
from engine.data import bind
from engine.runtime import Runtime
from engine.serialize import Project

LECTURE = ("linear_regression", "hinge_loss", "two_layer_net")


def test_the_presets_package() -> None:
    names = presets.names()
    assert set(LECTURE) <= set(names) and presets.DEFAULT in names
    p = presets.path(presets.DEFAULT)
    assert p.is_file() and p.name == "two_layer_net.json"
    assert presets.path("two_layer_net.json") == p
    with pytest.raises(KeyError, match="there is no preset 'nope'"):
        presets.path("nope")


@pytest.mark.parametrize("name", presets.names())
def test_preset_runs_forward_and_backward_with_a_finite_loss(name: str) -> None:
    project = serialize.load(presets.path(name))
    assert project.name and len(project.description) > 200  # the lesson text
    graph = project.graph
    assert graph.infer().ok
    for node in graph.nodes.values():
        assert node.name, f"{name}: every node has a meaningful name"
    xs = [n.position[0] for n in graph.nodes.values()]
    assert len(set(xs)) >= 4, f"{name}: nodes are laid out left to right"
    for link in graph.links:  # left-to-right layout: every wire goes rightwards
        assert graph.nodes[link.src].position[0] < graph.nodes[link.dst].position[0], f"{name}: {link}"
    training = project.training
    assert training["loss"] and {k: v for k, v in training["target"].items() if k != "node"} == {"metric": "loss_drop", "value": 0.9}
    for dtype in (np.float32, np.float64):
        runtime = Runtime(graph, seed=training.get("seed", 0), dtype=dtype)
        p = runtime.forward_backward(bind(project.data, graph).first_feeds(), training["loss"])
        loss = p.values[runtime.loss_port(training["loss"])]
        assert loss.dtype == dtype and np.isfinite(loss) and loss > 0
        grads = p.weight_gradients()
        assert grads and all(np.isfinite(g).all() for ws in grads.values() for g in ws.values())
        # every weight gets a gradient, except attention's key bias: softmax ignores a shift that is
        # the same for every key, so ∂loss/∂bk is exactly 0
        assert all(np.any(g != 0) for ws in grads.values() for w, g in ws.items() if not w.endswith("bk")), name


@pytest.mark.parametrize("name", presets.names())
def test_preset_save_load_save_is_byte_identical(name: str, tmp_path: Path) -> None:
    source = presets.path(name)
    project = serialize.load(source)
    serialize.save(project, tmp_path / "a.json")
    serialize.save(serialize.load(tmp_path / "a.json"), tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes() == source.read_bytes()
    json.loads(source.read_text(encoding="utf-8"))  # plain JSON, UTF-8


def _edges(project: Project) -> set[tuple[str, str, str]]:
    g = project.graph
    return {(g.nodes[l.src].name, g.nodes[l.dst].name, l.dst_port) for l in g.links}


def test_hinge_loss_graph_is_the_slide_edge_for_edge() -> None:
    project = serialize.load(presets.path("hinge_loss"))
    types = {n.name: n.type for n in project.graph.nodes.values()}
    assert types["score"] == "Dot" and types["margin"] == "Multiply" and types["1 − margin"] == "Subtract"
    assert types["hinge"] == "Max" and types["1"] == types["0"] == "Constant"
    assert _edges(project) == {
        ("w", "score", "a"), ("φ(x)", "score", "b"),  # score = w·φ(x)
        ("score", "margin", "a"), ("y", "margin", "b"),  # margin = score·y
        ("1", "1 − margin", "a"), ("margin", "1 − margin", "b"),  # 1 − margin
        ("1 − margin", "hinge", "a"), ("0", "hinge", "b"),  # max(1 − margin, 0)
        ("hinge", "loss", "a"),  # mean over the batch
    }


def test_linear_regression_graph_is_the_slide_edge_for_edge() -> None:
    project = serialize.load(presets.path("linear_regression"))
    assert _edges(project) == {
        ("w", "score", "a"), ("φ(x)", "score", "b"), ("score", "residual", "a"), ("y", "residual", "b"),
        ("residual", "squared", "a"), ("squared", "loss", "a"),
    }


def test_two_layer_net_graph_is_the_slide_edge_for_edge() -> None:
    project = serialize.load(presets.path("two_layer_net"))
    types = {n.name: n.type for n in project.graph.nodes.values()}
    assert [types[k] for k in ("v_j·φ(x)", "h", "w_j·h_j", "score", "residual", "squared", "loss")] == [
        "MatMul", "Sigmoid", "Multiply", "Sum", "Subtract", "Square", "Mean"]
    assert _edges(project) == {
        ("φ(x)", "v_j·φ(x)", "a"), ("V", "v_j·φ(x)", "b"), ("v_j·φ(x)", "h", "a"),
        ("w", "w_j·h_j", "a"), ("h", "w_j·h_j", "b"), ("w_j·h_j", "score", "a"),
        ("score", "residual", "a"), ("y", "residual", "b"), ("residual", "squared", "a"), ("squared", "loss", "a"),
    }


def _float64_pass(name: str):
    project = serialize.load(presets.path(name))
    g = project.graph
    runtime = Runtime(g, seed=7, dtype=np.float64)
    feeds = bind(project.data, g).first_feeds()
    p = runtime.forward_backward(feeds, "loss")
    grads = p.weight_gradients()
    phi = feeds[g.find("φ(x)").id]
    y = feeds[g.find("y").id]
    return runtime, p, grads, phi, y, g


def test_two_layer_net_gradients_equal_the_slides_closed_forms() -> None:
    runtime, p, grads, phi, y, g = _float64_pass("two_layer_net")
    V = runtime.weights[g.find("V").id]["value"]
    w = runtime.weights[g.find("w").id]["value"]
    h = 1.0 / (1.0 + np.exp(-(phi @ V)))  # h_j = σ(v_j·φ(x)), column j of V is v_j
    residual = h @ w - y
    n = len(y)
    np.testing.assert_allclose(p.values[(g.find("residual").id, "out")], residual, rtol=1e-12)
    # dLoss/dw_j = 2·residual·h_j, averaged over the batch by the Mean
    dw = (2 * residual[:, None] * h).sum(axis=0) / n
    # dLoss/dv_j = 2·residual·w_j·h_j(1 − h_j)·φ(x)
    dV = np.einsum("b,bj,bd->dj", 2 * residual, w * h * (1 - h), phi) / n
    np.testing.assert_allclose(grads[g.find("w").id]["value"], dw, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grads[g.find("V").id]["value"], dV, rtol=1e-10, atol=1e-14)


def test_hinge_and_linear_gradients_equal_the_closed_forms() -> None:
    runtime, p, grads, phi, y, g = _float64_pass("hinge_loss")
    w = runtime.weights[g.find("w").id]["value"]
    margin = (phi @ w) * y
    expected = (-(phi * y[:, None]) * (margin < 1)[:, None]).mean(axis=0)  # −φ(x)y where margin < 1, else 0
    np.testing.assert_allclose(grads[g.find("w").id]["value"], expected, rtol=1e-12)
    runtime, p, grads, phi, y, g = _float64_pass("linear_regression")
    w = runtime.weights[g.find("w").id]["value"]
    expected = (2 * (phi @ w - y)[:, None] * phi).mean(axis=0)  # 2(w·φ(x) − y)φ(x)
    np.testing.assert_allclose(grads[g.find("w").id]["value"], expected, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", LECTURE)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_preset_trains_from_the_cli_until_the_loss_falls_by_90_percent(name: str, seed: int, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / f"{name}.bps"
    code = cli.main(["train", str(presets.path(name)), "--seed", str(seed), "--json", "-o", str(out_file)])
    out, err = capsys.readouterr()
    result = json.loads(out.splitlines()[-1])
    assert result["event"] == "result"
    assert code == cli.EXIT_OK, err
    assert result["drop"] >= 0.9 and result["target_met"] is True
    trained = serialize.load(out_file)
    assert len(trained.history["loss"]) == result["steps"]
