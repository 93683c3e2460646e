"""The sequence-model and image lessons: each is built as its description says, and (slow) each
trains from the CLI to its target in under two minutes; the language model then continues
"the quick brown" with "fox", and the translator turns "la maison bleue" into "the blue house"."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import presets
from engine import cli, serialize
from engine.data import bind, text_for
from engine.runtime import Runtime

LESSONS = ("language_model", "seq2seq", "bert", "rnn_vs_lstm", "convnet")
ROOT = Path(__file__).resolve().parents[2]


def test_the_lessons_are_presets_and_the_builder_writes_them_unchanged(tmp_path, monkeypatch):
    assert set(LESSONS) <= set(presets.names())
    from presets import _build_lessons

    monkeypatch.setattr(_build_lessons, "HERE", tmp_path)
    _build_lessons.main([])
    for name in LESSONS:
        assert (tmp_path / f"{name}.json").read_bytes() == presets.path(name).read_bytes(), name


def _chain(project, start: str) -> list[str]:
    g = project.graph
    node, types = g.find(start), []
    while True:
        outs = [link for link in g.links if link.src == node.id]
        if not outs:
            return types
        node = g.nodes[outs[0].dst]
        types.append(node.type)


def test_the_language_model_is_the_taught_formula_node_by_node():
    project = serialize.load(presets.path("language_model"))
    g = project.graph
    # GenerateToken(Collapse(SequenceModel(EmbedToken(x))))
    assert _chain(project, "context") == ["EmbedToken", "TransformerBlock", "Collapse", "GenerateToken", "CrossEntropy"]
    assert g.find("SequenceModel").params["causal"] is True and g.find("Collapse").params["mode"] == "last"
    text = text_for(project.data)
    # generation cuts prompts to the learned positions, which are as many as the training windows
    assert g.find("EmbedToken").params["max_len"] == text.context == g.find("context").params["shape"][1]
    assert g.find("EmbedToken").params["dim"] == 32 and g.find("loss").params["ignore_index"] == text.pad_id


def test_the_other_lessons_use_their_blocks():
    bert = serialize.load(presets.path("bert")).graph.find("BERT")
    assert bert.params["layers"] == 24 and bert.params["dim"] == 32 and bert.params["heads"] == 4
    s2s = serialize.load(presets.path("seq2seq"))
    assert s2s.graph.find("translator").type == "SequenceToSequence" and text_for(s2s.data).task == "translate"
    assert serialize.load(presets.path("convnet")).graph.find("ConvNet").type == "ConvNet"
    rl = serialize.load(presets.path("rnn_vs_lstm"))
    assert rl.graph.find("SimpleRNN").params["cell"] == "SimpleRNN" and rl.graph.find("LSTM").params["cell"] == "LSTM"
    assert rl.training["target"] == {"metric": "loss_drop", "value": 0.9, "node": "LSTM loss"}


def test_the_simple_rnns_gradient_fades_much_faster_than_the_lstms():
    project = serialize.load(presets.path("rnn_vs_lstm"))
    g = project.graph
    runtime = Runtime(g, seed=project.training["seed"])
    p = runtime.start(bind(project.data, g).first_feeds(), trace=True)
    for _ in p.forward_steps():
        pass
    p.seed(runtime.loss_port("total loss"))
    norms = {ev.label.strip("'"): ev.extras["time_grad_norms"] for ev in p.backward_steps() if "time_grad_norms" in ev.extras}
    assert set(norms) == {"SimpleRNN", "LSTM"} and all(len(v) == 40 for v in norms.values())
    fade = {k: v[0] / v[-1] for k, v in norms.items()}  # ‖∂L/∂h_1‖ / ‖∂L/∂h_L‖
    assert fade["SimpleRNN"] < 1e-3
    assert fade["LSTM"] > 30 * fade["SimpleRNN"]
    rnn = np.asarray(norms["SimpleRNN"])
    assert np.all(np.diff(rnn) > 0)  # smaller at every step back in time


def _train(name: str, tmp_path: Path, capsys, seed: int = 0) -> tuple[dict, Path, float]:
    out_file = tmp_path / f"{name}.bps"
    t0 = time.perf_counter()
    code = cli.main(["train", name, "--json", "-o", str(out_file), "--seed", str(seed)])
    seconds = time.perf_counter() - t0
    out, err = capsys.readouterr()
    result = json.loads(out.splitlines()[-1])
    assert code == cli.EXIT_OK, err
    assert result["event"] == "result" and result["target_met"] is True
    assert seconds < 120, f"{name} took {seconds:.0f} s to train"
    return result, out_file, seconds


@pytest.mark.slow
@pytest.mark.parametrize("name", LESSONS)
@pytest.mark.parametrize("seed", [1, 2])
def test_lesson_trains_to_its_target_from_other_seeds(name, seed, tmp_path, capsys):
    result, _, _ = _train(name, tmp_path, capsys, seed)
    assert (result["drop"] if name != "rnn_vs_lstm" else 1 - result["target_final"] / result["target_initial"]) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "convnet"])
def test_lesson_trains_to_its_target(name, tmp_path, capsys):
    result, _, _ = _train(name, tmp_path, capsys)
    assert result["drop"] >= 0.9


@pytest.mark.slow
def test_the_language_model_learns_that_the_quick_brown_is_a_fox(tmp_path, capsys):
    result, trained, _ = _train("language_model", tmp_path, capsys)
    assert result["drop"] >= 0.9
    code = cli.main(["generate", str(trained), "--prompt", "the quick brown", "--json"])
    event = json.loads(capsys.readouterr().out)
    assert code == cli.EXIT_OK and event["words"][0] == "fox"
    assert event["text"] == "fox jumps over the lazy dog"


@pytest.mark.slow
def test_the_translator_says_the_blue_house(tmp_path, capsys):
    result, trained, _ = _train("seq2seq", tmp_path, capsys)
    assert result["drop"] >= 0.9
    code = cli.main(["generate", str(trained), "--prompt", "la maison bleue"])
    assert code == cli.EXIT_OK and capsys.readouterr().out == "the blue house\n"


@pytest.mark.slow
def test_the_lstm_learns_to_remember_and_the_simple_rnn_does_not(tmp_path, capsys):
    result, trained, _ = _train("rnn_vs_lstm", tmp_path, capsys)
    assert result["target_final"] < 0.1 * result["target_initial"]  # the LSTM's loss
    project = serialize.load(trained)
    runtime = Runtime(project.graph, weights=project.weights)
    feeds = bind(project.data, project.graph)
    losses = {k: [] for k in ("RNN loss", "LSTM loss")}
    for batch in feeds.eval_feeds():
        values = runtime.forward(batch).values
        for k in losses:
            losses[k].append(float(values[runtime.loss_port(k)]))
    rnn, lstm = (float(np.mean(losses[k])) for k in ("RNN loss", "LSTM loss"))
    assert lstm < 0.05
    assert rnn > 0.5 * np.log(8)  # the SimpleRNN stays far from recalling the first token


@pytest.mark.slow
def test_the_documented_command_prints_fox():
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "generate", "presets/language_model.json", "--prompt",
                           "the quick brown"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "fox"
    assert "trained first" in proc.stderr
