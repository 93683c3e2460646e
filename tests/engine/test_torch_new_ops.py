"""Pow, Negate, LogSoftmax, NLLLoss, CrossEntropy's label_smoothing and class weights, and
Softmax over an empty axis, against torch: forward and backward, float64 (1e-10) and float32."""

from __future__ import annotations

import numpy as np
import pytest

from engine import blocks

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.torch

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


def _tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}


def _run(block, inputs, weights=None, gout=None, rng=None):
    outs, saved = block.forward(inputs, weights or {})
    rng = rng or np.random.default_rng(0)
    name = next(iter(outs))
    g = gout if gout is not None else rng.standard_normal(np.shape(outs[name])).astype(np.asarray(outs[name]).dtype)
    gin, gw = block.backward({name: g}, saved, weights or {})
    return outs[name], g, gin


def _check_unary(block, x, torch_fn, dtype, gout=None):
    out, g, gin = _run(block, {"a": x}, gout=gout)
    tx = torch.from_numpy(np.array(x)).requires_grad_()
    ref = torch_fn(tx)
    (ref * torch.from_numpy(np.array(g))).sum().backward()
    assert out.dtype == dtype and out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out, ref.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(gin["a"], tx.grad.numpy(), **_tol(dtype))


# --- Pow, Negate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [2.0, 3.0, -1.0, -2.0, 0.5, -0.5, 1.5, 1.0, 0.0, 7.0])
def test_pow_matches_torch_on_positive_numbers(p, dtype):
    x = np.random.default_rng(3).uniform(0.2, 3.0, (3, 4)).astype(dtype)
    _check_unary(blocks.create("Pow", exponent=p), x, lambda t: t ** p, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [2.0, 3.0, -1.0, -3.0, 4.0, 0.0])
def test_pow_with_whole_exponents_takes_negative_numbers(p, dtype):
    x = np.array([-2.5, -1.0, -0.3, 0.7, 2.0], dtype)
    _check_unary(blocks.create("Pow", exponent=p), x, lambda t: t ** p, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [2.0, 3.0, 1.0, 0.5, -1.0, 0.0, -0.5, 1.5])
def test_pow_at_zero_gives_torchs_values_and_gradients(p, dtype):
    """0^p and the gradient p·0^(p−1) there: 0 for p > 1, 1 for p = 1, ±inf for p < 1, 0 for p = 0."""
    x = np.zeros(3, dtype)
    block = blocks.create("Pow", exponent=p)
    out, g, gin = _run(block, {"a": x}, gout=np.ones(3, dtype))
    tx = torch.zeros(3, dtype=torch.float32 if dtype == np.float32 else torch.float64, requires_grad=True)
    ref = tx ** p
    ref.sum().backward()
    np.testing.assert_array_equal(out, ref.detach().numpy())
    np.testing.assert_array_equal(gin["a"], tx.grad.numpy())


def test_pow_of_a_negative_number_to_a_fraction_is_nan_quietly():
    block = blocks.create("Pow", exponent=0.5)
    out, _, gin = _run(block, {"a": np.array([-4.0, 4.0])}, gout=np.ones(2))
    assert np.isnan(out[0]) and out[1] == 2.0 and np.isnan(gin["a"][0]) and gin["a"][1] == 0.25


@pytest.mark.parametrize("dtype", DTYPES)
def test_negate_matches_torch(dtype):
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(dtype)
    _check_unary(blocks.create("Negate"), x, torch.neg, dtype)
    _check_unary(blocks.create("Negate"), np.asarray(-3.5, dtype), torch.neg, dtype)


