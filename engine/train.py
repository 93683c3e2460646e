"""The training loop: a :class:`Trainer` that takes one optimisation step at a time.

The ``"training"`` section of a graph file says how a lesson trains; every key is optional::

    "training": {
      "loss": "loss",                        # name (or id) of the node whose output is the loss
      "optimizer": {"type": "adam", "lr": 0.05, "betas": [0.9, 0.999], "eps": 1e-08,
                    "weight_decay": 0.0},    # or {"type": "sgd", "lr": 0.1, "momentum": 0.9,
                                             #     "weight_decay": 0.0, "nesterov": false}
                                             # or {"type": "adamw", ..., "weight_decay": 0.01}
      "steps": 500,                          # default 100
      "clip": null,                          # clip the global gradient norm to this (null: off)
      "seed": 0,                             # initial weights and minibatch draws
      "dtype": "float32",                    # or "float64"
      "target": {"metric": "loss_drop", "value": 0.9},
      "metric": {"kind": "accuracy"}         # how well it does, beyond the loss (engine.metrics)
    }

Optimiser defaults are torch's (SGD lr 0.01, momentum 0; Adam lr 0.001, betas (0.9, 0.999),
eps 1e-8; AdamW the same with weight_decay 0.01); weight decay is L2 for SGD and Adam and decoupled
for AdamW, as in ``torch.optim``. Targets: ``loss_drop`` (the loss falls by at
least this fraction: ``1 − final/initial ≥ value``) or ``loss_below`` (``final ≤ value``), where
initial and final are evaluation losses (see :mod:`engine.data`) measured before and after the run.
A target may name another node whose output is a single number: ``{"metric": "loss_drop",
"value": 0.9, "node": "LSTM loss"}`` judges that node's output instead of the training loss (for a
lesson that trains two models side by side on the sum of their losses).

``metric`` is the lesson's validation metric (accuracy, exact match, perplexity or R², see
:mod:`engine.metrics`); it is measured with the evaluation loss, on the same batches, before and
after a run (the CLI reports both) and whenever the editor evaluates during training.

The trainer is deterministic: weights start from ``seed`` (per node, see
:func:`engine.runtime.node_rng`), minibatches come from ``(seed, step)``, and the kernels are
deterministic, so two runs with the same file and seed end with identical weights, bit for bit;
a run resumed from a saved container (weights, optimiser state, history) continues exactly as an
uninterrupted run would. Training steps run in training mode with the context
``Context(training=True, seed, step)`` (Dropout masks come from it); evaluation runs in evaluation
mode. After each step the new buffer values of the pass (BatchNorm's running statistics) replace
the old ones; buffers get no gradient and no optimiser update.

When the loss or a gradient stops being finite, the step is run again with the runtime's checks
on (:class:`engine.runtime.Pass` with ``check=True``), and training stops with a
:class:`~engine.errors.NonFiniteError` naming the step (``step``) and the first node (``node``)
whose output or gradient went bad (``phase``: forward, backward, or the update).

The history is kept compactly (:class:`History`: 32 bytes a step in growing arrays), so a long
run's memory stays flat. A :class:`Checkpoint` is a cheap reference to the state after a step
(weights and optimiser state are replaced by new arrays at every update, never changed in place),
and :meth:`Trainer.restore` goes back to one exactly: rolling back after a divergence, or to the
best evaluation of a run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from engine import data as data_mod
from engine import metrics as metrics_mod
from engine import optim
from engine.blocks import Context
from engine.errors import FileFormatError, GraphError, NonFiniteError
from engine.graph import Graph
from engine.runtime import Runtime, TraceEvent

if TYPE_CHECKING:
    from engine.serialize import Project
    from engine.warmup import Plan, Progress

DTYPES = ("float32", "float64")
METRICS = ("loss_drop", "loss_below")
DEFAULT_STEPS = 100
MAX_STEPS = 10_000_000
_KEYS = ("loss", "optimizer", "steps", "clip", "seed", "dtype", "target", "metric")
_OPT_KEYS = {"sgd": ("type", "lr", "momentum", "weight_decay", "nesterov"), "adam": ("type", "lr", "betas", "eps", "weight_decay"),
             "adamw": ("type", "lr", "betas", "eps", "weight_decay")}


class TrainingError(FileFormatError):
    """A ``training`` section that is malformed or does not fit the graph."""


# --- settings ----------------------------------------------------------------------------------


def _number(where: str, value: Any, *, minimum: float | None = None, integer: bool = False) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        kind = "a whole number" if integer else "a number"
        raise TrainingError(f"training: '{where}' must be {kind}, got {value!r}")
    value = int(value) if integer else float(value)
    if minimum is not None and value < minimum:
        raise TrainingError(f"training: '{where}' must be ≥ {minimum:g}, got {value!r}")
    return value


def _optimizer(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise TrainingError("training: 'optimizer' must be an object such as {\"type\": \"adam\", \"lr\": 0.01}")
    type_id = spec.get("type", "sgd")
    if type_id not in _OPT_KEYS:
        raise TrainingError(f"training: unknown optimizer {type_id!r} (choose one of: {', '.join(_OPT_KEYS)})")
    keys = _OPT_KEYS[type_id]
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise TrainingError(f"training: optimizer {type_id} has no setting {unknown[0]!r} (its settings: {', '.join(keys[1:])})")
    out: dict[str, Any] = {"type": type_id} if "type" in spec else {}
    for key in keys[1:]:
        if key not in spec:
            continue
        if key == "betas":
            b = spec[key]
            if not isinstance(b, list) or len(b) != 2:
                raise TrainingError(f"training: optimizer 'betas' must be two numbers [β₁, β₂], got {b!r}")
            out[key] = [_number("optimizer.betas", v, minimum=0.0) for v in b]
        elif key == "nesterov":
            if not isinstance(spec[key], bool):
                raise TrainingError(f"training: optimizer 'nesterov' must be true or false, got {spec[key]!r}")
            out[key] = spec[key]
        else:
            out[key] = _number(f"optimizer.{key}", spec[key], minimum=0.0)
    try:
        optim.create({"type": type_id, **out})
    except optim.OptimizerError as exc:
        raise TrainingError(f"training: {exc}") from None
    return out


def normalize(spec: Any) -> dict[str, Any]:
    """Check a ``training`` section and return it in canonical form (fixed key order, numbers
    in canonical types, only the keys given). Idempotent; raises :class:`TrainingError`."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise TrainingError(f"'training' must be an object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(_KEYS))
    if unknown:
        raise TrainingError(f"training has no setting {unknown[0]!r} (its settings: {', '.join(_KEYS)})")
    out: dict[str, Any] = {}
    if "loss" in spec:
        if spec["loss"] is not None and (not isinstance(spec["loss"], str) or not spec["loss"]):
            raise TrainingError(f"training: 'loss' must be the name of a node, got {spec['loss']!r}")
        out["loss"] = spec["loss"]
    if "optimizer" in spec:
        out["optimizer"] = _optimizer(spec["optimizer"])
    if "steps" in spec:
        out["steps"] = _number("steps", spec["steps"], minimum=0, integer=True)
        if out["steps"] > MAX_STEPS:
            raise TrainingError(f"training: 'steps' must be ≤ {MAX_STEPS}, got {out['steps']}")
    if "clip" in spec:
        out["clip"] = None if spec["clip"] is None else _number("clip", spec["clip"], minimum=0.0)
    if "seed" in spec:
        out["seed"] = _number("seed", spec["seed"], minimum=0, integer=True)
    if "dtype" in spec:
        if spec["dtype"] not in DTYPES:
            raise TrainingError(f"training: 'dtype' must be one of {', '.join(DTYPES)}, got {spec['dtype']!r}")
        out["dtype"] = spec["dtype"]
    if "target" in spec:
        t = spec["target"]
        if t is not None:
            if not isinstance(t, dict) or not {"metric", "value"} <= set(t) <= {"metric", "value", "node"}:
                raise TrainingError("training: 'target' must be {\"metric\": ..., \"value\": ...} (and optionally "
                                    "\"node\": the name of the node it judges) or null")
            if t["metric"] not in METRICS:
                raise TrainingError(f"training: target metric must be one of {', '.join(METRICS)}, got {t['metric']!r}")
            value = _number("target.value", t["value"], minimum=0.0)
            if t["metric"] == "loss_drop" and value > 1.0:
                raise TrainingError(f"training: a loss_drop target is a fraction between 0 and 1, got {value!r}")
            node = t.get("node")
            if "node" in t and (not isinstance(node, str) or not node):
                raise TrainingError(f"training: target 'node' must be the name of a node, got {node!r}")
            t = {"metric": t["metric"], "value": value, **({"node": node} if "node" in t else {})}
        out["target"] = t
    if "metric" in spec:
        try:
            out["metric"] = metrics_mod.normalize(spec["metric"])
        except metrics_mod.MetricError as exc:
            raise TrainingError(str(exc)) from None
    return out


