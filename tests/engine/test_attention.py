"""Attention and FeedForwardSequenceModel against plain-loop references written from BLOCKS.md,
their causality, their error messages, and the fused attention kernel against its numpy twin."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import blocks, kernels
from engine.errors import ParamError, ShapeError
from engine.gradcheck import check_block
from engine.kernels import attention as kattention


def reference_attention(x, c, w, heads, causal):
    """BLOCKS.md's formula, head by head and row by row."""
    batch, lq, d = x.shape
    lk = c.shape[1]
    dh = d // heads
    b = {k: w.get(k, np.zeros(d)) for k in ("bq", "bk", "bv", "bo")}
    q = x @ w["Wq"] + b["bq"]
    k = c @ w["Wk"] + b["bk"]
    v = c @ w["Wv"] + b["bv"]
    attn = np.zeros((batch, heads, lq, lk))
    concat = np.zeros((batch, lq, d))
    for n in range(batch):
        for h in range(heads):
            cols = slice(h * dh, (h + 1) * dh)
            for i in range(lq):
                scores = np.array([q[n, i, cols] @ k[n, j, cols] / math.sqrt(dh) for j in range(lk)])
                if causal:
                    scores[i + 1:] = -np.inf
                e = np.exp(scores - scores.max())
                attn[n, h, i] = e / e.sum()
                concat[n, i, cols] = attn[n, h, i] @ v[n, :, cols]
    return concat @ w["Wo"] + b["bo"], attn


def _weights(block, shapes, rng, dtype=np.float64):
    w = block.init_weights(shapes, rng)
    return {k: (v + rng.uniform(-0.3, 0.3, v.shape)).astype(dtype) for k, v in w.items()}


