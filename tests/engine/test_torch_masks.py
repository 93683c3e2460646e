"""Key-padding masks against torch: Attention (``key_padding_mask = mask == 0``), the Transformer
blocks (``src_key_padding_mask``, ``tgt_key_padding_mask``, ``memory_key_padding_mask``) and
BERT's ``pad_id``; forward and backward in float32 and float64. Queries that see no key at all
(torch gives NaN) get zeros and no gradient; padding never changes the real tokens' results."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine import blocks  # noqa: E402
from tests.engine.test_torch_attention import (  # noqa: E402
    DTYPES,
    _compare_grads,
    _ffn_and_norm_grads,
    _load_ffn_and_norms,
    _load_mha,
    _mask,
    _mha_grads,
    _random_weights,
    _t,
)

pytestmark = pytest.mark.torch


def _tol(dtype):
    return {"rtol": 2e-4, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}


def _padding(rng: np.random.Generator, batch: int, length: int, keep_first: bool = True) -> np.ndarray:
    """A (batch, length) 0/1 mask: every sequence keeps its first token and a random run after it."""
    lengths = rng.integers(1, length + 1, batch)
    lengths[0] = length  # one full sequence
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    return mask if keep_first else mask[:, ::-1].copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("heads,causal,cross,float_mask", [
    (1, False, False, False), (2, False, False, True), (4, True, False, False),
    (2, False, True, False), (1, True, True, True),
])
def test_attention_with_a_padding_mask_matches_torch(dtype, heads, causal, cross, float_mask):
    rng = np.random.default_rng(heads + 10 * causal + 100 * cross)
    b, lq, lk, d = 4, 5, (6 if cross else 5), 8
    block = blocks.create("Attention", heads=heads, causal=causal)
    x = rng.standard_normal((b, lq, d)).astype(dtype)
    inputs = {"x": x}
    if cross:
        inputs["context"] = rng.standard_normal((b, lk, d)).astype(dtype)
    mask = _padding(rng, b, lk)
    inputs["mask"] = mask.astype(dtype) if float_mask else mask
    w = _random_weights(block, {k: v.shape for k, v in inputs.items()}, rng, dtype)
    outs, saved = block.forward(inputs, w)
    g = rng.standard_normal(outs["out"].shape).astype(dtype)
    gin, gw = block.backward({"out": g}, saved, w)
    assert ("mask" in gin) == float_mask and (not float_mask or not gin["mask"].any())

    mha = torch.nn.MultiheadAttention(d, heads, batch_first=True, dtype=DTYPES[dtype])
    _load_mha(mha, w)
    tx = _t(x).requires_grad_(True)
    tc = _t(inputs["context"]).requires_grad_(True) if cross else tx
    t_out, t_attn = mha(tx, tc, tc, key_padding_mask=torch.from_numpy(mask == 0), attn_mask=_mask(lq, lk) if causal else None,
                        need_weights=True, average_attn_weights=False)
    (t_out * _t(g)).sum().backward()
    tol = _tol(dtype)
    np.testing.assert_allclose(outs["out"], t_out.detach().numpy(), **tol)
    np.testing.assert_allclose(outs["attn"], t_attn.detach().numpy(), **tol)
    assert not outs["attn"][mask[:, None, None, :].repeat(lq, 2).repeat(heads, 1) == 0].any()
    np.testing.assert_allclose(gin["x"], tx.grad.numpy(), **tol)
    if cross:
        np.testing.assert_allclose(gin["context"], tc.grad.numpy(), **tol)
    _compare_grads(gw, _mha_grads(mha), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_query_that_sees_no_key_gets_zeros_and_no_gradient(dtype):
    """Left padding under causal attention: the pad positions at the start see only padding."""
    rng = np.random.default_rng(3)
    b, length, d = 3, 4, 6
    block = blocks.create("Attention", heads=2, causal=True)
    x = rng.standard_normal((b, length, d)).astype(dtype)
    mask = np.array([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]])
    w = _random_weights(block, {"x": x.shape, "mask": mask.shape}, rng, dtype)
    outs, saved = block.forward({"x": x, "mask": mask}, w)
    gin, gw = block.backward({"out": rng.standard_normal(x.shape).astype(dtype)}, saved, w)
    assert all(np.isfinite(a).all() for a in [outs["out"], outs["attn"], gin["x"], *gw.values()])
    blind = mask == 0  # these queries see no key: causal hides what follows, the mask what precedes
    np.testing.assert_array_equal(outs["attn"][blind.nonzero()[0], :, blind.nonzero()[1]], 0)
    np.testing.assert_allclose(outs["out"][blind], np.broadcast_to(w["bo"], (blind.sum(), d)), rtol=0, atol=0)
    # a pad position's x reaches nothing: it is no one's key, and its own query sees nobody
    np.testing.assert_array_equal(gin["x"][blind], 0)
    # the real positions are the same as running the real tokens alone
    alone, _ = block.forward({"x": x[2:, 3:]}, w)
    np.testing.assert_allclose(outs["out"][2, 3], alone["out"][0, 0], **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transformer_block_mask_matches_torch_encoder_layer(dtype):
    rng = np.random.default_rng(21)
    b, length, d, heads, hidden = 3, 5, 8, 2, 12
    block = blocks.create("TransformerBlock", dim=d, heads=heads, hidden=hidden)
    x = rng.standard_normal((b, length, d)).astype(dtype)
    mask = _padding(rng, b, length)
    w = _random_weights(block, {"x": x.shape, "mask": mask.shape}, rng, dtype)
    outs, saved = block.forward({"x": x, "mask": mask}, w)
    g = rng.standard_normal(x.shape).astype(dtype)
    gin, gw = block.backward({"out": g}, saved, w)

    layer = torch.nn.TransformerEncoderLayer(d, heads, dim_feedforward=hidden, dropout=0.0, batch_first=True, dtype=DTYPES[dtype])
    _load_mha(layer.self_attn, {k[5:]: v for k, v in w.items() if k.startswith("attn/")})
    _load_ffn_and_norms(layer, w, 2)
    tx = _t(x).requires_grad_(True)
    t_out = layer(tx, src_key_padding_mask=torch.from_numpy(mask == 0))
    (t_out * _t(g)).sum().backward()
    np.testing.assert_allclose(outs["out"], t_out.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(gin["x"], tx.grad.numpy(), **_tol(dtype))
    _compare_grads(gw, {**_mha_grads(layer.self_attn, "attn/"), **_ffn_and_norm_grads(layer, 2)}, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decoder_block_masks_match_torch_decoder_layer(dtype):
    rng = np.random.default_rng(22)
    b, lt, ls, d, heads, hidden = 3, 4, 5, 8, 2, 10
    block = blocks.create("TransformerDecoderBlock", dim=d, heads=heads, hidden=hidden)
    x = rng.standard_normal((b, lt, d)).astype(dtype)
    c = rng.standard_normal((b, ls, d)).astype(dtype)
    tmask, cmask = _padding(rng, b, lt), _padding(rng, b, ls)
    shapes = {"x": x.shape, "context": c.shape, "mask": tmask.shape, "context_mask": cmask.shape}
    w = _random_weights(block, shapes, rng, dtype)
    outs, saved = block.forward({"x": x, "context": c, "mask": tmask, "context_mask": cmask}, w)
    g = rng.standard_normal(x.shape).astype(dtype)
    gin, gw = block.backward({"out": g}, saved, w)

    layer = torch.nn.TransformerDecoderLayer(d, heads, dim_feedforward=hidden, dropout=0.0, batch_first=True, dtype=DTYPES[dtype])
    _load_mha(layer.self_attn, {k[10:]: v for k, v in w.items() if k.startswith("self_attn/")})
    _load_mha(layer.multihead_attn, {k[11:]: v for k, v in w.items() if k.startswith("cross_attn/")})
    _load_ffn_and_norms(layer, w, 3)
    tx, tc = _t(x).requires_grad_(True), _t(c).requires_grad_(True)
    t_out = layer(tx, tc, tgt_mask=_mask(lt, lt), tgt_key_padding_mask=torch.from_numpy(tmask == 0),
                  memory_key_padding_mask=torch.from_numpy(cmask == 0))
    (t_out * _t(g)).sum().backward()
    np.testing.assert_allclose(outs["out"], t_out.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(gin["x"], tx.grad.numpy(), **_tol(dtype))
    np.testing.assert_allclose(gin["context"], tc.grad.numpy(), **_tol(dtype))
    _compare_grads(gw, {**_mha_grads(layer.self_attn, "self_attn/"), **_mha_grads(layer.multihead_attn, "cross_attn/"),
                        **_ffn_and_norm_grads(layer, 3)}, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bert_pad_id_matches_torch_with_key_padding_masks(dtype):
    rng = np.random.default_rng(23)
    vocab, d, heads, layers, hidden, max_len, pad = 11, 8, 2, 2, 10, 7, 0
    bert = blocks.create("BERT", vocab=vocab, dim=d, heads=heads, layers=layers, hidden=hidden, max_len=max_len, pad_id=pad)
    ids = rng.integers(1, vocab, size=(3, 6))
    ids[1, 4:] = pad
    ids[2, 2:] = pad
    w = _random_weights(bert, {"ids": ids.shape}, rng, dtype)
    outs, saved = bert.forward({"ids": ids}, w)
    g = rng.standard_normal(outs["out"].shape).astype(dtype)
    _, gw = bert.backward({"out": g}, saved, w)

    emb = torch.nn.Embedding(vocab, d, dtype=DTYPES[dtype])
    pos = torch.nn.Parameter(_t(w["embed/P"]).clone())
    with torch.no_grad():
        emb.weight.copy_(_t(w["embed/E"]))
    h = emb(torch.from_numpy(ids)) + pos[:6]
    stack = []
    for i in range(1, layers + 1):
        layer = torch.nn.TransformerEncoderLayer(d, heads, dim_feedforward=hidden, dropout=0.0, batch_first=True, dtype=DTYPES[dtype])
        sub = {k[len(f"block{i}/"):]: v for k, v in w.items() if k.startswith(f"block{i}/")}
        _load_mha(layer.self_attn, {k[5:]: v for k, v in sub.items() if k.startswith("attn/")})
        _load_ffn_and_norms(layer, sub, 2)
        stack.append(layer)
        h = layer(h, src_key_padding_mask=torch.from_numpy(ids == pad))
    (h * _t(g)).sum().backward()
    np.testing.assert_allclose(outs["out"], h.detach().numpy(), **_tol(dtype))
    theirs = {"embed/E": emb.weight.grad.numpy(), "embed/P": pos.grad.numpy()}
    for i, layer in enumerate(stack, start=1):
        theirs.update({f"block{i}/{k}": v for k, v in {**_mha_grads(layer.self_attn, "attn/"), **_ffn_and_norm_grads(layer, 2)}.items()})
    _compare_grads(gw, theirs, dtype)


def test_padding_changes_nothing_for_the_real_tokens_once_masked():
    """BERT and SequenceToSequence give a short sentence the same vectors whether or not pads
    follow it, when pad_id is set; without pad_id the pads leak into every position."""
    rng = np.random.default_rng(24)
    ids = np.array([[3, 5, 2]])
    padded = np.array([[3, 5, 2, 0, 0]])
    for pad_id, same in ((0, True), (None, False)):
        bert = blocks.create("BERT", vocab=6, dim=4, heads=2, layers=2, hidden=5, max_len=5, pad_id=pad_id)
        w = bert.init_weights({"ids": padded.shape}, rng)
        short, _ = bert.forward({"ids": ids}, w)
        long, _ = bert.forward({"ids": padded}, w)
        assert np.allclose(long["out"][:, :3], short["out"], rtol=1e-12, atol=1e-12) == same
        s2s = blocks.create("SequenceToSequence", src_vocab=6, tgt_vocab=5, dim=4, heads=2, layers=1, hidden=5, max_len=5, pad_id=pad_id)
        w = s2s.init_weights({"src": padded.shape, "tgt": (1, 3)}, rng)
        tgt = np.array([[1, 4, 3]])
        short, _ = s2s.forward({"src": ids, "tgt": tgt}, w)
        long, _ = s2s.forward({"src": padded, "tgt": tgt}, w)
        assert np.allclose(long["out"], short["out"], rtol=1e-12, atol=1e-12) == same


def test_masks_are_wires_in_the_inner_graphs():
    s2s = blocks.create("SequenceToSequence", src_vocab=6, tgt_vocab=5, dim=4, heads=2, layers=2, hidden=5, max_len=5, pad_id=0)
    g = s2s.build({"src": (2, 3), "tgt": (2, 4)})
    into = {(g.nodes[l.dst].name, l.dst_port): g.nodes[l.src].name for l in g.links}
    assert g.nodes["src_mask"].type == "PaddingMask" and g.nodes["src_mask"].params["pad_id"] == 0
    assert into[("enc1", "mask")] == into[("enc2", "mask")] == into[("dec1", "context_mask")] == "src_mask"
    assert into[("dec1", "mask")] == into[("dec2", "mask")] == "tgt_mask"
    inner = blocks.create("TransformerDecoderBlock", dim=4, heads=2).build(
        {"x": (2, 4, 4), "context": (2, 3, 4), "mask": (2, 4), "context_mask": (2, 3)})
    into = {(l.dst, l.dst_port): l.src for l in inner.links}
    assert into[("self_attn", "mask")] == "mask" and into[("cross_attn", "mask")] == "context_mask"
    # no pad_id, no mask: the inner graph is exactly what it was before masks existed
    plain = blocks.create("SequenceToSequence", src_vocab=6, tgt_vocab=5, dim=4, heads=2, layers=1, hidden=5, max_len=5)
    assert "PaddingMask" not in {n.type for n in plain.build({"src": (2, 3), "tgt": (2, 4)}).nodes.values()}
    lm = blocks.create("LanguageModel", vocab=6, dim=4, heads=2, model="lstm", pad_id=0)
    assert "PaddingMask" not in {n.type for n in lm.build({"x": (2, 3)}).nodes.values()}  # attention models only


def test_a_mask_of_the_wrong_shape_is_a_shape_error_naming_it():
    from engine.errors import ShapeError

    with pytest.raises(ShapeError, match=r"Attention: input 'mask' dimension 1 \(one per key: the length of input 'context'\) should be 7"):
        blocks.create("Attention").infer_shapes({"x": (2, 5, 4), "context": (2, 7, 4), "mask": (2, 5)})
    with pytest.raises(ShapeError, match=r"TransformerBlock: input 'mask' has shape \(2, 4\), but it needs one number per position"):
        blocks.create("TransformerBlock", dim=4, heads=2).infer_shapes({"x": (2, 5, 4), "mask": (2, 4)})