@dataclass(frozen=True)
class TrainingConfig:
    """A ``training`` section with the defaults filled in."""

    loss: str | None = None
    optimizer: Mapping[str, Any] = field(default_factory=lambda: {"type": "sgd", "lr": 0.01})
    steps: int = DEFAULT_STEPS
    clip: float | None = None
    seed: int = 0
    dtype: str = "float32"
    target: Mapping[str, Any] | None = None
    metric: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | None) -> "TrainingConfig":
        d = normalize(dict(spec or {}))
        if "optimizer" in d:
            d["optimizer"] = {"type": "sgd", **d["optimizer"]}
        return cls(**d)

    def with_overrides(self, **changes: Any) -> "TrainingConfig":
        """A copy with some settings replaced (None leaves a setting as it is); checked."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "lr" in changes:
            changes["optimizer"] = {**self.optimizer, "lr": changes.pop("lr")}
        spec = {**dataclasses.asdict(self), **changes}
        spec["optimizer"] = dict(spec["optimizer"])
        return TrainingConfig.from_dict(spec)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a file's ``training`` section (canonical; None-valued options left out)."""
        spec = {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k == "clip"}
        if spec.get("clip") is None:
            spec.pop("clip")
        return normalize(spec)


def target_met(target: Mapping[str, Any] | None, initial: float, final: float) -> bool | None:
    """Whether a run from ``initial`` to ``final`` loss meets ``target`` (None: no target)."""
    if not target:
        return None
    if not (math.isfinite(initial) and math.isfinite(final)):
        return False
    if target["metric"] == "loss_below":
        return final <= target["value"]
    return initial > 0 and 1.0 - final / initial >= target["value"]


