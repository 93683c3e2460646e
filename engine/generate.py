"""Generating token sequences with a trained model: greedy or temperature sampling.

Two tasks, two functions:

- :func:`generate` continues a prompt with a language model: a ``LanguageModel`` block, or any
  graph whose token-id Input leads to a ``GenerateToken`` (EmbedToken → TransformerBlock →
  GenerateToken built by hand works too).
- :func:`translate` decodes a target sequence from a source with a ``SequenceToSequence``
  block: BOS first, then one token at a time until EOS.

The model can be given as

- a :class:`~engine.runtime.Runtime` (the usual case: the editor's or the CLI's),
- a ``(graph, weights)`` pair, weights keyed like ``Runtime.weights``: ``{node_id: {name: array}}``,
- a ``(block, weights)`` pair for a block used on its own, weights keyed ``{"embed/E": array, …}``.

When a graph holds several candidates, ``node`` (an id or a name) says which one to use.
Token choice: ``temperature`` 0 takes the highest score (the first on ties); above 0, a token is
drawn from softmax(logits / temperature) with a generator seeded by ``seed``, so the same call
gives the same tokens.

Language models keep a cache between tokens (:class:`_Cache`): each new token runs through the
model alone, attending to the keys and values its causal attention layers kept from the earlier
positions (a key/value cache), a recurrent layer starting from the state it reached, a
FeedForwardSequenceModel seeing the vectors of its window; everything else in these models works
position by position. So the cost of a token does not grow with the prefix (the attention itself
reads one key and value per earlier position). It computes what running the whole prefix again
computes, up to rounding in the last bits of the matrix products (tested: the same tokens as
recomputing). A model with a part that is not one of these (a padding mask, a non-causal
attention, a bidirectional RNN, a block that mixes positions) runs the whole prefix at each step
instead, as does a transformer once the prefix outgrows its ``max_len`` (the window then slides).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence, Union

import networkx as nx
import numpy as np

from engine import blocks
from engine.blocks import Block
from engine.errors import GraphError, RuntimeFailure, ShapeError
from engine.graph import Graph
from engine.runtime import Runtime

Weights = Mapping[str, Mapping[str, np.ndarray]]
Model = Union[Runtime, tuple[Graph, Weights], tuple[Block, Mapping[str, np.ndarray]]]

__all__ = ["generate", "translate", "next_token_logits", "pick_token"]

_LM_TYPES = ("LanguageModel",)
_S2S_TYPES = ("SequenceToSequence",)


# --- choosing a token ------------------------------------------------------------------------------


def pick_token(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """One token id from a vector of scores: the argmax when ``temperature`` is 0, otherwise a
    draw from softmax(logits / temperature) (GenerateToken's own sampler)."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    if temperature < 0:
        raise ValueError(f"temperature must be ≥ 0, got {temperature}")
    sampler = blocks.create("GenerateToken", vocab=logits.shape[0], temperature=float(temperature))
    return int(sampler.sample(logits, rng))


# --- finding the model -------------------------------------------------------------------------------


class _BlockModel:
    """A (composite) block and its flat weights; ``run`` feeds ids to its ports."""

    def __init__(self, block: Block, weights: Mapping[str, np.ndarray]) -> None:
        self.block = block
        self.weights = dict(weights)
        self.temperature: float | None = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        outs, _ = self.block.forward(dict(feeds), self.weights)
        return np.asarray(outs["out"])

    def runtime_for(self, shape: tuple[int, ...]) -> Runtime:
        """The block's inner graph as a runtime for token ids of this shape."""
        from engine.blocks._composite import CompositeBlock

        assert isinstance(self.block, CompositeBlock)
        inner = self.block.inner({"x": shape})
        dtype = next((np.asarray(w).dtype for w in self.weights.values()), np.dtype(np.float64))
        weights = {node: {name: np.asarray(w, dtype) for name, w in ws.items()}
                   for node, ws in self.block.split_weights(inner, self.weights).items()}
        return Runtime.bound(inner.graph, weights, dtype=dtype, program=inner.program)

    @property
    def input(self) -> str:
        return "x"

    @property
    def logits(self) -> tuple[str, str]:
        return ("out", "out")


class _GraphLM:
    """A language model built from primitives: the part of ``graph`` that leads from one
    token-id Input to ``logits`` (a GenerateToken's output), recompiled per prefix length."""

    def __init__(self, graph: Graph, weights: Weights, dtype: Any, logits: tuple[str, str]) -> None:
        self.weights = weights
        self.dtype = dtype
        self.logits = logits
        g = graph.to_networkx()
        keep = nx.ancestors(g, logits[0]) | {logits[0]}
        for nid in list(keep):
            node = graph.nodes[nid]
            if node.block is not None:
                keep |= {owner for owner, _ in node.block.shared_weights().values()}
        self.graph = graph.copy()
        for nid in list(self.graph.nodes):
            if nid not in keep:
                self.graph.remove_node(nid)
        inputs = [n for n in self.graph.nodes.values() if n.type == "Input"]
        ids = [n for n in inputs if n.params.get("dtype") == "ids"]
        if len(inputs) != 1 or len(ids) != 1:
            raise GraphError(
                f"generation needs exactly one token-id Input feeding {graph.nodes[logits[0]].label}; "
                f"found {len(ids)} token-id and {len(inputs) - len(ids)} other Inputs"
            )
        self.input = ids[0].id
        gen = graph.nodes[logits[0]]
        self.temperature = gen.params.get("temperature") if gen.type == "GenerateToken" else None
        self._compiled: OrderedDict[tuple[int, ...], Runtime] = OrderedDict()

    def runtime_for(self, shape: tuple[int, ...]) -> Runtime:
        """The model compiled for token ids of this shape (memoised)."""
        runtime = self._compiled.get(shape)
        if runtime is None:
            g = self.graph.copy()
            g.set_params(self.input, {"shape": shape})
            runtime = Runtime.bound(g, {n: dict(w) for n, w in self.weights.items() if n in g.nodes}, dtype=self.dtype)
            self._compiled[shape] = runtime
            if len(self._compiled) > 64:
                self._compiled.popitem(last=False)
        return runtime

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        ids = np.asarray(feeds["x"])
        return self.runtime_for(ids.shape).forward({self.input: ids}).values[self.logits]


def _resolve(model: Model, node: str | None, types: tuple[str, ...], allow_graph_lm: bool) -> "_BlockModel | _GraphLM":
    if isinstance(model, Runtime):
        graph, weights, dtype = model.graph, model.weights, model.dtype
    elif isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], Block):
        block, flat = model
        if block.type_id not in types:
            raise GraphError(f"{block.type_id} cannot generate here; this needs a {' or '.join(types)} block")
        return _BlockModel(block, flat)
    elif isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], Graph):
        graph, weights = model
        dtype = next((np.asarray(w).dtype for ws in weights.values() for w in ws.values()), np.dtype(np.float64))
    else:
        raise TypeError("model must be a Runtime, a (graph, weights) pair or a (block, weights) pair")

    if node is not None:
        found = graph.find(node)
        candidates = [found]
    else:
        candidates = [n for n in graph.nodes.values() if n.type in types]
        if not candidates and allow_graph_lm:
            candidates = [n for n in graph.nodes.values() if n.type == "GenerateToken"]
    if len(candidates) != 1:
        what = " or ".join(types) + (" (or GenerateToken)" if allow_graph_lm else "")
        if not candidates:
            raise GraphError(f"this graph has no {what} node to generate with")
        names = ", ".join(n.label for n in candidates)
        raise GraphError(f"this graph has several nodes that could generate ({names}); say which one with node=…")
    target = candidates[0]
    if target.type in types:
        if target.id not in weights:
            raise RuntimeFailure(f"no weights for {target.label}; train or load the model first")
        return _BlockModel(blocks.create(target.type, **target.params), weights[target.id])
    if allow_graph_lm and target.type == "GenerateToken":
        return _GraphLM(graph, weights, dtype, (target.id, "logits"))
    raise GraphError(f"{target.label} is a {target.type}; generation needs a {' or '.join(types)}")


