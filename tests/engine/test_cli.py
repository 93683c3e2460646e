"""The headless CLI: outputs (human and JSON lines), exit codes scripts can trust, one clear
line for expected errors, a progress bar on terminals, and a cached start under 3 s."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import presets
from engine import cli, kernels, serialize
from engine.graph import Graph
from engine.runtime import Runtime
from engine.serialize import Project

ROOT = Path(__file__).resolve().parents[2]
TWO_LAYER = str(presets.path("two_layer_net"))
LINEAR = str(presets.path("linear_regression"))
HINGE = str(presets.path("hinge_loss"))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _events(out: str) -> list[dict]:
    lines = out.splitlines()
    assert lines, "no output"
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_run_json_gives_the_loss_and_gradients(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "run", TWO_LAYER, "--json")
    assert code == cli.EXIT_OK
    (result,) = _events(out)
    assert result["event"] == "result" and result["dtype"] == "float32" and result["batch"] == 64
    project = serialize.load(TWO_LAYER)
    ds_feeds = __import__("engine.data", fromlist=["bind"]).bind(project.data, project.graph).first_feeds()
    with kernels.using(result["kernels"]):  # the backend `run` picked for its one pass (engine.warmup.plan)
        expected = float(Runtime(project.graph, seed=0).forward(ds_feeds).values[(project.graph.find("loss").id, "out")])
    assert result["loss"] == pytest.approx(expected, rel=1e-7)
    assert set(result["gradients"]) == {"V/value", "w/value"}
    assert result["gradients"]["V/value"]["shape"] == [3, 4]


def test_run_trace_emits_one_event_per_node_forward_then_backward(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "run", HINGE, "--trace", "--json")
    events = _events(out)
    assert code == 0 and events[-1]["event"] == "result"
    trace = [e for e in events if e["event"] == "trace"]
    phases = [e["phase"] for e in trace]
    assert phases == ["forward"] * 10 + ["backward"] * 10
    assert trace[9]["label"] == "'loss'" and trace[10]["label"] == "'loss'"  # backward starts at the loss
    assert trace[-1]["weights"]["value"]["shape"] == [2]


def test_run_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "run", "two_layer_net")  # a preset name works in place of a path
    assert code == 0
    assert "Two-layer neural network" in out and "loss = 1.1635" in out and "V/value" in out


def test_train_meets_the_target_and_saves_a_container(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "trained.bps"
    code, out, _ = _run(capsys, "train", LINEAR, "--json", "-o", str(target))
    assert code == cli.EXIT_OK
    events = _events(out)
    assert events[0]["event"] == "start" and events[0]["steps"] == 200 and events[0]["optimizer"]["type"] == "sgd"
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 201))
    result = events[-1]
    assert result["event"] == "result" and result["target_met"] is True and result["drop"] >= 0.9
    trained = serialize.load(target)
    assert trained.history["loss"].shape == (200,) and int(trained.optimizer_state["sgd/step"]) == 200
    assert result["final_loss"] < result["initial_loss"]
    # Continuing from the container starts at step 201.
    code, out, _ = _run(capsys, "train", str(target), "--steps", "3", "--json")
    assert _events(out)[0]["first_step"] == 201


def test_train_that_misses_its_target_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "train", LINEAR, "--steps", "1")
    assert code == cli.EXIT_FAILED
    assert "target (loss falls by ≥ 90%): NOT met" in out
    assert "training did not meet its target" in err


def test_train_overrides_and_plain_progress_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "train", LINEAR, "--steps", "20", "--lr", "0.2", "--seed", "3", "--dtype", "float64")
    assert code in (0, 1)
    assert "20 steps of sgd (lr 0.2)" in out and "seed 3, float64" in out
    assert "step 2/20" in err and "step 20/20" in err and "\r" not in err


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_train_draws_a_progress_bar_on_a_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    tty = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    code = cli.main(["train", LINEAR, "--steps", "50"])
    text = tty.getvalue()
    assert code == 0 and "\r[" in text and "50/50" in text and "steps/s" in text and text.endswith("\n")


def test_gradcheck_passes_for_every_preset_and_reports_each_weight(capsys: pytest.CaptureFixture[str]) -> None:
    for name in presets.names():
        # A sample of 12 keeps the 24-layer BERT to seconds; the small lessons have fewer weights.
        code, out, _ = _run(capsys, "gradcheck", name, "--json", "--sample", "12")
        events = _events(out)
        checks = [e for e in events if e["event"] == "check"]
        assert code == 0 and checks and all(e["ok"] and e["error"] < 1e-5 for e in checks), name
        assert events[-1]["event"] == "result" and events[-1]["ok"] is True
        assert len(checks) == min(12, events[-1]["weights"]), name


def test_gradcheck_samples_big_models_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "gradcheck", TWO_LAYER, "--sample", "1")
    assert code == 0 and "checking 1 of 2 weights, picked at random with seed 0 (--all checks every one)" in out
    assert out.count("relative error") == 2  # one check line plus the summary
    code, out, _ = _run(capsys, "gradcheck", TWO_LAYER, "--sample", "1", "--all")
    assert code == 0 and "checking" not in out and "over 2 weights" in out


def test_gradcheck_above_tolerance_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "gradcheck", TWO_LAYER, "--tolerance", "0")
    assert code == cli.EXIT_FAILED and "TOO LARGE" in out and "FAILED" in out


def test_info(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "info", TWO_LAYER, "--json")
    (info,) = _events(out)
    assert code == 0 and info["parameters"] == 3 * 4 + 4 and info["links"] == 10
    by_name = {n["name"]: n for n in info["nodes"]}
    assert by_name["h"]["outputs"] == {"out": [64, 4]} and by_name["V"]["weights"] == {"value": [3, 4]}
    assert info["data"] == {"rows": 64, "batch": 64, "inputs": {"'φ(x)'": [64, 3], "'y'": [64]}}
    code, out, _ = _run(capsys, "info", TWO_LAYER)
    assert "16 learned parameters" in out and "MatMul" in out and "data: 64 rows in batches of 64" in out


def test_list_presets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list-presets", "--json")
    names = [e["name"] for e in _events(out)]
    assert code == 0 and {"linear_regression", "hinge_loss", "two_layer_net"} <= set(names)


def test_version_reports_the_kernel_start(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.startswith("backprop-studio 0.1.0") and "kernel start:" in out
    code, out, _ = _run(capsys, "--version", "--json")
    (event,) = _events(out)
    assert event["event"] == "version" and event["kernel_start_seconds"] > 0


# --- errors and exit codes ---------------------------------------------------------------------------


def test_bad_file_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "backprop-studio.graph", "version": 9, "nodes": []}')
    for command in ("run", "train", "gradcheck", "info"):
        code, out, err = _run(capsys, command, str(bad))
        assert code == cli.EXIT_USAGE and out == ""
        assert err == f"backprop-studio: error: {bad}: it was made by a newer Backprop Studio (format version 9; this one reads up to 1)\n"
    code, out, err = _run(capsys, "run", str(bad), "--json")
    (event,) = _events(out)
    assert event == {"event": "error", "kind": "FileFormatError", "message": err.strip().removeprefix("backprop-studio: error: ")}


def test_unknown_block_loads_but_running_it_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = json.loads(Path(TWO_LAYER).read_text(encoding="utf-8"))
    for n in doc["nodes"]:
        if n["name"] == "h":
            n["type"] = "Swish"
    path = tmp_path / "future.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    code, out, _ = _run(capsys, "info", str(path))
    assert code == 0 and "(unknown block type: a placeholder)" in out
    code, _, err = _run(capsys, "run", str(path))
    assert code == cli.EXIT_USAGE and "'h': unknown block type 'Swish': this file needs a newer Backprop Studio or a plugin" in err


def _nan_file(tmp_path: Path) -> str:
    g = Graph()
    x = g.add_node("Input", {"shape": (2,)}, name="x")
    lg = g.add_node("Log", {}, name="log")
    w = g.add_node("Parameter", {"shape": (2,), "init": "values", "values": [1.0, 1.0]}, name="w")
    p = g.add_node("Multiply", {}, name="wlog")
    m = g.add_node("Mean", {}, name="loss")
    g.connect(x.id, "out", lg.id, "a"); g.connect(lg.id, "out", p.id, "a"); g.connect(w.id, "out", p.id, "b")
    g.connect(p.id, "out", m.id, "a")
    path = tmp_path / "nan.json"
    serialize.save(Project(g, "nan", "", {"x": {"values": [1.0, -1.0]}}, {"loss": "loss"}), path)
    return str(path)


def test_nan_exits_1_naming_the_node(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = _nan_file(tmp_path)
    code, _, err = _run(capsys, "run", path)
    assert code == cli.EXIT_FAILED
    assert "the forward pass produced NaN or Inf first at 'log' (Log) output 'out'" in err
    code, out, err = _run(capsys, "train", path, "--json")
    assert code == cli.EXIT_FAILED and "first at 'log' (Log)" in err
    assert _events(out)[-1]["event"] == "error" and _events(out)[-1]["kind"] == "NonFiniteError"
    code, _, err = _run(capsys, "gradcheck", path)
    assert code == cli.EXIT_FAILED and "'log' (Log)" in err


@pytest.mark.parametrize("argv,message", [
    ([], "give a command: run, train"),
    (["run"], "the following arguments are required: file"),
    (["train", LINEAR, "--steps", "many"], "argument --steps: invalid int value: 'many'"),
    (["run", LINEAR, "--bogus"], "unrecognized arguments: --bogus"),
    (["train", LINEAR, "--every", "-1"], "argument --every: must be 1 or more, got -1"),
    (["train", LINEAR, "--steps", "-5"], "training: 'steps' must be ≥ 0, got -5"),
    (["fly", LINEAR], "invalid choice: 'fly'"),
    (["train", LINEAR, "-o", "out.txt"], "trained weights are saved in a .bps container"),
    (["run", "no/such/file.json"], "no/such/file.json: no such file (and no preset of that name"),
])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == cli.EXIT_USAGE and message in err and err.count("\n") == 1


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "gradcheck" in out and "exit codes" in out


def test_handles() -> None:
    assert cli.handles(["run", "x.json"]) and cli.handles(["--version"]) and cli.handles(["list-presets"])
    assert not cli.handles(["x.json"]) and not cli.handles([])


# --- as a program ----------------------------------------------------------------------------------


def _python_m(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_python_m_engine_cli_runs() -> None:
    proc = _python_m("run", "presets/two_layer_net.json", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["event"] == "result"
    proc = _python_m("info", "presets/nope.json")
    assert proc.returncode == 2 and proc.stderr.startswith("backprop-studio: error:") and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_second_start_loads_every_kernel_from_the_cache(tmp_path: Path) -> None:
    """Later launches hit Numba's cache: the second fresh process compiles nothing. (How long a
    start takes is a benchmark's question, `backprop-studio start-time`, not a test's: this
    machine's load moves it by 2x.)"""
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "BACKPROP_STUDIO_KERNELS": "numba"}
    code = "import json; from engine import cli; print(json.dumps(cli.kernel_start()))"
    starts = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=600)
        assert proc.returncode == 0, proc.stderr
        starts.append(json.loads(proc.stdout.splitlines()[-1]))
    first, second = starts
    assert first["compiled"] > 0, "an empty cache should have compiled the kernels"
    assert second["compiled"] == 0 and second["loaded"] >= first["compiled"], second
