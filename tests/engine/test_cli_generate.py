"""`backprop-studio generate`: prompts in words, the file's vocabulary, greedy and sampled
continuation, translation, training when the file holds no weights, and usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import presets
from engine import cli, serialize
from engine.graph import Graph
from engine.serialize import Project

LM = str(presets.path("language_model"))
S2S = str(presets.path("seq2seq"))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lm") / "lm.bps"
    assert cli.main(["train", LM, "-o", str(path), "--json"]) == cli.EXIT_OK
    return path


def test_generate_trains_a_json_first_and_continues_the_prompt(capsys):
    code, out, err = _run(capsys, "generate", LM, "--prompt", "the quick brown")
    assert code == cli.EXIT_OK, err
    assert out == "fox jumps over the lazy dog\n"
    assert "holds no trained weights, so it is trained first" in err and "train" in err and "-o trained.bps" in err
    assert "trained 300 steps" in err


def test_generate_from_a_trained_container_does_not_train(capsys, trained_lm):
    code, out, err = _run(capsys, "generate", str(trained_lm), "--prompt", "the quick brown")
    assert (code, out) == (cli.EXIT_OK, "fox jumps over the lazy dog\n")
    assert "trained" not in err
    # the window matters: after "a", "quick brown" is followed by dog
    assert _run(capsys, "generate", str(trained_lm), "--prompt", "a quick brown", "--max-tokens", "1")[1] == "dog\n"


def test_weights_from_another_file_and_the_json_event(capsys, trained_lm):
    code, out, err = _run(capsys, "generate", LM, "--weights", str(trained_lm), "--prompt", "the lazy", "--json")
    assert code == cli.EXIT_OK and "trained" not in err
    event = json.loads(out)
    assert event["event"] == "generate" and event["task"] == "next_token" and event["node"] == "GenerateToken"
    assert event["words"] == ["dog", "sleeps", "in", "the", "sun"] and event["text"] == "dog sleeps in the sun"
    assert event["stopped"] == "eos"
    vocab = serialize.load(LM).data["context"]["vocab"]
    assert event["prompt_ids"] == [vocab.index(w) for w in ("<pad>", "<bos>", "the", "lazy")]  # a window of 4
    assert event["ids"] == [vocab.index(w) for w in event["words"]]


def test_max_tokens_limits_the_length(capsys, trained_lm):
    code, out, _ = _run(capsys, "generate", str(trained_lm), "--prompt", "the quick brown", "--max-tokens", "2", "--json")
    event = json.loads(out)
    assert code == cli.EXIT_OK and event["words"] == ["fox", "jumps"] and event["stopped"] == "max_tokens"
    assert _run(capsys, "generate", str(trained_lm), "--prompt", "the", "--max-tokens", "0")[1] == "\n"


def test_sampling_is_seeded_and_temperature_spreads_the_choices(capsys, trained_lm):
    def sample(seed: int, t: str = "3") -> str:
        return _run(capsys, "generate", str(trained_lm), "--prompt", "the", "--temperature", t, "--seed", str(seed), "--max-tokens", "6")[1]

    assert sample(1) == sample(1)
    assert len({sample(s) for s in range(6)}) > 1
    # greedy ignores the seed
    assert sample(1, "0") == sample(2, "0")


def test_an_unknown_word_exits_2_and_lists_known_words(capsys, trained_lm):
    code, out, err = _run(capsys, "generate", str(trained_lm), "--prompt", "the quick purple")
    assert code == cli.EXIT_USAGE and out == ""
    assert "the word 'purple' is not in the vocabulary (known words: the, quick, brown, fox" in err
    # a .json is not trained before the prompt is checked
    code, _, err = _run(capsys, "generate", LM, "--prompt", "purple")
    assert code == cli.EXIT_USAGE and "trained" not in err


def test_translate_with_the_seq2seq_preset(capsys, tmp_path):
    out_file = tmp_path / "s2s.bps"
    code, out, err = _run(capsys, "generate", S2S, "--prompt", "la maison bleue", "-o", str(out_file))
    assert code == cli.EXIT_OK, err
    assert out == "the blue house\n"
    assert serialize.load(out_file).weights is not None
    code, out, _ = _run(capsys, "generate", str(out_file), "--prompt", "le chien noir", "--json")
    event = json.loads(out)
    assert event["task"] == "translate" and event["words"] == ["the", "black", "dog"] and event["stopped"] == "eos"
    code, out, _ = _run(capsys, "generate", str(out_file), "--prompt", "la maison bleue", "--max-tokens", "2")
    assert out == "the blue\n"


@pytest.mark.parametrize("argv,message", [
    (["generate", "two_layer_net", "--prompt", "x"], "nothing to generate with"),
    (["generate", LM, "--prompt", "the", "--max-tokens", "-1"], "--max-tokens must be 0 or more"),
    (["generate", LM, "--prompt", "the", "--temperature", "-1"], "--temperature must be 0"),
    (["generate", LM, "--prompt", "the", "-o", "x.json"], "saved in a .bps container"),
    (["generate", LM, "--prompt", "the", "--node", "loss"], "--node loss: 'loss' is a CrossEntropy"),
    (["generate", LM, "--prompt", "the", "--weights", LM], "holds no trained weights"),
    (["generate", LM], "the following arguments are required: --prompt"),
])
def test_usage_errors(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == cli.EXIT_USAGE
    assert message in err


def test_weights_of_another_graph_are_refused(capsys, tmp_path):
    other = tmp_path / "other.bps"
    cli.main(["train", "two_layer_net", "--steps", "1", "-o", str(other)])  # too short to meet its target; saved anyway
    capsys.readouterr()
    code, _, err = _run(capsys, "generate", LM, "--prompt", "the", "--weights", str(other))
    assert code == cli.EXIT_USAGE and "was trained on another graph" in err


def _per_position_lm(tmp_path: Path) -> Path:
    # A LanguageModel block scoring every position; whole sentences, right-filled with <pad>.
    vocab = ["<pad>", "<bos>", "<eos>", "one", "two", "three", "four"]
    sentences = ["one two three four", "four three two one", "two two"]
    g = Graph()
    ids = g.add_node("Input", {"shape": (3, 5), "dtype": "ids"}, name="words", position=(0, 0), node_id="words")
    nxt = g.add_node("Input", {"shape": (3, 5), "dtype": "ids"}, name="next", position=(190, 110), node_id="next")
    lm = g.add_node("LanguageModel", {"vocab": 7, "dim": 16, "layers": 1, "heads": 2, "hidden": 32, "max_len": 8,
                                      "per_position": True}, name="lm", position=(190, 0), node_id="lm")
    loss = g.add_node("CrossEntropy", {"ignore_index": 0}, name="loss", position=(380, 0), node_id="loss")
    g.connect(ids.id, "out", lm.id, "x")
    g.connect(lm.id, "out", loss.id, "logits")
    g.connect(nxt.id, "out", loss.id, "target")
    project = Project(g, name="counting", data={
        "words": {"kind": "text", "vocab": vocab, "sentences": sentences},
        "next": {"kind": "text", "field": "target", "same_as": "words"},
    }, training={"loss": "loss", "optimizer": {"type": "adam", "lr": 0.02}, "steps": 150})
    path = tmp_path / "count.json"
    serialize.save(project, path)
    return path


def test_a_language_model_block_trained_at_every_position(capsys, tmp_path):
    path = _per_position_lm(tmp_path)
    code, out, err = _run(capsys, "generate", str(path), "--prompt", "four", "--train")
    assert code == cli.EXIT_OK, err
    assert out == "three two one\n"
    assert "holds no trained weights" not in err and "trained 150 steps" in err  # --train: asked for, no note
    assert _run(capsys, "generate", str(path), "--prompt", "one two", "--node", "lm")[1] == "three four\n"


def test_info_shows_the_vocabulary(capsys):
    code, out, _ = _run(capsys, "info", LM)
    assert code == cli.EXIT_OK
    assert "text 'context': next_token, 5 sentences, a vocabulary of 20 words: the, quick, brown, fox" in out
    code, out, _ = _run(capsys, "info", S2S, "--json")
    text = json.loads(out)["data"]["text"]["source"]
    assert text["task"] == "translate" and text["examples"] == 14 and text["vocab"][:3] == ["<pad>", "<bos>", "<eos>"]