# --- language models ---------------------------------------------------------------------------------


def _context_limit(lm: "_BlockModel | _GraphLM") -> int | None:
    """The longest prefix the model accepts (learned positions have max_len rows)."""
    if isinstance(lm, _BlockModel):
        if lm.block.p.get("model") == "transformer":
            return int(lm.block.p["max_len"])
        return None
    limits = [int(n.params["max_len"]) for n in lm.graph.nodes.values()
              if n.type == "EmbedToken" and n.params.get("position") == "learned"]
    return min(limits) if limits else None


def next_token_logits(model: Model, prefix: Sequence[int], *, node: str | None = None) -> np.ndarray:
    """The language model's scores (vocab,) for the token after ``prefix``."""
    lm = _resolve(model, node, _LM_TYPES, allow_graph_lm=True)
    return _last_logits(lm, list(prefix), _context_limit(lm))


def _last_logits(lm: "_BlockModel | _GraphLM", tokens: list[int], limit: int | None) -> np.ndarray:
    if not tokens:
        raise ValueError("the prompt is empty: give at least one token, or a bos id to start from")
    window = tokens[-limit:] if limit else tokens
    logits = lm.run({"x": np.asarray([window], dtype=np.int64)})
    # (1, vocab) from a collapsed model, (1, L, vocab) from a per-position one: take the last.
    return logits.reshape(-1, logits.shape[-1])[-1]


