"""The exported PyTorch module computes what the app computes: for every block type (every example
in the registry) and every lesson, the same outputs (1e-5 in float32, 1e-10 in float64), the same
gradient for every input and weight, and the same weights after three Adam steps.

Skipped when torch is not installed (the ``export`` extra)."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import presets
from engine import blocks, cli
from engine import export as export_mod
from engine.export.torch_code import generate
from tests.engine.export_cases import block_graph
from engine.graph import Graph
from engine.blocks import Context
from engine.runtime import Runtime
from engine.serialize import Project, load, save
from engine.train import Trainer, TrainingConfig

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

TOL = {np.float32: 1e-5, np.float64: 1e-10}
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
README = Path(__file__).resolve().parents[2] / "README.md"


# --- helpers ------------------------------------------------------------------------------------------


def torch_model(graph: Graph, runtime: Runtime, **kw):
    model = generate(graph, runtime.weights, dtype=runtime.dtype, **kw)
    module = export_mod.load_module(model.source)
    net = module.Model(TORCH_DTYPE[runtime.dtype.type])
    net.load_state_dict({k: torch.from_numpy(np.asarray(v, order="C")) for k, v in model.state.items()})
    return model, net


def torch_inputs(model, feeds: dict[str, np.ndarray], only_required: bool = False) -> dict[str, "torch.Tensor"]:
    out = {}
    for info in model.inputs:
        if only_required and not info.required:
            continue
        t = torch.from_numpy(np.asarray(feeds[info.node], order="C"))
        if not info.ids:
            t.requires_grad_(True)
        out[info.ident] = t
    return out


def close(got, want, tol: float, what: str) -> None:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs the app's {want.shape}"
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=what)


def check_against_app(graph: Graph, feeds: dict[str, np.ndarray], dtype, seed: int, *, loss: str | None = None,
                      cotangent_seed: int = 0, training: bool = False) -> None:
    """Forward, and the gradient of every input and weight, torch vs the app; in training mode
    (``net.train()`` and a training context) also the buffers each updates (BatchNorm's)."""
    tol = TOL[dtype]
    runtime = Runtime(graph, seed=seed, dtype=dtype)
    model, net = torch_model(graph, runtime, loss=loss)
    net.train(training)
    kwargs = torch_inputs(model, feeds)
    out = net(**kwargs)
    run = runtime.start(feeds, context=Context(training=True, seed=seed) if training else None).run_forward()
    if training:
        updated = {node: {**ws, **run.buffer_updates().get(node, {})} for node, ws in runtime.weights.items()}
        buffers = dict(net.named_buffers())
        for key, value in generate(graph, updated, dtype=runtime.dtype).state.items():
            if key in buffers:
                close(buffers[key].numpy(), value, tol, f"buffer {key} after a training step")
    assert set(out) == {o.key for o in model.outputs}
    for info in model.outputs:
        close(out[info.key].detach().numpy(), run.values[info.source], tol, f"output {info.key!r}")
    # gradients: a random cotangent on every returned float value (the loss gets 1)
    rng = np.random.default_rng(cotangent_seed)
    seeds, tensors, cotangents = {}, [], []
    for info in model.outputs:
        value = run.values[info.source]
        if not np.issubdtype(value.dtype, np.floating):
            continue
        g = np.ones((), dtype) if info.loss else rng.uniform(-1, 1, size=value.shape).astype(dtype)
        seeds[info.source] = g
        if out[info.key].requires_grad:
            tensors.append(out[info.key])
            cotangents.append(torch.from_numpy(np.asarray(g)))
    run.run_backward(grads=seeds)
    if tensors:
        torch.autograd.backward(tensors, cotangents)
    grads = run.weight_gradients()  # buffers get none: zeros in their place, to map the names
    grads = {node: {k: grads.get(node, {}).get(k, np.zeros_like(w)) for k, w in ws.items()} for node, ws in runtime.weights.items()}
    ours = generate(graph, grads, dtype=runtime.dtype).state
    params = dict(net.named_parameters())
    assert set(ours) <= set(params) | {k for k, _ in net.named_buffers()}
    for key, g in ours.items():
        if key not in params:  # a buffer: Attention's bk, whose gradient is exactly zero here too
            assert not np.any(g), f"{key} is not trained in torch, but its gradient here is not zero"
            continue
        grad = params[key].grad
        close(np.zeros_like(g) if grad is None else grad.numpy(), g, tol, f"gradient of weight {key}")
    for info in model.inputs:
        if info.ids:
            continue
        grad = kwargs[info.ident].grad
        want = run.grads.get((info.node, "out"), np.zeros_like(feeds[info.node]))
        close(np.zeros_like(want) if grad is None else grad.numpy(), want, tol, f"gradient of input {info.name!r}")


# --- every block -----------------------------------------------------------------------------------------


def _examples():
    for type_id in blocks.names():
        for i, example in enumerate(blocks.spec(type_id).examples):
            yield pytest.param(type_id, i, example, id=f"{type_id}-{i}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("type_id, index, example", list(_examples()))
def test_every_block_matches_the_app(type_id, index, example, dtype):
    """In the example's mode; a training example with dropout runs in evaluation mode, since torch
    draws its own dropout masks (test_dropout_in_training_drops_at_the_same_rate checks those)."""
    seed = zlib.crc32(f"{type_id}-{index}".encode())
    graph, feeds = block_graph(type_id, example, dtype, seed)
    dropout = type_id == "Dropout" or example.params.get("dropout", 0) > 0
    check_against_app(graph, feeds, dtype, seed, training=example.training and not dropout)


def test_dropout_in_training_drops_at_the_same_rate():
    g = Graph()
    g.add_node("Input", {"shape": (200, 50)}, node_id="x", name="x")
    g.add_node("Dropout", {"p": 0.3}, node_id="d", name="d")
    g.add_node("Output", node_id="o", name="out")
    g.connect("x", "out", "d", "x")
    g.connect("d", "out", "o", "x")
    model, net = torch_model(g, Runtime(g, dtype=np.float64))
    assert "F.dropout(x, p=0.3, training=self.training)" in model.source
    x = torch.ones(200, 50, dtype=torch.float64)
    kept = net(x=x)["out"]
    assert set(np.unique(kept.numpy()).round(6)) == {0.0, round(1 / 0.7, 6)}
    assert abs(float((kept == 0).double().mean()) - 0.3) < 0.02
    net.eval()
    assert torch.equal(net(x=x)["out"], x)


def test_every_block_type_has_an_example_to_check():
    assert all(blocks.spec(t).examples for t in blocks.names())


@pytest.mark.parametrize("dtype", DTYPES)
def test_tied_generate_token_shares_the_embedding_and_adds_both_gradients(dtype):
    g = Graph()
    g.add_node("Input", {"shape": (2, 5), "dtype": "ids"}, node_id="ids", name="ids")
    g.add_node("EmbedToken", {"vocab": 7, "dim": 4, "position": "sinusoidal"}, node_id="embed", name="embed")
    g.add_node("Tanh", node_id="t", name="t")
    g.add_node("GenerateToken", {"vocab": 7, "tie_to": "embed"}, node_id="gen", name="generate")
    g.add_node("Output", node_id="o", name="logits")
    g.connect("ids", "out", "embed", "ids")
    g.connect("embed", "out", "t", "a")
    g.connect("t", "out", "gen", "x")
    g.connect("gen", "logits", "o", "x")
    feeds = {"ids": np.random.default_rng(3).integers(0, 7, size=(2, 5))}
    check_against_app(g, feeds, dtype, seed=5)
    model, _ = torch_model(g, Runtime(g, dtype=dtype))
    assert "self.generate(t, E=self.embed.E)" in model.source
    assert sorted(model.state) == ["embed.E", "generate.b"]


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU"])
def test_the_unrolled_network_exports_with_one_shared_cell(cell):
    """SequenceRNN's drill-down graph: TimeStep, RNNCells tied to the first, StackSteps, a zero
    Constant start; the export calls the first cell's module at every step."""
    graph = blocks.create("SequenceRNN", cell=cell, hidden=3).build({"x": (2, 4, 3)})
    feeds = {"x": np.random.default_rng(1).uniform(-1, 1, size=(2, 4, 3))}
    check_against_app(graph, feeds, np.float64, seed=2)
    model, _ = torch_model(graph, Runtime(graph, dtype=np.float64))
    assert model.source.count("self.cell_1(") == 4
    assert all(k.startswith("cell_1.") for k in model.state)


# --- every lesson ----------------------------------------------------------------------------------------


def lesson(name: str) -> tuple[Project, TrainingConfig, dict[str, np.ndarray]]:
    from engine import data as data_mod

    project = load(presets.path(name))
    config = TrainingConfig.from_dict(project.training)
    feeds = data_mod.bind(project.data, project.graph).first_feeds()
    return project, config, feeds


LESSONS = [pytest.param(n, marks=pytest.mark.slow) if n == "bert" else n for n in presets.names()]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LESSONS)
def test_every_lesson_matches_the_app(name, dtype):
    project, config, feeds = lesson(name)
    runtime = Runtime(project.graph, dtype=dtype)
    check_against_app(project.graph, runtime.resolve_feeds(feeds), dtype, config.seed, loss=config.loss)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LESSONS)
