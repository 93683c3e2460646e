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
Each step runs the whole prefix again (no key/value cache): simple and exact, and fast enough
for the short sequences of the lessons. Token choice: ``temperature`` 0 takes the highest score
(the first on ties); above 0, a token is drawn from softmax(logits / temperature) with a
generator seeded by ``seed``, so the same call gives the same tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence, Union

import networkx as nx
import numpy as np

from engine import blocks
from engine.blocks import Block
from engine.errors import GraphError, RuntimeFailure
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

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        ids = np.asarray(feeds["x"])
        runtime = self._compiled.get(ids.shape)
        if runtime is None:
            g = self.graph.copy()
            g.set_params(self.input, {"shape": ids.shape})
            runtime = Runtime.bound(g, {n: dict(w) for n, w in self.weights.items() if n in g.nodes}, dtype=self.dtype)
            self._compiled[ids.shape] = runtime
            if len(self._compiled) > 64:
                self._compiled.popitem(last=False)
        return runtime.forward({self.input: ids}).values[self.logits]


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
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = _last_logits(lm, tokens, limit)
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
