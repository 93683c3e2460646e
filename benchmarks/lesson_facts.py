"""The facts the lesson texts state, printed from the engine: each lesson trained as its Train
button trains it (the file's own settings and seed), the loss and the lesson's metric before and
after, and what each text says to look for (the trained w of the linear regression, the first
example's margin before and after training, the answers of the language model and the
translator, the two recurrent networks' losses against ln 8), plus each text's length in words.

    python benchmarks/lesson_facts.py [LESSON ...]     # all lessons by default

Not a timing benchmark: it checks that the numbers in presets/*.json's descriptions are true.
The recurrent lesson trains 1500 steps and takes a few minutes on a busy machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

import presets
from engine import cli, feeds, serialize
from engine.data import bind
from engine.runtime import Runtime


def _cli(args: list[str]) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(args)
    if code != cli.EXIT_OK:
        raise SystemExit(f"backprop-studio {' '.join(args)} failed ({code})")
    return json.loads(out.getvalue().splitlines()[-1])


def _value(project, node: str, one_example: bool = False) -> np.ndarray:
    """The output of ``node`` on the lesson's first batch (or its first example)."""
    if one_example:
        project = feeds.single_example(project)
    runtime = Runtime(project.graph, weights=project.weights or None, seed=project.training.get("seed", 0))
    values = runtime.forward(bind(project.data, project.graph).first_feeds()).values
    return np.asarray(values[runtime.loss_port(node)])


def facts(name: str, tmp: Path) -> dict:
    source = serialize.load(presets.path(name))
    trained_file = tmp / f"{name}.bps"
    result = _cli(["train", name, "--json", "-o", str(trained_file)])
    trained = serialize.load(trained_file)
    out = {"lesson": name, "words": len(source.description.split()), "steps": result["steps"],
           "loss": [round(result["initial_loss"], 4), round(result["final_loss"], 5)],
           "drop": round(result["drop"], 4), "target_met": result["target_met"]}
    metric = result.get("metric")
    if metric:
        out[metric["kind"]] = [round(metric["initial"], 4), round(metric["final"], 4)]
        if metric["kind"] == "perplexity":
            out["perplexity_of_a_blind_guess"] = round(math.exp(result["initial_loss"]), 2)
    if name == "linear_regression":
        w = trained.graph.find("w").id
        out["w"] = [round(float(x), 3) for x in trained.weights[w]["value"]]
    if name == "hinge_loss":
        out["first_margin"] = [round(float(_value(p, "margin", one_example=True).ravel()[0]), 4)
                               for p in (source, trained)]
    if name == "language_model":
        out["answers"] = {p: _cli(["generate", str(trained_file), "--prompt", p, "--json"])["text"]
                          for p in ("the quick brown", "a quick brown")}
    if name == "seq2seq":
        out["answers"] = {p: _cli(["generate", str(trained_file), "--prompt", p, "--json"])["text"]
                          for p in ("la maison bleue", "la voiture blanche")}
    if name == "rnn_vs_lstm":
        out["ln 8"] = round(math.log(8), 4)
        for label, project in (("before", source), ("after", trained)):
            out[f"losses {label}"] = {k: round(float(_value(project, k)), 4) for k in ("RNN loss", "LSTM loss")}
    return out


def main(argv: list[str]) -> int:
    names = argv or presets.names()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(json.dumps(facts(name, Path(tmp)), ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
