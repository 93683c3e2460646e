"""Text data: word-level sentences and their vocabulary turned into the id arrays that feed a
graph's Inputs, with clear errors; plus the synthetic image (bars) and long-memory (recall) sets."""

from __future__ import annotations

import numpy as np
import pytest

from engine import data, serialize
from engine.data import DataError, TextData, bind, normalize, text_for
from engine.graph import Graph

VOCAB = ["<pad>", "<bos>", "<eos>", "the", "quick", "brown", "fox", "dog"]
ID = {w: i for i, w in enumerate(VOCAB)}


def _lm_spec(**extra):
    return {
        "context": {"kind": "text", "field": "ids", "task": "next_token", "vocab": VOCAB,
                    "sentences": ["the quick brown fox", "the dog"], **extra},
        "next": {"kind": "text", "field": "target", "same_as": "context"},
    }


def test_windows_hold_the_last_tokens_left_filled_with_pad():
    arrays = text_for(normalize(_lm_spec(context=3))).arrays()
    b, e, p = ID["<bos>"], ID["<eos>"], ID["<pad>"]
    the, quick, brown, fox, dog = (ID[w] for w in ("the", "quick", "brown", "fox", "dog"))
    np.testing.assert_array_equal(arrays["ids"], [
        [p, p, b], [p, b, the], [b, the, quick], [the, quick, brown], [quick, brown, fox],
        [p, p, b], [p, b, the], [b, the, dog],
    ])
    np.testing.assert_array_equal(arrays["target"], [the, quick, brown, fox, e, the, dog, e])
    assert arrays["ids"].dtype == arrays["target"].dtype == np.int64


def test_whole_sentences_are_scored_at_every_position_and_right_filled():
    arrays = text_for(normalize(_lm_spec())).arrays()
    b, e, p = ID["<bos>"], ID["<eos>"], ID["<pad>"]
    np.testing.assert_array_equal(arrays["ids"], [[b, 3, 4, 5, 6], [b, 3, 7, p, p]])
    np.testing.assert_array_equal(arrays["target"], [[3, 4, 5, 6, e], [3, 7, e, p, p]])


def test_translation_pairs_give_source_shifted_target_and_target():
    text = TextData("translate", tuple(VOCAB), pairs=(("the fox", "fox"), ("dog", "the quick dog")))
    a = text.arrays()
    np.testing.assert_array_equal(a["src"], [[3, 6], [7, 0]])
    np.testing.assert_array_equal(a["tgt"], [[1, 6, 0, 0], [1, 3, 4, 7]])
    np.testing.assert_array_equal(a["target"], [[6, 2, 0, 0], [3, 4, 7, 2]])
    assert text.encode_source("fox") == [6, 0]  # filled like the training sources
    assert text.decode([3, 4, 7, 99]) == ["the", "quick", "dog", "<id 99>"]


def test_prompts_are_encoded_like_the_training_prefixes():
    text = text_for(normalize(_lm_spec(context=3)))
    arrays = text.arrays()
    prompt = text.encode_prompt("the quick")
    assert prompt == arrays["ids"][3 - 1].tolist() == [ID["<bos>"], 3, 4]
    assert text.encode_prompt("the") == [0, 1, 3]
    assert text.encode_prompt("quick brown fox the") == [5, 6, 3]  # the last three only
    whole = text_for(normalize(_lm_spec()))
    assert whole.encode_prompt("the quick brown") == [1, 3, 4, 5]
    no_bos = TextData("next_token", tuple(VOCAB), bos=None, sentences=("the fox",))
    assert no_bos.encode_prompt("the") == [3]


def test_unknown_words_are_named():
    with pytest.raises(DataError, match=r"data 'context': sentence 2 \('the cat'\): the word 'cat' is not in the vocabulary "
                                        r"\(known words: the, quick, brown, fox, dog\)"):
        normalize({"context": {"kind": "text", "vocab": VOCAB, "sentences": ["the fox", "the cat"]}})
    text = text_for(normalize(_lm_spec()))
    with pytest.raises(DataError, match="the prompt: the word 'Fox' is not in the vocabulary"):
        text.encode_prompt("the quick Fox")
    with pytest.raises(DataError, match=r"pair 1 target \('le chat'\): the word 'le'"):
        normalize({"s": {"kind": "text", "task": "translate", "vocab": VOCAB, "pairs": [["the", "le chat"]]}})