def test_three_adam_steps_in_torch_equal_three_in_the_trainer(name, dtype):
    """Same batches, Adam with weight decay, clipping where the lesson clips. float64 matches to
    1e-10. In float32, Adam's first steps move each weight by about lr·g/(|g| + eps), so where a
    gradient is as small as eps (1e-8) float32 rounding in g shows in the step: 1e-4 there. And
    where a gradient is within float32 rounding of zero, its sign, and with it the step, may go
    either way (summed in another order, e.g. by AVX-512 kernels: 3 of BERT's 2,048 W1 weights of
    block 6 on such a machine): those few weights may differ by up to 2·lr a step
    (:func:`close_after_adam`)."""
    project, config, _ = lesson(name)
    tol = {np.float32: 1e-4, np.float64: 1e-10}[dtype]
    for node in project.graph.nodes.values():  # torch draws its own dropout masks: no dropout here
        if node.params.get("dropout"):
            project.graph.set_params(node.id, {"dropout": 0.0})
    optimizer = {"type": "adam", "lr": config.optimizer.get("lr", 1e-3), "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.01}
    project = dataclasses.replace(project, training={**project.training, "optimizer": optimizer, "dtype": np.dtype(dtype).name})
    trainer = Trainer.from_project(project)
    model, net = torch_model(project.graph, trainer.runtime, loss=config.loss)
    net.train()  # BatchNorm on batch statistics, as the trainer
    opt = torch.optim.Adam(net.parameters(), lr=optimizer["lr"], betas=tuple(optimizer["betas"]), eps=optimizer["eps"],
                           weight_decay=optimizer["weight_decay"])
    for step in range(3):
        feeds = trainer.runtime.resolve_feeds(trainer.dataset.batch_feeds(step, trainer.config.seed))
        loss = net(**torch_inputs(model, feeds))[model.outputs[-1].key]
        opt.zero_grad()
        loss.backward()
        if trainer.config.clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), trainer.config.clip)
        opt.step()
        record = trainer.step()
        assert abs(loss.item() - record.loss) <= TOL[dtype] * max(1.0, abs(record.loss))
    ours = generate(project.graph, trainer.runtime.weights, dtype=trainer.runtime.dtype).state
    theirs = net.state_dict()  # weights and buffers (BatchNorm's running statistics)
    for key, value in ours.items():
        if dtype is np.float32:
            close_after_adam(theirs[key].numpy(), value, tol, 2 * optimizer["lr"] * 3, f"{key} after three Adam steps")
        else:
            close(theirs[key].numpy(), value, tol, f"{key} after three Adam steps")


