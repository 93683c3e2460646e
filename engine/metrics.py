"""Validation metrics: how well a model does, in the lesson's own terms (not only its loss).

A lesson names its metric in the ``training`` section of its file (see :mod:`engine.train`)::

    "metric": {"kind": "accuracy"}                                        # reads training.loss's inputs
    "metric": {"kind": "accuracy", "node": "LSTM loss"}                   # another loss node's inputs
    "metric": {"kind": "accuracy", "prediction": "score", "target": "y"}  # any prediction and target

With ``node`` (default: ``training.loss``) the metric reads the prediction and the target that a
loss block receives (CrossEntropy's ``logits``, NLLLoss's ``logprob``, HingeLoss's and
LogisticLoss's ``score``, SquaredLoss's ``pred``; and ``target``), and a CrossEntropy's or
NLLLoss's ``ignore_index``. A loss built from elementary blocks (Subtract, Square, Mean) names
the two nodes instead: ``prediction`` and ``target`` are node names (or ids), read at their
first output; ``ignore_index`` (optional) leaves out the positions whose class id is that value.

Kinds (:data:`KINDS`), all computed in float64 over every evaluation batch together (the
batches :meth:`engine.data.Dataset.eval_feeds` gives: the lesson's rows, in order):

- ``accuracy``: the fraction of predictions that are right. Class scores (…, C) against class
  ids (…): the highest score is the right class (a position whose id is ``ignore_index`` is not
  counted). Scores against signed labels y ∈ {−1, +1} of the same shape: sign(score) = y (a score
  of exactly 0 is wrong), the lecture's classifier.
- ``exact_match``: the fraction of examples (rows of the batch) whose every counted position is
  right: a whole sentence translated word for word. With the decoder fed the true words (as in
  training), every position right means greedy decoding gives the whole sentence.
- ``perplexity``: exp of the mean −log softmax(scores)[id] over the counted positions: the
  model is as unsure as a uniform choice among this many words; 1 is perfect. (Equal to exp of
  the CrossEntropy loss when every batch counts the same number of positions.)
- ``r2``: the coefficient of determination 1 − Σ(pred − y)² / Σ(y − ȳ)², the fraction of the
  targets' variance the predictions explain; 1 is perfect, 0 is no better than predicting ȳ.

:func:`bind` checks a metric against a compiled runtime (kinds that do not fit the shapes or the
port kinds get a :class:`MetricError` saying what would fit); :meth:`Metric.tally` then counts
over the evaluation passes. The metric reads a pass's values and changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from engine.errors import FileFormatError, GraphError

if TYPE_CHECKING:
    from engine.runtime import PortKey, Runtime

KINDS = ("accuracy", "exact_match", "perplexity", "r2")
LABELS = {"accuracy": "accuracy", "exact_match": "exact match", "perplexity": "perplexity", "r2": "R²"}
HIGHER_IS_BETTER = {"accuracy": True, "exact_match": True, "perplexity": False, "r2": True}
_KEYS = ("kind", "node", "prediction", "target", "ignore_index")
#: the input of each loss block that holds its prediction
LOSS_PREDICTION = {"CrossEntropy": "logits", "NLLLoss": "logprob", "HingeLoss": "score", "LogisticLoss": "score",
                   "SquaredLoss": "pred"}


class MetricError(FileFormatError):
    """A ``metric`` setting that is malformed or does not fit the graph."""


def normalize(spec: Any) -> dict[str, Any] | None:
    """Check a ``metric`` setting and return it in canonical form (key order fixed); None for
    no metric. Raises :class:`MetricError`."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise MetricError(f"training: 'metric' must be an object such as {{\"kind\": \"accuracy\"}}, got {spec!r}")
    unknown = sorted(set(spec) - set(_KEYS))
    if unknown:
        raise MetricError(f"training: metric has no setting {unknown[0]!r} (its settings: {', '.join(_KEYS)})")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise MetricError(f"training: metric 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    out: dict[str, Any] = {"kind": kind}
    for key in ("node", "prediction", "target"):
        if key in spec:
            if not isinstance(spec[key], str) or not spec[key]:
                raise MetricError(f"training: metric '{key}' must be the name of a node, got {spec[key]!r}")
            out[key] = spec[key]
    if ("prediction" in out) != ("target" in out):
        raise MetricError("training: a metric names both its 'prediction' and its 'target' node, or neither")
    if "node" in out and "prediction" in out:
        raise MetricError("training: a metric reads a loss 'node', or a 'prediction' and a 'target', not both")
    if "ignore_index" in spec:
        value = spec["ignore_index"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise MetricError(f"training: metric 'ignore_index' must be a whole number, got {value!r}")
        out["ignore_index"] = value
    return out


def label(kind: str) -> str:
    """How a person calls the metric: ``"exact match"``, ``"R²"``."""
    return LABELS.get(kind, kind)


def format_value(kind: str, value: float | None) -> str:
    """A metric value as a person reads it: ``"97.5 %"``, ``"1.23"``, ``"—"`` when unknown."""
    if value is None or not math.isfinite(value):
        return "—"
    if kind in ("accuracy", "exact_match"):
        return f"{100 * value:.1f} %"
    if kind == "perplexity":
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return f"{value:.3f}".replace("-", "−")


def better(kind: str, a: float | None, b: float | None) -> bool:
    """Whether metric value ``a`` is strictly better than ``b`` (None and NaN are worst)."""
    if a is None or not math.isfinite(a):
        return False
    if b is None or not math.isfinite(b):
        return True
    return a > b if HIGHER_IS_BETTER[kind] else a < b


@dataclass
class Tally:
    """Running sums over the evaluation batches (float64)."""

    kind: str
    right: float = 0.0  # accuracy: right positions; exact_match: right rows
    count: float = 0.0  # positions or rows counted; perplexity: positions
    nll: float = 0.0  # perplexity: Σ −log p(target)
    sse: float = 0.0  # r2: Σ (pred − y)²
    y_mean: float = 0.0  # r2: running mean and Σ (y − ȳ)² of the targets (Chan's merge)
    y_m2: float = 0.0

    def value(self) -> float | None:
        """The metric over everything counted; None when nothing was counted."""
        if not self.count:
            return None
        if self.kind in ("accuracy", "exact_match"):
            return self.right / self.count
        if self.kind == "perplexity":
            return math.exp(self.nll / self.count) if self.nll / self.count < 700 else math.inf
        return 1.0 - self.sse / self.y_m2 if self.y_m2 > 0 else (1.0 if self.sse == 0 else -math.inf)


@dataclass(frozen=True)
class Metric:
    """A metric bound to a compiled graph: where its prediction and target come from."""

    kind: str
    prediction: "PortKey"
    target: "PortKey"
    mode: str  # "classes": scores (…, C) and ids (…); "same": the same shape (signed labels, or regression)
    ignore_index: int | None = None
    where: str = ""  # what it reads, for messages: "the inputs of 'loss'"
    spec: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return label(self.kind)

    def format(self, value: float | None) -> str:
        return format_value(self.kind, value)

    def tally(self) -> Tally:
        return Tally(self.kind)

    def add(self, tally: Tally, values: Mapping["PortKey", np.ndarray]) -> None:
        """Count one evaluation pass (``values``: its outputs by port)."""
        pred = np.asarray(values[self.prediction], dtype=np.float64)
        target = np.asarray(values[self.target])
        if self.mode == "classes":
            ids = target.astype(np.int64)
            keep = np.ones(ids.shape, bool) if self.ignore_index is None else ids != self.ignore_index
            classes = pred.shape[-1]
            keep &= (ids >= 0) & (ids < classes)  # an id outside the scores is never right (nor counted for perplexity)
            if self.kind == "perplexity":
                shifted = pred - pred.max(axis=-1, keepdims=True)
                logz = np.log(np.exp(shifted).sum(axis=-1))
                picked = np.take_along_axis(shifted, np.where(keep, ids, 0)[..., None], axis=-1)[..., 0]
                tally.nll += float(np.sum((logz - picked)[keep]))
                tally.count += float(keep.sum())
                return
            right = (np.argmax(pred, axis=-1) == ids) | ~keep
        else:
            pred = pred.reshape(target.shape)
            y = target.astype(np.float64)
            if self.kind == "r2":
                n = y.size
                if not n:
                    return
                mean = float(y.mean())
                m2 = float(np.sum((y - mean) ** 2))
                total = tally.count + n
                delta = mean - tally.y_mean
                tally.y_m2 += m2 + delta * delta * tally.count * n / total
                tally.y_mean += delta * n / total
                tally.sse += float(np.sum((pred - y) ** 2))
                tally.count = total
                return
            keep = np.ones(y.shape, bool)
            right = np.sign(pred) == np.sign(y)
            right &= pred != 0
        if self.kind == "exact_match":
            rows = right.reshape(right.shape[0], -1) if right.ndim else right.reshape(1, 1)
            counted = keep.reshape(rows.shape).any(axis=1)
            tally.right += float(np.sum(rows.all(axis=1) & counted))
            tally.count += float(counted.sum())
        else:
            tally.right += float(np.sum(right & keep))
            tally.count += float(keep.sum())


def _port(runtime: "Runtime", name: str, what: str) -> "PortKey":
    try:
        return runtime.loss_port(name)
    except GraphError as exc:
        raise MetricError(f"training: the metric's {what} is {name!r}, but {exc}") from None


def bind(spec: Mapping[str, Any] | None, runtime: "Runtime", loss: "PortKey | None") -> Metric | None:
    """The metric ``spec`` (a normalized ``metric`` setting) bound to ``runtime``'s graph;
    ``loss`` is the training loss (the default node). None without a spec."""
    if not spec:
        return None
    spec = normalize(dict(spec))
    assert spec is not None
    kind = spec["kind"]
    program = runtime.program
    ignore = spec.get("ignore_index")
    if "prediction" in spec:
        pred, target = _port(runtime, spec["prediction"], "prediction"), _port(runtime, spec["target"], "target")
        where = f"{program.step(pred[0]).label} against {program.step(target[0]).label}"
    else:
        if "node" in spec:
            node = _port(runtime, spec["node"], "loss node")[0]
        elif loss is not None:
            node = loss[0]
        else:
            raise MetricError("training: the metric reads the inputs of training.loss, but there is none; name the "
                              "loss node (\"node\") or the \"prediction\" and \"target\" nodes")
        step = program.step(node)
        port = LOSS_PREDICTION.get(step.type)
        if port is None:
            raise MetricError(
                f"training: the metric reads the inputs of {step.label}, a {step.type}, which is not one of the loss blocks "
                f"({', '.join(LOSS_PREDICTION)}); name the \"prediction\" and \"target\" nodes instead")
        if port not in step.sources or "target" not in step.sources:
            raise MetricError(f"training: the metric reads the inputs of {step.label}, which are not all connected")
        pred, target = step.sources[port], step.sources["target"]
        if ignore is None and "ignore_index" in step.block.p:
            ignore = int(step.block.p["ignore_index"])
        where = f"the inputs of {step.label}"
    p_shape = tuple(program.step(pred[0]).out_shapes.get(pred[1], ()))
    t_shape = tuple(program.step(target[0]).out_shapes.get(target[1], ()))
    t_ids = program.step(target[0]).block.output_kind(target[1]).value == "ids"
    if len(p_shape) == len(t_shape) + 1 and p_shape[:-1] == t_shape and t_ids:
        mode = "classes"
    elif math.prod(p_shape) == math.prod(t_shape) and (len(p_shape) == len(t_shape) or p_shape[-1:] == (1,) or t_shape[-1:] == (1,)):
        mode = "same"
    else:
        raise MetricError(f"training: the metric compares {where}: the prediction has shape {p_shape} and the target "
                          f"{t_shape}; it needs class scores (…, C) with class ids (…), or the same shape")
    if mode == "same" and t_ids:
        raise MetricError(f"training: the metric compares {where}: the target holds class ids, so the prediction needs "
                          f"one score per class (…, C), but it has shape {p_shape}")
    if kind == "perplexity" and mode != "classes":
        raise MetricError(f"training: perplexity needs class scores (…, C) and class ids (…) ({where} have shapes "
                          f"{p_shape} and {t_shape}); accuracy or r2 may fit")
    if kind == "r2" and mode != "same":
        raise MetricError(f"training: r2 compares numbers with numbers of the same shape ({where} are class scores and "
                          "class ids); accuracy or perplexity may fit")
    if kind == "exact_match" and not t_shape:
        raise MetricError(f"training: exact_match counts rows of a batch, but the target of {where} is a single number")
    return Metric(kind, pred, target, mode, ignore, where, dict(spec))


__all__ = ["KINDS", "Metric", "MetricError", "Tally", "bind", "better", "format_value", "label", "normalize"]
