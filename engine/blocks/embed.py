"""Tokens in and out of vectors: EmbedToken, Collapse and GenerateToken.

EmbedToken turns token ids into vectors (a row of ``E`` per token, plus a position vector);
Collapse turns a sequence of vectors into one; GenerateToken scores every vocabulary entry
against a vector, ``x · E[y]``, and can share (tie) ``E`` with an EmbedToken in the same graph.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import Arrays, Block, Category, Example, Kind, Param, ParamType, Port, Shape, WeightSpec, shape_str
from engine.errors import RuntimeFailure
from engine.kernels import dense, embed, softmax

POSITIONS = ("none", "sinusoidal", "learned")


@functools.lru_cache(maxsize=32)
def _sinusoidal(length: int, dim: int) -> np.ndarray:
    table = np.zeros((length, dim))
    i = np.arange(length, dtype=np.float64)[:, None]
    two_j = np.arange(0, dim, 2, dtype=np.float64)[None, :]
    angle = i / np.power(10000.0, two_j / dim)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : dim // 2])
    table.setflags(write=False)  # shared by every call: nobody may change it
    return table


def sinusoidal_positions(length: int, dim: int, dtype: Any = np.float64) -> np.ndarray:
    """The fixed position table (length, dim), 0-based: ``P[i, 2j] = sin(i / 10000^(2j/dim))``,
    ``P[i, 2j+1] = cos(i / 10000^(2j/dim))`` (an odd last column gets its sine only)."""
    return _sinusoidal(int(length), int(dim)).astype(dtype)


@register
class EmbedToken(Block):
    """Look up a learned vector for every token id, optionally adding a position vector.

    ``position`` is ``none``, ``sinusoidal`` (fixed sin/cos table, 0-based positions) or
    ``learned`` (a second table ``P``). Sequences may be at most ``max_len`` long.
    Example: ids (2, 5), vocab 100, dim 16 → out (2, 5, 16)."""

    type_id = "EmbedToken"
    category = Category.SEQUENCE
    formula = "out[b, l] = E[ids[b, l]] (+ P[l]);  ∂/∂E[v] = Σ over positions holding v of g"
    inputs = (Port("ids", Kind.IDS, doc="token ids (B, L), each in 0…vocab−1"),)
    outputs = (Port("out", doc="(B, L, dim)"),)
    params = (
        Param("vocab", ParamType.INT, 32, "number of distinct tokens", minimum=1),
        Param("dim", ParamType.INT, 16, "length of each token's vector", minimum=1),
        Param("position", ParamType.CHOICE, "none", "position information added to each vector", choices=POSITIONS),
        Param("max_len", ParamType.INT, 512, "longest sequence accepted (rows of P)", minimum=1),
    )
    weights = (
        WeightSpec("E", "(vocab, dim)", "one vector per token; normal(0, 1) like nn.Embedding"),
        WeightSpec("P", "(max_len, dim)", "one vector per position (only when position is learned)"),
    )
    examples = (
        Example({"vocab": 7, "dim": 4}, {"ids": (2, 5)}, {"ids": (0, 7)}),
        Example({"vocab": 5, "dim": 6, "position": "sinusoidal", "max_len": 8}, {"ids": (2, 3)}, {"ids": (0, 5)}),
        Example({"vocab": 3, "dim": 5, "position": "sinusoidal"}, {"ids": (1, 4)}, {"ids": (0, 3)}),
        Example({"vocab": 4, "dim": 3, "position": "learned", "max_len": 6}, {"ids": (3, 4)}, {"ids": (0, 4)}),
    )

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        ids = self.require(in_shapes, "ids", ndim=2, what="(batch, length)")
        if ids[1] > self.p["max_len"]:
            raise self.shape_error(
                f"input 'ids' has sequences of length {ids[1]} (dimension 1 of {shape_str(ids)}), longer than "
                f"parameter 'max_len' = {self.p['max_len']}; raise max_len or shorten the sequences"
            )
        return {"out": (ids[0], ids[1], self.p["dim"])}

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        # NOTE: independent of the input, so a tied GenerateToken can check E before ids arrive.
        shapes: dict[str, Shape] = {"E": (self.p["vocab"], self.p["dim"])}
        if self.p["position"] == "learned":
            shapes["P"] = (self.p["max_len"], self.p["dim"])
        return shapes

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        return {name: rng.standard_normal(shape) for name, shape in self.weight_shapes(in_shapes).items()}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        ids = np.asarray(inputs["ids"])
        table = weights["E"]
        vocab, length = table.shape[0], ids.shape[1] if ids.ndim == 2 else 0
        self.infer_shapes({"ids": ids.shape})
        if ids.size:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= vocab:
                bad = lo if lo < 0 else hi
                where = tuple(int(i) for i in np.argwhere(ids == bad)[0])
                raise RuntimeFailure(
                    f"{self.type_id}: token id {bad} at position {where} of input 'ids' is outside the "
                    f"vocabulary 0…{vocab - 1} (parameter 'vocab' = {vocab}); raise vocab or fix the data"
                )
        position = self.p["position"]
        if position == "learned":
            pos = weights["P"][:length]
        elif position == "sinusoidal":
            pos = sinusoidal_positions(length, table.shape[1], table.dtype)
        else:
            pos = None
        return {"out": embed.embed(ids, table, pos)}, {"ids": ids}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        learned = self.p["position"] == "learned"
        d_e, d_p = embed.embed_grad(saved["ids"], gout["out"], weights["E"].shape[0], weights["P"].shape[0] if learned else 0)
        gw = {"E": d_e}
        if d_p is not None:
            gw["P"] = d_p
        return {}, gw


@register
class Collapse(Block):
    """Turn a sequence of vectors into one vector, for categorising a whole sequence.

    ``mean`` averages the positions; ``first`` / ``last`` take one position; ``max`` takes each
    feature's largest value (its gradient goes to that position, the first one on ties).
    Example: x (2, 5, 16) → out (2, 16)."""

    type_id = "Collapse"
    category = Category.SEQUENCE
    formula = "out[b] = mean_l x[b, l]  (or x[b, 0], x[b, L−1], max_l x[b, l])"
    inputs = (Port("x", doc="a sequence of vectors (B, L, d)"),)
    outputs = (Port("out", doc="(B, d)"),)
    params = (Param("mode", ParamType.CHOICE, "mean", "how the positions are combined", choices=("mean", "first", "last", "max")),)
    examples = tuple(Example({"mode": m}, {"x": (2, 4, 3)}) for m in ("mean", "first", "last", "max")) + (
        Example({"mode": "max"}, {"x": (3, 1, 5)}),
    )

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = self.require(in_shapes, "x", ndim=3, what="(batch, length, features)")
        if x[1] == 0:
            raise self.shape_error(f"input 'x' has an empty sequence (dimension 1 of {shape_str(x)} is 0)")
        return {"out": (x[0], x[2])}

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        mode = self.p["mode"]
        if mode == "mean":
            return {"out": x.mean(axis=1)}, {}
        if mode == "first":
            return {"out": x[:, 0].copy()}, {}
        if mode == "last":
            return {"out": x[:, -1].copy()}, {}
        arg = np.argmax(x, axis=1)  # NOTE: argmax picks the first position on ties
        return {"out": np.take_along_axis(x, arg[:, None, :], axis=1)[:, 0]}, {"arg": arg}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        g = gout["out"]
        shape = saved["_in_shapes"]["x"]
        mode = self.p["mode"]
        if mode == "mean":
            return {"x": np.repeat((g / g.dtype.type(shape[1]))[:, None, :], shape[1], axis=1)}, {}
        dx = np.zeros(shape, g.dtype)
        if mode == "first":
            dx[:, 0] = g
        elif mode == "last":
            dx[:, -1] = g
        else:
            np.put_along_axis(dx, saved["arg"][:, None, :], g[:, None, :], axis=1)
        return {"x": dx}, {}


@register
class GenerateToken(Block):
    """Score every token of the vocabulary against a vector: "score y by x · EmbedToken(y)".

    With ``tie_to`` naming an EmbedToken node, ``E`` is that node's table (shared, and its
    gradient is added to that node's); otherwise GenerateToken has its own ``E``.
    ``temperature`` matters only when sampling (:meth:`sample`): 0 picks the argmax.
    Example: x (2, 16), vocab 100 → logits (2, 100); x (2, 5, 16) → logits (2, 5, 100)."""

    type_id = "GenerateToken"
    category = Category.SEQUENCE
    formula = "logits = x Eᵀ + b;  ∂/∂x = g E, ∂/∂E = gᵀ x, ∂/∂b = Σ g"
    inputs = (Port("x", doc="vectors on the last axis (…, d)"),)
    outputs = (Port("logits", doc="one score per token (…, vocab)"),)
    params = (
        Param("vocab", ParamType.INT, 32, "number of tokens to score", minimum=1),
        Param("tie_to", ParamType.NODE, "", "an EmbedToken node whose E is shared (empty: own E)"),
        Param("temperature", ParamType.FLOAT, 1.0, "sampling temperature: 0 = always the best token", minimum=0.0),
    )
    weights = (
        WeightSpec("E", "(vocab, d)", "one vector per token (absent when tied to an EmbedToken)"),
        WeightSpec("b", "(vocab,)", "per-token bias"),
    )
    examples = (
        Example({"vocab": 5}, {"x": (3, 4)}),
        Example({"vocab": 6}, {"x": (2, 3, 4)}),
        Example({"vocab": 3, "temperature": 0.0}, {"x": (4,)}),
    )

    @property
    def tied(self) -> bool:
        return bool(self.p["tie_to"])

    def shared_weights(self) -> dict[str, tuple[str, str]]:
        return {"E": (self.p["tie_to"], "E")} if self.tied else {}

    def shared_weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        return {"E": (self.p["vocab"], self.require(in_shapes, "x")[-1])} if self.tied else {}

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        x = self.require_features(in_shapes, "x")
        return {"logits": (*x[:-1], self.p["vocab"])}

    def weight_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        d, vocab = self.require(in_shapes, "x")[-1], self.p["vocab"]
        shapes: dict[str, Shape] = {} if self.tied else {"E": (vocab, d)}
        shapes["b"] = (vocab,)
        return shapes

    def init_weights(self, in_shapes: Mapping[str, Shape], rng: np.random.Generator) -> Arrays:
        out: Arrays = {}
        for name, shape in self.weight_shapes(in_shapes).items():
            if name == "E":
                # nn.Linear(d, vocab)'s rule: fan-in is d, the second axis of E.
                bound = 1.0 / math.sqrt(max(1, shape[1]))
                out[name] = rng.uniform(-bound, bound, size=shape)
            else:
                out[name] = np.zeros(shape)
        return out

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        x = inputs["x"]
        table = weights["E"]
        if table.shape != (self.p["vocab"], x.shape[-1]):
            owner = f" (shared from node {self.p['tie_to']!r})" if self.tied else ""
            raise self.shape_error(
                f"weight 'E'{owner} has shape {shape_str(table.shape)}, but vocab {self.p['vocab']} and input "
                f"'x' {shape_str(x.shape)} need {shape_str((self.p['vocab'], x.shape[-1]))}"
            )
        return {"logits": dense.linear(x, table, weights["b"], transposed=True)}, {"x": x}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        dx, d_e, db = dense.linear_grad(saved["x"], weights["E"], gout["logits"], bias=True, transposed=True)
        return {"x": dx}, {"E": d_e, "b": db}

    def sample(self, logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Token ids (int64, shape ``logits.shape[:-1]``) drawn from softmax(logits/temperature);
        the argmax (first on ties) when temperature is 0."""
        logits = np.asarray(logits, dtype=np.float64)
        if logits.ndim == 0 or logits.shape[-1] != self.p["vocab"]:
            raise self.shape_error(
                f"sample: logits should end with vocab = {self.p['vocab']} scores, got shape {shape_str(logits.shape)}"
            )
        t = self.p["temperature"]
        if t == 0:
            return np.argmax(logits, axis=-1).astype(np.int64)
        with np.errstate(over="ignore"):  # a tiny temperature sends the losers to −inf: probability 0
            scaled = (logits - logits.max(axis=-1, keepdims=True)) / t
        prob = softmax.softmax(scaled).reshape(-1, logits.shape[-1])
        cdf = np.cumsum(prob, axis=1)
        u = rng.random((cdf.shape[0], 1)) * cdf[:, -1:]  # scale by the total: rounding never runs off the end
        ids = np.minimum((cdf <= u).sum(axis=1), logits.shape[-1] - 1)
        return ids.reshape(logits.shape[:-1]).astype(np.int64)
