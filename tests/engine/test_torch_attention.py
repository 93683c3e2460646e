"""Attention and the Transformer composites against PyTorch, forward and backward, float32/64.

Weight layouts (BLOCKS.md): in_proj_weight = [Wq; Wk; Wv]ᵀ stacked as [Wqᵀ; Wkᵀ; Wvᵀ],
in_proj_bias = [bq; bk; bv], out_proj.weight = Woᵀ; nn.Linear weight = Wᵀ; LayerNorm
weight/bias = gamma/beta. Transformer blocks are compared with torch's own post-norm
``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` (dropout 0).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine import blocks  # noqa: E402

pytestmark = pytest.mark.torch

DTYPES = {np.float32: torch.float32, np.float64: torch.float64}


def _tol(dtype):
    return {"rtol": 2e-4, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-9, "atol": 1e-10}


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _random_weights(block, shapes, rng, dtype):
    w = block.init_weights(shapes, rng)
    return {k: (v + rng.uniform(-0.3, 0.3, v.shape)).astype(dtype) for k, v in w.items()}


def _load_mha(mha, w, prefix=""):
    d = w[prefix + "Wq"].shape[0]
    with torch.no_grad():
        mha.in_proj_weight.copy_(_t(np.concatenate([w[prefix + "Wq"].T, w[prefix + "Wk"].T, w[prefix + "Wv"].T])))
        mha.out_proj.weight.copy_(_t(w[prefix + "Wo"].T))
        if mha.in_proj_bias is not None:
            mha.in_proj_bias.copy_(_t(np.concatenate([w[prefix + "bq"], w[prefix + "bk"], w[prefix + "bv"]])))
            mha.out_proj.bias.copy_(_t(w[prefix + "bo"]))
    assert mha.in_proj_weight.shape == (3 * d, d)


def _mha_grads(mha, prefix=""):
    d = mha.embed_dim
    gw = mha.in_proj_weight.grad.numpy()
    out = {prefix + "Wq": gw[:d].T, prefix + "Wk": gw[d:2 * d].T, prefix + "Wv": gw[2 * d:].T,
           prefix + "Wo": mha.out_proj.weight.grad.numpy().T}
    if mha.in_proj_bias is not None:
        gb = mha.in_proj_bias.grad.numpy()
        out.update({prefix + "bq": gb[:d], prefix + "bk": gb[d:2 * d], prefix + "bv": gb[2 * d:],
                    prefix + "bo": mha.out_proj.bias.grad.numpy()})
    return out


def _mask(lq, lk):
    return torch.triu(torch.ones(lq, lk, dtype=torch.bool), 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("heads,causal,bias,cross", [
    (1, False, True, False), (4, False, True, False), (2, True, True, False), (4, True, False, False),
    (2, False, True, True), (4, True, True, True), (1, False, False, True),
])
def test_attention_matches_torch_multihead_attention(dtype, heads, causal, bias, cross):
    rng = np.random.default_rng(heads * 10 + causal * 2 + bias + 100 * cross)
    b, lq, lk, d = 3, 6, (4 if cross else 6), 8
    block = blocks.create("Attention", heads=heads, causal=causal, bias=bias)
    x = rng.standard_normal((b, lq, d)).astype(dtype)
    inputs = {"x": x}
    if cross:
        inputs["context"] = rng.standard_normal((b, lk, d)).astype(dtype)
    w = _random_weights(block, {k: v.shape for k, v in inputs.items()}, rng, dtype)
    outs, saved = block.forward(inputs, w)
    g = rng.standard_normal(outs["out"].shape).astype(dtype)
    gin, gw = block.backward({"out": g}, saved, w)

    mha = torch.nn.MultiheadAttention(d, heads, bias=bias, batch_first=True, dtype=DTYPES[dtype])
    _load_mha(mha, w)
    tx = _t(x).requires_grad_(True)
    tc = _t(inputs["context"]).requires_grad_(True) if cross else tx
    t_out, t_attn = mha(tx, tc, tc, attn_mask=_mask(lq, lk) if causal else None, need_weights=True, average_attn_weights=False)
    (t_out * _t(g)).sum().backward()

    tol = _tol(dtype)
    np.testing.assert_allclose(outs["out"], t_out.detach().numpy(), **tol)
    np.testing.assert_allclose(outs["attn"], t_attn.detach().numpy(), **tol)
    np.testing.assert_allclose(gin["x"], tx.grad.numpy(), **tol)
    if cross:
        np.testing.assert_allclose(gin["context"], tc.grad.numpy(), **tol)
    for name, value in _mha_grads(mha).items():
        # bk's gradient is exactly 0 in exact arithmetic (softmax ignores a per-row shift);
        # torch's is rounding noise around 0, so compare it with an absolute tolerance.
        np.testing.assert_allclose(gw[name], value, err_msg=name, **(tol if name != "bk" else {"rtol": 0, "atol": 1e-4}))


def _load_ffn_and_norms(layer, w, norms):
    with torch.no_grad():
        layer.linear1.weight.copy_(_t(w["ffn/W1"].T))
        layer.linear1.bias.copy_(_t(w["ffn/b1"]))
        layer.linear2.weight.copy_(_t(w["ffn/W2"].T))
        layer.linear2.bias.copy_(_t(w["ffn/b2"]))
        for i in range(1, norms + 1):
            getattr(layer, f"norm{i}").weight.copy_(_t(w[f"norm{i}/gamma"]))
            getattr(layer, f"norm{i}").bias.copy_(_t(w[f"norm{i}/beta"]))


def _ffn_and_norm_grads(layer, norms):
    out = {"ffn/W1": layer.linear1.weight.grad.numpy().T, "ffn/b1": layer.linear1.bias.grad.numpy(),
           "ffn/W2": layer.linear2.weight.grad.numpy().T, "ffn/b2": layer.linear2.bias.grad.numpy()}
    for i in range(1, norms + 1):
        out[f"norm{i}/gamma"] = getattr(layer, f"norm{i}").weight.grad.numpy()
        out[f"norm{i}/beta"] = getattr(layer, f"norm{i}").bias.grad.numpy()
    return out


def _compare_grads(ours, theirs, dtype):
    tol = _tol(dtype)
    for name, value in theirs.items():
        if name.endswith("/bk"):
            np.testing.assert_allclose(ours[name], value, rtol=0, atol=1e-4, err_msg=name)
        else:
            np.testing.assert_allclose(ours[name], value, err_msg=name, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal,activation", [(False, "relu"), (True, "gelu")])
def test_transformer_block_matches_torch_encoder_layer(dtype, causal, activation):
    rng = np.random.default_rng(7 + causal)
    b, length, d, heads, hidden = 2, 5, 8, 2, 16
    block = blocks.create("TransformerBlock", dim=d, heads=heads, hidden=hidden, causal=causal, activation=activation)
    x = rng.standard_normal((b, length, d)).astype(dtype)
    w = _random_weights(block, {"x": x.shape}, rng, dtype)
    outs, saved = block.forward({"x": x}, w)
    g = rng.standard_normal(x.shape).astype(dtype)
    gin, gw = block.backward({"out": g}, saved, w)

    layer = torch.nn.TransformerEncoderLayer(d, heads, dim_feedforward=hidden, dropout=0.0, activation=activation,
                                             batch_first=True, norm_first=False, dtype=DTYPES[dtype])
    _load_mha(layer.self_attn, {k[5:]: v for k, v in w.items() if k.startswith("attn/")})
    _load_ffn_and_norms(layer, w, 2)
    tx = _t(x).requires_grad_(True)
    t_out = layer(tx, src_mask=_mask(length, length) if causal else None)
    (t_out * _t(g)).sum().backward()

    np.testing.assert_allclose(outs["out"], t_out.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(gin["x"], tx.grad.numpy(), **_tol(dtype))
    _compare_grads(gw, {**_mha_grads(layer.self_attn, "attn/"), **_ffn_and_norm_grads(layer, 2)}, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transformer_decoder_block_matches_torch_decoder_layer(dtype):
    rng = np.random.default_rng(11)
    b, lt, ls, d, heads, hidden = 2, 5, 4, 8, 4, 12
    block = blocks.create("TransformerDecoderBlock", dim=d, heads=heads, hidden=hidden)
    x = rng.standard_normal((b, lt, d)).astype(dtype)
    c = rng.standard_normal((b, ls, d)).astype(dtype)
    w = _random_weights(block, {"x": x.shape, "context": c.shape}, rng, dtype)
    outs, saved = block.forward({"x": x, "context": c}, w)
    g = rng.standard_normal(x.shape).astype(dtype)
    gin, gw = block.backward({"out": g}, saved, w)

    layer = torch.nn.TransformerDecoderLayer(d, heads, dim_feedforward=hidden, dropout=0.0, batch_first=True,
                                             norm_first=False, dtype=DTYPES[dtype])
    _load_mha(layer.self_attn, {k[10:]: v for k, v in w.items() if k.startswith("self_attn/")})
    _load_mha(layer.multihead_attn, {k[11:]: v for k, v in w.items() if k.startswith("cross_attn/")})
    _load_ffn_and_norms(layer, w, 3)
    tx, tc = _t(x).requires_grad_(True), _t(c).requires_grad_(True)
    t_out = layer(tx, tc, tgt_mask=_mask(lt, lt))
    (t_out * _t(g)).sum().backward()

    np.testing.assert_allclose(outs["out"], t_out.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(gin["x"], tx.grad.numpy(), **_tol(dtype))
    np.testing.assert_allclose(gin["context"], tc.grad.numpy(), **_tol(dtype))
    _compare_grads(gw, {**_mha_grads(layer.self_attn, "self_attn/"), **_mha_grads(layer.multihead_attn, "cross_attn/"),
                        **_ffn_and_norm_grads(layer, 3)}, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bert_matches_torch_embeddings_and_encoder_layers(dtype):
    rng = np.random.default_rng(12)
    vocab, d, heads, layers, hidden, max_len = 13, 8, 2, 2, 10, 7
    bert = blocks.create("BERT", vocab=vocab, dim=d, heads=heads, layers=layers, hidden=hidden, max_len=max_len)
    ids = rng.integers(0, vocab, size=(2, 6))
    w = _random_weights(bert, {"ids": ids.shape}, rng, dtype)
    outs, saved = bert.forward({"ids": ids}, w)
    g = rng.standard_normal(outs["out"].shape).astype(dtype)
    _, gw = bert.backward({"out": g}, saved, w)

    emb = torch.nn.Embedding(vocab, d, dtype=DTYPES[dtype])
    pos = torch.nn.Parameter(_t(w["embed/P"]).clone())
    with torch.no_grad():
        emb.weight.copy_(_t(w["embed/E"]))
    stack = []
    for i in range(1, layers + 1):
        layer = torch.nn.TransformerEncoderLayer(d, heads, dim_feedforward=hidden, dropout=0.0, batch_first=True, dtype=DTYPES[dtype])
        sub = {k[len(f"block{i}/"):]: v for k, v in w.items() if k.startswith(f"block{i}/")}
        _load_mha(layer.self_attn, {k[5:]: v for k, v in sub.items() if k.startswith("attn/")})
        _load_ffn_and_norms(layer, sub, 2)
        stack.append(layer)
    h = emb(torch.from_numpy(ids)) + pos[:6]
    for layer in stack:
        h = layer(h)
    (h * _t(g)).sum().backward()

    np.testing.assert_allclose(outs["out"], h.detach().numpy(), **_tol(dtype))
    theirs = {"embed/E": emb.weight.grad.numpy(), "embed/P": pos.grad.numpy()}
    for i, layer in enumerate(stack, start=1):
        theirs.update({f"block{i}/{k}": v for k, v in {**_mha_grads(layer.self_attn, "attn/"), **_ffn_and_norm_grads(layer, 2)}.items()})
    _compare_grads(gw, theirs, dtype)
