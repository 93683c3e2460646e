"""Behaviour of the recurrent and convolution blocks beyond what the generated tests cover:
vanishing gradients through time, the trace extras, the bidirectional layout, ports that depend
on the cell, initialisation, one kernel call per direction, and error messages."""

from __future__ import annotations

import numpy as np
import pytest

from engine import blocks, kernels
from engine.errors import ParamError, PortError, ShapeError
from engine.graph import Graph
from engine.kernels import conv as conv_kernels
from engine.kernels import recurrent as rnn_kernels
from engine.runtime import Runtime


def _small_weights(block, x_shape, seed, scale=0.3):
    w = block.init_weights({"x": x_shape}, np.random.default_rng(seed))
    return {k: (v * scale if k.startswith("W") else v) for k, v in w.items()}


def _norms_from_last(cell: str, seed: int, L: int = 40) -> np.ndarray:
    """Per-step gradient norms when only the final state is used (a classifier on ``last``)."""
    rng = np.random.default_rng(seed)
    block = blocks.create("SequenceRNN", cell=cell, hidden=8)
    x = rng.uniform(-1, 1, (4, L, 3))
    w = _small_weights(block, x.shape, seed)
    _, saved = block.forward({"x": x}, w)
    block.backward({"last": rng.standard_normal((4, 8))}, saved, w)
    norms = np.asarray(saved["_trace_extras"]["time_grad_norms"])
    assert norms.shape == (L,) and np.all(np.isfinite(norms))
    return norms


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simple_rnn_gradient_fades_towards_early_steps_and_lstm_keeps_more(seed):
    """The lesson's picture: with small recurrent weights, ‖dL/dh_t‖ shrinks geometrically going
    back in time through a SimpleRNN; the LSTM's cell state (forget gate starting near σ(1))
    carries the gradient back orders of magnitude better."""
    rnn = _norms_from_last("SimpleRNN", seed)
    lstm = _norms_from_last("LSTM", seed)
    # Strictly fading, step after step, towards the start of the sequence.
    assert np.all(np.diff(rnn) > 0)
    assert rnn[0] / rnn[-1] < 1e-12
    assert rnn[-10] / rnn[-1] < 1e-2
    # The LSTM's early steps keep vastly more of the gradient than the SimpleRNN's.
    assert lstm[0] / lstm[-1] > 1e6 * (rnn[0] / rnn[-1])
    assert lstm[-10] / lstm[-1] > 10 * (rnn[-10] / rnn[-1])


def test_time_grad_norms_are_the_total_gradient_at_each_state():
    """norms[t] = ‖dL/dh_t‖ including the paths through later steps: compare with the gradient
    that reaches ``h0`` when the sequence is split in two at step t (run the tail from h_t)."""
    rng = np.random.default_rng(5)
    block = blocks.create("SequenceRNN", cell="GRU", hidden=4)
    x = rng.uniform(-1, 1, (2, 6, 3))
    w = block.init_weights({"x": x.shape}, rng)
    outs, saved = block.forward({"x": x}, w)
    gseq = rng.standard_normal(outs["seq"].shape)
    glast = rng.standard_normal(outs["last"].shape)
    block.backward({"seq": gseq, "last": glast}, saved, w)
    norms = saved["_trace_extras"]["time_grad_norms"]
    for t in range(6):
        # Steps t+1 … L−1 started from h_t, with the same upstream gradients for those steps.
        tail_x = x[:, t + 1:]
        h_t = outs["seq"][:, t]
        if tail_x.shape[1] == 0:
            expect = gseq[:, t] + glast
        else:
            _, s2 = block.forward({"x": tail_x, "h0": h_t}, w)
            gin, _ = block.backward({"seq": gseq[:, t + 1:], "last": glast}, s2, w)
            expect = gin["h0"] + gseq[:, t]
        assert norms[t] == pytest.approx(np.linalg.norm(expect), rel=1e-10)