# --- the cache between tokens -----------------------------------------------------------------------

#: Blocks that work on each position on its own: a new position needs only its own rows.
_POSITIONWISE = frozenset({
    "AddNorm", "LayerNorm", "FeedForward", "Linear", "GenerateToken", "Dropout", "Output",
    "ReLU", "GELU", "Tanh", "Sigmoid", "Square", "Exp", "Log", "Scale", "Softmax", "LogSoftmax",
})


class _NoCache(Exception):
    """The model has a part the cache cannot run one position at a time."""


class _Cache:
    """Runs a language model one new position at a time (see the module docstring).

    Built on the model's execution plan (engine.plan): its flat schedule of blocks, composites
    inlined. For each step it keeps what later positions need: the attention's keys and values
    (the rows of its fused projection), a recurrent layer's last state, the last vectors a
    windowed FeedForwardSequenceModel sees."""

    def __init__(self, runtime: Runtime, input_node: str, logits: tuple[str, str]) -> None:
        from engine.plan import BLOCK, ENTER, EXIT, ALIAS, plan_for

        self.runtime = runtime
        self.plan = plan_for(runtime)
        self.kinds = (BLOCK, ENTER, EXIT, ALIAS)
        feeds = dict(self.plan.feeds)
        if set(feeds) != {input_node}:
            raise _NoCache("the model has inputs other than the token ids")
        self.input_slot = feeds[input_node]
        self.logits_slot = self.plan.port_slot[logits]
        self.state: dict[int, Any] = {}
        self.seen: list[int] = []
        used = {slot for s in self.plan.steps for _, slot in s.ins}
        for s in self.plan.steps:
            if s.kind == BLOCK:
                self._check(s)
                if s.type == "Attention" and any(port == "attn" and slot in used for port, slot in s.outs):
                    raise _NoCache(f"{s.label}: its attention weights feed another block")

    @classmethod
    def make(cls, lm: "_BlockModel | _GraphLM") -> "_Cache | None":
        """A cache for ``lm``, or None when the model has a part it cannot run incrementally."""
        if isinstance(lm, _BlockModel) and lm.block.type_id not in _LM_TYPES:
            return None
        try:
            return cls(lm.runtime_for((1, 1)), lm.input, lm.logits)
        except (_NoCache, GraphError, ShapeError, KeyError):
            return None

    @staticmethod
    def _check(s: Any) -> None:
        t = s.type
        p = s.block.p if hasattr(s.block, "p") else {}
        ports = {port for port, _ in s.ins}
        if t in _POSITIONWISE or t in ("EmbedToken", "Input"):
            return
        if t == "Attention" and p["causal"] and ports == {"x"}:
            return
        if t == "Collapse" and p["mode"] == "last":
            return
        if t == "SequenceRNN" and not p["bidirectional"] and ports == {"x"}:
            return
        if t == "FeedForwardSequenceModel":
            return
        raise _NoCache(f"{s.label} ({t}) cannot run one position at a time")

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Scores (vocab,) for the token after ``tokens``, which must extend what it has seen."""
        if tokens[:len(self.seen)] != self.seen or len(tokens) == len(self.seen):
            self.state.clear()
            self.seen = []
        new = tokens[len(self.seen):]
        first = len(self.seen)
        values = self._run(np.asarray([new], dtype=np.int64), first)
        self.seen = list(tokens)
        out = values[self.logits_slot]
        return out.reshape(-1, out.shape[-1])[-1]

    def _run(self, ids: np.ndarray, first: int) -> list[Any]:
        """The new positions ``first …`` through every step; returns the slots' new rows."""
        from engine.blocks import EVAL
        from engine.kernels import attention as kattention
        from engine.kernels import dense as kdense

        BLOCK, ENTER, _, ALIAS = self.kinds
        rt = self.runtime
        values: list[Any] = [None] * self.plan.slots
        values[self.input_slot] = ids
        n = ids.shape[1]
        for i, s in enumerate(self.plan.steps):
            if s.kind == ENTER:
                for outer, inner in s.edges:
                    values[inner] = values[outer]
                continue
            if s.kind == ALIAS:
                src, dst = s.edges[0]
                values[dst] = values[src]
                continue
            if s.kind != BLOCK:
                continue
            inputs = {port: values[slot] for port, slot in s.ins}
            weights = self.plan._weights(s, rt.weights)
            t = s.type
            if t == "EmbedToken":
                out = self._embed(s.block, inputs["ids"], weights, first)
                outs = {"out": out}
            elif t == "Attention":
                x = inputs["x"]
                B, _, d = x.shape
                bias = s.block.p["bias"]
                zeros = np.zeros(d, x.dtype)
                wqkv = np.concatenate((weights["Wq"], weights["Wk"], weights["Wv"]), axis=1)
                qkv = kdense.linear(x.reshape(B * n, d), wqkv, np.concatenate((weights["bq"], zeros, weights["bv"])) if bias else None)
                qkv = qkv.reshape(B, n, 3 * d)
                keys = self._keep(i, qkv, first)
                _, o = kattention.attend(qkv, 0, keys, d, keys, 2 * d, s.block.p["heads"], d, True, None, first=first)
                outs = {"out": kdense.linear(o.reshape(B * n, d), weights["Wo"], weights["bo"] if bias else None).reshape(B, n, d)}
            elif t == "Collapse":
                outs = {"out": inputs["x"][:, -1].copy()}
            elif t == "SequenceRNN":
                start = self.state.get(i, {})
                outs, _ = s.block.forward({**inputs, **start}, weights)
                self.state[i] = {"h0": outs["last"], **({"c0": outs["last_c"]} if "last_c" in outs else {})}
            elif t == "FeedForwardSequenceModel":
                window = s.block.p["window"]
                past = self.state.get(i)
                x = inputs["x"] if past is None else np.concatenate((past, inputs["x"]), axis=1)
                self.state[i] = x[:, -(window - 1):] if window > 1 else x[:, :0]
                out, _ = s.block.forward({"x": x}, weights)
                outs = {"out": out["out"][:, -n:]}
            else:  # position-wise
                outs, _ = s.block.forward(inputs, weights, EVAL)
            for port, slot in s.outs:
                if port not in outs:  # the attention weights: for display, used by no later step here
                    continue
                value = np.asarray(outs[port])
                if value.dtype.kind == "f" and value.dtype != rt.dtype:
                    value = value.astype(rt.dtype)
                values[slot] = value
        return values

    def _keep(self, i: int, rows: np.ndarray, first: int) -> np.ndarray:
        """Append the new positions' ``rows`` (1, n, w) to step ``i``'s cache (a buffer that
        doubles when full, so appending costs no copy of the past); returns every position so far."""
        n = rows.shape[1]
        buf = self.state.get(i)
        if buf is None or buf.shape[1] < first + n:
            grown = np.empty((rows.shape[0], max(16, 2 * (first + n)), rows.shape[2]), rows.dtype)
            if buf is not None:
                grown[:, :first] = buf[:, :first]
            buf = self.state[i] = grown
        buf[:, first:first + n] = rows
        return buf[:, :first + n]

    @staticmethod
    def _embed(block: Block, ids: np.ndarray, weights: Mapping[str, np.ndarray], first: int) -> np.ndarray:
        """EmbedToken for positions ``first …``: the table's rows plus those positions' rows."""
        from engine.blocks.embed import sinusoidal_positions
        from engine.kernels import embed as kembed

        table = weights["E"]
        n = ids.shape[1]
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= table.shape[0]):
            raise RuntimeFailure(f"a token id is outside the vocabulary 0…{table.shape[0] - 1}")
        position = block.p["position"]
        if position == "learned":
            pos = weights["P"][first:first + n]
        elif position == "sinusoidal":
            pos = sinusoidal_positions(first + n, table.shape[1], table.dtype)[first:]
        else:
            pos = None
        return kembed.embed(ids, table, pos)


