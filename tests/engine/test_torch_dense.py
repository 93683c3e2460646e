"""The network blocks and losses against their PyTorch references (BLOCKS.md's torch column).

Forward values and every gradient (inputs and weights), in float32 and float64, on both kernel
backends. Weights are copied into torch in the layouts BLOCKS.md gives (nn.Linear.weight = Wᵀ, ...).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from engine import blocks, kernels  # noqa: E402

pytestmark = pytest.mark.torch

DTYPES = [np.float32, np.float64]
BACKENDS = list(kernels.BACKENDS)


@pytest.fixture(params=DTYPES, ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture(params=BACKENDS)
def backend(request):
    with kernels.using(request.param):
        yield request.param


def tt(a: np.ndarray, grad: bool = True):
    """A torch leaf sharing the array's dtype (ints stay ints and get no grad)."""
    t = torch.from_numpy(np.array(a))
    if grad and t.is_floating_point():
        t.requires_grad_(True)
    return t


def close(ours: np.ndarray, ref, dtype, what: str, scale: float = 1.0) -> None:
    """float32: rtol 1e-5, atol 1e-6 per unit of the reference's magnitude; float64: 1e-10/1e-12."""
    ref = ref.detach().numpy() if hasattr(ref, "detach") else np.asarray(ref)
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs torch {ref.shape}"
    assert ours.dtype == np.dtype(dtype), f"{what}: dtype {ours.dtype}, expected {np.dtype(dtype)}"
    mag = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    rtol, atol = (1e-5, 1e-6) if dtype == np.float32 else (1e-10, 1e-12)
    np.testing.assert_allclose(ours, ref, rtol=rtol * scale, atol=atol * mag * scale, err_msg=what)


def run(block, inputs, weights, gout):
    outs, saved = block.forward(inputs, weights)
    gin, gw = block.backward(gout, saved, weights)
    return outs, gin, gw


def rand(rng, shape, dtype, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape).astype(dtype)


# --- dense ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,d_out,bias", [((4, 5), 3, True), ((2, 3, 5), 6, True), ((3, 7), 2, False), ((5,), 4, True)])
def test_linear_matches_nn_linear(shape, d_out, bias, dtype, backend):
    rng = np.random.default_rng(0)
    block = blocks.create("Linear", out_features=d_out, bias=bias)
    x = rand(rng, shape, dtype)
    w = {k: v.astype(dtype) for k, v in block.init_weights({"x": shape}, rng).items()}
    g = rand(rng, (*shape[:-1], d_out), dtype)
    outs, gin, gw = run(block, {"x": x}, w, {"out": g})

    lin = torch.nn.Linear(shape[-1], d_out, bias=bias, dtype=torch.from_numpy(x).dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w["W"].T.copy()))
        if bias:
            lin.bias.copy_(torch.from_numpy(w["b"]))
    xt = tt(x)
    out = lin(xt)
    out.backward(torch.from_numpy(g))
    close(outs["out"], out, dtype, "out")
    close(gin["x"], xt.grad, dtype, "dx")
    close(gw["W"], lin.weight.grad.T, dtype, "dW")
    if bias:
        close(gw["b"], lin.bias.grad, dtype, "db")
    else:
        assert set(gw) == {"W"}