def test_trace_event_carries_time_grad_norms():
    g = Graph()
    x = g.add_node("Input", {"shape": (2, 7, 3)}, name="x")
    rnn = g.add_node("SequenceRNN", {"cell": "LSTM", "hidden": 5}, name="rnn")
    loss = g.add_node("Mean", name="loss")
    g.connect(x.id, "out", rnn.id, "x")
    g.connect(rnn.id, "last", loss.id, "a")
    rt = Runtime(g, dtype=np.float32)
    feed = np.random.default_rng(0).uniform(-1, 1, (2, 7, 3))
    events = [e for e in rt.steps({"x": feed}, "loss") if e.phase == "backward" and e.node == rnn.id]
    assert len(events) == 1
    norms = events[0].extras["time_grad_norms"]
    assert len(norms) == 7 and all(isinstance(v, float) for v in norms)
    assert norms[-1] > norms[0] > 0
    assert events[0].to_json()["extras"]["time_grad_norms"] == norms


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU"])
def test_bidirectional_layout(cell):
    """seq[:, t] = [forward h_t ; backward h_t]; last = [forward at the end ; backward at t = 0];
    the backward half is the same cell (the _rev weights) run over the reversed sequence."""
    rng = np.random.default_rng(1)
    h = 3
    bi = blocks.create("SequenceRNN", cell=cell, hidden=h, bidirectional=True)
    uni = blocks.create("SequenceRNN", cell=cell, hidden=h)
    x = rng.uniform(-1, 1, (2, 5, 4))
    w = bi.init_weights({"x": x.shape}, rng)
    w = {k: v + rng.uniform(-0.2, 0.2, v.shape) for k, v in w.items()}
    assert set(w) == {k + s for k in rnn_kernels.CELL_WEIGHTS[cell] for s in ("", "_rev")}
    out, _ = bi.forward({"x": x}, w)
    fwd, _ = uni.forward({"x": x}, {k: v for k, v in w.items() if not k.endswith("_rev")})
    rev, _ = uni.forward({"x": x[:, ::-1]}, {k.removesuffix("_rev"): v for k, v in w.items() if k.endswith("_rev")})
    np.testing.assert_allclose(out["seq"][..., :h], fwd["seq"], rtol=1e-12)
    np.testing.assert_allclose(out["seq"][..., h:], rev["seq"][:, ::-1], rtol=1e-12)
    np.testing.assert_allclose(out["last"], np.concatenate([out["seq"][:, -1, :h], out["seq"][:, 0, h:]], axis=1))
    assert out["seq"].shape == (2, 5, 2 * h) and out["last"].shape == (2, 2 * h)
    if cell == "LSTM":
        np.testing.assert_allclose(out["last_c"], np.concatenate([fwd["last_c"], rev["last_c"]], axis=1), rtol=1e-12)


def test_ports_depend_on_the_cell():
    lstm = blocks.create("SequenceRNN", cell="LSTM", hidden=4)
    gru = blocks.create("SequenceRNN", cell="GRU", hidden=4)
    assert [p.name for p in lstm.input_ports()] == ["x", "h0", "c0"]
    assert [p.name for p in lstm.output_ports()] == ["seq", "last", "last_c"]
    assert [p.name for p in gru.input_ports()] == ["x", "h0"]
    assert [p.name for p in gru.output_ports()] == ["seq", "last"]
    assert gru.infer_shapes({"x": (2, 5, 3)}) == {"seq": (2, 5, 4), "last": (2, 4)}
    g = Graph()
    x = g.add_node("Input", {"shape": (2, 5, 3)}, name="x")
    node = g.add_node("SequenceRNN", {"cell": "GRU", "hidden": 4}, name="gru")
    with pytest.raises(PortError, match="c0"):
        g.connect(x.id, "out", node.id, "c0")


def test_palette_variants_and_weight_names():
    s = blocks.spec("SequenceRNN")
    assert [(v.label, dict(v.params)) for v in s.variants] == [
        ("SimpleRNN", {"cell": "SimpleRNN"}), ("LSTM", {"cell": "LSTM"}), ("GRU", {"cell": "GRU"})]
    labels = {e.label for e in blocks.palette() if e.type_id == "SequenceRNN"}
    assert labels == {"SimpleRNN", "LSTM", "GRU"}
    shapes = {"x": (2, 5, 3)}
    assert blocks.create("SequenceRNN", cell="SimpleRNN", hidden=4).weight_shapes(shapes) == {
        "Wx": (3, 4), "Wh": (4, 4), "b": (4,)}
    assert blocks.create("SequenceRNN", cell="LSTM", hidden=4, bidirectional=True).weight_shapes(shapes) == {
        "Wx": (3, 16), "Wh": (4, 16), "b": (16,), "Wx_rev": (3, 16), "Wh_rev": (4, 16), "b_rev": (16,)}
    assert blocks.create("SequenceRNN", cell="GRU", hidden=4).weight_shapes(shapes) == {
        "Wx": (3, 12), "Wh": (4, 12), "bx": (12,), "bh": (12,)}