# --- the trainer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRecord:
    """One optimisation step, as the editor's plots and the CLI show it."""

    step: int  # how many updates have been applied, this one included (1-based)
    loss: float  # loss on this step's batch, before the update
    grad_norm: float  # global gradient norm before clipping
    seconds: float
    # with ``Trainer.step(trace=True)``: the step's trace events (forward, then backward)
    events: tuple[TraceEvent, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"event": "step", "step": self.step, "loss": self.loss, "grad_norm": self.grad_norm, "seconds": self.seconds}


@dataclass(frozen=True)
class Evaluation:
    """The evaluation loss, the metric and the target node's output over the evaluation batches,
    after ``step`` updates."""

    step: int
    loss: float
    metric: float | None = None  # None without a metric (or when it counted nothing)
    target: float | None = None  # the output of the target's node, when the target names one
    seconds: float = 0.0


@dataclass(frozen=True)
class TrainResult:
    """What a :meth:`Trainer.run` achieved."""

    steps: int  # steps taken in this run
    initial_loss: float
    final_loss: float
    target: Mapping[str, Any] | None
    target_met: bool | None  # None when there is no target
    stopped: bool  # stopped early by ``should_stop``
    seconds: float
    # the output of the target's own node, when the target names one (else None)
    target_initial: float | None = None
    target_final: float | None = None
    # the lesson's metric (engine.metrics) before and after, when it has one
    metric: str | None = None
    metric_initial: float | None = None
    metric_final: float | None = None

    @property
    def drop(self) -> float:
        """Fraction by which the loss fell (1 − final/initial)."""
        if not self.initial_loss or not math.isfinite(self.initial_loss):
            return 0.0
        return 1.0 - self.final_loss / self.initial_loss

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "result", "steps": self.steps, "initial_loss": self.initial_loss, "final_loss": self.final_loss,
            "drop": self.drop, "target": dict(self.target) if self.target else None, "target_met": self.target_met,
            "stopped": self.stopped, "seconds": self.seconds,
            **({"target_initial": self.target_initial, "target_final": self.target_final} if self.target_initial is not None else {}),
            "metric": ({"kind": self.metric, "initial": self.metric_initial, "final": self.metric_final}
                       if self.metric else None),
        }


HISTORY_KEYS = ("step", "loss", "grad_norm", "seconds")
_HISTORY_DTYPES = {"step": np.int64, "loss": np.float64, "grad_norm": np.float64, "seconds": np.float64}


