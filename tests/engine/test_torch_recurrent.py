"""SequenceRNN against torch's nn.RNN / nn.LSTM / nn.GRU: forward and every gradient.

Weight layouts (BLOCKS.md): weight_ih = Wxᵀ, weight_hh = Whᵀ; bias_ih = b, bias_hh = 0 for
RNN/LSTM; GRU bias_ih = bx, bias_hh = bh; the backward direction's weights end in ``_reverse``
in torch and ``_rev`` here. torch's h0/c0 are (directions, B, h); ours are (B, h) shared by both
directions or (B, 2h) laid out like ``last``.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from engine import blocks

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

B, L, D, H = 3, 5, 4, 6

CELLS = [
    pytest.param("SimpleRNN", "tanh", id="rnn-tanh"),
    pytest.param("SimpleRNN", "relu", id="rnn-relu"),
    pytest.param("LSTM", "tanh", id="lstm"),
    pytest.param("GRU", "tanh", id="gru"),
]
# (bidirectional, initial state: None = not given, "h" = (B, h), "2h" = (B, 2h))
LAYOUTS = [
    pytest.param(False, None, id="uni"),
    pytest.param(False, "h", id="uni-h0"),
    pytest.param(True, None, id="bi"),
    pytest.param(True, "h", id="bi-shared-h0"),
    pytest.param(True, "2h", id="bi-h0-per-direction"),
]
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


def _torch_module(cell: str, activation: str, bidirectional: bool, w: dict[str, np.ndarray], dtype) -> "torch.nn.Module":
    if cell == "SimpleRNN":
        mod = torch.nn.RNN(D, H, nonlinearity=activation, batch_first=True, bidirectional=bidirectional)
    elif cell == "LSTM":
        mod = torch.nn.LSTM(D, H, batch_first=True, bidirectional=bidirectional)
    else:
        mod = torch.nn.GRU(D, H, batch_first=True, bidirectional=bidirectional)
    mod = mod.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for ours, theirs in (("", ""), ("_rev", "_reverse")):
            if "Wx" + ours not in w:
                continue
            getattr(mod, f"weight_ih_l0{theirs}").copy_(torch.from_numpy(w["Wx" + ours].T.copy()))
            getattr(mod, f"weight_hh_l0{theirs}").copy_(torch.from_numpy(w["Wh" + ours].T.copy()))
            if cell == "GRU":
                getattr(mod, f"bias_ih_l0{theirs}").copy_(torch.from_numpy(w["bx" + ours]))
                getattr(mod, f"bias_hh_l0{theirs}").copy_(torch.from_numpy(w["bh" + ours]))
            else:
                getattr(mod, f"bias_ih_l0{theirs}").copy_(torch.from_numpy(w["b" + ours]))
                getattr(mod, f"bias_hh_l0{theirs}").zero_()
    return mod


def _to_torch_state(s: "torch.Tensor", directions: int) -> "torch.Tensor":
    """Our (B, h) or (B, directions·h) initial state as torch's (directions, B, h)."""
    if s.shape[1] == H:
        return torch.stack([s] * directions)
    return torch.stack([s[:, i * H:(i + 1) * H] for i in range(directions)])


