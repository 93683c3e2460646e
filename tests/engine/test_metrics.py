"""Validation metrics (engine.metrics) against hand computations, their settings and errors, and
what the trainer adds for the editor: the metric in evaluations and results, a compact history,
traced steps with the same bits, checkpoints that resume exactly, and the kernel plan."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import presets
from engine import metrics, serialize
from engine.errors import NonFiniteError
from engine.graph import Graph
from engine.runtime import Runtime
from engine.serialize import Project
from engine.train import History, StepRecord, Trainer, TrainingError, normalize


def _classifier(batch: int = 4, length: int | None = 3, classes: int = 5, ignore: int = -1) -> tuple[Runtime, dict]:
    g = Graph()
    shape = (batch, length) if length else (batch,)
    s = g.add_node("Input", {"shape": (*shape, classes)}, name="scores")
    t = g.add_node("Input", {"shape": shape, "dtype": "ids"}, name="ids")
    loss = g.add_node("CrossEntropy", {"ignore_index": ignore}, name="loss")
    g.connect(s.id, "out", loss.id, "logits")
    g.connect(t.id, "out", loss.id, "target")
    return Runtime(g), {"scores": s.id, "ids": t.id, "loss": loss.id}


def _values(runtime: Runtime, feeds: dict) -> dict:
    return runtime.forward(feeds).values


def test_settings_are_checked_and_canonical() -> None:
    spec = {"target": "y", "kind": "accuracy", "prediction": "score"}
    canon = metrics.normalize(spec)
    assert list(canon) == ["kind", "prediction", "target"] and metrics.normalize(canon) == canon
    assert normalize({"metric": {"kind": "perplexity"}})["metric"] == {"kind": "perplexity"}
    for bad, message in [
        ("accuracy", "must be an object"),
        ({"kind": "f1"}, "must be one of accuracy, exact_match, perplexity, r2"),
        ({"kind": "accuracy", "prediction": "s"}, "both its 'prediction' and its 'target'"),
        ({"kind": "accuracy", "node": "loss", "prediction": "s", "target": "y"}, "not both"),
        ({"kind": "accuracy", "ignore_index": 1.5}, "whole number"),
        ({"kind": "accuracy", "colour": 1}, "no setting 'colour'"),
    ]:
        with pytest.raises(TrainingError, match=message):
            normalize({"metric": bad})


def test_accuracy_exact_match_and_perplexity_of_class_scores() -> None:
    runtime, ids = _classifier(ignore=0)
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((4, 3, 5)).astype(np.float32)
    target = rng.integers(0, 5, (4, 3))
    target[0, 2] = 0  # ignored
    target[1] = np.argmax(scores[1], axis=-1)  # a row entirely right
    target[2, :2] = np.argmax(scores[2, :2], axis=-1)
    target[2, 2] = 0  # right where counted: a whole row right
    values = _values(runtime, {ids["scores"]: scores, ids["ids"]: target})
    keep = target != 0
    right = np.argmax(scores, axis=-1) == target
    for kind, expected in [
        ("accuracy", (right & keep).sum() / keep.sum()),
        # rows with nothing counted (all padding) are not examples
        ("exact_match", np.mean([bool(np.all(right[r][keep[r]])) for r in range(4) if keep[r].any()])),
    ]:
        m = metrics.bind({"kind": kind}, runtime, (ids["loss"], "out"))
        assert m is not None and m.ignore_index == 0 and m.mode == "classes"
        tally = m.tally()
        m.add(tally, values)
        assert tally.value() == pytest.approx(expected)
    # perplexity = exp(mean −log p) = exp(the CrossEntropy loss) over the counted positions
    m = metrics.bind({"kind": "perplexity"}, runtime, (ids["loss"], "out"))
    tally = m.tally()
    m.add(tally, values)
    assert tally.value() == pytest.approx(math.exp(float(values[(ids["loss"], "out")])), rel=1e-5)


def test_tallies_over_batches_equal_one_big_batch() -> None:
    rng = np.random.default_rng(2)
    small, si = _classifier(batch=2, length=None)
    big, bi = _classifier(batch=4, length=None)
    scores = rng.standard_normal((4, 5)).astype(np.float32)
    target = rng.integers(0, 5, 4)
    for kind in ("accuracy", "perplexity", "exact_match"):
        ms, mb = metrics.bind({"kind": kind}, small, (si["loss"], "out")), metrics.bind({"kind": kind}, big, (bi["loss"], "out"))
        ts, tb = ms.tally(), mb.tally()
        for rows in (slice(0, 2), slice(2, 4)):
            ms.add(ts, _values(small, {si["scores"]: scores[rows], si["ids"]: target[rows]}))
        mb.add(tb, _values(big, {bi["scores"]: scores, bi["ids"]: target}))
        assert ts.value() == pytest.approx(tb.value())


def test_signed_accuracy_and_r2_of_named_nodes() -> None:
    g = Graph()
    p = g.add_node("Input", {"shape": (6,)}, name="score")
    y = g.add_node("Input", {"shape": (6,)}, name="y")
    r = g.add_node("Subtract", {}, name="r")
    g.connect(p.id, "out", r.id, "a")
    g.connect(y.id, "out", r.id, "b")
    runtime = Runtime(g, dtype=np.float64)
    score = np.array([0.5, -2.0, 0.0, 3.0, -0.1, 1.0])
    labels = np.array([1.0, -1.0, 1.0, -1.0, -1.0, 1.0])
    values = _values(runtime, {p.id: score, y.id: labels})
    acc = metrics.bind({"kind": "accuracy", "prediction": "score", "target": "y"}, runtime, None)
    tally = acc.tally()
    acc.add(tally, values)
    assert acc.mode == "same" and tally.value() == pytest.approx(4 / 6)  # a score of exactly 0 is wrong
    r2 = metrics.bind({"kind": "r2", "prediction": "score", "target": "y"}, runtime, None)
    t1, t2 = r2.tally(), r2.tally()
    r2.add(t1, values)
    half = {k: v for k, v in values.items()}
    for rows in (slice(0, 3), slice(3, 6)):  # Chan's merge of two halves = the whole
        half[(p.id, "out")], half[(y.id, "out")] = score[rows], labels[rows]
        r2.add(t2, half)
    expected = 1 - np.sum((score - labels) ** 2) / np.sum((labels - labels.mean()) ** 2)
    assert t1.value() == pytest.approx(expected) and t2.value() == pytest.approx(expected)


def test_metrics_that_do_not_fit_say_what_would() -> None:
    runtime, ids = _classifier()
    with pytest.raises(metrics.MetricError, match="r2 compares numbers with numbers of the same shape"):
        metrics.bind({"kind": "r2"}, runtime, (ids["loss"], "out"))
    with pytest.raises(metrics.MetricError, match="the metric's loss node is 'nope', but"):
        metrics.bind({"kind": "accuracy", "node": "nope"}, runtime, None)
    project = serialize.load(presets.path("two_layer_net"))
    spec = dict(project.training, metric={"kind": "accuracy"})  # its loss is a Mean, not a loss block
    with pytest.raises(TrainingError, match=r"'loss', a Mean, which is not one of the loss blocks .* name the \"prediction\""):
        Trainer(project.graph, project.data, spec)
    spec = dict(project.training, metric={"kind": "perplexity", "prediction": "score", "target": "y"})
    with pytest.raises(TrainingError, match="perplexity needs class scores"):
        Trainer(project.graph, project.data, spec)
    assert metrics.format_value("accuracy", 0.975) == "97.5 %" and metrics.format_value("r2", -0.5) == "−0.500"
    assert metrics.better("perplexity", 1.2, 3.0) and not metrics.better("accuracy", float("nan"), 0.1)


@pytest.mark.parametrize("name", presets.names())
def test_every_lesson_defines_a_metric_that_binds(name: str) -> None:
    project = serialize.load(presets.path(name))
    assert project.training.get("metric"), f"{name} defines no metric"
    trainer = Trainer.from_project(project)
    assert trainer.metric is not None and trainer.metric.kind in metrics.KINDS


def test_run_reports_the_metric_before_and_after() -> None:
    trainer = Trainer.from_project(serialize.load(presets.path("two_layer_net")))
    result = trainer.run()
    assert result.metric == "accuracy" and result.metric_initial < 0.8 and result.metric_final == 1.0
    assert result.to_json()["metric"] == {"kind": "accuracy", "initial": result.metric_initial, "final": 1.0}
    ev = trainer.evaluation()
    assert ev.step == 500 and ev.metric == 1.0 and ev.loss == pytest.approx(result.final_loss)


# --- what the editor's training uses --------------------------------------------------------------


def test_history_is_compact_and_views_do_not_change() -> None:
    h = History()
    for k in range(1, 10_001):
        h.append(StepRecord(k, 1.0 / k, 0.5, 0.001))
    assert len(h) == 10_000 and h.nbytes <= 32 * 16_384  # 32 bytes a step (doubling: at most twice that)
    view = h["loss"]
    assert not view.flags.writeable and view[-1] == pytest.approx(1e-4)
    h.truncate(10)
    h.append(StepRecord(11, 42.0, 0.5, 0.001))
    assert view[10] == pytest.approx(1 / 11) and h["loss"][10] == 42.0 and list(h["step"]) == list(range(1, 12))
    with pytest.raises(TrainingError, match="different lengths"):
        History({"step": np.arange(1, 4), "loss": np.zeros(2), "grad_norm": np.zeros(3), "seconds": np.zeros(3)})


def _lesson(name: str = "convnet", **overrides) -> Trainer:
    return Trainer.from_project(serialize.load(presets.path(name)), **overrides)


def test_a_traced_step_computes_the_same_bits() -> None:
    # convnet: BatchNorm (buffers) and Dropout (the training context) both in the step
    a, b = _lesson(), _lesson()
    for k in range(3):
        ra, rb = a.step(trace=k == 1), b.step()
        assert ra.loss == rb.loss and ra.grad_norm == rb.grad_norm
    assert len(ra.events) == 0

    def flat(t: Trainer) -> list[np.ndarray]:
        return [w for ws in t.checkpoint().weights.values() for w in ws.values()]
    assert all(np.array_equal(x, y) for x, y in zip(flat(a), flat(b)))  # BatchNorm's running statistics too
    traced = a.step(trace=True)
    phases = [e.phase for e in traced.events]
    assert phases[0] == "forward" and phases[-1] == "backward" and traced.loss == b.step().loss


def test_restoring_a_checkpoint_continues_exactly() -> None:
    trainer = _lesson("two_layer_net")
    for _ in range(10):
        trainer.step()
    cp = trainer.checkpoint()
    ahead = [trainer.step().loss for _ in range(5)]
    trainer.restore(cp)
    assert trainer.step_count == 10 and len(trainer.history["loss"]) == 10
    assert [trainer.step().loss for _ in range(5)] == ahead
    later = trainer.checkpoint()
    trainer.restore(cp)
    with pytest.raises(TrainingError, match="cannot go back to step 15"):
        trainer.restore(later)


def test_a_diverging_step_names_its_step_and_node() -> None:
    project = serialize.load(presets.path("two_layer_net"))
    project = dataclasses.replace(project, training=dict(project.training, optimizer={"type": "sgd", "lr": 1e4}))
    trainer = Trainer.from_project(project)
    with pytest.raises(NonFiniteError) as info:
        for _ in range(200):
            trainer.step()
    err = info.value
    assert err.step == trainer.step_count + 1 and str(err).startswith(f"step {err.step}: ")
    assert err.node in project.graph.nodes and err.phase in ("forward", "backward", "update")


def test_ready_plans_the_configured_workload() -> None:
    trainer = _lesson("two_layer_net")
    assert trainer.ready().backend in ("numba", "numpy")
    assert trainer.ready(passes=1).backend == "numpy"  # one pass never pays for starting Numba


def test_config_round_trips_to_a_training_section() -> None:
    project = serialize.load(presets.path("rnn_vs_lstm"))
    trainer = Trainer.from_project(project)
    assert trainer.config.to_dict() == normalize(project.training)
    assert Project  # (imported for the type of from_project)
