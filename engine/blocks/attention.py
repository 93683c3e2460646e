"""Multi-head scaled dot-product attention (self- and cross-attention), and the padding mask
that lets it ignore the filler at the end (or start) of shorter sentences in a batch."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import (
    Arrays,
    Block,
    Category,
    Example,
    Kind,
    Param,
    ParamType,
    Port,
    Shape,
    WeightSpec,
    shape_str,
)
from engine.kernels import attention as kattention
from engine.kernels import dense as kdense


@register
class Attention(Block):
    """Multi-head scaled dot-product attention, as in the Transformer.

    Q = x Wq + bq, K = c Wk + bk, V = c Wv + bv, where c is ``context`` when it is connected
    (cross-attention) and x otherwise (self-attention). Head h uses columns h·dh … (h+1)·dh with
    dh = d / heads; its attention matrix is A_h = softmax(Q_h K_hᵀ / √dh), with −∞ above the
    diagonal when ``causal`` (query i sees keys j ≤ i only). out = concat_h(A_h V_h) Wo + bo.

    ``mask`` (B, Lk), when connected, hides padding: key j of sequence b is seen by no query
    where mask[b, j] is 0 (1 or any other number: a real token); see PaddingMask. A query that
    sees no key at all (all hidden, e.g. a padding position under ``causal``) gets A_h = 0, so
    its out is bo and no gradient flows through it, where torch gives NaN.

    ``attn`` returns every A_h for display; no gradient flows back through it.
    Matches ``nn.MultiheadAttention(batch_first=True)`` with in_proj_weight = [Wq; Wk; Wv]ᵀ
    (i.e. [Wqᵀ; Wkᵀ; Wvᵀ]), out_proj.weight = Woᵀ and key_padding_mask = (mask == 0).

    Example: heads 4, x (2, 5, 16) → out (2, 5, 16), attn (2, 4, 5, 5);
    with context (2, 7, 16) → out (2, 5, 16), attn (2, 4, 5, 7)."""

    type_id = "Attention"
    category = Category.ATTENTION
    formula = "out = concat_h(softmax(Q_h K_hᵀ/√dh) V_h) Wo + bo;  Q = x Wq + bq, K = c Wk + bk, V = c Wv + bv"
    inputs = (
        Port("x", doc="the queries' sequence (B, Lq, d)"),
        Port("context", optional=True, doc="the sequence attended to (B, Lk, d); x itself when not connected"),
        Port("mask", Kind.ANY, optional=True, doc="(B, Lk): 0 hides a padding key from every query, 1 keeps a real one"),
    )
    outputs = (
        Port("out", doc="(B, Lq, d)"),
        Port("attn", differentiable=False, doc="attention weights A (B, heads, Lq, Lk), for display only"),
    )
    params = (
        Param("heads", ParamType.INT, 1, "number of heads; must divide the width d", minimum=1),
        Param("causal", ParamType.BOOL, False, "hide later positions: query i attends to keys j ≤ i only"),
        Param("bias", ParamType.BOOL, True, "add the biases bq, bk, bv, bo"),
    )
    weights = (
        WeightSpec("Wq", "(d, d)", "query projection"),
        WeightSpec("Wk", "(d, d)", "key projection"),
        WeightSpec("Wv", "(d, d)", "value projection"),
        WeightSpec("Wo", "(d, d)", "output projection"),
        WeightSpec("bq", "(d,)", "query bias (when bias)"),
        WeightSpec("bk", "(d,)", "key bias (when bias)"),
        WeightSpec("bv", "(d,)", "value bias (when bias)"),
        WeightSpec("bo", "(d,)", "output bias (when bias)"),
    )
    examples = (
        Example({"heads": 2}, {"x": (2, 3, 4)}),
        Example({"heads": 2, "causal": True}, {"x": (1, 4, 4)}),
        Example({"heads": 1, "bias": False}, {"x": (2, 3, 4), "context": (2, 5, 4)}),
        Example({"heads": 2, "causal": True}, {"x": (1, 3, 4), "context": (1, 2, 4)}),
        Example({"heads": 2}, {"x": (2, 4, 4), "mask": (2, 4)}, choices={"mask": (0.0, 1.0, 1.0)}),
        # left padding under causal: the first queries of a sequence may see no key at all
        Example({"heads": 1, "causal": True}, {"x": (3, 3, 2), "mask": (3, 3)}, choices={"mask": (0.0, 1.0)}),
        Example({"heads": 2, "bias": False}, {"x": (2, 2, 4), "context": (2, 3, 4), "mask": (2, 3)}, choices={"mask": (0.0, 1.0)}),
    )

    # --- shapes -----------------------------------------------------------------------------

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = self.require(in_shapes, "x", 3, "(batch, length, width)")
        batch, lq, d = x
        lk = lq
        if "context" in in_shapes:
            c = self.require(in_shapes, "context", 3, "(batch, length, width)")
            self.expect_dim("context", c, 0, batch, f"batch, as in input 'x' {shape_str(x)}")
            self.expect_dim("context", c, 2, d, f"width, as in input 'x' {shape_str(x)}")
            lk = c[1]
        if "mask" in in_shapes:
            m = self.require(in_shapes, "mask", 2, "(batch, keys)")
            keys = "context" if "context" in in_shapes else "x"
            self.expect_dim("mask", m, 0, batch, f"batch, as in input 'x' {shape_str(x)}")
            self.expect_dim("mask", m, 1, lk, f"one per key: the length of input '{keys}'")
        heads = self.p["heads"]
        if d % heads:
            raise self.shape_error(
                f"parameter 'heads' ({heads}) must divide the width d = {d} of input 'x' "
                f"{shape_str(x)}; each head takes d / heads columns"
            )
        return {"out": (batch, lq, d), "attn": (batch, heads, lq, lk)}

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        d = self.require(in_shapes, "x", 3)[2]
        shapes: dict[str, Shape] = {name: (d, d) for name in ("Wq", "Wk", "Wv", "Wo")}
        if self.p["bias"]:
            shapes.update({name: (d,) for name in ("bq", "bk", "bv", "bo")})
        return shapes

    # --- forward / backward -----------------------------------------------------------------

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        heads, bias = self.p["heads"], self.p["bias"]
        if len(inputs) != 1 or x.ndim != 3 or x.shape[2] % heads:
            # what infer_shapes checks of x alone, above; anything else gets the full check
            self.infer_shapes({k: np.shape(v) for k, v in inputs.items()})
        cross = "context" in inputs
        batch, lq, d = x.shape
        dt = x.dtype
        x2 = x.reshape(batch * lq, d)
        # NOTE: bk is left out on purpose. It adds the same number q·bk to every score of a
        # query's row, and softmax ignores a constant shift, so the result is exactly the same
        # and its gradient is exactly zero (torch's matches it up to rounding).
        if cross:
            context = np.ascontiguousarray(inputs["context"], dtype=dt)
            lk = context.shape[1]
            c2 = context.reshape(batch * lk, d)
            q = kdense.linear(x2, weights["Wq"], weights["bq"] if bias else None).reshape(batch, lq, d)
            kv = kdense.linears(c2, (weights["Wk"], weights["Wv"]), (None, weights["bv"] if bias else None))
            kv = kv.reshape(batch, lk, 2 * d)
            layout = (q, 0, kv, 0, kv, d)
        else:
            # One (B, L, 3d) array for the three projections (each product writes its own
            # columns: no concatenated copy of the weights), read in place by the attention kernel.
            lk, c2 = lq, x2
            qkv = kdense.linears(x2, (weights["Wq"], weights["Wk"], weights["Wv"]),
                                 (weights["bq"], None, weights["bv"]) if bias else (None, None, None))
            qkv = qkv.reshape(batch, lq, 3 * d)
            layout = (qkv, 0, qkv, d, qkv, 2 * d)
        keep = np.asarray(inputs["mask"]) != 0 if "mask" in inputs else None
        a, o = kattention.attend(*layout, heads, d, self.p["causal"], keep)
        merged = o.reshape(batch * lq, d)
        out = kdense.linear(merged, weights["Wo"], weights["bo"] if bias else None)
        outs = {"out": out.reshape(batch, lq, d), "attn": a.reshape(batch, heads, lq, lk)}
        saved = {"x2": x2, "c2": c2, "layout": layout, "a": a, "merged": merged, "dims": (batch, lq, lk, d)}
        return outs, saved

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        batch, lq, lk, d = saved["dims"]
        heads, bias = self.p["heads"], self.p["bias"]
        x2, c2, merged = saved["x2"], saved["c2"], saved["merged"]
        q, qo, k, ko, v, vo = saved["layout"]
        g = np.ascontiguousarray(gout["out"], dtype=merged.dtype).reshape(batch * lq, d)
        gmerged, gwo, gbo = kdense.linear_grad(merged, weights["Wo"], g, bias=bias)
        gw: Arrays = {"Wo": gwo}
        gin: Arrays = {}
        if k is q:  # self-attention: one gradient for the three projections side by side
            dqkv = np.empty_like(q)
            kattention.attend_grad(q, qo, k, ko, v, vo, heads, saved["a"], gmerged.reshape(batch, lq, d), dqkv, dqkv, dqkv)
            gx, (gw["Wq"], gw["Wk"], gw["Wv"]), (gbq, _, gbv) = kdense.linears_grad(
                x2, (weights["Wq"], weights["Wk"], weights["Wv"]), dqkv.reshape(batch * lq, 3 * d), (bias, False, bias))
            gin["x"] = gx.reshape(batch, lq, d)
            gb = {"bq": gbq, "bv": gbv} if bias else {}
        else:
            dq = np.empty_like(q)
            dkv = np.empty_like(k)
            kattention.attend_grad(q, qo, k, ko, v, vo, heads, saved["a"], gmerged.reshape(batch, lq, d), dq, dkv, dkv)
            gx, gw["Wq"], gbq = kdense.linear_grad(x2, weights["Wq"], dq.reshape(batch * lq, d), bias=bias)
            gc, (gw["Wk"], gw["Wv"]), (_, gbv) = kdense.linears_grad(
                c2, (weights["Wk"], weights["Wv"]), dkv.reshape(batch * lk, 2 * d), (False, bias))
            gin["x"] = gx.reshape(batch, lq, d)
            gin["context"] = gc.reshape(batch, lk, d)
            gb = {"bq": gbq, "bv": gbv} if bias else {}
        if bias:
            gw.update(gb)
            gw["bk"] = np.zeros(d, merged.dtype)  # see compute: bk cannot change the output
            gw["bo"] = gbo
        return gin, gw


@register
class PaddingMask(Block):
    """Mark the real tokens of a batch of token ids: out = 1 where ids ≠ ``pad_id``, 0 at padding.

    Feed it to the ``mask`` input of Attention (or of a TransformerBlock) so that shorter
    sentences, filled up with the pad token, are read as if the filler were not there.
    Example: pad_id 0, ids [[5, 3, 0, 0]] → out [[1, 1, 0, 0]] (B, L), int64."""

    type_id = "PaddingMask"
    category = Category.ATTENTION
    formula = "out = 1[ids ≠ pad_id]"
    inputs = (Port("ids", Kind.IDS, doc="token ids (B, L)"),)
    outputs = (Port("out", Kind.IDS, doc="(B, L): 1 for a real token, 0 for padding"),)
    params = (Param("pad_id", ParamType.INT, 0, "the id of the padding token"),)
    examples = (Example({"pad_id": 0}, {"ids": (2, 5)}, {"ids": (0, 4)}), Example({"pad_id": 3}, {"ids": (1, 4)}, {"ids": (0, 5)}))

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"out": self.require(in_shapes, "ids")}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        return {"out": (np.asarray(inputs["ids"]) != self.p["pad_id"]).astype(np.int64)}, {}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        return {}, {}
