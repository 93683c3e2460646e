"""Generation: greedy and sampled decoding for language models and sequence-to-sequence models."""

from __future__ import annotations

import numpy as np
import pytest

from engine import blocks
from engine.errors import GraphError
from engine.generate import generate, next_token_logits, pick_token, translate
from engine.graph import Graph
from engine.optim import Adam
from engine.runtime import Runtime


def _lm(**params):
    p = {"vocab": 6, "dim": 8, "heads": 2, "layers": 1, "hidden": 16, "max_len": 12, **params}
    block = blocks.create("LanguageModel", **p)
    w = block.init_weights({"x": (1, 3)}, np.random.default_rng(0))
    return block, w


def _greedy_by_hand(block, w, tokens, steps, limit=None):
    tokens = list(tokens)
    out = []
    for _ in range(steps):
        window = tokens[-limit:] if limit else tokens
        logits = block.forward({"x": np.asarray([window])}, w)[0]["out"]
        t = int(np.argmax(logits.reshape(-1, logits.shape[-1])[-1]))
        tokens.append(t)
        out.append(t)
    return out


@pytest.mark.parametrize("model,per_position", [("transformer", False), ("gru", True), ("feedforward", False)])
def test_greedy_generation_takes_the_argmax_each_step(model, per_position):
    block, w = _lm(model=model, per_position=per_position)
    assert generate((block, w), [1, 2, 3], max_new_tokens=6) == _greedy_by_hand(block, w, [1, 2, 3], 6)


def test_eos_stops_generation_and_is_not_returned():
    block, w = _lm()
    free = generate((block, w), [1, 2], max_new_tokens=8)
    eos = free[3]
    cut = generate((block, w), [1, 2], max_new_tokens=8, eos=eos)
    assert cut == free[:free.index(eos)]
    assert generate((block, w), [1, 2], max_new_tokens=0) == []


def test_bos_is_prepended_and_an_empty_prompt_needs_it():
    block, w = _lm()
    assert generate((block, w), [3], bos=0, max_new_tokens=4) == _greedy_by_hand(block, w, [0, 3], 4)
    assert len(generate((block, w), [], bos=0, max_new_tokens=3)) == 3
    with pytest.raises(ValueError, match="prompt is empty"):
        generate((block, w), [], max_new_tokens=3)


def test_sampling_is_seeded_and_temperature_matters():
    block, w = _lm()
    a = generate((block, w), [1], max_new_tokens=15, temperature=5.0, seed=3)
    b = generate((block, w), [1], max_new_tokens=15, temperature=5.0, seed=3)
    c = generate((block, w), [1], max_new_tokens=15, temperature=5.0, seed=4)
    assert a == b
    assert a != c
    assert generate((block, w), [1], max_new_tokens=6, temperature=0.0, seed=9) == _greedy_by_hand(block, w, [1], 6)


def test_pick_token_follows_softmax_over_temperature():
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    rng = np.random.default_rng(0)
    for t in (0.5, 1.0, 2.0):
        draws = np.bincount([pick_token(logits, t, rng) for _ in range(4000)], minlength=4) / 4000
        p = np.exp(logits / t) / np.exp(logits / t).sum()
        np.testing.assert_allclose(draws, p, atol=0.03)
    assert pick_token(np.array([0.0, 3.0, 3.0]), 0.0, rng) == 1  # greedy: first of the ties


def test_long_prompts_are_cut_to_the_transformer_context():
    block, w = _lm(max_len=5)
    prompt = [1, 2, 3, 4, 5, 0, 1]
    assert generate((block, w), prompt, max_new_tokens=4) == _greedy_by_hand(block, w, prompt, 4, limit=5)