class History:
    """One row per training step (:data:`HISTORY_KEYS`), in numpy arrays that grow by doubling:
    32 bytes a step, however long the run. ``history["loss"]`` is a read-only view of the rows so
    far (rows are only ever appended, or cut by :meth:`truncate`, which copies)."""

    def __init__(self, columns: Mapping[str, Any] | None = None) -> None:
        n = 0
        arrays = {}
        for k in HISTORY_KEYS:
            a = np.asarray(columns.get(k, np.zeros(0)) if columns else np.zeros(0)).ravel()
            arrays[k] = np.array(a, dtype=_HISTORY_DTYPES[k])
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise TrainingError("the saved training history has columns of different lengths")
        n = lengths.pop()
        self._n = n
        self._cols = {k: np.resize(a, max(16, n)) for k, a in arrays.items()}

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, key: str) -> np.ndarray:
        view = self._cols[key][:self._n]
        view.flags.writeable = False
        return view

    def keys(self) -> tuple[str, ...]:
        return HISTORY_KEYS

    def append(self, record: StepRecord) -> None:
        n = self._n
        if n == len(self._cols["step"]):
            self._cols = {k: np.resize(a, 2 * n) for k, a in self._cols.items()}
        cols = self._cols
        cols["step"][n] = record.step
        cols["loss"][n] = record.loss
        cols["grad_norm"][n] = record.grad_norm
        cols["seconds"][n] = record.seconds
        self._n = n + 1

    def extend(self, rows: Mapping[str, np.ndarray]) -> None:
        """Append rows given as columns (what :meth:`rows` returns)."""
        k = len(np.asarray(rows["step"]))
        n = self._n
        if n + k > len(self._cols["step"]):
            size = max(2 * len(self._cols["step"]), n + k)
            self._cols = {c: np.resize(a, size) for c, a in self._cols.items()}
        for c in HISTORY_KEYS:
            self._cols[c][n:n + k] = rows[c]
        self._n = n + k

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` rows (in new arrays: views handed out earlier stay as they were)."""
        n = max(0, min(n, self._n))
        self._cols = {k: np.resize(a[:n].copy(), max(16, n)) for k, a in self._cols.items()}
        self._n = n

    def arrays(self, n: int | None = None) -> dict[str, np.ndarray]:
        """Copies of the first ``n`` rows (all by default), as a file's ``history.npz`` holds them."""
        n = self._n if n is None else min(n, self._n)
        return {k: self._cols[k][:n].copy() for k in HISTORY_KEYS}

    def rows(self, start: int, stop: int | None = None) -> dict[str, np.ndarray]:
        """Copies of rows ``start:stop``."""
        stop = self._n if stop is None else min(stop, self._n)
        return {k: self._cols[k][start:stop].copy() for k in HISTORY_KEYS}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._cols.values())


@dataclass(frozen=True)
class Checkpoint:
    """The state after ``step`` updates: references to the weights and the optimiser state of
    that moment (never changed in place, so holding them costs no copy)."""

    step: int
    weights: dict[str, dict[str, np.ndarray]]
    optimizer_state: dict[str, np.ndarray]
    optimizer: str  # its type ("adam", ...)


#: numpy's overflow/invalid warnings are silenced inside training: non-finite values are found
#: explicitly and reported with the node that produced them, which a warning cannot do.
def _quiet() -> np.errstate:
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


class Trainer:
    """Trains a graph on its data, one step at a time (see the module docstring).

    ``weights``, ``optimizer_state`` and ``history`` continue a saved run. The editor drives
    :meth:`step` from a worker thread; the CLI calls :meth:`run`."""

    def __init__(
        self,
        graph: Graph,
        data: Mapping[str, Any],
        training: Mapping[str, Any] | TrainingConfig | None = None,
        *,
        weights: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        optimizer_state: Mapping[str, np.ndarray] | None = None,
        history: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.config = training if isinstance(training, TrainingConfig) else TrainingConfig.from_dict(training)
        self.graph = graph
        self.dataset = data_mod.bind(data, graph)
        self.runtime = Runtime(graph, weights=dict(weights) if weights else None, seed=self.config.seed, dtype=self.config.dtype)
        self.loss_key = self._loss_key()
        self.target_key = self._target_key()
        try:
            self.metric = metrics_mod.bind(self.config.metric, self.runtime, self.loss_key)
        except metrics_mod.MetricError as exc:
            raise TrainingError(str(exc)) from None
        self.optimizer = optim.create(self.config.optimizer)
        self.notes: list[str] = []  # things a person should know (the CLI prints them)
        if optimizer_state:
            kind = optim.state_type(optimizer_state)
            if kind == self.optimizer.type_id:
                self.optimizer.load_state_dict(optimizer_state, self.runtime.weights)
            else:
                self.notes.append(f"the saved optimiser state is for {kind or 'an unknown optimiser'}; "
                                  f"{self.optimizer.type_id} starts afresh")
        self.history = History(history)

    @classmethod
    def from_project(cls, project: "Project", *, restart: bool = False, **overrides: Any) -> "Trainer":
        """A trainer for a loaded file; ``overrides`` (steps, seed, dtype, lr, ...) replace the
        file's settings; ``restart`` ignores saved weights, optimiser state and history."""
        config = TrainingConfig.from_dict(project.training).with_overrides(**overrides)
        if restart:
            return cls(project.graph, project.data, config)
        return cls(project.graph, project.data, config, weights=project.weights,
                   optimizer_state=project.optimizer_state, history=project.history)

    def _loss_key(self) -> tuple[str, str]:
        if not self.config.loss:
            raise TrainingError("the training settings name no loss: set training.loss to the name of the node whose output is the loss")
        try:
            key = self.runtime.loss_port(self.config.loss)
        except GraphError as exc:
            raise TrainingError(f"training.loss is {self.config.loss!r}, but {exc}") from None
        step = self.runtime.program.step(key[0])
        shape = step.out_shapes.get(key[1])
        if shape != ():
            raise TrainingError(
                f"training.loss is {step.label}, whose output '{key[1]}' has shape {shape}; the loss must be a single "
                f"number (add a Mean or Sum node)"
            )
        return key

    def _target_key(self) -> tuple[str, str] | None:
        target = self.config.target
        if not target or "node" not in target:
            return None
        try:
            key = self.runtime.loss_port(target["node"])
        except GraphError as exc:
            raise TrainingError(f"training.target names node {target['node']!r}, but {exc}") from None
        step = self.runtime.program.step(key[0])
        if step.out_shapes.get(key[1]) != ():
            raise TrainingError(f"training.target judges {step.label}, whose output '{key[1]}' has shape "
                                f"{step.out_shapes.get(key[1])}; it must be a single number")
        return key

    def ready(self, progress: "Progress | None" = None, passes: int | None = None) -> "Plan":
        """The kernel backend for training ``passes`` steps (default: the configured steps), with
        what it needs compiled (:func:`engine.warmup.ready`). ``backprop-studio train`` and the
        editor's Train panel both ask here, so the same file and settings run on the same backend
        and give the same losses, to the last bit. Run the steps under
        ``kernels.using(plan.backend)``."""
        from engine import warmup

        steps = self.config.steps if passes is None else passes
        return warmup.ready(self.runtime, steps, self.dataset.first_feeds(), self.loss_key, progress)

    # --- running ---------------------------------------------------------------------------

    @property
    def step_count(self) -> int:
        """How many updates the weights have had (including those of a resumed run)."""
        return len(self.history)

    @property
    def weights(self) -> dict[str, dict[str, np.ndarray]]:
        """A copy of the current weights."""
        return {n: {k: v.copy() for k, v in ws.items()} for n, ws in self.runtime.weights.items()}

    def _diagnose(self, feeds: Mapping[str, np.ndarray], where: str, context: Context | None = None,
                  step: int = 0) -> None:
        """Re-run a pass with checks on; raises NonFiniteError naming the first bad node."""
        try:
            with _quiet():
                self.runtime.forward_backward(feeds, self.loss_key, check=True, context=context)
        except NonFiniteError as exc:
            raise NonFiniteError(f"{where}: {exc}", exc.node, exc.phase, step) from None
        raise NonFiniteError(f"{where}: the loss or a gradient is NaN or Inf", self.loss_key[0], "backward", step)

    def evaluate(self) -> float:
        """Mean loss over the evaluation batches (see :mod:`engine.data`)."""
        return self.evaluation().loss

    def evaluation(self) -> Evaluation:
        """Mean loss, the metric, and the mean output of the target's node (None without one),
        over the evaluation batches, in evaluation mode."""
        t0 = time.perf_counter()
        losses, judged = [], []
        tally = self.metric.tally() if self.metric is not None else None
        for feeds in self.dataset.eval_feeds():
            with _quiet():
                values = self.runtime.forward(feeds).values
            loss = float(values[self.loss_key])
            if not math.isfinite(loss):
                self._diagnose(feeds, "evaluating the loss", step=self.step_count)
            losses.append(loss)
            if self.target_key is not None:
                judged.append(float(values[self.target_key]))
            if tally is not None:
                with _quiet():
                    self.metric.add(tally, values)  # type: ignore[union-attr]
        return Evaluation(self.step_count, float(np.mean(losses)), tally.value() if tally is not None else None,
                          float(np.mean(judged)) if judged else None, time.perf_counter() - t0)

    def next_step(self) -> tuple[dict[str, np.ndarray], Context]:
        """The feeds and the training context of the next step (what :meth:`step` will run):
        the batch drawn for it and ``Context(training=True, seed, step)``."""
        index = self.step_count
        return self.dataset.batch_feeds(index, self.config.seed), Context(training=True, seed=self.config.seed, step=index)

    def step(self, *, trace: bool = False) -> StepRecord:
        """One optimisation step on the next batch. ``trace`` also collects the step's trace
        events (the same arithmetic: tracing only reads the values)."""
        t0 = time.perf_counter()
        index = self.step_count
        feeds, context = self.next_step()
        events: tuple[TraceEvent, ...] = ()
        with _quiet():
            if trace:
                p = self.runtime.start(feeds, trace=True, context=context)
                forward = list(p.forward_steps())
                loss = float(p.values[self.loss_key])
                p.seed(self.loss_key)
                events = (*forward, *p.backward_steps())
            else:
                p = self.runtime.forward_backward(feeds, self.loss_key, context=context)
                loss = float(p.values[self.loss_key])
            grads = p.weight_gradients()
            norm = optim.global_norm(grads)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self._diagnose(feeds, f"step {index + 1}", context, index + 1)
        with _quiet():
            if self.config.clip is not None:
                optim.clip_grad_norm(grads, self.config.clip)
            self.optimizer.step(self.runtime.weights, grads)
        for node, updates in p.buffer_updates().items():
            self.runtime.weights[node].update(updates)  # new arrays: snapshots of the old stay as they were
        for node, ws in self.runtime.weights.items():
            for name, w in ws.items():
                if not np.isfinite(w).all():
                    label = self.runtime.program.step(node).label
                    raise NonFiniteError(
                        f"step {index + 1}: the update made {label} weight '{name}' NaN or Inf "
                        f"(is the learning rate {self.optimizer.lr:g} too large? try clipping)", node, "update", index + 1,
                    )
        record = StepRecord(index + 1, loss, norm, time.perf_counter() - t0, events)
        self.history.append(record)
        return record

    def run(
        self,
        steps: int | None = None,
        *,
        on_step: Callable[[StepRecord], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Evaluate, take ``steps`` steps (default: the file's), evaluate again."""
        t0 = time.perf_counter()
        steps = self.config.steps if steps is None else steps
        before = self.evaluation()
        done, stopped = 0, False
        for _ in range(steps):
            if should_stop is not None and should_stop():
                stopped = True
                break
            record = self.step()
            done += 1
            if on_step is not None:
                on_step(record)
        after = self.evaluation()
        met = (target_met(self.config.target, before.loss, after.loss) if before.target is None
               else target_met(self.config.target, before.target, after.target))  # type: ignore[arg-type]
        return TrainResult(done, before.loss, after.loss, self.config.target, met, stopped, time.perf_counter() - t0,
                           before.target, after.target, self.metric.kind if self.metric is not None else None,
                           before.metric, after.metric)

    # --- checkpoints -----------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The state now (references, not copies: see :class:`Checkpoint`)."""
        return Checkpoint(self.step_count, {n: dict(ws) for n, ws in self.runtime.weights.items()},
                          self.optimizer.state_dict(), self.optimizer.type_id)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Go back to ``checkpoint`` (taken from this trainer, at or before the current step):
        its weights and optimiser state, and the history up to its step. The next step is then
        exactly the one that followed it."""
        if checkpoint.step > self.step_count:
            raise TrainingError(f"cannot go back to step {checkpoint.step}: the run is at step {self.step_count}")
        self.runtime.weights = {n: dict(ws) for n, ws in checkpoint.weights.items()}
        if checkpoint.optimizer == self.optimizer.type_id:
            self.optimizer.load_state_dict(checkpoint.optimizer_state, self.runtime.weights)
        else:
            self.optimizer = optim.create(self.config.optimizer)
        self.history.truncate(checkpoint.step)

    # --- saving ----------------------------------------------------------------------------

    def history_arrays(self) -> dict[str, np.ndarray]:
        return self.history.arrays()

    def to_project(self, base: "Project") -> "Project":
        """``base`` with this run's weights, optimiser state and history."""
        return dataclasses.replace(base, weights=self.weights, optimizer_state=self.optimizer.state_dict(),
                                   history=self.history_arrays())
