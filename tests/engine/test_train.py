"""Optimisers (against torch.optim), clipping, data binding and synthetic sets, and the Trainer:
reproducible bit for bit, resumable exactly, and stopping on NaN/Inf with a message naming the
first bad node."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import data as data_mod
from engine import optim, serialize
from engine.errors import NonFiniteError
from engine.graph import Graph
from engine.serialize import Project
from engine.train import Trainer, TrainingConfig, TrainingError, normalize, target_met


def _weights(rng: np.random.Generator, dtype: Any) -> dict[str, dict[str, np.ndarray]]:
    return {"a": {"W": rng.standard_normal((3, 4)).astype(dtype), "b": rng.standard_normal(4).astype(dtype)},
            "c": {"value": rng.standard_normal(()).astype(dtype)}}


def _grads(rng: np.random.Generator, like: dict) -> dict[str, dict[str, np.ndarray]]:
    return {n: {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in ws.items()} for n, ws in like.items()}


# --- optimisers against torch ---------------------------------------------------------------------


OPTIMISERS = [
    pytest.param({"type": "sgd", "lr": 0.1}, id="sgd"),
    pytest.param({"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}, id="sgd-momentum-wd"),
    pytest.param({"type": "adam", "lr": 0.01}, id="adam"),
    pytest.param({"type": "adam", "lr": 0.003, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}, id="adam-wd"),
    pytest.param({"type": "adam", "lr": 0.01, "betas": (0.3, 0.9)}, id="adam-small-beta1"),
]


@pytest.mark.torch
@pytest.mark.parametrize("settings", OPTIMISERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimisers_match_torch(settings: dict, dtype: Any) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours = _weights(rng, dtype)
    theirs = {n: {k: torch.tensor(v.copy(), requires_grad=True) for k, v in ws.items()} for n, ws in ours.items()}
    params = [t for ws in theirs.values() for t in ws.values()]
    kwargs = {k: v for k, v in settings.items() if k != "type"}
    ref = (torch.optim.SGD if settings["type"] == "sgd" else torch.optim.Adam)(params, **kwargs)
    opt = optim.create(settings)
    for _ in range(6):
        g = _grads(rng, ours)
        for n, ws in theirs.items():
            for k, t in ws.items():
                t.grad = torch.tensor(g[n][k])
        ref.step()
        opt.step(ours, g)
    tol = dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for n, ws in ours.items():
        for k, w in ws.items():
            assert w.dtype == dtype
            np.testing.assert_allclose(w, theirs[n][k].detach().numpy(), **tol)


@pytest.mark.torch
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clipping_matches_torch(max_norm: float) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    grads = _grads(rng, _weights(rng, np.float64))
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for ws in grads.values() for g in ws.values()]
    for t, g in zip(tensors, [g for ws in grads.values() for g in ws.values()]):
        t.grad = torch.tensor(g.copy())
    total = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    norm = optim.clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(float(total), rel=1e-12)
    for t, g in zip(tensors, [g for ws in grads.values() for g in ws.values()]):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)


def test_clipping_scales_to_the_norm_and_keeps_dtype() -> None:
    grads = {"n": {"a": np.array([3.0, 4.0], np.float32)}}
    before = grads["n"]["a"]
    assert optim.clip_grad_norm(grads, 1.0) == pytest.approx(5.0)
    assert grads["n"]["a"].dtype == np.float32
    np.testing.assert_allclose(grads["n"]["a"], [0.6, 0.8], rtol=1e-5)
    assert np.array_equal(before, [3.0, 4.0])  # new arrays: snapshots elsewhere stay as they were


@pytest.mark.parametrize("settings", OPTIMISERS)
def test_optimiser_state_round_trip_continues_exactly(settings: dict) -> None:
    rng = np.random.default_rng(2)
    w1 = _weights(rng, np.float32)
    w2 = {n: {k: v.copy() for k, v in ws.items()} for n, ws in w1.items()}
    grads = [_grads(rng, w1) for _ in range(6)]
    a = optim.create(settings)
    for g in grads:
        a.step(w1, g)
    b = optim.create(settings)
    for g in grads[:3]:
        b.step(w2, g)
    state = {k: np.array(v) for k, v in b.state_dict().items()}
    c = optim.create(settings)
    c.load_state_dict(state, w2)
    for g in grads[3:]:
        c.step(w2, g)
    for n, ws in w1.items():
        for k, w in ws.items():
            assert np.array_equal(w, w2[n][k])


def test_optimiser_errors() -> None:
    with pytest.raises(optim.OptimizerError, match="unknown optimiser 'rmsprop'"):
        optim.create({"type": "rmsprop"})
    with pytest.raises(optim.OptimizerError, match=r"adam: 'betas\[0\]' must be ≥ 0 and < 1, got 1.0"):
        optim.create({"type": "adam", "betas": [1.0, 0.9]})
    with pytest.raises(optim.OptimizerError, match="sgd has no setting 'betas'"):
        optim.create({"type": "sgd", "betas": [0.9, 0.9]})
    w = {"n": {"a": np.zeros(3)}}
    with pytest.raises(optim.OptimizerError, match="has shape"):
        optim.Adam().load_state_dict({"adam/step": np.array(1), "adam/exp_avg/n/a": np.zeros(2), "adam/exp_avg_sq/n/a": np.zeros(2)}, w)
    with pytest.raises(optim.OptimizerError, match="is not sgd state"):
        optim.SGD().load_state_dict({"adam/step": np.array(1)}, w)


# --- training settings ---------------------------------------------------------------------------


def test_training_settings_are_normalized_idempotently() -> None:
    spec = {"target": {"value": 1, "metric": "loss_drop"}, "steps": 10.0, "optimizer": {"lr": 1, "type": "adam", "betas": [0.9, 0.99]}, "loss": "L"}
    once = normalize(spec)
    assert list(once) == ["loss", "optimizer", "steps", "target"]
    assert once["optimizer"] == {"type": "adam", "lr": 1.0, "betas": [0.9, 0.99]} and once["steps"] == 10
    assert normalize(once) == once
    cfg = TrainingConfig.from_dict({})
    assert (cfg.steps, cfg.seed, cfg.dtype, cfg.clip, cfg.optimizer["type"]) == (100, 0, "float32", None, "sgd")
    assert cfg.with_overrides(lr=0.5, steps=7).optimizer["lr"] == 0.5


@pytest.mark.parametrize("spec,message", [
    ({"steps": -1}, r"'steps' must be ≥ 0"),
    ({"steps": 1.5}, r"'steps' must be a whole number"),
    ({"dtype": "float16"}, r"'dtype' must be one of float32, float64"),
    ({"optimizer": {"type": "adam", "momentum": 0.9}}, r"optimizer adam has no setting 'momentum'"),
    ({"target": {"metric": "accuracy", "value": 0.9}}, r"target metric must be one of loss_drop, loss_below"),
    ({"target": {"metric": "loss_drop", "value": 2}}, r"a loss_drop target is a fraction between 0 and 1"),
    ({"clip": "yes"}, r"'clip' must be a number"),
    ({"loss": 3}, r"'loss' must be the name of a node"),
])
def test_bad_training_settings(spec: dict, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        normalize(spec)


def test_target_met() -> None:
    drop = {"metric": "loss_drop", "value": 0.9}
    assert target_met(drop, 1.0, 0.09) and not target_met(drop, 1.0, 0.2)
    assert target_met({"metric": "loss_below", "value": 0.1}, 5.0, 0.1)
    assert target_met(None, 1.0, 2.0) is None
    assert not target_met(drop, 1.0, float("nan"))


# --- data ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(data_mod.SYNTHETIC))
def test_synthetic_sets_are_deterministic_and_shaped(name: str) -> None:
    a = data_mod.synthetic(name, rows=40, seed=3)
    b = data_mod.synthetic(name, rows=40, seed=3)
    c = data_mod.synthetic(name, rows=40, seed=4)
    assert set(a) == {"x", "y"} and a["x"].shape[0] == a["y"].shape[0] == 40
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["x"], c["x"])
    assert np.all(np.isfinite(a["x"]))


def test_synthetic_labels_and_bias_feature() -> None:
    xor = data_mod.synthetic("xor", rows=200, seed=0, noise=0.0, bias_feature=True)
    assert xor["x"].shape == (200, 3) and np.all(xor["x"][:, 2] == 1.0)
    assert set(np.unique(xor["y"])) == {-1.0, 1.0}
    assert np.array_equal(xor["y"] > 0, xor["x"][:, 0] * xor["x"][:, 1] < 0)
    blobs = data_mod.synthetic("blobs", rows=90, classes=3, labels="ids")
    assert blobs["y"].dtype == np.int64 and sorted(np.unique(blobs["y"])) == [0, 1, 2]
    lin = data_mod.synthetic("linear", rows=50, features=2, noise=0.0, weights=[2.0, -1.0], bias=0.5)
    np.testing.assert_allclose(lin["y"], lin["x"] @ [2.0, -1.0] + 0.5)


@pytest.mark.parametrize("spec,message", [
    ({"x": [1, 2]}, r"data 'x' must be an object"),
    ({"x": {"values": [1, "a"]}}, r"'values' must hold numbers only"),
    ({"x": {"values": []}}, r"'values' is empty"),
    ({"x": {"kind": "synthetic", "name": "xor", "field": "z"}}, r"synthetic set 'xor' has no field 'z' \(fields: x, y\)"),
    ({"x": {"kind": "synthetic", "name": "xor", "params": {"noisy": 1}}}, r"synthetic set 'xor' has no parameter 'noisy'"),
    ({"x": {"kind": "synthetic", "name": "xor", "rows": 0}}, r"parameter 'rows' must be ≥ 1"),
    ({"x": {"kind": "synthetic", "name": "blobs", "params": {"classes": 3}}}, r"signed labels \(±1\) need 2 classes"),
    ({"x": {"kind": "table"}}, r"unknown kind 'table'"),
    ({"x": {"values": [1], "scale": 2}}, r"unknown key 'scale'"),
])
def test_bad_data_sections(spec: dict, message: str) -> None:
    with pytest.raises(data_mod.DataError, match=message):
        data_mod.normalize(spec)


def _regression_graph(batch: int = 4, features: int = 2) -> tuple[Graph, dict[str, str]]:
    g = Graph()
    x = g.add_node("Input", {"shape": (batch, features)}, name="x")
    y = g.add_node("Input", {"shape": (batch, 1)}, name="y")
    w = g.add_node("Parameter", {"shape": (features, 1)}, name="w")
    s = g.add_node("MatMul", {}, name="score")
    r = g.add_node("Subtract", {}, name="residual")
    q = g.add_node("Square", {}, name="squared")
    m = g.add_node("Mean", {}, name="loss")
    for src, dst, port in ((x, s, "a"), (w, s, "b"), (s, r, "a"), (y, r, "b"), (r, q, "a"), (q, m, "a")):
        g.connect(src.id, "out", dst.id, port)
    return g, {n.name: n.id for n in g.nodes.values()}


def test_binding_reshapes_rows_and_draws_seeded_minibatches() -> None:
    g, ids = _regression_graph(batch=4)
    spec = {"x": {"values": [[i, -i] for i in range(10)]}, "y": {"values": list(range(10))}}
    ds = data_mod.bind(spec, g)
    assert (ds.rows, ds.batch, ds.full_batch) == (10, 4, False)
    b0 = ds.batch_feeds(0, seed=1)
    assert b0[ids["x"]].shape == (4, 2) and b0[ids["y"]].shape == (4, 1)
    assert np.array_equal(b0[ids["x"]][:, 0], b0[ids["y"]][:, 0])  # rows stay aligned
    assert len(set(b0[ids["y"]][:, 0])) == 4  # drawn without replacement
    assert np.array_equal(ds.batch_feeds(0, 1)[ids["x"]], b0[ids["x"]])
    assert any(not np.array_equal(ds.batch_feeds(t, 1)[ids["x"]], b0[ids["x"]]) for t in range(1, 5))
    assert [f[ids["y"]][:, 0].tolist() for f in ds.eval_feeds()] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert ds.first_feeds()[ids["y"]][:, 0].tolist() == [0, 1, 2, 3]


def test_synthetic_fields_from_one_set_line_up() -> None:
    g, ids = _regression_graph(batch=8)
    entry = {"kind": "synthetic", "name": "linear", "rows": 8, "seed": 5, "params": {"features": 2, "noise": 0.0, "weights": [1.0, 2.0]}}
    ds = data_mod.bind({"x": {**entry, "field": "x"}, "y": {**entry, "field": "y"}}, g)
    f = ds.batch_feeds(0, 0)
    np.testing.assert_allclose(f[ids["x"]] @ [1.0, 2.0], f[ids["y"]][:, 0])


@pytest.mark.parametrize("spec,message", [
    ({"x": {"values": [[1, 2]] * 4}}, r"Input 'y' has no data: add an entry named 'y' under \"data\""),
    ({"x": {"values": [[1, 2]] * 4}, "y": {"values": [1] * 4}, "z": {"values": [1]}}, r"data 'z' has no Input node of that name"),
    ({"x": {"values": [[1, 2]] * 4}, "y": {"values": [1] * 4}, "loss": {"values": [1]}}, r"names 'loss', a Mean block; data can only feed Input nodes"),
    ({"x": {"values": [[1, 2, 3]] * 4}, "y": {"values": [1] * 4}}, r"data 'x' has rows of shape \(3,\), but Input 'x' takes rows of shape \(2,\)"),
    ({"x": {"values": [[1, 2]] * 3}, "y": {"values": [1] * 3}}, r"Input 'x' takes batches of 4 rows \(its shape \(4, 2\)\), but data 'x' has only 3 rows"),
    ({"x": {"values": [[1, 2]] * 6}, "y": {"values": [1] * 5}}, r"has 6 rows, but the data for Input 'y' has 5; rows must line up"),
    ({"x": {"values": 3}, "y": {"values": [1] * 4}}, r"data 'x' is a single number"),
])
def test_binding_errors_name_the_input_and_the_data(spec: dict, message: str) -> None:
    g, _ = _regression_graph(batch=4)
    with pytest.raises(data_mod.DataError, match=message):
        data_mod.bind(spec, g)


def test_token_id_inputs_need_whole_numbers() -> None:
    g = Graph()
    g.add_node("Input", {"shape": (2, 3), "dtype": "ids"}, name="ids")
    assert data_mod.bind({"ids": {"values": [[1, 2, 3], [4.0, 5, 6]]}}, g).bindings[0].array.dtype == np.int64
    with pytest.raises(data_mod.DataError, match="takes token ids"):
        data_mod.bind({"ids": {"values": [[1, 2, 3.5], [4, 5, 6]]}}, g)


# --- the trainer -------------------------------------------------------------------------------------


def _project(batch: int = 8, rows: int = 32, **training: Any) -> Project:
    g, _ = _regression_graph(batch=batch)
    entry = {"kind": "synthetic", "name": "linear", "rows": rows, "seed": 1, "params": {"features": 2, "noise": 0.05}}
    spec = {"loss": "loss", "optimizer": {"type": "adam", "lr": 0.05}, "steps": 40, "seed": 0, **training}
    return Project(g, "t", "", {"x": {**entry, "field": "x"}, "y": {**entry, "field": "y"}}, spec)


def _all_weights(trainer: Trainer) -> list[np.ndarray]:
    return [w for ws in trainer.weights.values() for w in ws.values()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_runs_with_one_seed_give_identical_weights(dtype: str) -> None:
    project = _project(dtype=dtype, clip=1.0)
    a, b = Trainer.from_project(project), Trainer.from_project(project)
    ra, rb = a.run(), b.run()
    assert all(np.array_equal(x, y) for x, y in zip(_all_weights(a), _all_weights(b)))
    assert all(w.dtype == np.dtype(dtype) for w in _all_weights(a))
    assert np.array_equal(a.history["loss"], b.history["loss"]) and ra.final_loss == rb.final_loss
    c = Trainer.from_project(project, seed=1)
    c.run()
    assert not all(np.array_equal(x, y) for x, y in zip(_all_weights(a), _all_weights(c)))


def test_training_learns_and_records_history() -> None:
    trainer = Trainer.from_project(_project(target={"metric": "loss_drop", "value": 0.9}))
    records = []
    result = trainer.run(on_step=records.append)
    assert result.steps == 40 == len(records) and [r.step for r in records] == list(range(1, 41))
    assert result.target_met and result.drop >= 0.9 and result.final_loss < result.initial_loss
    assert all(r.grad_norm > 0 and r.seconds >= 0 for r in records)
    h = trainer.history_arrays()
    assert h["step"].tolist() == list(range(1, 41)) and np.array_equal(h["loss"], [r.loss for r in records])


def test_should_stop_stops_between_steps() -> None:
    trainer = Trainer.from_project(_project())
    result = trainer.run(should_stop=lambda: trainer.step_count >= 5)
    assert result.stopped and result.steps == 5 == trainer.step_count


def test_resumed_run_from_a_container_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    project = _project(optimizer={"type": "sgd", "lr": 0.05, "momentum": 0.9})
    whole = Trainer.from_project(project)
    whole.run(30)
    first = Trainer.from_project(project)
    first.run(12)
    serialize.save(first.to_project(project), tmp_path / "half.bps")
    loaded = serialize.load(tmp_path / "half.bps")
    second = Trainer.from_project(loaded)
    assert second.step_count == 12
    second.run(18)
    assert all(np.array_equal(x, y) for x, y in zip(_all_weights(whole), _all_weights(second)))
    assert np.array_equal(whole.history["loss"], second.history["loss"])
    fresh = Trainer.from_project(loaded, restart=True)
    assert fresh.step_count == 0


def test_state_of_another_optimiser_is_not_used() -> None:
    project = _project()
    t = Trainer.from_project(project)
    t.run(3)
    trained = t.to_project(project)
    other = dataclasses.replace(trained, training={**trained.training, "optimizer": {"type": "sgd", "lr": 0.1}})
    again = Trainer.from_project(other)
    assert again.notes and "adam" in again.notes[0] and "sgd starts afresh" in again.notes[0]


def _nan_project(kind: str) -> Project:
    g = Graph()
    x = g.add_node("Input", {"shape": (2,)}, name="x")
    if kind == "forward":
        w = g.add_node("Parameter", {"shape": (2,), "init": "values", "values": [1.0, -1.0]}, name="w")
        p = g.add_node("Multiply", {}, name="wx")
        lg = g.add_node("Log", {}, name="log")
        m = g.add_node("Mean", {}, name="loss")
        g.connect(w.id, "out", p.id, "a"); g.connect(x.id, "out", p.id, "b")
        g.connect(p.id, "out", lg.id, "a"); g.connect(lg.id, "out", m.id, "a")
    else:  # finite forward, a gradient that overflows float32
        c = g.add_node("Constant", {"value": 1e-30}, name="c")
        b = g.add_node("Parameter", {"shape": (), "init": "values", "values": 1e-30}, name="b")
        q = g.add_node("Divide", {}, name="q")
        s = g.add_node("Scale", {"factor": 1e10}, name="scaled")
        xm = g.add_node("Mean", {}, name="xmean")
        m = g.add_node("Add", {}, name="loss")
        g.connect(c.id, "out", q.id, "a"); g.connect(b.id, "out", q.id, "b")
        g.connect(q.id, "out", s.id, "a"); g.connect(x.id, "out", xm.id, "a")
        g.connect(s.id, "out", m.id, "a"); g.connect(xm.id, "out", m.id, "b")
    return Project(g, "nan", "", {"x": {"values": [1.0, 1.0]}}, {"loss": "loss", "optimizer": {"type": "sgd", "lr": 0.1}})


def test_nan_in_the_forward_pass_names_the_first_bad_node() -> None:
    trainer = Trainer.from_project(_nan_project("forward"))
    with pytest.raises(NonFiniteError, match=r"step 1: the forward pass produced NaN or Inf first at 'log' \(Log\) output 'out'") as info:
        trainer.step()
    assert info.value.phase == "forward" and info.value.node == trainer.graph.find("log").id
    with pytest.raises(NonFiniteError, match=r"evaluating the loss: .* at 'log' \(Log\)"):
        trainer.run()


def test_inf_in_the_backward_pass_names_the_first_bad_node() -> None:
    trainer = Trainer.from_project(_nan_project("backward"))
    with pytest.raises(NonFiniteError, match=r"step 1: the backward pass produced NaN or Inf first at 'q' \(Divide\): gradient of input 'a'") as info:
        trainer.step()
    assert info.value.phase == "backward" and trainer.step_count == 0


def test_an_update_that_overflows_names_the_weight() -> None:
    project = _project(optimizer={"type": "sgd", "lr": 1e38})
    for entry in project.data.values():
        entry["params"]["weights"] = [30.0, -30.0]  # gradients of about 100: 1e38 · 100 overflows float32
    trainer = Trainer.from_project(project)
    with pytest.raises(NonFiniteError, match=r"step 1: the update made 'w' weight 'value' NaN or Inf \(is the learning rate 1e\+38 too large\? try clipping\)"):
        trainer.step()


def test_trainer_setting_errors() -> None:
    project = _project()
    with pytest.raises(TrainingError, match="name no loss"):
        Trainer.from_project(dataclasses.replace(project, training={}))
    with pytest.raises(TrainingError, match=r"training.loss is 'nope', but no node is named 'nope'"):
        Trainer.from_project(dataclasses.replace(project, training={"loss": "nope"}))
    with pytest.raises(TrainingError, match=r"whose output 'out' has shape \(8, 1\); the loss must be a single number"):
        Trainer.from_project(dataclasses.replace(project, training={"loss": "squared"}))