def generate(
    model: Model,
    prompt: Sequence[int],
    *,
    max_new_tokens: int = 20,
    temperature: float | None = None,
    eos: int | None = None,
    bos: int | None = None,
    seed: int = 0,
    node: str | None = None,
    on_token: Callable[[int, np.ndarray], None] | None = None,
    cached: bool = True,
) -> list[int]:
    """Continue ``prompt`` (token ids) with a language model; returns the new ids only.

    - ``max_new_tokens``: stop after this many new tokens.
    - ``eos``: stop as soon as this id is produced (it is not included in the result).
    - ``bos``: put this id before the prompt (for models trained with a start token); with an
      empty prompt, generation starts from it alone.
    - ``temperature``: 0 = greedy (argmax), > 0 = sample from softmax(logits / temperature);
      None = the graph's GenerateToken temperature when the model is built from primitives,
      greedy for a LanguageModel block.
    - ``seed``: the random generator's seed (sampling only).
    - ``node``: which node to use when the graph has several language models.
    - ``on_token``: called with each chosen id and the scores it was chosen from (the end
      token included), e.g. to show each token's probability.
    - ``cached``: keep the model's keys, values and states between tokens (see the module
      docstring); False runs the whole prefix again for every token.

    Prefixes longer than a transformer's ``max_len`` are cut to their last ``max_len`` tokens.

    >>> generate(runtime, [3, 5, 8], max_new_tokens=5, eos=0)   # doctest: +SKIP
    [9, 2, 11, 4]
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be ≥ 0, got {max_new_tokens}")
    lm = _resolve(model, node, _LM_TYPES, allow_graph_lm=True)
    if temperature is None:
        temperature = lm.temperature or 0.0
    rng = np.random.default_rng(seed)
    tokens = ([bos] if bos is not None else []) + [int(t) for t in prompt]
    limit = _context_limit(lm)
    cache = _Cache.make(lm) if (cached and max_new_tokens and tokens) else None
    new: list[int] = []
    for _ in range(max_new_tokens):
        if cache is not None and (limit is None or len(tokens) <= limit):
            logits = cache.logits(tokens)
        else:
            logits = _last_logits(lm, tokens, limit)  # the window slides: every position moves
        token = pick_token(logits, temperature, rng)
        if on_token is not None:
            on_token(token, logits)
        if eos is not None and token == eos:
            break
        tokens.append(token)
        new.append(token)
    return new


# --- sequence to sequence ------------------------------------------------------------------------------


def translate(
    model: Model,
    source: Sequence[int],
    *,
    bos: int,
    eos: int,
    max_len: int = 50,
    temperature: float = 0.0,
    seed: int = 0,
    node: str | None = None,
    on_token: Callable[[int, np.ndarray], None] | None = None,
) -> list[int]:
    """Decode a target sequence for ``source`` with a SequenceToSequence model.

    The decoder starts from ``[bos]`` and appends one token at a time (greedy when
    ``temperature`` is 0, sampled otherwise, seeded by ``seed``) until it produces ``eos`` or
    the target reaches ``max_len`` tokens. Returns the target ids without ``bos`` and ``eos``.
    ``on_token`` is called as in :func:`generate`.

    >>> translate(runtime, [4, 7, 9], bos=1, eos=2)   # "la maison bleue"  # doctest: +SKIP
    [5, 12, 8]                                        # "the blue house"
    """
    if max_len < 0:
        raise ValueError(f"max_len must be ≥ 0, got {max_len}")
    s2s = _resolve(model, node, _S2S_TYPES, allow_graph_lm=False)
    assert isinstance(s2s, _BlockModel)
    if not len(source):
        raise ValueError("the source sequence is empty")
    limit = int(s2s.block.p["max_len"]) if s2s.block.p["model"] == "transformer" else None
    if limit is not None:
        max_len = min(max_len, limit - 1)  # the decoder input also holds bos
    src = np.asarray([list(source)], dtype=np.int64)
    rng = np.random.default_rng(seed)
    target = [int(bos)]
    while len(target) - 1 < max_len:
        logits = s2s.run({"src": src, "tgt": np.asarray([target], dtype=np.int64)})
        token = pick_token(logits[0, -1], temperature, rng)
        if on_token is not None:
            on_token(token, logits[0, -1])
        if token == eos:
            break
        target.append(token)
    return target[1:]
