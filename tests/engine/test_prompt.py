"""Trying a trained language model (engine.prompt): the generated words with the probabilities
the model gave them, greedy or sampled with a seed, and unknown words marked with the
vocabulary's nearest spellings instead of an exception."""

from __future__ import annotations

import pytest

import presets
from engine import data as data_mod
from engine import prompt, serialize
from engine.errors import GraphError
from engine.runtime import Runtime
from engine.train import Trainer


@pytest.fixture(scope="module")
def trained_lm():
    project = serialize.load(presets.path("language_model"))
    trainer = Trainer.from_project(project)
    trainer.run()
    project = trainer.to_project(project)
    return project, Runtime(project.graph, weights=project.weights)


def test_greedy_answer_with_probabilities(trained_lm) -> None:
    project, runtime = trained_lm
    p = prompt.Prompter(project)
    answer = p.answer(runtime, "the quick brown", max_tokens=6)
    assert answer.task == "next_token" and answer.words[:1] == ["fox"]
    for token in answer.tokens:
        assert 0 < token.probability <= 1
        probs = [q for _, q in token.alternatives]
        assert probs == sorted(probs, reverse=True) and token.alternatives[0] == (token.word, token.probability)
    assert answer.stopped in ("eos", "max_tokens") and (answer.stopped == "eos") == answer.tokens[-1].end
    # the same words as the command line's generate
    from engine.generate import generate
    text = p.text
    assert text.decode(generate(runtime, text.encode_prompt("the quick brown"), max_new_tokens=6, eos=text.eos_id,
                                temperature=0.0)) == answer.words


def test_sampling_is_seeded(trained_lm) -> None:
    project, runtime = trained_lm
    p = prompt.Prompter(project)
    a = p.answer(runtime, "the", max_tokens=8, temperature=1.5, seed=3)
    b = p.answer(runtime, "the", max_tokens=8, temperature=1.5, seed=3)
    assert a == b
    outcomes = {tuple(p.answer(runtime, "the", max_tokens=8, temperature=1.5, seed=s).words) for s in range(6)}
    assert len(outcomes) > 1


def test_unknown_words_get_the_nearest_suggestions(trained_lm) -> None:
    project, _ = trained_lm
    p = prompt.Prompter(project)
    words = p.words("the qiuck Brown zzzz")
    assert [w.known for w in words] == [True, False, False, False]
    assert words[1].suggestions[0] == "quick" and words[2].suggestions[0] == "brown" and words[3].suggestions == ()
    with pytest.raises(data_mod.DataError, match=r"the word 'qiuck' is not in the vocabulary .*did you mean 'quick'\?"):
        p.encode("the qiuck")


def test_a_graph_without_a_generator_says_so() -> None:
    with pytest.raises(GraphError, match="nothing to generate with"):
        prompt.Prompter(serialize.load(presets.path("two_layer_net")))
