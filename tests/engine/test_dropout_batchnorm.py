"""Dropout and BatchNorm: training vs evaluation mode, reproducible bit for bit from the seed,
torch's results (BatchNorm1d/2d in both modes, their running statistics; Dropout in eval mode and
with our mask), and BatchNorm's running statistics as buffers: saved, not optimised, no gradient."""

from __future__ import annotations

import numpy as np
import pytest

from engine import blocks, serialize
from engine.blocks import Context
from engine.errors import RuntimeFailure
from engine.graph import Graph
from engine.runtime import Runtime
from engine.serialize import Project
from engine.train import Trainer

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
TRAIN = Context(training=True, seed=3, step=0, path=("node",))


def _tol(dtype):
    return {"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}


# --- Dropout -------------------------------------------------------------------------------------------


def test_dropout_is_the_identity_in_evaluation_and_by_default():
    x = np.random.default_rng(0).standard_normal((4, 5))
    block = blocks.create("Dropout", p=0.7)
    for context in (None, Context(), Context(training=False, seed=9, step=4)):
        out, saved = block.forward({"x": x}, {}, context)
        assert out["out"] is x
        g = np.ones_like(x)
        assert block.backward({"out": g}, saved, {})[0]["x"] is g


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_in_training_zeroes_and_rescales_with_one_mask_for_values_and_gradients(dtype):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 2.0, (50, 40)).astype(dtype)  # no zeros: a 0 in out means dropped
    block = blocks.create("Dropout", p=0.3)
    out, saved = block.forward({"x": x}, {}, TRAIN)
    kept = out["out"] != 0
    assert out["out"].dtype == dtype
    assert abs(1 - kept.mean() - 0.3) < 0.03  # 2000 draws: the share dropped is p to within 3 points
    np.testing.assert_allclose(out["out"][kept], x[kept] / dtype(0.7), rtol=1e-6 if dtype == np.float32 else 1e-15)
    g = rng.standard_normal(x.shape).astype(dtype)
    gx = block.backward({"out": g}, saved, {})[0]["x"]
    np.testing.assert_array_equal(gx == 0, ~kept)
    np.testing.assert_allclose(gx[kept], g[kept] / dtype(0.7), rtol=1e-6 if dtype == np.float32 else 1e-15)
    np.testing.assert_array_equal(block.mask(x.shape, TRAIN), kept)


def test_dropout_masks_are_reproducible_bit_for_bit_and_differ_by_step_node_and_seed():
    x = np.ones((8, 16))
    block = blocks.create("Dropout", p=0.5)

    def mask(context):
        return block.forward({"x": x}, {}, context)[0]["out"] != 0

    base = mask(TRAIN)
    np.testing.assert_array_equal(base, mask(Context(training=True, seed=3, step=0, path=("node",))))
    assert not np.array_equal(base, mask(Context(training=True, seed=3, step=1, path=("node",))))
    assert not np.array_equal(base, mask(Context(training=True, seed=4, step=0, path=("node",))))
    assert not np.array_equal(base, mask(TRAIN.child("inner")))
    # float32 and float64 runs drop the same units
    np.testing.assert_array_equal(base, block.forward({"x": x.astype(np.float32)}, {}, TRAIN)[0]["out"] != 0)


