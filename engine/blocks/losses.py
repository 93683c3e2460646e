"""Losses: a prediction and a ``target`` in, one scalar out (the mean over examples and tokens).

The three regression/binary losses take a float or integer ``target`` of exactly the prediction's
shape. A float target is an ordinary input, so it gets its true gradient (a constant data target
simply never uses it); an integer target gets none. CrossEntropy takes integer class ids.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from engine.blocks import register
from engine.blocks._base import Arrays, Block, Category, Example, Kind, Param, ParamType, Port, Shape, shape_str
from engine.errors import ParamError, RuntimeFailure
from engine.kernels import softmax


def _scalar(value: float, dtype: np.dtype) -> np.ndarray:
    """A 0-d array in the input's float dtype (losses must not upcast float32 to float64)."""
    return np.asarray(value, dtype=dtype)


class _PairLoss(Block):
    """A loss of an input and a same-shaped ``target``: ``mean(ℓ(input, target))``."""

    category = Category.LOSSES
    outputs = (Port("out", doc="the loss: a scalar, the mean over every element"),)
    pred_port = "pred"

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        pred = self.require(in_shapes, self.pred_port)
        target = self.require(in_shapes, "target")
        if tuple(pred) != tuple(target):
            raise self.shape_error(
                f"input '{self.pred_port}' has shape {shape_str(pred)} but 'target' has shape "
                f"{shape_str(target)}; they must be the same shape (one target per prediction)"
            )
        return {"out": ()}

    def _pair(self, inputs: Arrays) -> tuple[np.ndarray, np.ndarray]:
        pred = np.asarray(inputs[self.pred_port])
        # NOTE: an int64 target would promote a float32 prediction to float64: cast it first.
        target = np.asarray(inputs["target"], dtype=pred.dtype)
        if pred.shape != target.shape:
            raise self.shape_error(
                f"input '{self.pred_port}' has shape {shape_str(pred.shape)} but 'target' has shape {shape_str(target.shape)}"
            )
        return pred, target

    @staticmethod
    def _count(a: np.ndarray) -> int:
        return max(a.size, 1)  # an empty batch has loss 0, not 0/0


@register
class SquaredLoss(_PairLoss):
    """Squared error, averaged over every element: the regression loss.

    Example: pred (4, 3), target (4, 3) → out () = mean((pred − target)²)."""

    type_id = "SquaredLoss"
    formula = "L = mean((pred − target)²);  ∂L/∂pred = 2(pred − target)/n"
    inputs = (Port("pred", doc="the prediction"), Port("target", Kind.ANY, doc="the true value, same shape"))
    pred_port = "pred"
    examples = (
        Example({}, {"pred": (4, 3), "target": (4, 3)}),
        Example({}, {"pred": (5,), "target": (5,)}, {"target": (-2.0, 2.0)}),
    )

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        pred, target = self._pair(inputs)
        diff = pred - target
        return {"out": _scalar(np.mean(diff * diff) if diff.size else 0.0, pred.dtype)}, {"diff": diff}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        diff = saved["diff"]
        dpred = diff * (np.asarray(gout["out"], diff.dtype) * diff.dtype.type(2.0 / self._count(diff)))
        return {"pred": dpred, "target": -dpred}, {}


@register
class HingeLoss(_PairLoss):
    """Hinge loss of a score with labels y ∈ {−1, +1}, averaged over the examples.

    The margin is ``score·y``; the loss is zero once the margin reaches 1. At the kink the
    gradient is 0 (the subgradient torch's ``relu`` picks). Example: score (8,), target (8,) → out ()."""

    type_id = "HingeLoss"
    formula = "L = mean(max(1 − score·y, 0));  ∂L/∂score = −y·1[score·y < 1]/n"
    inputs = (Port("score", doc="the predicted score"), Port("target", Kind.ANY, doc="the label y ∈ {−1, +1}, same shape"))
    pred_port = "score"
    examples = (
        Example({}, {"score": (8,), "target": (8,)}, {"score": (-2.0, 2.0)}, {"target": (-1.0, 1.0)}),
        Example({}, {"score": (3, 4), "target": (3, 4)}, {"score": (-2.0, 2.0)}, {"target": (-1.0, 1.0)}),
    )

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        score, y = self._pair(inputs)
        slack = 1 - score * y
        active = slack > 0
        loss = np.mean(np.where(active, slack, 0)) if slack.size else 0.0
        return {"out": _scalar(loss, score.dtype)}, {"score": score, "y": y, "active": active}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        score, y, active = saved["score"], saved["y"], saved["active"]
        dt = score.dtype
        k = np.asarray(gout["out"], dt) * dt.type(-1.0 / self._count(score))
        dslack = np.where(active, k, dt.type(0))  # d L / d (score·y)
        return {"score": dslack * y, "target": dslack * score}, {}