@pytest.mark.parametrize("entry,message", [
    ({"vocab": VOCAB}, "'sentences' must be a list"),
    ({"vocab": [], "sentences": ["the"]}, "'vocab' must be a list of the words"),
    ({"vocab": ["the", "the"], "sentences": ["the"]}, "the word 'the' is in 'vocab' twice"),
    ({"vocab": ["the fox"], "sentences": ["the"]}, "text without spaces"),
    ({"vocab": ["the", "fox"], "sentences": ["the fox"]}, r"the bos token '<bos>' is not in 'vocab' \(add it, or set \"bos\": null\)"),
    ({"vocab": VOCAB, "sentences": ["the"], "task": "poems"}, "unknown task 'poems'"),
    ({"vocab": VOCAB, "sentences": ["the"], "field": "src"}, "task next_token has no field 'src'"),
    ({"vocab": VOCAB, "sentences": ["the"], "colour": 1}, "unknown key 'colour'"),
    ({"vocab": VOCAB, "sentences": ["the"], "context": 0}, "'context'"),
    ({"vocab": VOCAB, "sentences": [""]}, "sentence 1 must be non-empty text"),
    ({"vocab": VOCAB, "task": "translate", "pairs": [["the"]]}, r"pair 1 must be \[source, target\]"),
    ({"vocab": VOCAB, "task": "translate", "pairs": [["the", "fox"]], "context": 2}, "task translate reads 'pairs'"),
    ({"vocab": VOCAB[1:], "pad": None, "sentences": ["the fox", "the"]}, "different lengths, so they need padding"),
])
def test_bad_text_entries_get_clear_messages(entry, message):
    with pytest.raises(DataError, match=message):
        normalize({"words": {"kind": "text", **entry}})


def test_same_as_must_name_a_text_entry_and_a_field_of_its_task():
    with pytest.raises(DataError, match="'same_as' must name a data entry that holds the text itself"):
        normalize({"next": {"kind": "text", "field": "target", "same_as": "nope"}})
    spec = _lm_spec()
    spec["next"]["field"] = "tgt"
    with pytest.raises(DataError, match="task next_token has no field 'tgt'"):
        normalize(spec)


def test_normalize_is_idempotent_and_survives_a_file_round_trip(tmp_path):
    spec = _lm_spec(context=2, eos=None)
    canon = normalize(spec)
    assert normalize(canon) == canon
    assert canon["context"]["eos"] is None and "bos" not in canon["context"]
    graph = Graph()
    graph.add_node("Input", {"shape": (3, 2), "dtype": "ids"}, name="context")
    graph.add_node("Input", {"shape": (3,), "dtype": "ids"}, name="next")
    project = serialize.Project(graph=graph, data=spec)
    serialize.save(project, tmp_path / "t.json")
    loaded = serialize.load(tmp_path / "t.json")
    assert loaded.data == canon
    ds = bind(loaded.data, loaded.graph)
    assert ds.rows == 6 and ds.batch == 3  # 4 + 2 positions (no eos)
    feeds = ds.first_feeds()
    assert feeds[graph.find("context").id].shape == (3, 2) and feeds[graph.find("next").id].shape == (3,)


def test_binding_checks_the_input_shape_against_the_text():
    graph = Graph()
    graph.add_node("Input", {"shape": (2, 4), "dtype": "ids"}, name="context")
    graph.add_node("Input", {"shape": (2,), "dtype": "ids"}, name="next")
    with pytest.raises(DataError, match=r"data 'context' has rows of shape \(3,\), but Input 'context' takes rows of shape \(4,\)"):
        bind(_lm_spec(context=3), graph)


def test_text_for_finds_the_set_of_an_input():
    spec = normalize(_lm_spec())
    assert text_for(spec, "next") is not None and text_for(spec, "next").vocab == tuple(VOCAB)
    with pytest.raises(DataError, match="has no text data"):
        text_for({"x": {"values": [1, 2]}})
    two = {**spec, "other": {**spec["context"]}}
    with pytest.raises(DataError, match="several text sets"):
        text_for(two)
    assert list(text_for(two, "other").sentences) == spec["context"]["sentences"] and "other" in data.text_sets(two)


def test_bars_are_horizontal_or_vertical_and_balanced():
    s = data.synthetic("bars", rows=40, seed=3, noise=0.0, size=6)
    x, y = s["x"], s["y"]
    assert x.shape == (40, 1, 6, 6) and y.dtype == np.int64 and np.bincount(y).tolist() == [20, 20]
    for img, label in zip(x[:, 0], y):
        lit_rows, lit_cols = np.nonzero(img)
        assert (len(set(lit_rows)) == 1) if label == 0 else (len(set(lit_cols)) == 1)
        assert len(lit_rows) >= 3
    with pytest.raises(DataError, match=r"'min_length' \(9\) must be ≤ 'size' \(8\)"):
        data.synthetic("bars", min_length=9)


def test_recall_puts_the_answer_first_and_distractors_after():
    s = data.synthetic("recall", rows=30, seed=1, length=7, symbols=3, distractors=5)
    x, y = s["x"], s["y"]
    assert x.shape == (30, 7) and x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], y)
    assert y.max() < 3 and x[:, 1:].min() >= 3 and x[:, 1:].max() < 8
    assert np.bincount(y).tolist() == [10, 10, 10]
