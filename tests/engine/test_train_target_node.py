"""A training target may judge another node than the training loss (two models trained side by
side on the sum of their losses, each with its own loss node)."""

from __future__ import annotations

import json

import pytest

from engine import cli, serialize
from engine.graph import Graph
from engine.serialize import Project
from engine.train import Trainer, TrainingError, normalize


def _two_heads() -> tuple[Graph, dict]:
    # the same regression twice: "good" can fit y, "stuck" squeezes its scores into (0, 1)
    g = Graph()
    x = g.add_node("Input", {"shape": (16, 2)}, name="x", node_id="x")
    y = g.add_node("Input", {"shape": (16,)}, name="y", node_id="y")
    w = g.add_node("Parameter", {"shape": (2,)}, name="w", node_id="w")
    score = g.add_node("Dot", name="score", node_id="score")
    good = g.add_node("SquaredLoss", name="good loss", node_id="good")
    u = g.add_node("Parameter", {"shape": (2,)}, name="u", node_id="u")
    dot = g.add_node("Dot", name="u·x", node_id="dot")
    c = g.add_node("Sigmoid", name="σ", node_id="sigma")
    stuck = g.add_node("SquaredLoss", name="stuck loss", node_id="stuck")
    total = g.add_node("Add", name="total", node_id="total")
    g.connect(w.id, "out", score.id, "a")
    g.connect(x.id, "out", score.id, "b")
    g.connect(score.id, "out", good.id, "pred")
    g.connect(y.id, "out", good.id, "target")
    g.connect(u.id, "out", dot.id, "a")
    g.connect(x.id, "out", dot.id, "b")
    g.connect(dot.id, "out", c.id, "a")
    g.connect(c.id, "out", stuck.id, "pred")
    g.connect(y.id, "out", stuck.id, "target")
    g.connect(good.id, "out", total.id, "a")
    g.connect(stuck.id, "out", total.id, "b")
    spec = {"kind": "synthetic", "name": "linear", "rows": 16, "params": {"features": 2, "noise": 0.0, "weights": [2.0, -1.0]}}
    return g, {"x": {**spec, "field": "x"}, "y": {**spec, "field": "y"}}


def _training(node: str | None) -> dict:
    target = {"metric": "loss_drop", "value": 0.9, **({"node": node} if node else {})}
    return {"loss": "total", "optimizer": {"type": "adam", "lr": 0.1}, "steps": 200, "target": target}


def test_the_target_judges_its_own_node():
    g, data = _two_heads()
    result = Trainer(g, data, _training("good loss")).run()
    assert result.target_met is True
    assert result.target_initial is not None and result.target_final < 0.01 * result.target_initial
    assert result.drop < 0.9  # the summed loss alone would not meet the target
    assert json.loads(json.dumps(result.to_json()))["target_final"] == result.target_final
    assert Trainer(g, data, _training("stuck loss")).run().target_met is False
    plain = Trainer(g, data, _training(None)).run()
    assert plain.target_met is False and plain.target_initial is None and "target_initial" not in plain.to_json()


def test_target_node_errors():
    g, data = _two_heads()
    with pytest.raises(TrainingError, match="training.target names node 'nope'"):
        Trainer(g, data, _training("nope"))
    with pytest.raises(TrainingError, match=r"training.target judges 'score', whose output 'out' has shape \(16,\)"):
        Trainer(g, data, _training("score"))
    with pytest.raises(TrainingError, match="target 'node' must be the name of a node"):
        normalize({"target": {"metric": "loss_drop", "value": 0.5, "node": 3}})
    with pytest.raises(TrainingError, match="optionally"):
        normalize({"target": {"metric": "loss_drop", "value": 0.5, "colour": "red"}})
    t = {"target": {"metric": "loss_below", "value": 0.5, "node": "good loss"}}
    assert normalize(normalize(t)) == normalize(t) == t


def test_the_cli_reports_the_judged_node(tmp_path, capsys):
    g, data = _two_heads()
    path = tmp_path / "two.json"
    serialize.save(Project(g, data=data, training=_training("good loss")), path)
    assert serialize.load(path).training["target"]["node"] == "good loss"
    code = cli.main(["train", str(path)])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK
    assert "target (the output of good loss falls by ≥ 90%): met" in out and "good loss: " in out