@register
class LogisticLoss(_PairLoss):
    """Logistic loss of a score with labels y ∈ {−1, +1}, averaged over the examples.

    Computed stably as ``max(−m, 0) + log(1 + e^(−|m|))`` with margin ``m = score·y``, so a huge
    margin of either sign neither overflows nor loses the loss. Example: score (8,), target (8,) → out ()."""

    type_id = "LogisticLoss"
    formula = "L = mean(log(1 + e^(−score·y)));  ∂L/∂score = −y·σ(−score·y)/n"
    inputs = (Port("score", doc="the predicted score"), Port("target", Kind.ANY, doc="the label y ∈ {−1, +1}, same shape"))
    pred_port = "score"
    examples = (
        Example({}, {"score": (8,), "target": (8,)}, {"score": (-3.0, 3.0)}, {"target": (-1.0, 1.0)}),
        Example({}, {"score": (3, 4), "target": (3, 4)}, {"score": (-3.0, 3.0)}, {"target": (-1.0, 1.0)}),
    )

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        score, y = self._pair(inputs)
        m = score * y
        e = np.exp(-np.abs(m))  # in (0, 1]: never overflows
        per = np.maximum(-m, 0) + np.log1p(e)
        # σ(−m), from the same e: 1/(1+e^m) = e/(1+e) for m ≥ 0 and 1/(1+e) for m < 0.
        sig_neg = np.where(m >= 0, e, 1) / (1 + e)
        loss = np.mean(per) if per.size else 0.0
        return {"out": _scalar(loss, score.dtype)}, {"score": score, "y": y, "sig_neg": sig_neg}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        score, y, sig_neg = saved["score"], saved["y"], saved["sig_neg"]
        dt = score.dtype
        dm = sig_neg * (np.asarray(gout["out"], dt) * dt.type(-1.0 / self._count(score)))  # d L / d margin
        return {"score": dm * y, "target": dm * score}, {}


def _class_ids(block: Block, logits: np.ndarray, target: np.ndarray, ignore: int, port: str) -> np.ndarray:
    """``target`` as int64 class ids, checked against the C classes on the last axis of ``logits``."""
    classes = logits.shape[-1]
    if target.shape != logits.shape[:-1]:
        raise block.shape_error(
            f"input 'target' has shape {shape_str(target.shape)}, '{port}' needs {shape_str(logits.shape[:-1])}"
        )
    if not np.issubdtype(target.dtype, np.integer):
        if target.size and not np.all(target == np.round(target)):
            raise RuntimeFailure(f"{block.type_id}: input 'target' must hold whole class ids, got {target.dtype} values")
        target = target.astype(np.int64)
    bad = (target != ignore) & ((target < 0) | (target >= classes))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise RuntimeFailure(
            f"{block.type_id}: target class id {int(target[where])} at position {where} is outside "
            f"0…{classes - 1} ('{port}' has {classes} classes); fix the labels or widen the last layer "
            f"(ignore_index is {ignore})"
        )
    return target