def _lm_graph(batch: int = 2, length: int = 5):
    # Fixed node ids: initial weights are seeded per node id, so the test is reproducible.
    graph = Graph()
    x = graph.add_node("Input", {"shape": (batch, length), "dtype": "ids"}, name="tokens", node_id="tokens")
    y = graph.add_node("Input", {"shape": (batch, length), "dtype": "ids"}, name="next", node_id="next")
    lm = graph.add_node("LanguageModel", {"vocab": 5, "dim": 8, "heads": 2, "layers": 1, "max_len": 8, "per_position": True},
                        name="lm", node_id="lm")
    loss = graph.add_node("CrossEntropy", name="loss", node_id="loss")
    graph.connect(x.id, "out", lm.id, "x")
    graph.connect(lm.id, "out", loss.id, "logits")
    graph.connect(y.id, "out", loss.id, "target")
    return graph, lm


def test_generation_from_a_runtime_and_from_graph_and_weights_agree():
    graph, lm = _lm_graph()
    runtime = Runtime(graph, seed=2)
    via_runtime = generate(runtime, [1, 2], max_new_tokens=7)
    via_pair = generate((graph, runtime.weights), [1, 2], max_new_tokens=7)
    block = blocks.create("LanguageModel", **lm.params)
    assert via_runtime == via_pair == _greedy_by_hand(block, runtime.weights[lm.id], [1, 2], 7)
    assert next_token_logits(runtime, [1, 2]).shape == (5,)


def test_a_language_model_learns_a_cycle_and_generates_it():
    # Full-length windows (max_len 8) starting at every phase of the cycle: every learned
    # position has seen every token, so any prompt of the cycle continues it.
    graph, lm = _lm_graph(batch=5, length=8)
    runtime = Runtime(graph, seed=0)
    cycle = np.array([0, 1, 2, 3, 4] * 3)
    feeds = {"tokens": np.stack([cycle[k:k + 8] for k in range(5)]), "next": np.stack([cycle[k + 1:k + 9] for k in range(5)])}
    opt = Adam(lr=0.02)
    for _ in range(150):
        p = runtime.forward_backward(feeds, "loss")
        opt.step(runtime.weights, p.weight_gradients())
    assert float(runtime.forward(feeds).values[(runtime.graph.find("loss").id, "out")]) < 0.05
    assert generate(runtime, [3, 4], max_new_tokens=6) == [0, 1, 2, 3, 4, 0]
    assert generate(runtime, [1], max_new_tokens=7, eos=0) == [2, 3, 4]


def test_a_language_model_built_from_primitives_generates_too():
    graph = Graph()
    x = graph.add_node("Input", {"shape": (2, 4), "dtype": "ids"}, name="tokens")
    y = graph.add_node("Input", {"shape": (2, 4), "dtype": "ids"}, name="next")
    emb = graph.add_node("EmbedToken", {"vocab": 7, "dim": 8, "position": "learned", "max_len": 10}, name="embed")
    tb = graph.add_node("TransformerBlock", {"dim": 8, "heads": 2, "causal": True}, name="tb")
    gen = graph.add_node("GenerateToken", {"vocab": 7, "tie_to": emb.id, "temperature": 0.0}, name="gen")
    loss = graph.add_node("CrossEntropy", name="loss")
    graph.connect(x.id, "out", emb.id, "ids")
    graph.connect(emb.id, "out", tb.id, "x")
    graph.connect(tb.id, "out", gen.id, "x")
    graph.connect(gen.id, "logits", loss.id, "logits")
    graph.connect(y.id, "out", loss.id, "target")
    runtime = Runtime(graph, seed=1, dtype=np.float64)
    out = generate(runtime, [1, 2, 3], max_new_tokens=6)

    tokens = [1, 2, 3]
    for _ in range(6):
        e = blocks.create("EmbedToken", vocab=7, dim=8, position="learned", max_len=10)
        h = e.forward({"ids": np.asarray([tokens])}, runtime.weights[emb.id])[0]["out"]
        h = blocks.create("TransformerBlock", dim=8, heads=2, causal=True).forward({"x": h}, runtime.weights[tb.id])[0]["out"]
        logits = h[0, -1] @ runtime.weights[emb.id]["E"].T + runtime.weights[gen.id]["b"]
        tokens.append(int(np.argmax(logits)))
    assert out == tokens[3:]
    # The node's own temperature is the default; an explicit one overrides it.
    graph.set_params(gen.id, {"temperature": 50.0})
    runtime2 = Runtime(graph, weights=runtime.weights, dtype=np.float64)
    assert generate(runtime2, [1, 2, 3], max_new_tokens=6, temperature=0.0) == out
    assert generate(runtime2, [1, 2, 3], max_new_tokens=12, seed=1) != generate(runtime2, [1, 2, 3], max_new_tokens=12, seed=2)