# --- LogSoftmax, Softmax -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 7), (2, 3, 5), (6,), (3, 1)])
def test_log_softmax_matches_torch(shape, dtype):
    x = np.random.default_rng(len(shape)).uniform(-4, 4, shape).astype(dtype)
    _check_unary(blocks.create("LogSoftmax"), x, lambda t: torch.log_softmax(t, -1), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_is_exact_at_a_gap_of_ten_thousand_where_log_of_softmax_is_minus_infinity(dtype):
    x = np.array([[0.0, 1e4, -1e4], [5.0, 5.0, 5.0 - 1e4]], dtype)
    _check_unary(blocks.create("LogSoftmax"), x, lambda t: torch.log_softmax(t, -1), dtype)
    out, _, _ = _run(blocks.create("LogSoftmax"), {"a": x})
    assert np.all(np.isfinite(out)) and out[0, 0] == -1e4 and out[0, 2] == -2e4
    # The documented trap: Log(Softmax(x)) underflows there.
    s, _ = blocks.create("Softmax").forward({"a": x}, {})
    with np.errstate(divide="ignore"):
        logged, _ = blocks.create("Log").forward({"a": s["out"]}, {})
    assert np.isneginf(logged["out"][0, 0]) and np.isneginf(logged["out"][1, 2])
    assert "LogSoftmax" in blocks.spec("Log").doc and "LogSoftmax" in blocks.spec("Softmax").doc


@pytest.mark.parametrize("name,fn", [("Softmax", torch.softmax), ("LogSoftmax", torch.log_softmax)])
@pytest.mark.parametrize("shape", [(3, 0), (0, 4), (2, 0, 5), (0,)])
def test_softmax_over_nothing_gives_nothing_like_torch(name, fn, shape):
    block = blocks.create(name)
    x = np.zeros(shape)
    assert block.infer_shapes({"a": shape}) == {"out": shape}
    out, _, gin = _run(block, {"a": x})
    assert out.shape == tuple(fn(torch.from_numpy(x), -1).shape) == shape and gin["a"].shape == shape


# --- NLLLoss, CrossEntropy options ---------------------------------------------------------------------------


def _targets(rng, shape, classes, ignore):
    t = rng.integers(0, classes, shape)
    t.reshape(-1)[:: 3] = ignore  # some positions are padding
    return t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("shape", [(6, 5), (2, 4, 3)])
def test_nll_loss_of_log_softmax_matches_torch(shape, weighted, dtype):
    rng = np.random.default_rng(11)
    classes = shape[-1]
    weight = rng.uniform(0.2, 2.0, classes).tolist() if weighted else []
    x = rng.uniform(-3, 3, shape).astype(dtype)
    target = _targets(rng, shape[:-1], classes, -1)
    lsm, nll = blocks.create("LogSoftmax"), blocks.create("NLLLoss", weight=weight)
    lp, s1 = lsm.forward({"a": x}, {})
    loss, s2 = nll.forward({"logprob": lp["out"], "target": target}, {})
    glp, _ = nll.backward({"out": np.asarray(1.0, dtype)}, s2, {})
    gx, _ = lsm.backward({"out": glp["logprob"]}, s1, {})

    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.tensor(weight, dtype=tx.dtype) if weighted else None
    ref = F.nll_loss(torch.log_softmax(tx, -1).reshape(-1, classes), torch.from_numpy(target).reshape(-1), weight=tw, ignore_index=-1)
    ref.backward()
    assert loss["out"].dtype == dtype and loss["out"].shape == ()
    np.testing.assert_allclose(loss["out"], ref.item(), **_tol(dtype))
    np.testing.assert_allclose(gx["a"], tx.grad.numpy(), **_tol(dtype))
    # and it is CrossEntropy, split in two
    ce, _ = blocks.create("CrossEntropy", weight=weight).forward({"logits": x, "target": target}, {})
    np.testing.assert_allclose(ce["out"], loss["out"], **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nll_loss_at_a_gap_of_ten_thousand_stays_finite(dtype):
    x = np.array([[0.0, 1e4], [1e4, 0.0]], dtype)
    lp, _ = blocks.create("LogSoftmax").forward({"a": x}, {})
    loss, _ = blocks.create("NLLLoss").forward({"logprob": lp["out"], "target": np.array([0, 1])}, {})
    assert float(loss["out"]) == pytest.approx(1e4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35, 1.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("shape,ignore", [((7, 4), -1), ((2, 5, 6), 0), ((5,), -1)])
def test_cross_entropy_smoothing_and_weights_match_torch(shape, ignore, weighted, smoothing, dtype):
    rng = np.random.default_rng(int(smoothing * 100) + len(shape))
    classes = shape[-1]
    weight = rng.uniform(0.1, 3.0, classes).tolist() if weighted else []
    x = rng.uniform(-3, 3, shape).astype(dtype)
    target = _targets(rng, shape[:-1], classes, ignore) if len(shape) > 1 else np.asarray(rng.integers(0, classes))
    block = blocks.create("CrossEntropy", ignore_index=ignore, label_smoothing=smoothing, weight=weight)
    out, g, gin = _run(block, {"logits": x, "target": target}, gout=np.asarray(1.7, dtype))

    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.tensor(weight, dtype=tx.dtype) if weighted else None
    logits = tx.reshape(-1, classes)
    ref = F.cross_entropy(logits, torch.from_numpy(np.asarray(target)).reshape(-1), weight=tw, ignore_index=ignore,
                          label_smoothing=smoothing)
    (ref * 1.7).backward()
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref.item(), **_tol(dtype))
    np.testing.assert_allclose(gin["logits"], tx.grad.numpy(), **_tol(dtype))


def test_cross_entropy_weight_must_fit_the_classes():
    from engine.errors import ParamError, ShapeError

    with pytest.raises(ShapeError, match=r"parameter 'weight' lists 2 class weights, but 'logits' \(4, 3\) has 3 classes"):
        blocks.create("CrossEntropy", weight=[1.0, 2.0]).infer_shapes({"logits": (4, 3), "target": (4,)})
    with pytest.raises(ParamError, match=r"'weight' must be a list of class weights ≥ 0"):
        blocks.create("CrossEntropy", weight=[1.0, -2.0])
    with pytest.raises(ParamError, match="label_smoothing"):
        blocks.create("CrossEntropy", label_smoothing=1.5)


def test_cross_entropy_defaults_give_exactly_the_old_loss():
    """weight [] and smoothing 0 take the old arithmetic: same bits as the plain softmax loss."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    t = rng.integers(0, 4, 6)
    plain, _ = blocks.create("CrossEntropy").forward({"logits": x, "target": t}, {})
    shifted = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    ref = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(6), t])
    assert float(plain["out"]) == pytest.approx(ref, rel=1e-6)
    ones, _ = blocks.create("CrossEntropy", weight=[1.0] * 4).forward({"logits": x, "target": t}, {})
    assert ones["out"] == plain["out"]