def test_linear_init_follows_torch_rule():
    block = blocks.create("Linear", out_features=200)
    w = block.init_weights({"x": (1, 50)}, np.random.default_rng(0))
    bound = 1 / np.sqrt(50)
    for name in ("W", "b"):
        assert np.abs(w[name]).max() <= bound
        assert np.abs(w[name]).max() > 0.9 * bound  # uniform over the whole range, not a narrower one


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "sigmoid"])
@pytest.mark.parametrize("shape,hidden,d_out", [((4, 6), None, None), ((2, 3, 5), 7, 3)])
def test_feedforward_matches_two_nn_linear(activation, shape, hidden, d_out, dtype, backend):
    rng = np.random.default_rng(1)
    block = blocks.create("FeedForward", hidden=hidden, out_features=d_out, activation=activation)
    d = shape[-1]
    h, o = hidden or 4 * d, d_out or d
    assert block.infer_shapes({"x": shape}) == {"out": (*shape[:-1], o)}
    x = rand(rng, shape, dtype, -2, 2)
    w = {k: v.astype(dtype) for k, v in block.init_weights({"x": shape}, rng).items()}
    assert {k: v.shape for k, v in w.items()} == {"W1": (d, h), "b1": (h,), "W2": (h, o), "b2": (o,)}
    g = rand(rng, (*shape[:-1], o), dtype)
    outs, gin, gw = run(block, {"x": x}, w, {"out": g})

    tdt = torch.from_numpy(x).dtype
    l1, l2 = torch.nn.Linear(d, h, dtype=tdt), torch.nn.Linear(h, o, dtype=tdt)
    with torch.no_grad():
        l1.weight.copy_(torch.from_numpy(w["W1"].T.copy()))
        l1.bias.copy_(torch.from_numpy(w["b1"]))
        l2.weight.copy_(torch.from_numpy(w["W2"].T.copy()))
        l2.bias.copy_(torch.from_numpy(w["b2"]))
    act = {"relu": F.relu, "gelu": lambda z: F.gelu(z, approximate="none"), "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation]
    xt = tt(x)
    out = l2(act(l1(xt)))
    out.backward(torch.from_numpy(g))
    close(outs["out"], out, dtype, "out")
    close(gin["x"], xt.grad, dtype, "dx")
    close(gw["W1"], l1.weight.grad.T, dtype, "dW1")
    close(gw["b1"], l1.bias.grad, dtype, "db1")
    close(gw["W2"], l2.weight.grad.T, dtype, "dW2")
    close(gw["b2"], l2.bias.grad, dtype, "db2")


@pytest.mark.parametrize("shape", [(2, 3, 4), (3, 2, 2, 2), (4, 5)])
def test_flatten_matches_torch_flatten(shape, dtype):
    rng = np.random.default_rng(2)
    block = blocks.create("Flatten")
    x = rand(rng, shape, dtype)
    n = int(np.prod(shape[1:]))
    g = rand(rng, (shape[0], n), dtype)
    outs, gin, _ = run(block, {"x": x}, {}, {"out": g})
    xt = tt(x)
    out = torch.flatten(xt, 1)
    out.backward(torch.from_numpy(g))
    close(outs["out"], out, dtype, "out")
    close(gin["x"], xt.grad, dtype, "dx")


# --- norm ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,eps", [((4, 6), 1e-5), ((2, 3, 8), 1e-3), ((5,), 1e-5)])
def test_layernorm_matches_nn_layernorm(shape, eps, dtype, backend):
    rng = np.random.default_rng(3)
    block = blocks.create("LayerNorm", eps=eps)
    d = shape[-1]
    x = rand(rng, shape, dtype, -3, 3)
    w = {"gamma": rand(rng, (d,), dtype, 0.5, 1.5), "beta": rand(rng, (d,), dtype)}
    g = rand(rng, shape, dtype)
    outs, gin, gw = run(block, {"x": x}, w, {"out": g})
    ln = torch.nn.LayerNorm(d, eps=eps, dtype=torch.from_numpy(x).dtype)
    with torch.no_grad():
        ln.weight.copy_(torch.from_numpy(w["gamma"]))
        ln.bias.copy_(torch.from_numpy(w["beta"]))
    xt = tt(x)
    out = ln(xt)
    out.backward(torch.from_numpy(g))
    close(outs["out"], out, dtype, "out")
    close(gin["x"], xt.grad, dtype, "dx", scale=3)  # dx involves two row means: a little more rounding
    close(gw["gamma"], ln.weight.grad, dtype, "dgamma")
    close(gw["beta"], ln.bias.grad, dtype, "dbeta")


def test_layernorm_initial_weights_are_identity():
    w = blocks.create("LayerNorm").init_weights({"x": (2, 5)}, np.random.default_rng(0))
    np.testing.assert_array_equal(w["gamma"], np.ones(5))
    np.testing.assert_array_equal(w["beta"], np.zeros(5))


@pytest.mark.parametrize("xs,fs", [((3, 4), (3, 4)), ((2, 3, 5), (2, 3, 5)), ((2, 3, 4), (3, 4))])
def test_addnorm_matches_add_then_nn_layernorm(xs, fs, dtype, backend):
    rng = np.random.default_rng(4)
    block = blocks.create("AddNorm")
    d = xs[-1]
    x, fx = rand(rng, xs, dtype, -2, 2), rand(rng, fs, dtype, -2, 2)
    w = {"gamma": rand(rng, (d,), dtype, 0.5, 1.5), "beta": rand(rng, (d,), dtype)}
    g = rand(rng, xs, dtype)
    outs, gin, gw = run(block, {"x": x, "fx": fx}, w, {"out": g})
    ln = torch.nn.LayerNorm(d, eps=1e-5, dtype=torch.from_numpy(x).dtype)
    with torch.no_grad():
        ln.weight.copy_(torch.from_numpy(w["gamma"]))
        ln.bias.copy_(torch.from_numpy(w["beta"]))
    xt, ft = tt(x), tt(fx)
    out = ln(xt + ft)
    out.backward(torch.from_numpy(g))
    close(outs["out"], out, dtype, "out")
    close(gin["x"], xt.grad, dtype, "dx", scale=3)
    close(gin["fx"], ft.grad, dtype, "dfx", scale=3)
    close(gw["gamma"], ln.weight.grad, dtype, "dgamma")
    close(gw["beta"], ln.bias.grad, dtype, "dbeta")


# --- embed --------------------------------------------------------------------------------------


def torch_sinusoidal(length: int, dim: int, tdt):
    """The formula of BLOCKS.md, written independently in torch."""
    i = torch.arange(length, dtype=torch.float64)[:, None]
    j2 = torch.arange(0, dim, 2, dtype=torch.float64)[None, :]
    angle = i / torch.pow(torch.tensor(10000.0, dtype=torch.float64), j2 / dim)
    p = torch.zeros(length, dim, dtype=torch.float64)
    p[:, 0::2] = torch.sin(angle)
    p[:, 1::2] = torch.cos(angle)[:, : dim // 2]
    return p.to(tdt)


@pytest.mark.parametrize("position", ["none", "sinusoidal", "learned"])
@pytest.mark.parametrize("dim", [6, 5])
def test_embed_token_matches_nn_embedding(position, dim, dtype, backend):
    rng = np.random.default_rng(5)
    vocab, max_len, shape = 7, 9, (3, 6)
    block = blocks.create("EmbedToken", vocab=vocab, dim=dim, position=position, max_len=max_len)
    ids = rng.integers(0, vocab, size=shape)
    ids[0, :3] = 2  # one token repeated: its gradient rows must add up
    w = {k: v.astype(dtype) for k, v in block.init_weights({"ids": shape}, rng).items()}
    assert set(w) == ({"E", "P"} if position == "learned" else {"E"})
    g = rand(rng, (*shape, dim), dtype)
    outs, gin, gw = run(block, {"ids": ids}, w, {"out": g})
    assert gin == {}, "token ids get no gradient"

    tdt = torch.from_numpy(w["E"]).dtype
    emb = torch.nn.Embedding(vocab, dim, dtype=tdt)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(w["E"]))
    out = emb(torch.from_numpy(ids))
    if position == "learned":
        pemb = torch.nn.Embedding(max_len, dim, dtype=tdt)
        with torch.no_grad():
            pemb.weight.copy_(torch.from_numpy(w["P"]))
        out = out + pemb(torch.arange(shape[1]))[None]
    elif position == "sinusoidal":
        out = out + torch_sinusoidal(shape[1], dim, tdt)[None]
    out.backward(torch.from_numpy(g))
    close(outs["out"], out, dtype, "out")
    close(gw["E"], emb.weight.grad, dtype, "dE")
    if position == "learned":
        close(gw["P"], pemb.weight.grad, dtype, "dP")


def test_embed_token_init_is_standard_normal():
    w = blocks.create("EmbedToken", vocab=400, dim=50).init_weights({"ids": (1, 1)}, np.random.default_rng(0))
    assert abs(w["E"].mean()) < 0.02 and abs(w["E"].std() - 1) < 0.02  # nn.Embedding: N(0, 1)


@pytest.mark.parametrize("mode", ["mean", "first", "last", "max"])
def test_collapse_matches_torch(mode, dtype):
    rng = np.random.default_rng(6)
    block = blocks.create("Collapse", mode=mode)
    x = rand(rng, (3, 5, 4), dtype)
    g = rand(rng, (3, 4), dtype)
    outs, gin, _ = run(block, {"x": x}, {}, {"out": g})
    xt = tt(x)
    out = {"mean": lambda t: t.mean(1), "first": lambda t: t[:, 0], "last": lambda t: t[:, -1], "max": lambda t: t.max(1).values}[mode](xt)
    out.backward(torch.from_numpy(g))
    close(outs["out"], out, dtype, "out")
    close(gin["x"], xt.grad, dtype, "dx")


@pytest.mark.parametrize("shape", [(3, 4), (2, 5, 4), (4,)])
def test_generate_token_matches_x_at_e_transposed(shape, dtype, backend):
    rng = np.random.default_rng(7)
    vocab = 9
    block = blocks.create("GenerateToken", vocab=vocab)
    x = rand(rng, shape, dtype)
    w = {"E": rand(rng, (vocab, shape[-1]), dtype), "b": rand(rng, (vocab,), dtype)}
    g = rand(rng, (*shape[:-1], vocab), dtype)
    outs, gin, gw = run(block, {"x": x}, w, {"logits": g})
    xt, et, bt = tt(x), tt(w["E"]), tt(w["b"])
    out = xt @ et.T + bt
    out.backward(torch.from_numpy(g))
    close(outs["logits"], out, dtype, "logits")
    close(gin["x"], xt.grad, dtype, "dx")
    close(gw["E"], et.grad, dtype, "dE")
    close(gw["b"], bt.grad, dtype, "db")


# --- losses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3), (7,)])
def test_squared_loss_matches_mse(shape, dtype):
    rng = np.random.default_rng(8)
    block = blocks.create("SquaredLoss")
    pred, target = rand(rng, shape, dtype, -3, 3), rand(rng, shape, dtype, -2, 2)
    g = np.asarray(1.7, dtype)  # a non-unit upstream gradient
    outs, gin, _ = run(block, {"pred": pred, "target": target}, {}, {"out": g})
    pt, tg = tt(pred), tt(target)
    loss = F.mse_loss(pt, tg)
    loss.backward(torch.from_numpy(g))
    close(outs["out"], loss, dtype, "loss")
    close(gin["pred"], pt.grad, dtype, "dpred")
    close(gin["target"], tg.grad, dtype, "dtarget")


def _labels(rng, shape, dtype):
    return rng.choice(np.array([-1.0, 1.0]), size=shape).astype(dtype)


@pytest.mark.parametrize("shape", [(10,), (3, 4)])
def test_hinge_loss_matches_relu_margin(shape, dtype):
    rng = np.random.default_rng(9)
    block = blocks.create("HingeLoss")
    s, y = rand(rng, shape, dtype, -3, 3), _labels(rng, shape, dtype)
    g = np.asarray(1.7, dtype)
    outs, gin, _ = run(block, {"score": s, "target": y}, {}, {"out": g})
    st, yt = tt(s), tt(y)
    loss = F.relu(1 - st * yt).mean()
    loss.backward(torch.from_numpy(g))
    close(outs["out"], loss, dtype, "loss")
    close(gin["score"], st.grad, dtype, "dscore")
    close(gin["target"], yt.grad, dtype, "dtarget")


@pytest.mark.parametrize("extreme", [False, True])
def test_logistic_loss_matches_soft_margin(extreme, dtype):
    rng = np.random.default_rng(10)
    block = blocks.create("LogisticLoss")
    shape = (12,)
    s = rand(rng, shape, dtype, -4, 4)
    if extreme:
        s[:4] = np.array([1e3, -1e3, 80.0, -80.0], dtype)  # e^(±1000) overflows any naive form
    y = _labels(rng, shape, dtype)
    g = np.asarray(0.8, dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow, even at the extremes
        outs, gin, _ = run(block, {"score": s, "target": y}, {}, {"out": g})
    st, yt = tt(s), tt(y)
    # softplus is torch's stable log(1 + e^z); soft_margin_loss is the same loss (torch's own
    # logistic loss), which overflows at the extremes and gives no target gradient.
    loss = F.softplus(-st * yt).mean()
    loss.backward(torch.from_numpy(g))
    assert np.isfinite(outs["out"]) and np.all(np.isfinite(gin["score"]))
    close(outs["out"], loss, dtype, "loss")
    close(gin["score"], st.grad, dtype, "dscore")
    close(gin["target"], yt.grad, dtype, "dtarget")
    if not extreme:
        close(outs["out"], F.soft_margin_loss(torch.from_numpy(s), torch.from_numpy(y)), dtype, "soft_margin_loss")


def test_int_targets_get_no_gradient_and_keep_dtype():
    block = blocks.create("SquaredLoss")
    pred = np.array([0.5, 2.0, -1.0], np.float32)
    target = np.array([1, 2, 0], np.int64)
    outs, gin, _ = run(block, {"pred": pred, "target": target}, {}, {"out": np.asarray(1.0, np.float32)})
    assert outs["out"].dtype == np.float32
    np.testing.assert_allclose(outs["out"], F.mse_loss(torch.tensor(pred), torch.tensor(target, dtype=torch.float32)).item(), rtol=1e-6)
    assert set(gin) == {"pred"}


@pytest.mark.parametrize("lshape,ignore_index", [((6, 5), -1), ((2, 4, 7), -1), ((2, 4, 7), 3), ((5,), -1)])
def test_cross_entropy_matches_torch(lshape, ignore_index, dtype, backend):
    rng = np.random.default_rng(11)
    classes = lshape[-1]
    block = blocks.create("CrossEntropy", ignore_index=ignore_index)
    logits = rand(rng, lshape, dtype, -4, 4)
    target = rng.integers(0, classes, size=lshape[:-1])
    if target.ndim:
        target.reshape(-1)[:2] = ignore_index  # some padding positions
    g = np.asarray(1.3, dtype)
    outs, gin, _ = run(block, {"logits": logits, "target": target}, {}, {"out": g})
    lt = tt(logits)
    loss = F.cross_entropy(lt.reshape(-1, classes), torch.from_numpy(target).reshape(-1), ignore_index=ignore_index)
    loss.backward(torch.from_numpy(g))
    close(outs["out"], loss, dtype, "loss")
    close(gin["logits"], lt.grad, dtype, "dlogits")
    assert set(gin) == {"logits"}


def test_cross_entropy_all_ignored_is_zero_with_zero_gradient(dtype):
    block = blocks.create("CrossEntropy")
    logits = np.random.default_rng(0).normal(size=(3, 4)).astype(dtype)
    outs, gin, _ = run(block, {"logits": logits, "target": np.full(3, -1)}, {}, {"out": np.asarray(1.0, dtype)})
    assert outs["out"] == 0 and outs["out"].dtype == np.dtype(dtype)
    assert not np.any(gin["logits"])
    # torch returns NaN here (0/0); we return 0 so that a padded batch cannot poison training.
    assert torch.isnan(F.cross_entropy(torch.tensor(logits), torch.full((3,), -1), ignore_index=-1))