@pytest.mark.parametrize("heads,causal,bias,cross", [
    (1, False, True, False), (2, True, True, False), (4, False, False, False),
    (2, False, True, True), (4, True, True, True), (1, True, False, True),
])
def test_attention_matches_the_formula_head_by_head(heads, causal, bias, cross):
    rng = np.random.default_rng(0)
    block = blocks.create("Attention", heads=heads, causal=causal, bias=bias)
    x = rng.standard_normal((2, 5, 8))
    inputs = {"x": x}
    c = x
    if cross:
        c = rng.standard_normal((2, 3, 8))
        inputs["context"] = c
    shapes = {k: v.shape for k, v in inputs.items()}
    w = _weights(block, shapes, rng)
    assert set(w) == ({"Wq", "Wk", "Wv", "Wo"} | ({"bq", "bk", "bv", "bo"} if bias else set()))
    outs, _ = block.forward(inputs, w)
    ref_out, ref_attn = reference_attention(x, c, w, heads, causal)
    assert block.infer_shapes(shapes) == {"out": (2, 5, 8), "attn": (2, heads, 5, c.shape[1])}
    np.testing.assert_allclose(outs["out"], ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(outs["attn"], ref_attn, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(outs["attn"].sum(axis=-1), 1.0, rtol=1e-12)


def test_attention_gradients_in_float64_on_a_larger_case():
    rng = np.random.default_rng(1)
    block = blocks.create("Attention", heads=3, causal=True)
    inputs = {"x": rng.standard_normal((2, 6, 9))}
    w = _weights(block, {"x": (2, 6, 9)}, rng)
    bad = [c for c in check_block(block, inputs, w) if not c.error < 1e-6]
    assert not bad, bad


def test_causal_attention_output_at_i_ignores_later_tokens():
    rng = np.random.default_rng(2)
    block = blocks.create("Attention", heads=2, causal=True)
    x = rng.standard_normal((1, 6, 4))
    w = _weights(block, {"x": x.shape}, rng)
    base = block.forward({"x": x}, w)[0]
    assert np.all(np.triu(base["attn"][0, 0], 1) == 0), "probability above the diagonal must be exactly 0"
    for i in range(5):
        changed = x.copy()
        changed[0, i + 1:] = rng.standard_normal(changed[0, i + 1:].shape)
        out = block.forward({"x": changed}, w)[0]["out"]
        np.testing.assert_allclose(out[0, :i + 1], base["out"][0, :i + 1], rtol=1e-12, atol=1e-12)
        assert not np.allclose(out[0, i + 1:], base["out"][0, i + 1:])
    # Not causal: the first position does see the last token.
    full = blocks.create("Attention", heads=2)
    changed = x.copy()
    changed[0, -1] += 1.0
    assert not np.allclose(full.forward({"x": changed}, w)[0]["out"][0, 0], full.forward({"x": x}, w)[0]["out"][0, 0])


def test_attn_output_is_display_only():
    rng = np.random.default_rng(3)
    block = blocks.create("Attention", heads=2)
    x = rng.standard_normal((1, 3, 4))
    w = _weights(block, {"x": x.shape}, rng)
    outs, saved = block.forward({"x": x}, w)
    gin, gw = block.backward({"attn": np.ones_like(outs["attn"])}, saved, w)
    assert not np.any(gin["x"]) and not any(np.any(g) for g in gw.values())
    assert not next(p for p in block.output_ports() if p.name == "attn").differentiable


def test_attention_runs_in_float32_and_returns_float32():
    rng = np.random.default_rng(4)
    block = blocks.create("Attention", heads=2)
    inputs = {"x": rng.standard_normal((2, 4, 6)).astype(np.float32), "context": rng.standard_normal((2, 3, 6)).astype(np.float32)}
    w = _weights(block, {k: v.shape for k, v in inputs.items()}, rng, np.float32)
    outs, saved = block.forward(inputs, w)
    assert outs["out"].dtype == np.float32 and outs["attn"].dtype == np.float32
    gin, gw = block.backward({"out": np.ones((2, 4, 6), np.float32)}, saved, w)
    assert all(g.dtype == np.float32 for g in [*gin.values(), *gw.values()])
    ref, _ = reference_attention(inputs["x"].astype(np.float64), inputs["context"].astype(np.float64),
                                 {k: v.astype(np.float64) for k, v in w.items()}, 2, False)
    np.testing.assert_allclose(outs["out"], ref, rtol=1e-4, atol=1e-5)


def test_heads_must_divide_the_width_and_be_positive():
    with pytest.raises(ShapeError, match="parameter 'heads' \\(3\\) must divide the width d = 8"):
        blocks.create("Attention", heads=3).infer_shapes({"x": (2, 5, 8)})
    with pytest.raises(ParamError, match="'heads'"):
        blocks.create("Attention", heads=0)


@pytest.mark.parametrize("in_shapes,words", [
    ({"x": (5, 8)}, ["'x'", "3 dimensions"]),
    ({"x": (2, 5, 8), "context": (2, 5, 6)}, ["'context'", "dimension 2", "8", "6"]),
    ({"x": (2, 5, 8), "context": (3, 5, 8)}, ["'context'", "dimension 0", "batch"]),
    ({}, ["'x'", "not connected"]),
])
def test_attention_shape_errors_name_port_and_dimension(in_shapes, words):
    with pytest.raises(ShapeError) as info:
        blocks.create("Attention", heads=2).infer_shapes(in_shapes)
    for word in words:
        assert word in str(info.value), str(info.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_fused_attention_kernel_matches_numpy_twin_on_a_bigger_case(dtype, causal):
    rng = np.random.default_rng(5)
    q = rng.standard_normal((12, 17, 8)).astype(dtype)
    k = rng.standard_normal((12, 13, 8)).astype(dtype)
    v = rng.standard_normal((12, 13, 8)).astype(dtype)
    go = rng.standard_normal((12, 17, 8)).astype(dtype)
    results = {}
    for backend in kernels.BACKENDS:
        with kernels.using(backend):
            a, o = kattention.forward(q, k, v, causal)
            results[backend] = (a, o, *kattention.backward(q, k, v, a, go))
    tol = {"rtol": 2e-4, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-12}
    for fast, twin in zip(results["numba"], results["numpy"]):
        assert fast.dtype == dtype
        np.testing.assert_allclose(fast, twin, **tol)


# --- FeedForwardSequenceModel ----------------------------------------------------------------------------


def test_feedforward_sequence_model_matches_the_windowed_formula():
    rng = np.random.default_rng(6)
    block = blocks.create("FeedForwardSequenceModel", window=3, hidden=7, out_features=5, activation="tanh")
    x = rng.standard_normal((2, 6, 4))
    w = _weights(block, {"x": x.shape}, rng)
    assert {k: v.shape for k, v in w.items()} == {"W1": (12, 7), "b1": (7,), "W2": (7, 5), "b2": (5,)}
    out = block.forward({"x": x}, w)[0]["out"]
    zero = np.zeros(4)
    for n in range(2):
        for i in range(6):
            window = np.concatenate([x[n, t] if t >= 0 else zero for t in range(i - 2, i + 1)])
            expected = np.tanh(window @ w["W1"] + w["b1"]) @ w["W2"] + w["b2"]
            np.testing.assert_allclose(out[n, i], expected, rtol=1e-12, atol=1e-12)


def test_feedforward_sequence_model_is_causal_and_sees_exactly_its_window():
    rng = np.random.default_rng(7)
    block = blocks.create("FeedForwardSequenceModel", window=2)
    x = rng.standard_normal((1, 6, 3))
    w = _weights(block, {"x": x.shape}, rng)
    assert w["W1"].shape == (6, 12)  # hidden defaults to 4·d
    base = block.forward({"x": x}, w)[0]["out"]
    changed = x.copy()
    changed[0, 3] += 1.0
    out = block.forward({"x": changed}, w)[0]["out"]
    moved = np.abs(out - base).max(axis=-1)[0] > 1e-12
    assert moved.tolist() == [False, False, False, True, True, False]


def test_feedforward_sequence_model_gradients_on_a_larger_case():
    rng = np.random.default_rng(8)
    block = blocks.create("FeedForwardSequenceModel", window=4, hidden=9, activation="gelu")
    inputs = {"x": rng.standard_normal((3, 7, 5))}
    w = _weights(block, {"x": (3, 7, 5)}, rng)
    bad = [c for c in check_block(block, inputs, w) if not c.error < 1e-6]
    assert not bad, bad


def test_feedforward_sequence_model_errors():
    with pytest.raises(ParamError, match="'window'"):
        blocks.create("FeedForwardSequenceModel", window=0)
    with pytest.raises(ShapeError, match="input 'x' must have 3 dimensions"):
        blocks.create("FeedForwardSequenceModel").infer_shapes({"x": (2, 4)})