def _torch_weight_grads(mod: "torch.nn.Module", cell: str, bidirectional: bool) -> dict[str, np.ndarray]:
    out = {}
    for ours, theirs in (("", ""), ("_rev", "_reverse")) if bidirectional else (("", ""),):
        out["Wx" + ours] = getattr(mod, f"weight_ih_l0{theirs}").grad.numpy().T
        out["Wh" + ours] = getattr(mod, f"weight_hh_l0{theirs}").grad.numpy().T
        if cell == "GRU":
            out["bx" + ours] = getattr(mod, f"bias_ih_l0{theirs}").grad.numpy()
            out["bh" + ours] = getattr(mod, f"bias_hh_l0{theirs}").grad.numpy()
        else:
            out["b" + ours] = getattr(mod, f"bias_ih_l0{theirs}").grad.numpy()
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bidirectional,start", LAYOUTS)
@pytest.mark.parametrize("cell,activation", CELLS)
def test_sequence_rnn_matches_torch(cell, activation, bidirectional, start, dtype):
    rng = np.random.default_rng(zlib.crc32(repr((cell, activation, bidirectional, start)).encode()))
    block = blocks.create("SequenceRNN", cell=cell, hidden=H, activation=activation, bidirectional=bidirectional)
    dirs = 2 if bidirectional else 1
    lstm = cell == "LSTM"
    inputs = {"x": rng.uniform(-1, 1, (B, L, D)).astype(dtype)}
    if start is not None:
        width = H if start == "h" else 2 * H
        inputs["h0"] = rng.uniform(-1, 1, (B, width)).astype(dtype)
        if lstm:
            inputs["c0"] = rng.uniform(-1, 1, (B, width)).astype(dtype)
    w = block.init_weights({k: v.shape for k, v in inputs.items()}, rng)
    # Random biases too (they start at zero / one), so every weight is really exercised.
    w = {k: (v + rng.uniform(-0.3, 0.3, v.shape)).astype(dtype) for k, v in w.items()}

    outs, saved = block.forward(inputs, w)
    gout = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in outs.items()}
    gin, gw = block.backward(gout, saved, w)

    mod = _torch_module(cell, activation, bidirectional, w, dtype)
    tin = {k: torch.from_numpy(v).requires_grad_() for k, v in inputs.items()}
    state = None
    if "h0" in tin:
        h0 = _to_torch_state(tin["h0"], dirs)
        state = (h0, _to_torch_state(tin["c0"], dirs)) if lstm else h0
    seq, hn = mod(tin["x"], state)
    if lstm:
        hn, cn = hn
    # torch's h_n (directions, B, h) → ours (B, directions·h): [forward final ; backward final].
    theirs = {"seq": seq, "last": hn.permute(1, 0, 2).reshape(B, dirs * H)}
    if lstm:
        theirs["last_c"] = cn.permute(1, 0, 2).reshape(B, dirs * H)
    assert set(theirs) == set(outs)

    rtol, atol = (2e-5, 2e-6) if dtype == np.float32 else (1e-11, 1e-12)
    for k in outs:
        assert outs[k].dtype == dtype
        np.testing.assert_allclose(outs[k], theirs[k].detach().numpy(), rtol=rtol, atol=atol, err_msg=f"output {k}")

    loss = sum((theirs[k] * torch.from_numpy(gout[k])).sum() for k in theirs)
    loss.backward()
    rtol, atol = (1e-4, 1e-5) if dtype == np.float32 else (1e-10, 1e-11)
    assert set(gin) == set(inputs)
    for k, t in tin.items():
        assert gin[k].dtype == dtype and gin[k].shape == inputs[k].shape
        np.testing.assert_allclose(gin[k], t.grad.numpy(), rtol=rtol, atol=atol, err_msg=f"gradient of input {k}")
    expected = _torch_weight_grads(mod, cell, bidirectional)
    assert set(gw) == set(expected)
    for k, g in expected.items():
        assert gw[k].dtype == dtype
        np.testing.assert_allclose(gw[k], g, rtol=rtol, atol=atol, err_msg=f"gradient of weight {k}")


@pytest.mark.parametrize("cell,activation", CELLS)
def test_only_some_outputs_get_gradients(cell, activation):
    """A missing upstream gradient counts as zero (here: only ``last`` is used, as a classifier would)."""
    rng = np.random.default_rng(7)
    block = blocks.create("SequenceRNN", cell=cell, hidden=H, activation=activation)
    x = rng.uniform(-1, 1, (B, L, D))
    w = block.init_weights({"x": x.shape}, rng)
    outs, saved = block.forward({"x": x}, w)
    g = rng.standard_normal((B, H))
    gin, gw = block.backward({"last": g}, saved, w)

    mod = _torch_module(cell, activation, False, w, np.float64)
    tx = torch.from_numpy(x).requires_grad_()
    _, hn = mod(tx)
    hn = hn[0] if cell == "LSTM" else hn
    (hn[0] * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(gin["x"], tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for k, v in _torch_weight_grads(mod, cell, False).items():
        np.testing.assert_allclose(gw[k], v, rtol=1e-10, atol=1e-12, err_msg=k)