def test_unclear_models_get_clear_errors():
    graph, _ = _lm_graph()
    graph.add_node("LanguageModel", {"vocab": 5}, name="second")
    with pytest.raises(GraphError, match="several nodes"):
        generate((graph, {}), [1])
    empty = Graph()
    empty.add_node("Input", {"shape": (1, 2)}, name="x")
    with pytest.raises(GraphError, match="no LanguageModel"):
        generate((empty, {}), [1])
    with pytest.raises(GraphError, match="needs a SequenceToSequence"):
        translate(_lm(), [1], bos=0, eos=1)


# --- sequence to sequence --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["transformer", "gru"])
def test_greedy_translation_matches_decoding_by_hand(model):
    block = blocks.create("SequenceToSequence", src_vocab=7, tgt_vocab=6, dim=8, heads=2, layers=1, model=model, max_len=10)
    w = block.init_weights({"src": (1, 3), "tgt": (1, 2)}, np.random.default_rng(1))
    src = [3, 4, 5]
    got = translate((block, w), src, bos=0, eos=1, max_len=6)
    target = [0]
    for _ in range(6):
        logits = block.forward({"src": np.asarray([src]), "tgt": np.asarray([target])}, w)[0]["out"]
        t = int(np.argmax(logits[0, -1]))
        if t == 1:
            break
        target.append(t)
    assert got == target[1:]
    a = translate((block, w), src, bos=0, eos=1, temperature=3.0, seed=5, max_len=6)
    assert a == translate((block, w), src, bos=0, eos=1, temperature=3.0, seed=5, max_len=6)


def test_a_tiny_translator_learns_three_phrases():
    # "la maison bleue" → "the blue house" and friends; 0 = BOS, 1 = EOS, 2 = padding.
    pairs = [([3, 4, 5], [3, 5, 4]), ([6, 4, 7], [3, 7, 4]), ([3, 8, 5], [3, 5, 6])]
    graph = Graph()
    src = graph.add_node("Input", {"shape": (3, 3), "dtype": "ids"}, name="src", node_id="src")
    tgt = graph.add_node("Input", {"shape": (3, 4), "dtype": "ids"}, name="tgt", node_id="tgt")
    nxt = graph.add_node("Input", {"shape": (3, 4), "dtype": "ids"}, name="next", node_id="next")
    s2s = graph.add_node("SequenceToSequence", {"src_vocab": 9, "tgt_vocab": 8, "dim": 16, "heads": 2, "layers": 1, "max_len": 8},
                         name="s2s", node_id="s2s")
    loss = graph.add_node("CrossEntropy", name="loss", node_id="loss")
    graph.connect(src.id, "out", s2s.id, "src")
    graph.connect(tgt.id, "out", s2s.id, "tgt")
    graph.connect(s2s.id, "out", loss.id, "logits")
    graph.connect(nxt.id, "out", loss.id, "target")
    feeds = {
        "src": np.array([s for s, _ in pairs]),
        "tgt": np.array([[0, *t] for _, t in pairs]),
        "next": np.array([[*t, 1] for _, t in pairs]),
    }
    runtime = Runtime(graph, seed=0)
    opt = Adam(lr=0.01)
    for _ in range(120):
        opt.step(runtime.weights, runtime.forward_backward(feeds, "loss").weight_gradients())
    for s, t in pairs:
        assert translate(runtime, s, bos=0, eos=1, max_len=6) == t


# --- the cache between tokens (keys and values, recurrent states, windows) -------------------------------