def test_dropout_p_one_drops_everything_and_p_zero_nothing():
    x = np.arange(1.0, 7.0).reshape(2, 3)
    out, saved = blocks.create("Dropout", p=1.0).forward({"x": x}, {}, TRAIN)
    np.testing.assert_array_equal(out["out"], 0)
    np.testing.assert_array_equal(blocks.create("Dropout", p=1.0).backward({"out": np.ones_like(x)}, saved, {})[0]["x"], 0)
    assert blocks.create("Dropout", p=0.0).forward({"x": x}, {}, TRAIN)[0]["out"] is x


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_matches_torch_in_eval_mode_and_with_the_same_mask_in_training(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 7)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    block = blocks.create("Dropout", p=0.4)
    layer = torch.nn.Dropout(0.4)
    layer.eval()
    tx = torch.from_numpy(x).requires_grad_()
    ref = layer(tx)
    (ref * torch.from_numpy(g)).sum().backward()
    out, saved = block.forward({"x": x}, {})
    np.testing.assert_array_equal(out["out"], ref.detach().numpy())
    np.testing.assert_array_equal(block.backward({"out": g}, saved, {})[0]["x"], tx.grad.numpy())
    # training: torch's formula x·m/(1 − p) with our mask m
    out, saved = block.forward({"x": x}, {}, TRAIN)
    m = torch.from_numpy(block.mask(x.shape, TRAIN).astype(dtype))
    tx = torch.from_numpy(x).requires_grad_()
    ref = tx * m / (1 - 0.4)
    (ref * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(out["out"], ref.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(block.backward({"out": g}, saved, {})[0]["x"], tx.grad.numpy(), **_tol(dtype))


# --- BatchNorm against torch ------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 6), (3, 4, 5, 5), (2, 2, 1, 1)], ids=["1d", "1d-seq", "2d", "2d-1x1"])
def test_batchnorm_matches_torch_in_training_and_evaluation(shape, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(sum(shape))
    c = shape[1]
    block = blocks.create("BatchNorm", eps=1e-4, momentum=0.2)
    layer = (torch.nn.BatchNorm1d if len(shape) < 4 else torch.nn.BatchNorm2d)(c, eps=1e-4, momentum=0.2)
    layer = layer.to(torch.float32 if dtype == np.float32 else torch.float64)
    w = {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.uniform(-0.5, 0.5, c),
         "running_mean": rng.uniform(-0.5, 0.5, c), "running_var": rng.uniform(0.5, 2.0, c)}
    w = {k: v.astype(dtype) for k, v in w.items()}
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w["gamma"]))
        layer.bias.copy_(torch.from_numpy(w["beta"]))
        layer.running_mean.copy_(torch.from_numpy(w["running_mean"]))
        layer.running_var.copy_(torch.from_numpy(w["running_var"]))
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    for training in (True, False):
        layer.train(training)
        layer.zero_grad()
        tx = torch.from_numpy(x).requires_grad_()
        ref = layer(tx)
        (ref * torch.from_numpy(g)).sum().backward()
        out, saved = block.forward({"x": x}, w, Context(training=training))
        gin, gw = block.backward({"out": g}, saved, w)
        tol = _tol(dtype)
        assert out["out"].dtype == dtype
        np.testing.assert_allclose(out["out"], ref.detach().numpy(), **tol)
        np.testing.assert_allclose(gin["x"], tx.grad.numpy(), **tol)
        np.testing.assert_allclose(gw["gamma"], layer.weight.grad.numpy(), **tol)
        np.testing.assert_allclose(gw["beta"], layer.bias.grad.numpy(), **tol)
        assert set(gw) == {"gamma", "beta"}  # buffers get no gradient
        if training:  # torch has now moved its running statistics: so must we, in saved
            updates = saved[blocks.BUFFER_UPDATES]
            np.testing.assert_allclose(updates["running_mean"], layer.running_mean.numpy(), **tol)
            np.testing.assert_allclose(updates["running_var"], layer.running_var.numpy(), **tol)
            assert updates["running_mean"].dtype == dtype
            w = {**w, **updates}  # evaluation then uses the moved statistics, as torch's does
        else:
            assert blocks.BUFFER_UPDATES not in saved


def test_batchnorm_in_training_needs_more_than_one_value_per_channel():
    block = blocks.create("BatchNorm")
    w = block.init_weights({"x": (1, 3)}, np.random.default_rng(0))
    with pytest.raises(RuntimeFailure, match="more than one value per channel"):
        block.forward({"x": np.ones((1, 3))}, w, TRAIN)
    out, _ = block.forward({"x": np.ones((1, 3))}, w)  # evaluation: the running statistics do
    np.testing.assert_allclose(out["out"], 1 / np.sqrt(1 + 1e-5))


def test_batchnorm_declares_its_running_statistics_as_buffers():
    spec = blocks.spec("BatchNorm")
    assert spec.uses_context and blocks.spec("Dropout").uses_context and not blocks.spec("LayerNorm").uses_context
    assert {w.name for w in spec.weights if not w.trainable} == {"running_mean", "running_var"}
    net = blocks.create("ConvNet", stages=2, channels=(2, 3), classes=2, hidden=3, batchnorm=True)
    assert net.buffer_names({"x": (1, 1, 8, 8)}) == {"bn1/running_mean", "bn1/running_var", "bn2/running_mean", "bn2/running_var"}
    g = Graph()
    x = g.add_node("Input", {"shape": (2, 5, 4, 4)})
    bn = g.add_node("BatchNorm")
    g.connect(x.id, "out", bn.id, "x")
    assert set(g.weight_shapes(bn.id)) == {"gamma", "beta", "running_mean", "running_var"}  # all saved with the weights
    assert g.parameter_count() == 10  # but only γ and β are learned


# --- through the runtime and the trainer -----------------------------------------------------------------


def _bn_graph() -> Graph:
    """x → Linear → BatchNorm → Dropout → Linear → CrossEntropy; node ids are the names, so two
    builds are the same graph (same initial weights, same dropout masks)."""
    g = Graph()

    def add(type_id, name, **params):
        return g.add_node(type_id, params, node_id=name, name=name).id

    x, y = add("Input", "x", shape=(8, 3)), add("Input", "y", shape=(8,), dtype="ids")
    lin, bn, drop = add("Linear", "lin", out_features=4), add("BatchNorm", "bn", momentum=0.5), add("Dropout", "drop", p=0.25)
    out, loss = add("Linear", "out", out_features=2), add("CrossEntropy", "loss")
    for src, dst, port in ((x, lin, "x"), (lin, bn, "x"), (bn, drop, "x"), (drop, out, "x"), (out, loss, "logits"), (y, loss, "target")):
        g.connect(src, "out", dst, port)
    return g


DATA = {"x": {"kind": "synthetic", "name": "blobs", "field": "x", "rows": 32, "params": {"features": 3, "labels": "ids"}},
        "y": {"kind": "synthetic", "name": "blobs", "field": "y", "rows": 32, "params": {"features": 3, "labels": "ids"}}}


@pytest.mark.parametrize("optimizer", [{"type": "adamw", "lr": 0.05, "weight_decay": 0.5}, {"type": "sgd", "lr": 0.1, "momentum": 0.9,
                                                                                              "weight_decay": 0.3, "nesterov": True}])
def test_training_moves_running_statistics_by_the_batches_only_and_never_optimises_them(optimizer):
    g = _bn_graph()
    trainer = Trainer(g, DATA, {"loss": "loss", "optimizer": optimizer, "steps": 4, "seed": 1, "dtype": "float64"})
    bn = g.find("bn").id
    expect_mean, expect_var = np.zeros(4), np.ones(4)
    for step in range(4):
        feeds = trainer.dataset.batch_feeds(step, 1)
        h = trainer.runtime.forward(feeds).values[(g.find("lin").id, "out")]  # the BatchNorm's input this step
        expect_mean = 0.5 * expect_mean + 0.5 * h.mean(axis=0)
        expect_var = 0.5 * expect_var + 0.5 * h.var(axis=0, ddof=1)
        trainer.step()
        np.testing.assert_allclose(trainer.runtime.weights[bn]["running_mean"], expect_mean, rtol=1e-12)
        np.testing.assert_allclose(trainer.runtime.weights[bn]["running_var"], expect_var, rtol=1e-12)
    state = trainer.optimizer.state_dict()
    assert not [k for k in state if "running" in k] and [k for k in state if "gamma" in k]
    p = trainer.runtime.forward_backward(trainer.dataset.first_feeds(), "loss", context=Context(training=True))
    assert set(p.weight_gradients()[bn]) == {"gamma", "beta"}


def test_a_run_with_dropout_and_batchnorm_is_reproducible_and_resumes_exactly(tmp_path):
    spec = {"loss": "loss", "optimizer": {"type": "adam", "lr": 0.05}, "steps": 6, "seed": 2, "dtype": "float32"}
    runs = []
    for _ in range(2):
        t = Trainer(_bn_graph(), DATA, spec)
        t.run()
        runs.append(t.weights)
    for node in runs[0]:
        for name in runs[0][node]:
            assert runs[0][node][name].tobytes() == runs[1][node][name].tobytes(), (node, name)
    # 3 steps, save, load, 3 more = 6 steps straight
    g = _bn_graph()
    first = Trainer(g, DATA, spec)
    first.run(3)
    path = tmp_path / "half.bps"
    serialize.save(first.to_project(Project(g, data=DATA, training=spec)), path)
    loaded = serialize.load(path)
    bn = g.find("bn").id
    assert loaded.weights[bn]["running_var"].tobytes() == first.runtime.weights[bn]["running_var"].tobytes()
    second = Trainer.from_project(loaded)
    second.run(3)
    for node in runs[0]:
        for name in runs[0][node]:
            assert second.weights[node][name].tobytes() == runs[0][node][name].tobytes(), (node, name)


def test_dropout_acts_in_training_steps_and_not_in_evaluation():
    g = _bn_graph()
    runtime = Runtime(g, dtype=np.float64)
    feeds = {"x": np.random.default_rng(0).standard_normal((8, 3)), "y": np.zeros(8, np.int64)}
    drop = g.find("drop").id
    evaluated = runtime.forward(feeds).values[(drop, "out")]
    np.testing.assert_array_equal(evaluated, runtime.forward(feeds).values[(g.find("bn").id, "out")])
    trained = runtime.forward(feeds, context=Context(training=True, seed=0, step=5)).values[(drop, "out")]
    assert (trained == 0).any() and not (evaluated == 0).any()
