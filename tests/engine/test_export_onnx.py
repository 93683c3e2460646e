"""The ONNX export: onnx.checker accepts it, its inputs and outputs carry the nodes' names, the
batch (and sequence length) are dynamic, and onnxruntime computes what the app computes (1e-5 in
float32) for every block type and every lesson.

Skipped when the ``export`` extra (torch, onnx, onnxscript, onnxruntime) is not installed."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import presets
from engine import blocks, cli
from engine import export as export_mod
from engine.serialize import Project, load
from tests.engine.export_cases import block_graph, zoo

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.torch

TOL = 1e-5


def session(path):
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    return model, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def dims(values) -> dict[str, list]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def check(project: Project, path, feeds: dict[str, np.ndarray] | None = None, **kw) -> tuple[object, object]:
    """Export, then compare onnxruntime with the app's forward pass output by output."""
    result = export_mod.export(project, "onnx", path, **kw)
    assert result.paths == (path,)
    assert "ONNX is for inference" in result.notes[0]
    model, sess = session(path)
    prepared, runtime = export_mod.prepare(project, outputs=kw.get("outputs"))
    feeds = runtime.resolve_feeds(feeds) if feeds is not None else export_mod.example_feeds(project, runtime)
    required = [i for i in prepared.inputs if i.required]
    assert [i.name for i in sess.get_inputs()] == [i.name for i in required]
    got = sess.run(None, {i.name: feeds[i.node] for i in required})
    values = runtime.forward(feeds).values
    by_key = {o.key: o for o in prepared.outputs}
    names = [o.name for o in sess.get_outputs()]
    assert names and set(names) <= set(by_key)
    for name, value in zip(names, got):
        np.testing.assert_allclose(value, values[by_key[name].source], rtol=TOL, atol=TOL, err_msg=name)
    return model, sess


def test_every_block_type_in_one_graph(tmp_path):
    """One export for the first example of every block type (an export costs seconds)."""
    graph, feeds = zoo(np.float32)
    model, sess = check(Project(graph, name="every block"), tmp_path / "zoo.onnx", feeds)
    assert len(sess.get_outputs()) == sum(1 for n in graph.nodes.values() if n.type == "Output")


def _examples():
    for type_id in blocks.names():
        for i, example in enumerate(blocks.spec(type_id).examples):
            yield pytest.param(type_id, i, example, id=f"{type_id}-{i}")


@pytest.mark.slow
@pytest.mark.parametrize("type_id, index, example", list(_examples()))
def test_every_block_example(type_id, index, example, tmp_path):
    """Each example on its own (a graph of all of them at once trips torch.export's symbolic
    shape checks in this torch; each alone exports)."""
    graph, feeds = block_graph(type_id, example, np.float32, zlib.crc32(f"{type_id}-{index}".encode()))
    check(Project(graph), tmp_path / "block.onnx", feeds)


# an export takes 5-60 s here: three lessons in the fast suite, every one in the slow suite
FAST = ("two_layer_net", "convnet")
LESSONS = [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in presets.names()]


@pytest.mark.parametrize("name", LESSONS)
def test_every_lesson(name, tmp_path):
    project = load(presets.path(name))
    model, sess = check(project, tmp_path / f"{name}.onnx")
    inputs = dims(model.graph.input)
    assert all(shape[0] == "batch" for shape in inputs.values() if shape), inputs
    # the batch is dynamic: half a batch runs too, and agrees with the exported PyTorch module
    prepared, runtime = export_mod.prepare(project)
    feeds = {k: v[: max(1, len(v) // 2)] for k, v in export_mod.example_feeds(project, runtime).items()}
    got = sess.run(None, {i.name: feeds[i.node] for i in prepared.inputs})
    net = export_mod.load_module(prepared.source).Model()
    net.load_state_dict({k: torch.from_numpy(np.asarray(v, order="C")) for k, v in prepared.state.items()})
    net.eval()  # ONNX is the evaluation-mode forward pass
    with torch.no_grad():
        want = net(**{i.ident: torch.from_numpy(feeds[i.node]) for i in prepared.inputs})
    for out, value in zip(sess.get_outputs(), got):
        np.testing.assert_allclose(value, want[out.name].numpy(), rtol=TOL, atol=TOL)


def test_a_language_model_exported_for_inference(tmp_path, capsys):
    """With --returns the model's logits, the targets drop out: one input, dynamic batch and
    context length, named after the nodes."""
    path = tmp_path / "lm.onnx"
    assert cli.main(["export", "language_model", "-o", str(path), "--returns", "GenerateToken"]) == 0
    printed = capsys.readouterr().out
    assert "dynamic axes: batch, context_length" in printed and "checked: on the first batch onnxruntime" in printed
    model, sess = session(path)
    assert dims(model.graph.input) == {"context": ["batch", "context_length"]}
    assert dims(model.graph.output) == {"GenerateToken": ["batch", 20]}
    project = load(presets.path("language_model"))
    prepared, runtime = export_mod.prepare(project, outputs=["GenerateToken"])
    net = export_mod.load_module(prepared.source).Model()
    net.load_state_dict({k: torch.from_numpy(np.asarray(v, order="C")) for k, v in prepared.state.items()})
    net.eval()  # ONNX is the evaluation-mode forward pass
    ids = np.random.default_rng(0).integers(0, 20, size=(3, 2))  # another batch and a shorter context
    (logits,) = sess.run(None, {"context": ids})
    with torch.no_grad():
        want = net(context=torch.from_numpy(ids))["GenerateToken"].numpy()
    np.testing.assert_allclose(logits, want, rtol=TOL, atol=TOL)
    assert logits.shape == (3, 20)