class _ClassLoss(Block):
    """A loss of per-class scores (last axis) and integer class ids, with ``ignore_index`` and
    optional per-class ``weight``s (torch's ``weight``): the mean is weighted,
    Σ w[t_i] ℓ_i / Σ w[t_i] over the counted positions."""

    category = Category.LOSSES
    outputs = (Port("out", doc="the loss: a scalar, the (weighted) mean over counted positions"),)
    score_port = "logits"

    def check_params(self) -> None:
        w = np.asarray(self.p["weight"], dtype=np.float64)
        if w.ndim != 1 or (w.size and np.any(w < 0)):
            raise ParamError(
                f"{self.type_id}: parameter 'weight' must be a list of class weights ≥ 0, one per class "
                f"(empty: every class weighs 1), got {self.p['weight']!r}"
            )

    def _weight(self, dtype: Any = np.float64) -> np.ndarray | None:
        return np.asarray(self.p["weight"], dtype=dtype) if len(self.p["weight"]) else None

    def infer_shapes(self, in_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
        scores = self.require(in_shapes, self.score_port)
        target = self.require(in_shapes, "target")
        if not scores or not scores[-1]:
            raise self.shape_error(
                f"input '{self.score_port}' needs a class axis (last dimension) with at least one class, "
                f"got {shape_str(scores)}"
            )
        if tuple(target) != tuple(scores[:-1]):
            raise self.shape_error(
                f"input 'target' should have shape {shape_str(scores[:-1])} (the shape of '{self.score_port}' "
                f"{shape_str(scores)} without its class axis), got {shape_str(target)}"
            )
        n = len(self.p["weight"])
        if n and n != scores[-1]:
            raise self.shape_error(
                f"parameter 'weight' lists {n} class weights, but '{self.score_port}' {shape_str(scores)} has "
                f"{scores[-1]} classes; give one weight per class"
            )
        return {"out": ()}


_IGNORE = Param("ignore_index", ParamType.INT, -1, "target value that marks a position to skip (padding)")
_WEIGHT = Param("weight", ParamType.TENSOR, (), "one weight ≥ 0 per class, torch's weight (empty: every class weighs 1)")


@register
class CrossEntropy(_ClassLoss):
    """Softmax cross-entropy with integer class ids, averaged over the counted positions.

    ``logits`` (..., C) score C classes at every position; ``target`` (...) holds the true class
    id there, or ``ignore_index`` for padding, which adds nothing to the loss or to the count.
    If every position is ignored the loss is 0 and so is every gradient (torch gives NaN).

    ``label_smoothing`` ε mixes the one-hot target with the uniform distribution, as
    ``nn.CrossEntropyLoss(label_smoothing=ε)``: ℓ = (1 − ε)(−log p_t) + (ε/C) Σ_c (−log p_c).
    ``weight`` w gives each class a weight: ℓ_i is scaled by w[t_i] (the smoothing term by w[c]
    inside its sum) and the mean divides by Σ w[t_i] instead of the count, as torch does.
    Example: logits (2, 5, 7), target (2, 5) → out ()."""

    type_id = "CrossEntropy"
    formula = "L = mean over kept positions of −log softmax(logits)[target];  ∂L/∂logits = (softmax − onehot)/n"
    inputs = (
        Port("logits", doc="unnormalised class scores, classes on the last axis"),
        Port("target", Kind.IDS, doc="the true class id at each position (or ignore_index)"),
    )
    params = (
        _IGNORE,
        Param("label_smoothing", ParamType.FLOAT, 0.0, "ε: the target puts 1 − ε on the true class and ε/C on every class",
              minimum=0.0, maximum=1.0),
        _WEIGHT,
    )
    examples = (
        Example({}, {"logits": (4, 5), "target": (4,)}, {"logits": (-3.0, 3.0), "target": (0, 5)}),
        Example({}, {"logits": (2, 3, 6), "target": (2, 3)}, {"target": (-1, 6)}),
        Example({"ignore_index": 0}, {"logits": (6, 3), "target": (6,)}, {"target": (0, 3)}),
        Example({}, {"logits": (7,), "target": ()}, {"target": (0, 7)}),
        Example({"label_smoothing": 0.2}, {"logits": (5, 4), "target": (5,)}, {"target": (-1, 4)}),
        Example({"weight": [1.0, 2.0, 0.5], "label_smoothing": 0.1}, {"logits": (2, 4, 3), "target": (2, 4)}, {"target": (-1, 3)}),
    )

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        logits = np.asarray(inputs["logits"])
        ignore = self.p["ignore_index"]
        target = _class_ids(self, logits, np.asarray(inputs["target"]), ignore, "logits")
        total, prob, den = softmax.cross_entropy(logits, target, ignore, self._weight(), self.p["label_smoothing"])
        loss = total / den if den else 0.0
        return {"out": _scalar(loss, logits.dtype)}, {"prob": prob, "target": target, "den": den}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        prob, target, den = saved["prob"], saved["target"], saved["den"]
        dt = prob.dtype
        if not den:
            return {"logits": np.zeros_like(prob)}, {}
        classes = prob.shape[-1]
        flat_t = target.reshape(-1)
        d = prob.reshape(-1, classes).copy()
        keep = flat_t != self.p["ignore_index"]
        rows = np.nonzero(keep)[0]
        eps, w = self.p["label_smoothing"], self._weight(dt)
        if w is None and not eps:
            d[rows, flat_t[rows]] -= 1
        else:
            # (1 − ε) w_t (p − onehot_t) + (ε/C)(W p − w), W = Σ_c w_c
            w = np.ones(classes, dt) if w is None else w
            p = d[rows]
            onehot = np.zeros_like(p)
            onehot[np.arange(rows.size), flat_t[rows]] = 1
            wt = w[flat_t[rows]][:, None]
            d[rows] = dt.type(1.0 - eps) * wt * (p - onehot) + dt.type(eps / classes) * (w.sum(dtype=dt) * p - w[None, :])
        d[~keep] = 0
        d *= np.asarray(gout["out"], dt) * dt.type(1.0 / den)
        return {"logits": d.reshape(prob.shape)}, {}


@register
class NLLLoss(_ClassLoss):
    """Negative log-likelihood of log-probabilities: the second half of CrossEntropy.

    ``logprob`` (..., C) holds log-probabilities (LogSoftmax's output); the loss is the mean over
    counted positions of −logprob[target], weighted by ``weight`` as in CrossEntropy, and
    ``target == ignore_index`` marks a position to skip. NLLLoss(LogSoftmax(x)) equals
    CrossEntropy(x) and stays finite where Log(Softmax(x)) gives −∞. Matches ``nn.NLLLoss``.
    Example: logprob (4, 5), target (4,) → out ()."""

    type_id = "NLLLoss"
    formula = "L = Σ_i w[t_i]·(−logprob_i[t_i]) / Σ_i w[t_i];  ∂L/∂logprob_i[t_i] = −w[t_i]/Σ w"
    inputs = (
        Port("logprob", doc="log-probabilities, classes on the last axis (LogSoftmax's output)"),
        Port("target", Kind.IDS, doc="the true class id at each position (or ignore_index)"),
    )
    params = (_IGNORE, _WEIGHT)
    score_port = "logprob"
    examples = (
        Example({}, {"logprob": (4, 5), "target": (4,)}, {"logprob": (-4.0, 0.0), "target": (0, 5)}),
        Example({"weight": [0.5, 1.0, 2.0]}, {"logprob": (2, 3, 3), "target": (2, 3)}, {"logprob": (-4.0, 0.0), "target": (-1, 3)}),
        Example({}, {"logprob": (6,), "target": ()}, {"target": (0, 6)}),
    )

    def compute(self, inputs: Arrays, weights: Arrays) -> tuple[Arrays, dict[str, Any]]:
        lp = np.asarray(inputs["logprob"])
        ignore = self.p["ignore_index"]
        target = _class_ids(self, lp, np.asarray(inputs["target"]), ignore, "logprob")
        classes = lp.shape[-1]
        flat_t = target.reshape(-1)
        rows = np.nonzero(flat_t != ignore)[0]
        w = self._weight()
        wt = np.ones(rows.size) if w is None else w[flat_t[rows]]
        picked = lp.reshape(-1, classes)[rows, flat_t[rows]] if classes else np.zeros(0, lp.dtype)
        den = float(wt.sum())
        loss = float(-np.sum(wt * picked)) / den if den else 0.0
        return {"out": _scalar(loss, lp.dtype)}, {"rows": rows, "cols": flat_t[rows], "wt": wt, "den": den}

    def vjp(self, gout: Arrays, saved: dict[str, Any], weights: Arrays) -> tuple[Arrays, Arrays]:
        shape, dt = saved["_in_shapes"]["logprob"], saved["_in_dtypes"]["logprob"]
        d = np.zeros(shape, dt)
        if saved["den"]:
            flat = d.reshape(-1, shape[-1])
            scale = float(np.asarray(gout["out"])) / saved["den"]
            flat[saved["rows"], saved["cols"]] = (-saved["wt"] * scale).astype(dt)
        return {"logprob": d}, {}