def test_lstm_forget_gate_bias_starts_at_one_and_matrices_follow_torch():
    block = blocks.create("SequenceRNN", cell="LSTM", hidden=5, bidirectional=True)
    w = block.init_weights({"x": (2, 3, 7)}, np.random.default_rng(0))
    for sfx in ("", "_rev"):
        b = w["b" + sfx]
        np.testing.assert_array_equal(b[5:10], 1.0)
        np.testing.assert_array_equal(np.delete(b, np.s_[5:10]), 0.0)
        for name in ("Wx", "Wh"):
            m = w[name + sfx]
            assert np.abs(m).max() <= 1 / np.sqrt(5) and np.abs(m).max() > 0.3 / np.sqrt(5)
    gru = blocks.create("SequenceRNN", cell="GRU", hidden=5).init_weights({"x": (2, 3, 7)}, np.random.default_rng(0))
    assert not gru["bx"].any() and not gru["bh"].any()


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU"])
def test_bptt_is_one_kernel_call_per_direction(cell, monkeypatch):
    name = {"SimpleRNN": "rnn", "LSTM": "lstm", "GRU": "gru"}[cell]
    calls = {"forward": 0, "backward": 0}
    for phase in calls:
        original = getattr(rnn_kernels, f"{name}_{phase}")

        def counting(*args, _original=original, _phase=phase):
            calls[_phase] += 1
            return _original(*args)

        monkeypatch.setattr(rnn_kernels, f"{name}_{phase}", counting)
    block = blocks.create("SequenceRNN", cell=cell, hidden=3, bidirectional=True)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 30, 2)).astype(np.float32)
    w = {k: v.astype(np.float32) for k, v in block.init_weights({"x": x.shape}, np.random.default_rng(1)).items()}
    outs, saved = block.forward({"x": x}, w)
    block.backward({"seq": np.ones_like(outs["seq"])}, saved, w)
    assert calls == {"forward": 2, "backward": 2}


def test_rnn_shape_errors_name_port_and_dimension():
    block = blocks.create("SequenceRNN", cell="LSTM", hidden=4, bidirectional=True)
    with pytest.raises(ShapeError, match=r"SequenceRNN: input 'x' must have 3 dimensions \(batch, length, features\), got shape \(2, 5\)"):
        block.infer_shapes({"x": (2, 5)})
    with pytest.raises(ShapeError, match=r"input 'h0' dimension 0 \(batch, as in 'x'\) should be 2, got 3"):
        block.infer_shapes({"x": (2, 5, 3), "h0": (3, 4)})
    with pytest.raises(ShapeError, match=r"input 'c0' dimension 1 \(state size\) should be 4 \(shared by both directions\) or 8"):
        block.infer_shapes({"x": (2, 5, 3), "c0": (2, 5)})
    with pytest.raises(ShapeError, match="empty sequence"):
        block.infer_shapes({"x": (2, 0, 3)})
    uni = blocks.create("SequenceRNN", cell="GRU", hidden=4)
    with pytest.raises(ShapeError, match=r"input 'h0' dimension 1 \(state size\) should be 4 \(hidden\), got 8"):
        uni.infer_shapes({"x": (2, 5, 3), "h0": (2, 8)})
    with pytest.raises(ParamError, match="cell"):
        blocks.create("SequenceRNN", cell="Transformer")


def test_activation_choice_changes_only_the_simple_rnn():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 4, 3))
    results = {}
    for cell in ("SimpleRNN", "GRU"):
        for act in ("tanh", "sigmoid"):
            b = blocks.create("SequenceRNN", cell=cell, hidden=3, activation=act)
            w = b.init_weights({"x": x.shape}, np.random.default_rng(1))
            results[cell, act] = b.forward({"x": x}, w)[0]["seq"]
    assert (results["SimpleRNN", "sigmoid"] > 0).all() and (results["SimpleRNN", "tanh"] < 0).any()
    np.testing.assert_array_equal(results["GRU", "tanh"], results["GRU", "sigmoid"])


# --- convolution ----------------------------------------------------------------------------------


