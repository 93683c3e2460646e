"""Export without torch: every block is covered, the engine never imports torch, the code
generator names things safely, and missing extras and unexportable nodes get clear messages.

The numbers (forward, gradients, Adam steps, onnxruntime) are checked in test_export_torch.py
and test_export_onnx.py, which skip when the ``export`` extra is not installed."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import presets
from engine import blocks, cli
from engine import export as export_mod
from engine.export import exporters
from engine.export.torch_code import MODULE_ATTRIBUTES, Names, generate, identifier, library
from engine.graph import Graph
from engine.runtime import Runtime
from engine.serialize import load


def test_every_registered_block_has_an_exporter_or_says_why_not():
    """The registry-wide rule: a new block needs an entry in engine/export/exporters.py (one
    @exporter function) or in CANNOT_EXPORT with the reason; composites export as their graph."""
    missing = [t for t in blocks.names()
               if not blocks.spec(t).composite and t not in exporters.EXPORTERS and t not in exporters.CANNOT_EXPORT]
    assert not missing, (f"no PyTorch exporter and no 'cannot export' reason for block type(s) {missing}: add an "
                         f"@exporter function (or a CANNOT_EXPORT entry) in engine/export/exporters.py")
    stale = sorted((set(exporters.EXPORTERS) | set(exporters.CANNOT_EXPORT)) - set(blocks.names()))
    assert not stale, f"exporters for block types that do not exist: {stale}"
    both = sorted(set(exporters.EXPORTERS) & set(exporters.CANNOT_EXPORT))
    assert not both, f"block types with an exporter and a reason not to export: {both}"


def test_every_exporter_reads_every_param_of_its_block():
    """A param a block gains (say Conv2d's dilation) must be handled by its exporter: until then
    this test lists it, and an export with that param away from its default is refused."""
    missing = {t: sorted({p.name for p in blocks.spec(t).params} - exporters.HANDLED[t])
               for t in exporters.EXPORTERS if t in blocks.names()}
    missing = {t: names for t, names in missing.items() if names}
    assert not missing, f"params the exporters in engine/export/exporters.py do not read: {missing}"


def test_a_param_the_exporter_does_not_read_is_refused_unless_at_its_default(monkeypatch):
    monkeypatch.setitem(exporters.HANDLED, "Linear", frozenset({"out_features"}))
    g = _graph_with_awkward_names()
    generate(g, Runtime(g).weights, dtype=np.dtype(np.float32))  # bias at its default: fine
    g.set_params("l", {"bias": False})
    with pytest.raises(Exception, match=r"'train' \(Linear\): parameter 'bias' = False is not exported yet"):
        generate(g, Runtime(g).weights, dtype=np.dtype(np.float32))


def test_the_engine_and_the_code_generator_never_import_torch():
    code = (
        "import sys, engine.cli, engine.export, engine.export.exporters, engine.export.torch_code\n"
        "import presets\n"
        "from engine.serialize import load\n"
        "from engine.export import prepare\n"
        "model, _ = prepare(load(presets.path('language_model')))\n"
        "assert 'class Model(nn.Module)' in model.source\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'onnxscript', 'safetensors'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"exporting imported {out.stdout.strip()}"


def test_the_library_is_read_as_text_and_every_class_it_needs_is_there():
    lib = library()
    for name in ("Linear", "Attention", "SequenceRNN", "RNNCell", "EmbedToken", "cross_entropy", "ACTIVATIONS", "uniform_"):
        assert name in lib
    # every torch class named after a block type is one the registry knows
    for name, (source, _) in lib.items():
        if source.startswith("class "):
            assert name in blocks.names(), f"torch_lib.{name} is not a block type"


@pytest.mark.parametrize("name, expected", [
    ("φ(x)", "φ_x"), ("1 − margin", "subtract_1_margin"), ("v_j·φ(x)", "v_j_φ_x"), ("", "subtract"),
    ("total loss", "total_loss"), ("ﬁnal", "final"), ("x²", "x2"),
])
def test_identifiers_from_node_names(name, expected):
    assert identifier(name, "subtract") == expected
    assert expected.isidentifier()


def test_names_never_shadow_python_torch_or_each_other():
    names = Names()
    taken = [names.take(n) for n in ("train", "class", "torch", "x", "x", "forward", "sum", "__init__")]
    assert taken == ["train_", "class_", "torch_", "x", "x_2", "forward_", "sum_", "init_"]
    assert len(set(taken)) == len(taken)


def test_the_module_attribute_list_covers_torch():
    torch = pytest.importorskip("torch")
    public = {n for n in dir(torch.nn.Module) if not n.startswith("_")}
    assert public <= MODULE_ATTRIBUTES, f"add to MODULE_ATTRIBUTES: {sorted(public - MODULE_ATTRIBUTES)}"


def _graph_with_awkward_names() -> Graph:
    g = Graph()
    g.add_node("Input", {"shape": (4, 3)}, node_id="i", name="φ(x)")
    g.add_node("Linear", {"out_features": 2}, node_id="l", name="train")
    g.add_node("Tanh", node_id="t", name="class")
    g.add_node("Output", node_id="o", name="1st result")
    g.connect("i", "out", "l", "x")
    g.connect("l", "out", "t", "a")
    g.connect("t", "out", "o", "x")
    return g


def test_generated_code_is_valid_python_with_the_nodes_names():
    g = _graph_with_awkward_names()
    runtime = Runtime(g, seed=0)
    model = generate(g, runtime.weights, dtype=np.dtype(np.float32))
    tree = ast.parse(model.source)
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["Linear", "Model"]
    assert "self.train_ = Linear(3, 2, bias=True)  # train" in model.source
    assert "def forward(self, *, φ_x: torch.Tensor)" in model.source
    assert "'1st result': class_" in model.source
    assert "# class (Tanh): tanh(a)" in model.source  # the formula, from the block's spec
    assert sorted(model.state) == ["train_.W", "train_.b"]
    np.testing.assert_array_equal(model.state["train_.W"], runtime.weights["l"]["W"])
    assert [(i.name, i.ident, i.required) for i in model.inputs] == [("φ(x)", "φ_x", True)]
    assert [o.key for o in model.outputs] == ["1st result"]


def test_targets_that_only_the_loss_needs_are_optional():
    project = load(presets.path("language_model"))
    model, _ = export_mod.prepare(project, outputs=["GenerateToken"])
    assert "def forward(self, *, context: torch.Tensor, next_word: torch.Tensor | None = None)" in model.source
    assert "if next_word is None:" in model.source
    assert [(o.key, o.loss) for o in model.outputs] == [("GenerateToken", False), ("loss", True)]
    assert [(i.name, i.required) for i in model.inputs] == [("context", True), ("next word", False)]


def test_a_composite_becomes_a_class_of_its_inner_blocks_shared_by_identical_copies():
    model, _ = export_mod.prepare(load(presets.path("bert")))
    src = model.source
    assert src.count("class TransformerBlock(nn.Module):") == 1
    assert "self.attn = Attention(32, heads=4, causal=False, bias=True)" in src
    assert "self.norm1 = AddNorm(32, eps=1e-05)" in src and "self.ffn = FeedForward(" in src and "self.norm2 = AddNorm(" in src
    assert src.count("= TransformerBlock()") == 24
    assert "BERT.block24.attn.Wq" in model.state and "BERT.embed.P" in model.state


def test_the_untrained_export_holds_the_apps_initial_weights():
    project = load(presets.path("rnn_vs_lstm"))
    model, runtime = export_mod.prepare(project, seed=7)
    fresh = Runtime(project.graph, seed=7)
    lstm = project.graph.find("LSTM").id
    np.testing.assert_array_equal(model.state["LSTM.rnn.weight_ih_l0"], fresh.weights[lstm]["Wx"].T)
    np.testing.assert_array_equal(model.state["LSTM.rnn.bias_ih_l0"], fresh.weights[lstm]["b"])
    assert not model.state["LSTM.rnn.bias_hh_l0"].any()


def test_a_missing_extra_names_the_install_command(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("onnx", "safetensors") else real(name, *a))
    project = load(presets.path("two_layer_net"))
    with pytest.raises(export_mod.MissingExtraError, match=r'not installed here: onnx\. .*pip install "backprop-studio\[export\]"'):
        export_mod.export(project, "onnx", tmp_path / "m.onnx")
    code = cli.main(["export", "two_layer_net", "-o", str(tmp_path / "m.py")])
    assert code == 2
    err = capsys.readouterr().err
    assert 'not installed here: safetensors' in err and 'pip install "backprop-studio[export]"' in err
    assert list(tmp_path.iterdir()) == []


def test_a_node_that_cannot_be_exported_is_named_with_the_reason_and_nothing_is_written(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(exporters.CANNOT_EXPORT, "Sigmoid", "no torch equivalent (a test says so)")
    monkeypatch.delitem(exporters.EXPORTERS, "Sigmoid")
    with pytest.raises(export_mod.ExportError, match=r"cannot export 1 node: 'h' \(Sigmoid\): no torch equivalent"):
        export_mod.prepare(load(presets.path("two_layer_net")))
    code = cli.main(["--json", "export", "two_layer_net", "-o", str(tmp_path / "m.py")])
    assert code == 1
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event["event"] == "error" and "'h' (Sigmoid): no torch equivalent" in event["message"]
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_block_inside_a_composite_is_named_with_its_path(monkeypatch):
    monkeypatch.delitem(exporters.EXPORTERS, "AddNorm")
    with pytest.raises(export_mod.ExportError) as info:
        export_mod.prepare(load(presets.path("language_model")))
    message = str(info.value)
    assert "cannot export 2 nodes" in message
    assert "SequenceModel › 'norm1' (AddNorm): no PyTorch exporter for block type 'AddNorm' yet" in message


@pytest.mark.parametrize("argv, message", [
    (["export", "two_layer_net"], "say what to export to: --to torch"),
    (["export", "two_layer_net", "-o", "m.txt"], "-o m.txt is neither a .py nor an .onnx file"),
    (["export", "two_layer_net", "--to", "onnx", "-o", "m.py"], "-o m.py: --to onnx writes a .onnx file"),
    (["export", "two_layer_net", "--to", "onnx", "-o", "m.txt"], "-o m.txt: --to onnx writes a .onnx file"),
    (["export", "two_layer_net", "--to", "torch", "--returns", "nope", "-o", "m.py"], "cannot return 'nope': no node is named 'nope'"),
    (["export", "no_such_lesson", "--to", "torch"], "no such file"),
])
def test_cli_usage_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert message in err
    assert code == 2
    assert list(tmp_path.iterdir()) == []