@pytest.mark.parametrize("model,per_position", [("transformer", False), ("transformer", True), ("rnn", False), ("lstm", True),
                                                ("gru", False), ("feedforward", True)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_generation_gives_the_tokens_of_recomputing_the_prefix(model, per_position, seed):
    from engine.generate import _BlockModel, _Cache

    block = blocks.create("LanguageModel", vocab=20, dim=16, model=model, layers=2, heads=2, hidden=24, max_len=40,
                          window=3, per_position=per_position)
    rng = np.random.default_rng(seed)
    w = {k: np.asarray(v, np.float32) for k, v in block.init_weights({"x": (1, 5)}, rng).items()}
    assert _Cache.make(_BlockModel(block, w)) is not None  # these models run one position at a time
    prompt = [int(t) for t in rng.integers(0, 20, 5)]
    cached = generate((block, w), prompt, max_new_tokens=30)
    assert cached == generate((block, w), prompt, max_new_tokens=30, cached=False)
    # and the scores agree to float32 rounding, position after position
    cache = _Cache.make(_BlockModel(block, w))
    tokens = prompt + cached
    for n in range(len(prompt), len(tokens)):
        want = block.forward({"x": np.asarray([tokens[:n]])}, w)[0]["out"].reshape(-1, 20)[-1]
        np.testing.assert_allclose(cache.logits(tokens[:n]), want, rtol=1e-4, atol=1e-5)


def test_the_cache_follows_a_sliding_window_past_max_len_by_recomputing():
    block, w = _lm(max_len=6)
    assert generate((block, w), [1, 2, 3], max_new_tokens=12) == generate((block, w), [1, 2, 3], max_new_tokens=12, cached=False)


def test_models_that_mix_positions_are_recomputed_and_still_generate():
    from engine.generate import _BlockModel, _Cache

    padded, w = _lm(pad_id=0)  # a padding mask: not one position at a time
    assert _Cache.make(_BlockModel(padded, w)) is None
    assert generate((padded, w), [1, 2], max_new_tokens=5) == _greedy_by_hand(padded, w, [1, 2], 5)
    graph = Graph()
    x = graph.add_node("Input", {"shape": (1, 4), "dtype": "ids"}, name="tokens")
    emb = graph.add_node("EmbedToken", {"vocab": 7, "dim": 8, "position": "sinusoidal"}, name="embed")
    tb = graph.add_node("TransformerBlock", {"dim": 8, "heads": 2, "causal": False}, name="tb")  # sees the future
    gen = graph.add_node("GenerateToken", {"vocab": 7}, name="gen")
    graph.connect(x.id, "out", emb.id, "ids")
    graph.connect(emb.id, "out", tb.id, "x")
    graph.connect(tb.id, "out", gen.id, "x")
    runtime = Runtime(graph, seed=2)
    assert generate(runtime, [1, 2], max_new_tokens=5) == generate(runtime, [1, 2], max_new_tokens=5, cached=False)


def test_a_hand_built_causal_transformer_uses_the_cache():
    from engine.generate import _Cache, _resolve

    graph = Graph()
    x = graph.add_node("Input", {"shape": (1, 4), "dtype": "ids"}, name="tokens")
    emb = graph.add_node("EmbedToken", {"vocab": 9, "dim": 8, "position": "sinusoidal"}, name="embed")
    tb1 = graph.add_node("TransformerBlock", {"dim": 8, "heads": 2, "causal": True}, name="tb1")
    tb2 = graph.add_node("TransformerBlock", {"dim": 8, "heads": 4, "causal": True, "activation": "gelu"}, name="tb2")
    gen = graph.add_node("GenerateToken", {"vocab": 9, "tie_to": emb.id}, name="gen")
    graph.connect(x.id, "out", emb.id, "ids")
    graph.connect(emb.id, "out", tb1.id, "x")
    graph.connect(tb1.id, "out", tb2.id, "x")
    graph.connect(tb2.id, "out", gen.id, "x")
    runtime = Runtime(graph, seed=5)
    assert _Cache.make(_resolve(runtime, None, ("LanguageModel",), allow_graph_lm=True)) is not None
    assert generate(runtime, [1, 2, 3], max_new_tokens=20) == generate(runtime, [1, 2, 3], max_new_tokens=20, cached=False)