def test_conv_kernel_larger_than_image_names_kernel():
    conv = blocks.create("Conv2d", out_channels=2, kernel=5)
    with pytest.raises(ShapeError, match=r"Conv2d: parameter 'kernel' \(5\) is larger than the image \(4×6"):
        conv.infer_shapes({"x": (1, 3, 4, 6)})
    # Padding can make it fit: 4 + 2·1 = 6 ≥ 5.
    assert blocks.create("Conv2d", out_channels=2, kernel=5, padding=1).infer_shapes({"x": (1, 3, 4, 6)}) == {"out": (1, 2, 2, 4)}
    with pytest.raises(ShapeError, match=r"MaxPool2d: parameter 'kernel' \(3\) is larger than the image \(2×8"):
        blocks.create("MaxPool2d", kernel=3).infer_shapes({"x": (1, 1, 2, 8)})


def test_conv_channel_mismatch_and_rank_are_shape_errors():
    conv = blocks.create("Conv2d", out_channels=2)
    w = conv.init_weights({"x": (1, 3, 6, 6)}, np.random.default_rng(0))
    with pytest.raises(ShapeError, match=r"input 'x' dimension 1 \(channels\) should be 3, the filters' C_in, got 4"):
        conv.forward({"x": np.zeros((1, 4, 6, 6))}, w)
    with pytest.raises(ShapeError, match=r"input 'x' must have 4 dimensions \(batch, channels, height, width\)"):
        conv.infer_shapes({"x": (3, 6, 6)})
    g = Graph()
    a = g.add_node("Input", {"shape": (1, 3, 6, 6)}, name="a")
    c = g.add_node("Conv2d", {"out_channels": 2}, name="c")
    g.connect(a.id, "out", c.id, "x")
    assert g.weight_shapes(c.id) == {"W": (2, 3, 3, 3), "b": (2,)}


def test_conv_init_uses_fan_in_of_the_filter():
    conv = blocks.create("Conv2d", out_channels=64, kernel=3)
    w = conv.init_weights({"x": (1, 2, 8, 8)}, np.random.default_rng(0))
    bound = 1 / np.sqrt(2 * 3 * 3)
    assert np.abs(w["W"]).max() <= bound and np.abs(w["W"]).max() > 0.9 * bound
    assert not w["b"].any()
    assert "b" not in blocks.create("Conv2d", bias=False).weight_shapes({"x": (1, 2, 8, 8)})


def test_maxpool_ties_go_to_the_first_maximum_in_both_backends():
    x = np.array([[[[1.0, 1.0, 0.0, 2.0],
                    [1.0, 0.0, 2.0, 2.0],
                    [3.0, 3.0, 5.0, 4.0],
                    [3.0, 3.0, 4.0, 5.0]]]])
    pool = blocks.create("MaxPool2d")
    assert pool.p["stride"] is None and pool.stride == (2, 2)
    expect = np.array([[[[1.0, 0.0, 0.0, 1.0],
                         [0.0, 0.0, 0.0, 0.0],
                         [1.0, 0.0, 1.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0]]]])
    for backend in kernels.BACKENDS:
        with kernels.using(backend):
            out, saved = pool.forward({"x": x}, {})
            gin, _ = pool.backward({"out": np.ones((1, 1, 2, 2))}, saved, {})
        np.testing.assert_array_equal(out["out"], [[[[1.0, 2.0], [3.0, 5.0]]]])
        np.testing.assert_array_equal(gin["x"], expect, err_msg=backend)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_ties_and_nan_agree_between_kernel_and_twin(dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (2, 3, 7, 8)).astype(dtype)
    x[0, 0, 1, 1] = np.nan
    for k, s in ((2, 2), (3, 2), (2, 1)):
        res = []
        for backend in kernels.BACKENDS:
            with kernels.using(backend):
                res.append(conv_kernels.maxpool2d(x, k, s))
        np.testing.assert_array_equal(res[0][0], res[1][0])
        np.testing.assert_array_equal(res[0][1], res[1][1])
        assert np.isnan(res[0][0][0, 0, 0, 0])  # a NaN in the window stays visible


def test_conv_zero_padding_is_really_zero():
    """A 1-channel all-ones image, all-ones 3×3 filter, padding 1: corners see 4 pixels, edges 6."""
    conv = blocks.create("Conv2d", out_channels=1, kernel=3, padding=1, bias=False)
    out, _ = conv.forward({"x": np.ones((1, 1, 4, 4))}, {"W": np.ones((1, 1, 3, 3))})
    np.testing.assert_array_equal(out["out"][0, 0], [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]])