FLIPS = 0.005  # at most this share of a tensor's weights may have taken an Adam step of the other sign


def close_after_adam(got, want, tol: float, flipped: float, what: str) -> None:
    """``got`` equals ``want`` to ``tol`` (as :func:`close`), except at a few weights (≤ FLIPS of
    them, and at least one allowed) whose Adam steps went the other way, by at most ``flipped``."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs the app's {want.shape}"
    diff = np.abs(got - want)
    off = diff > tol + tol * np.abs(want)
    assert off.sum() <= max(1, FLIPS * off.size), f"{what}: {off.sum()} of {off.size} differ by more than {tol:g}"
    assert not off.any() or diff[off].max() <= flipped, f"{what}: {diff[off].max():.3g} off (a flipped step is ≤ {flipped:g})"


# --- files --------------------------------------------------------------------------------------------------


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(f"exported_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_export_writes_a_module_that_loads_its_weights_both_ways(tmp_path, capsys):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    target = tmp_path / "tl.py"
    assert cli.main(["export", "two_layer_net", "--to", "torch", "-o", str(target)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {target}" in printed and f"wrote {tmp_path / 'tl.safetensors'}" in printed
    assert "checked: on the first batch the module matches the app's forward pass" in printed
    module = _import(target)
    project, config, feeds = lesson("two_layer_net")
    runtime = Runtime(project.graph, seed=config.seed)
    want = float(runtime.forward(feeds).values[runtime.loss_port("loss")])
    kwargs = {"φ_x": torch.from_numpy(runtime.resolve_feeds(feeds)[project.graph.find("φ(x)").id]),
              "y": torch.from_numpy(runtime.resolve_feeds(feeds)[project.graph.find("y").id])}
    a = module.Model.load()
    b = module.Model()
    b.load_state_dict(safetensors_torch.load_file(tmp_path / "tl.safetensors"))
    for net in (a, b):
        assert net.V.dtype == torch.float32
        assert abs(net(**kwargs)["loss"].item() - want) <= 1e-6
    assert module.Model.load(dtype=torch.float64).V.dtype == torch.float64


def test_a_trained_container_exports_its_trained_weights(tmp_path):
    pytest.importorskip("safetensors")
    project = load(presets.path("convnet"))
    trainer = Trainer.from_project(project, steps=2)
    trainer.run(2)
    save(trainer.to_project(project), tmp_path / "trained.bps")
    result = export_mod.export(load(tmp_path / "trained.bps"), "torch", tmp_path / "convnet.py")
    assert "weights trained for 2 steps" in (tmp_path / "convnet.py").read_text(encoding="utf-8")
    assert result.max_difference is not None and result.max_difference < 1e-5
    net = _import(tmp_path / "convnet.py").Model.load()
    trained = trainer.weights
    node = project.graph.find("ConvNet").id
    close(net.state_dict()["ConvNet.conv1.W"].numpy(), trained[node]["conv1/W"], 0, "trained conv1/W")


def _readme_example() -> tuple[str, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Export", 1)[1]
    command = re.search(r"```\n(backprop-studio export [^\n#]*)", section).group(1)
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return command, code


def test_the_readme_example_trains_the_exported_model_with_plain_torch(tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    command, code = _readme_example()
    monkeypatch.chdir(tmp_path)
    args = command.split()[1:]
    assert cli.main(args) == 0
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    finally:
        sys.modules.pop("model", None)
    losses = namespace["losses"]
    assert len(losses) == 300 and losses[-1] < 0.2 * losses[0]
