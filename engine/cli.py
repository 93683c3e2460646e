"""The headless command line: ``run``, ``train``, ``generate``, ``gradcheck``, ``info``, ``export``,
``list-presets`` and ``start-time``. Never imports Qt; ``backprop-studio`` (editor/main.py) hands every subcommand
here, and ``python -m engine.cli ...`` works too::

    backprop-studio run presets/two_layer_net.json --json
    backprop-studio train presets/two_layer_net.json --steps 500 --seed 0 -o trained.bps
    backprop-studio gradcheck presets/two_layer_net.json
    backprop-studio info two_layer_net            # a preset name works in place of a path
    backprop-studio generate language_model --prompt "the quick brown"     # prints: fox
    backprop-studio export two_layer_net --to torch -o model.py            # + model.safetensors
    backprop-studio warmup                        # compile every kernel now, once, with progress

Output is human-readable by default. With ``--json`` every line on stdout is one JSON object
with an ``"event"`` key: ``trace`` and ``result`` (run); ``start``, ``step`` and ``result``
(train); ``generate`` (generate); ``check`` and ``result`` (gradcheck); ``info``; ``export``; ``preset``; ``version``;
and ``error``.
Numbers that are NaN or Inf are written as null. ``train`` draws a progress bar on stderr when
stderr is a terminal and prints plain progress lines otherwise.

Kernels: ``run``, ``train``, ``generate`` and ``gradcheck`` first time one pass of the graph on
the numpy twins and pick the backend (:func:`engine.warmup.plan`): a workload too small to pay
for starting Numba and compiling what is not cached yet (``run`` always is: one pass) runs on the
twins, which compute the same function; a bigger one compiles the kernels it needs up front, with
a one-line progress on a terminal ("compiling kernels for first use, once: 4/11"), cached on disk
for every later run. ``BACKPROP_STUDIO_KERNELS=numba|numpy`` forces a backend; ``warmup``
compiles every kernel the app has in both dtypes. Numba, scipy and networkx are imported only by
the commands that use them, so ``info`` and ``list-presets`` answer at once.

``generate FILE --prompt "the quick brown"`` turns the prompt into ids with the vocabulary of the
file's text data (:class:`engine.data.TextData`, the same one the trainer used), continues it with
the graph's language model (:func:`engine.generate.generate`) or translates it with its
SequenceToSequence (:func:`engine.generate.translate`), and prints the new words. A file without
trained weights (a ``.json`` lesson) is trained first with its own settings, with a note on
stderr; ``--weights trained.bps`` takes the weights of an earlier ``train -o``. An unknown word
exits with status 2.

Exit codes that scripts can trust:

- 0: done (and, for ``train``, the file's target was met; for ``gradcheck``, every error was
  within the tolerance);
- 1: it ran but failed: NaN or Inf, a block failing, a training target not met, a gradient check
  above the tolerance, a node that cannot be exported;
- 2: bad usage or an unusable file (damaged, from a newer version, a graph that does not
  compile, data that do not fit it, a graph that needs more memory than the limit), or an
  optional dependency (the ``export`` extra) missing;
- 3: an internal error: a bug in Backprop Studio (please report it);
- 130: interrupted (Ctrl-C). ``train -o`` finishes the step it is on and saves the run first;
  a second Ctrl-C stops at once.

Expected errors (:class:`~engine.errors.EngineError`) print one line on stderr (and an ``error``
event with ``--json``), never a traceback. Anything else is a bug: it prints one line naming the
command and the file and asking for a bug report; ``--debug`` (anywhere on the command line, or
``BACKPROP_STUDIO_DEBUG=1``) adds the traceback.

``train -o`` never loses a finished run: when the file cannot be written, it says why and saves
what it can (everything, else the weights and history, else the weights) next to it under a new
name, or in the current, home or temporary folder, and exits 1.
"""

from __future__ import annotations

import argparse
import contextvars
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping, TextIO

import numpy as np

import engine
from engine import data as data_mod
from engine import feeds as feeds_mod
from engine import memory
from engine import prompt as prompt_mod
from engine.archive import reason, size_text
from engine.errors import EngineError, FileFormatError, GraphError, RuntimeFailure
from engine.optim import OptimizerError
from engine.runtime import Pass, Runtime, TensorStats, TraceEvent
from engine.serialize import Project, Rescued, load, save_rescue
from engine.train import StepRecord, Trainer, TrainingConfig

PROG = "backprop-studio"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEBUG_ENV = "BACKPROP_STUDIO_DEBUG"
COMMANDS = ("run", "train", "generate", "gradcheck", "info", "export", "list-presets", "start-time", "warmup")
GRADCHECK_TOLERANCE = 1e-5
GRADCHECK_SAMPLE = 24  # weights checked by default in bigger models (each check runs the model up to 12 times)
START_TIME_LIMIT = 3.0  # seconds: a cached start of `run` must stay below this


class UsageError(EngineError):
    """Bad command-line usage."""


def handles(argv: list[str]) -> bool:
    """Whether ``argv`` is for this CLI (a subcommand, ``--version`` or ``--help``)."""
    return bool(argv) and (argv[0] in COMMANDS or argv[0] in ("--version", "-V", "--help", "-h"))


# --- output -------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/Inf become null, numpy values become Python ones, tuples lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Output:
    """Where a command writes: human lines or JSON lines on stdout, notes on stderr."""

    def __init__(self, as_json: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    def event(self, event: str, **fields: Any) -> None:
        if self.json:
            self.stdout.write(json.dumps(_clean({"event": event, **fields}), ensure_ascii=False) + "\n")
            self.stdout.flush()

    def line(self, text: str = "") -> None:
        if not self.json:
            self.stdout.write(text + "\n")
            self.stdout.flush()

    def note(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def error(self, message: str, kind: str) -> None:
        self.note(f"{PROG}: error: {message}")
        self.event("error", kind=kind, message=message)


def _fmt(x: float) -> str:
    return f"{x:.6g}" if math.isfinite(x) else str(x)


def _shape(shape: Iterable[int]) -> str:
    shape = tuple(shape)
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _stats_json(t: TensorStats) -> dict[str, Any]:
    return {"shape": list(t.shape), "norm": t.norm, "min": t.min, "max": t.max, "nan": t.nan, "inf": t.inf}


def _stats_text(t: TensorStats) -> str:
    bad = " NaN!" if t.nan else (" Inf!" if t.inf else "")
    return f"{_shape(t.shape)} norm {_fmt(t.norm)}{bad}"


# --- loading --------------------------------------------------------------------------------------


def _resolve(file: str) -> Path:
    p = Path(file)
    if p.exists():
        return p
    import presets

    try:
        return presets.path(file)
    except KeyError:
        raise FileFormatError(f"{file}: no such file (and no preset of that name; presets: {', '.join(presets.names())})") from None


def _load(file: str) -> tuple[Path, Project]:
    p = _resolve(file)
    return p, load(p)


def _config(project: Project, args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig.from_dict(project.training).with_overrides(seed=getattr(args, "seed", None), dtype=getattr(args, "dtype", None))


def _loss_key(runtime: Runtime, config: TrainingConfig, required: bool) -> tuple[str, str] | None:
    return feeds_mod.loss_key(runtime, config, required)


# --- run ------------------------------------------------------------------------------------------


# --- kernels: compiled up front, with progress on a terminal ---------------------------------------


class KernelProgress:
    """``compiling kernels for first use, once: 4/11`` on one terminal line of stderr, redrawn in
    place and cleared when done; silent when stderr is not a terminal."""

    def __init__(self, out: Output, summary: bool = True) -> None:
        self.out = out
        self.show = hasattr(out.stderr, "isatty") and out.stderr.isatty()
        self.summary = summary
        self.t0 = time.perf_counter()

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self.show:
            return
        if done < total:
            self.out.stderr.write(f"\rcompiling kernels for first use, once: {done + 1}/{total} ({name})\033[K")
        elif not self.summary:
            self.out.stderr.write("\r\033[K")
        else:
            self.out.stderr.write(f"\rcompiled {total} kernels in {time.perf_counter() - self.t0:.1f} s; "
                                  f"later runs load them from the cache\033[K\n")
        self.out.stderr.flush()


def _prepare_kernels(runtime: Runtime, out: Output, feeds: Mapping[str, np.ndarray] | None,
                     loss: tuple[str, str] | None, passes: int) -> str:
    """Pick the kernel backend for ``passes`` passes of this graph (:func:`engine.warmup.plan`)
    for the rest of the command, and compile what the Numba kernels need up front, with a
    progress line on a terminal. Returns the backend."""
    from engine import kernels, warmup

    plan = warmup.ready(runtime, passes, feeds, loss, KernelProgress(out))
    kernels.select(plan.backend)
    return plan.backend


def _trace_text(ev: TraceEvent) -> str:
    head = f"{ev.phase:8s} {ev.index:3d}  {ev.label} ({ev.type})"
    if ev.phase == "forward":
        parts = [f"{p} {_stats_text(t)}" for p, t in ev.outputs.items()]
    else:
        parts = [f"grad {p} {_stats_text(t)}" for p, t in ev.outputs.items()]
        parts += [f"→ {p} {_stats_text(t)}" for p, t in ev.inputs.items()]
        parts += [f"weight {n} {_stats_text(t)}" for n, t in ev.weights.items()]
    return f"{head}: " + "; ".join(parts)


def _name(runtime: Runtime, node_id: str) -> str:
    """A node's name for output keys (its label when it has no name)."""
    node = runtime.graph.nodes[node_id]
    return node.name or node.label


def _sinks(runtime: Runtime) -> list[tuple[str, str]]:
    used = {src for step in runtime.program.steps for src in step.sources.values()}
    return [(s.node, p) for s in runtime.program.steps for p in s.out_shapes if (s.node, p) not in used]


def cmd_run(args: argparse.Namespace, out: Output) -> int:
    path, project = _load(args.file)
    # The editor's Run controls start from the same setup (and the same kernel backend), so
    # both show the same loss.
    setup = feeds_mod.lesson_pass(project, seed=getattr(args, "seed", None), dtype=getattr(args, "dtype", None))
    runtime, loss_key, feeds = setup.runtime, setup.loss, setup.feeds
    backend = _prepare_kernels(runtime, out, feeds, loss_key, passes=1)  # = setup.ready(): the editor's choice too
    t0 = time.perf_counter()
    p: Pass = runtime.start(feeds, trace=args.trace)
    for ev in p.forward_steps():
        out.event("trace", **{k: v for k, v in ev.to_json().items() if k != "event"})
        out.line(_trace_text(ev))
    loss = float(p.values[loss_key]) if loss_key else None
    if loss_key is not None and math.isfinite(loss):  # type: ignore[arg-type]
        p.seed(loss_key)
        for ev in p.backward_steps():
            out.event("trace", **{k: v for k, v in ev.to_json().items() if k != "event"})
            out.line(_trace_text(ev))
    seconds = time.perf_counter() - t0
    if loss is not None and not math.isfinite(loss):
        runtime.forward_backward(feeds, loss_key, check=True)  # raises NonFiniteError naming the node
    grads = p.weight_gradients() if loss_key is not None else {}
    bad_grad = any(not np.isfinite(g).all() for ws in grads.values() for g in ws.values())
    if bad_grad:
        runtime.forward_backward(feeds, loss_key, check=True)  # type: ignore[arg-type]
    outputs = {}
    for node, port in _sinks(runtime):
        label = _name(runtime, node)
        value = p.values[(node, port)]
        entry = _stats_json(TensorStats.of(value))
        if value.size <= 16:
            entry["values"] = value.tolist()
        outputs[f"{label}.{port}" if port != "out" else label] = entry
    gradients = {
        f"{_name(runtime, n)}/{w}": _stats_json(TensorStats.of(g)) for n, ws in grads.items() for w, g in ws.items()
    }
    out.event("result", file=str(path), name=project.name, loss=loss, outputs=outputs, gradients=gradients,
              batch=setup.batch, rows=setup.rows, dtype=str(runtime.dtype), seconds=seconds, kernels=backend)
    out.line(f"{path}: {project.name}" if project.name else str(path))
    if loss_key is not None:
        out.line(f"loss = {_fmt(loss)}  (node {runtime.program.step(loss_key[0]).label}, batch of {setup.batch}, {runtime.dtype})")  # type: ignore[arg-type]
    for key, entry in outputs.items():
        if loss_key is not None and key == _name(runtime, loss_key[0]):
            continue
        shown = f" = {entry['values']}" if "values" in entry and len(str(entry["values"])) < 80 else ""
        out.line(f"output {key} {_shape(entry['shape'])} norm {_fmt(entry['norm'])}{shown}")
    if gradients:
        out.line("weight gradients:")
        for key, entry in gradients.items():
            out.line(f"  {key:24s} {_shape(entry['shape']):10s} norm {_fmt(entry['norm'])}")
    return EXIT_OK


# --- train ----------------------------------------------------------------------------------------


class Progress:
    """A progress bar on a terminal, plain lines elsewhere, JSON step events with --json."""

    def __init__(self, out: Output, total: int, every: int | None, first_step: int) -> None:
        self.out = out
        self.total = total
        self.first = first_step
        self.tty = not out.json and hasattr(out.stderr, "isatty") and out.stderr.isatty()
        self.every = every if every else (1 if out.json else max(1, total // 10))
        self.t0 = time.perf_counter()
        self.last_draw = 0.0

    def update(self, rec: StepRecord) -> None:
        done = rec.step - self.first
        if self.out.json:
            if done % self.every == 0 or done == self.total:
                self.out.event("step", step=rec.step, loss=rec.loss, grad_norm=rec.grad_norm, seconds=rec.seconds)
            return
        now = time.perf_counter()
        if self.tty:
            if now - self.last_draw < 0.1 and done != self.total:
                return
            self.last_draw = now
            width = 28
            filled = int(width * done / max(1, self.total))
            rate = done / max(now - self.t0, 1e-9)
            eta = (self.total - done) / rate if rate > 0 else 0.0
            bar = "=" * filled + (">" if filled < width else "") + " " * max(0, width - filled - 1)
            self.out.stderr.write(f"\r[{bar}] {done}/{self.total}  loss {_fmt(rec.loss)}  {rate:.0f} steps/s  ETA {eta:.0f}s ")
            self.out.stderr.flush()
        elif done % self.every == 0 or done == self.total:
            self.out.note(f"step {rec.step}/{self.first + self.total}  loss {_fmt(rec.loss)}  grad norm {_fmt(rec.grad_norm)}")

    def close(self) -> None:
        if self.tty:
            self.out.stderr.write("\n")
            self.out.stderr.flush()


class _StopOnInterrupt:
    """While a run that will be saved trains: the first Ctrl-C lets the current step finish so
    that the run can be saved; a second one stops at once (KeyboardInterrupt)."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.hit = False
        self._old: Any = None

    def __enter__(self) -> "_StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True
        self.out.note(f"\n{PROG}: interrupted: finishing this step to save the run (Ctrl-C again stops at once)")

    def __call__(self) -> bool:
        return self.hit

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _save_run(trainer: Trainer, project: Project, output: str, out: Output) -> Rescued:
    """Save a finished run at ``output``; when that fails, say why and save what can be saved
    somewhere else (see :func:`engine.serialize.save_rescue`): the run is never lost."""
    versions = [
        ("the weights, optimiser state and history", lambda: trainer.to_project(project)),
        ("the weights and history (without the optimiser state)",
         lambda: dataclasses.replace(project, weights=trainer.weights, optimizer_state=None, history=trainer.history_arrays())),
        ("the weights only", lambda: dataclasses.replace(project, weights=trainer.weights, optimizer_state=None, history=None)),
    ]
    try:
        rescued = save_rescue(output, versions)
    except FileFormatError as exc:
        raise RuntimeFailure(f"the trained run could not be saved anywhere ({exc})") from None
    if not rescued.as_asked:
        for problem in rescued.problems:
            out.note(f"{PROG}: {problem}")
        out.note(f"{PROG}: the run is not lost: saved {rescued.what} to {rescued.path}")
    return rescued


def cmd_train(args: argparse.Namespace, out: Output) -> int:
    path, project = _load(args.file)
    if args.output and Path(args.output).suffix.lower() != ".bps":
        raise UsageError(f"-o {args.output}: trained weights are saved in a .bps container")
    trainer = Trainer.from_project(project, restart=args.restart, steps=args.steps, seed=args.seed, dtype=args.dtype, lr=args.lr)
    for note in trainer.notes:
        out.note(f"note: {note}")
    from engine import kernels

    backend = trainer.ready(KernelProgress(out)).backend  # the editor's Train panel asks the same question
    kernels.select(backend)
    cfg = trainer.config
    steps = cfg.steps
    out.event("start", file=str(path), name=project.name, steps=steps, first_step=trainer.step_count + 1,
              optimizer=dict(cfg.optimizer), seed=cfg.seed, dtype=cfg.dtype, clip=cfg.clip,
              rows=trainer.dataset.rows, batch=trainer.dataset.batch, target=cfg.target, metric=cfg.metric,
              kernels=backend)
    out.line(f"training {path}" + (f" ({project.name})" if project.name else "") + f": {steps} steps of {cfg.optimizer['type']} "
             f"(lr {_fmt(trainer.optimizer.lr)}), batches of {trainer.dataset.batch} of {trainer.dataset.rows} rows, "
             f"seed {cfg.seed}, {cfg.dtype}")
    progress = Progress(out, steps, args.every, trainer.step_count)
    stop = _StopOnInterrupt(out)
    try:
        if args.output:
            with stop:
                result = trainer.run(steps, on_step=progress.update, should_stop=stop)
        else:
            result = trainer.run(steps, on_step=progress.update)
    finally:
        progress.close()
    saved = _save_run(trainer, project, args.output, out) if args.output else None
    out.event("result", **{k: v for k, v in result.to_json().items() if k != "event"},
              saved=str(saved.path) if saved else None, saved_as_asked=saved.as_asked if saved else None)
    out.line(f"loss {_fmt(result.initial_loss)} → {_fmt(result.final_loss)} (fell {100 * result.drop:.1f}%) "
             f"in {result.steps} steps, {result.seconds:.2f} s")
    if result.metric:
        from engine import metrics

        out.line(f"{metrics.label(result.metric)} {metrics.format_value(result.metric, result.metric_initial)} → "
                 f"{metrics.format_value(result.metric, result.metric_final)}")
    if saved is not None:
        out.line(f"saved {saved.what} to {saved.path}")
    if stop.hit:
        out.note(f"{PROG}: interrupted after {result.steps} of {steps} steps" + (f"; saved to {saved.path}" if saved else ""))
        return EXIT_INTERRUPTED
    code = EXIT_FAILED if saved is not None and not saved.as_asked else EXIT_OK
    if result.target:
        loss = f"the output of {result.target['node']}" if "node" in result.target else "loss"
        what = (f"{loss} falls by ≥ {100 * result.target['value']:g}%" if result.target["metric"] == "loss_drop"
                else f"{loss} ≤ {_fmt(result.target['value'])}")
        if result.target_initial is not None:
            out.line(f"{result.target['node']}: {_fmt(result.target_initial)} → {_fmt(result.target_final)}")  # type: ignore[arg-type]
        out.line(f"target ({what}): {'met' if result.target_met else 'NOT met'}")
        if not result.target_met:
            out.note(f"{PROG}: training did not meet its target ({what})")
            return EXIT_FAILED
    return code


# --- gradcheck ------------------------------------------------------------------------------------


def cmd_gradcheck(args: argparse.Namespace, out: Output) -> int:
    from engine.gradcheck import FAILED, KINK, check_graph, learned_weights

    path, project = _load(args.file)
    config = TrainingConfig.from_dict(project.training).with_overrides(seed=args.seed, dtype="float64")
    dataset = data_mod.bind(project.data, project.graph)
    runtime = Runtime(project.graph, weights=project.weights, seed=config.seed, dtype=np.float64)
    loss_key = _loss_key(runtime, config, required=True)
    feeds = dataset.first_feeds()
    weights = sum(len(ws) for ws in runtime.weights.values())
    # Each checked weight runs the model up to 12 times.
    _prepare_kernels(runtime, out, feeds, loss_key, passes=1 + 12 * (weights if args.all else min(weights, args.sample)))
    loss = float(runtime.forward(feeds).values[loss_key])  # type: ignore[index]
    if not math.isfinite(loss):
        runtime.forward_backward(feeds, loss_key, check=True)  # type: ignore[arg-type]
    every = learned_weights(runtime)
    only = None
    if not args.all and len(every) > args.sample:
        # A 24-layer BERT has ~400 weights and each check runs the model up to 12 times: check a
        # seeded sample by default so the command answers in seconds, and say so.
        picked = np.random.default_rng(config.seed).choice(len(every), size=args.sample, replace=False)
        only = {every[i] for i in sorted(picked)}
    checks = check_graph(runtime, feeds, loss_key, seed=config.seed, only=only, tolerance=args.tolerance)
    worst = max((c.error for c in checks), default=0.0)
    status = {c.what: c.status(args.tolerance) for c in checks}
    ok = all(s != FAILED for s in status.values())
    kinks = sum(s == KINK for s in status.values())
    out.line(f"gradient check of {path} in float64 (central differences, tolerance {args.tolerance:g}):")
    if only is not None:
        out.line(f"  checking {len(only)} of {len(every)} weights, picked at random with seed {config.seed} (--all checks every one)")
    for c in checks:
        out.event("check", what=c.what, error=c.error, gradient_norm=c.analytic_norm, ok=status[c.what] != FAILED,
                  status=status[c.what], kinks=len(c.kinks), error_elsewhere=c.error_elsewhere, detail=c.explain(args.tolerance))
        out.line(f"  {c.what:32s} {c.explain(args.tolerance)}")
    if not checks:
        out.line("  (the graph has no weights to check)")
    out.event("result", file=str(path), ok=ok, max_error=worst, tolerance=args.tolerance, checks=len(checks),
              weights=len(every), loss=loss, not_differentiable=kinks)
    note = (f" ({kinks} of them sit at a kink, where the function is not differentiable and the gradient is a "
            f"one-sided slope)") if kinks else ""
    out.line(f"{'ok' if ok else 'FAILED'}: largest relative error {worst:.2e} over {len(checks)} weights{note}")
    return EXIT_OK if ok else EXIT_FAILED


# --- generate -------------------------------------------------------------------------------------


def _train_for_generation(project: Project, path: Path, args: argparse.Namespace, out: Output, implicit: bool) -> Project:
    trainer = Trainer.from_project(project)
    for note in trainer.notes:
        out.note(f"note: {note}")
    _prepare_kernels(trainer.runtime, out, trainer.dataset.first_feeds(), trainer.loss_key,
                     passes=trainer.config.steps + args.max_tokens)
    steps = trainer.config.steps
    if implicit:
        out.note(f"note: {path} holds no trained weights, so it is trained first with its own settings ({steps} steps); "
                 f"to train once and reuse the weights: {PROG} train {args.file} -o trained.bps, then "
                 f"{PROG} generate trained.bps --prompt ...")
    progress = Progress(Output(False, stdout=out.stderr, stderr=out.stderr), steps, max(1, steps // 5), trainer.step_count)
    try:
        result = trainer.run(steps, on_step=progress.update)
    finally:
        progress.close()
    out.note(f"trained {result.steps} steps in {result.seconds:.1f} s: loss {_fmt(result.initial_loss)} → {_fmt(result.final_loss)}"
             + ("" if result.target_met is not False else " (the file's training target was NOT met; the output may be poor)"))
    trained = trainer.to_project(project)
    if args.output:
        saved = _save_run(trainer, project, args.output, out)
        out.note(f"saved {saved.what} to {saved.path}")
    return trained


def cmd_generate(args: argparse.Namespace, out: Output) -> int:
    from engine.generate import generate, translate

    path, project = _load(args.file)
    if args.max_tokens < 0:
        raise UsageError(f"--max-tokens must be 0 or more, got {args.max_tokens}")
    if args.temperature is not None and (args.temperature < 0 or not math.isfinite(args.temperature)):
        raise UsageError(f"--temperature must be 0 (greedy) or more, got {args.temperature}")
    if args.output and Path(args.output).suffix.lower() != ".bps":
        raise UsageError(f"-o {args.output}: trained weights are saved in a .bps container")
    if args.weights:
        source = load(_resolve(args.weights))
        if source.weights is None:
            raise UsageError(f"--weights {args.weights} holds no trained weights (train with: {PROG} train FILE -o trained.bps)")
        missing = sorted(set(source.weights) - set(project.graph.nodes))
        if missing:
            raise UsageError(f"--weights {args.weights} was trained on another graph: it has weights for node {missing[0]}, "
                             f"which {path} does not have")
        project = dataclasses.replace(project, weights=source.weights)
    model = prompt_mod.pick_model(project.graph, args.node, flag="--node")
    text = prompt_mod.model_text(project, model)
    translating = model.type in prompt_mod.S2S_TYPES
    if translating != (text.task == "translate"):
        raise UsageError(f"{model.label} is a {model.type}, but the text data is for the task {text.task}")
    # Words → ids before any training, so that a typo in the prompt fails at once.
    prompt_ids = text.encode_source(args.prompt) if translating else text.encode_prompt(args.prompt)
    trained_here = project.weights is None or args.train
    if trained_here:
        project = _train_for_generation(project, path, args, out, implicit=not args.train)
    elif args.output:
        raise UsageError("-o saves weights trained here; add --train to train (the file already holds trained weights)")
    config = _config(project, argparse.Namespace(seed=None, dtype=None))
    runtime = Runtime(project.graph, weights=project.weights, seed=config.seed, dtype=config.dtype)
    if not trained_here:  # (training picked the backend already)
        from engine import kernels

        kernels.select(prompt_mod.plan_kernels(runtime, args.max_tokens, KernelProgress(out)).backend)  # = the Try panel's
    limit = prompt_mod.context_of(project.graph, model) if not translating else None
    if text.context is not None and limit != text.context:
        out.note(f"note: the model reads up to {limit or 'any number of'} tokens, but it was trained on windows of "
                 f"{text.context}; give its EmbedToken learned positions with max_len {text.context} so that "
                 f"generation sees windows like the training ones")
    try:
        if translating:
            if text.bos is None or text.eos is None:
                raise UsageError("translation needs bos and eos tokens in the text data (the decoder starts from bos and stops at eos)")
            new = translate(runtime, prompt_ids, bos=text.bos_id, eos=text.eos_id, max_len=args.max_tokens,  # type: ignore[arg-type]
                            temperature=args.temperature or 0.0, seed=args.seed, node=model.id)
        else:
            new = generate(runtime, prompt_ids, max_new_tokens=args.max_tokens, temperature=args.temperature,
                           eos=text.eos_id, seed=args.seed, node=model.id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    words = text.decode(new)
    stopped = "max_tokens" if len(new) >= args.max_tokens else "eos"
    out.event("generate", file=str(path), task=text.task, node=model.name or model.id, prompt=args.prompt, prompt_ids=prompt_ids,
              ids=new, words=words, text=" ".join(words), stopped=stopped, temperature=args.temperature, seed=args.seed)
    out.line(" ".join(words))
    if not words:
        out.note(f"(the model ended at once: its first token was {text.eos or 'the end'})")
    return EXIT_OK


# --- info -----------------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace, out: Output) -> int:
    path, project = _load(args.file)
    graph = project.graph
    report = graph.infer()
    nodes = []
    for nid in graph.topological_order():
        node = graph.nodes[nid]
        outputs = {p.name: list(report.shapes[(nid, p.name)]) for p in node.output_ports() if (nid, p.name) in report.shapes}
        weights = {k: list(v) for k, v in graph.weight_shapes(nid, report).items()}
        problem = report.errors.get(nid) or ("an input is not connected" if nid in report.incomplete else None)
        nodes.append({"id": nid, "name": node.name, "type": node.type, "params": node.params, "outputs": outputs,
                      "weights": weights, "placeholder": node.is_placeholder, "problem": problem})
    texts: dict[str, data_mod.TextData] = {}
    try:
        dataset = data_mod.bind(project.data, graph)
        data_info: dict[str, Any] = {"rows": dataset.rows, "batch": dataset.batch,
                                     "inputs": {b.label: list(b.array.shape) for b in dataset.bindings}}
        texts = data_mod.text_sets(project.data)
        if texts:
            data_info["text"] = {name: {"task": t.task, "vocab": list(t.vocab), "bos": t.bos, "eos": t.eos, "pad": t.pad,
                                        "examples": len(t.sentences) + len(t.pairs)} for name, t in texts.items()}
    except FileFormatError as exc:
        data_info = {"problem": str(exc)}
    count = graph.parameter_count()
    est = memory.estimate(graph, TrainingConfig.from_dict(project.training).dtype)
    limit = memory.limit()
    over = limit.nbytes is not None and est.needed > limit.nbytes
    per_node = {n.node: n for n in est.nodes}
    for entry in nodes:
        m = per_node.get(entry["id"])
        entry["memory"] = {"weights_bytes": m.weights, "activations_bytes": m.activations} if m else None
    out.event("info", file=str(path), name=project.name, description=project.description, nodes=nodes,
              links=len(graph.links), parameters=count, data=data_info, training=project.training,
              trained_steps=int(len(project.history["loss"])) if project.history and "loss" in project.history else 0,
              has_weights=project.weights is not None,
              memory={**est.to_json(), "limit_bytes": limit.nbytes, "limit": limit.source, "over_limit": over})
    out.line(f"{path}: {project.name}" if project.name else str(path))
    if project.description:
        for para in textwrap.wrap(project.description, 96):
            out.line(f"  {para}")
    out.line()
    out.line(f"{len(graph.nodes)} nodes, {len(graph.links)} links, {count} learned parameters")
    out.line(f"memory: about {size_text(est.needed)} for a forward and backward pass in {est.dtype} (weights "
             f"{size_text(est.weights)}, values {size_text(est.activations)}, and a gradient for each)"
             + ("" if est.complete else "; nodes whose shapes are not known are not counted"))
    if limit.nbytes is not None:
        out.line(f"  limit {size_text(limit.nbytes)} ({limit.source})"
                 + (": OVER THE LIMIT, so `run` and `train` refuse this graph" if over else ""))
    for n in nodes:
        params = ", ".join(f"{k}={json.dumps(_clean(v), ensure_ascii=False)}" for k, v in n["params"].items())
        if len(params) > 60:
            params = params[:57] + "..."
        outs = ", ".join(f"{p} {_shape(s)}" for p, s in n["outputs"].items())
        shown = list(n["weights"].items())
        ws = ", ".join(f"{k} {_shape(s)}" for k, s in shown[:4]) + (f", … ({len(shown)} in all)" if len(shown) > 4 else "")
        line = f"  {n['name'] or n['id'][:8]:14s} {n['type']:12s} {outs:18s}"
        if ws:
            line += f" weights {ws}"
        if params:
            line += f"  [{params}]"
        if n["placeholder"]:
            line += "  (unknown block type: a placeholder)"
        elif n["problem"]:
            line += f"  PROBLEM: {n['problem']}"
        out.line(line.rstrip())
    if "problem" in data_info:
        out.line(f"data: PROBLEM: {data_info['problem']}")
    elif data_info["inputs"]:
        feeds = ", ".join(f"{k} {_shape(v)}" for k, v in data_info["inputs"].items())
        out.line(f"data: {data_info['rows']} rows in batches of {data_info['batch']}: {feeds}")
        for name, t in texts.items():
            kind = "sentences" if t.task == "next_token" else "pairs"
            out.line(f"text {name!r}: {t.task}, {len(t.sentences) + len(t.pairs)} {kind}, a vocabulary of {len(t.vocab)} "
                     f"words: {t.known_words()}")
    if project.training:
        out.line(f"training: {json.dumps(project.training, ensure_ascii=False)}")
    if project.history and "loss" in project.history and len(project.history["loss"]):
        h = project.history["loss"]
        out.line(f"trained for {len(h)} steps; last loss {_fmt(float(h[-1]))}")
    return EXIT_OK


# --- export ---------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    """Write the graph as a PyTorch module (.py + .safetensors) or an ONNX model (engine.export)."""
    from engine.export import SUFFIXES, MissingExtraError, export

    targets = {suffix: target for target, suffix in SUFFIXES.items()}
    to = args.to or (targets.get(Path(args.output).suffix.lower()) if args.output else None)
    if to is None:
        given = f"-o {args.output} is neither a .py nor an .onnx file; " if args.output else ""
        raise UsageError(f"{given}say what to export to: --to torch (a .py module and its .safetensors weights) or --to onnx")
    want = SUFFIXES[to]
    if args.output and Path(args.output).suffix.lower() != want:
        raise UsageError(f"-o {args.output}: --to {to} writes a {want} file")
    path, project = _load(args.file)
    target = args.output or path.stem + want
    try:
        result = export(project, to, target, outputs=args.returns, seed=args.seed, dtype=args.dtype,
                        check=not args.no_check, origin=str(path))
    except MissingExtraError as exc:
        raise UsageError(str(exc)) from None
    out.event("export", file=str(path), to=to, written=[str(p) for p in result.paths], notes=list(result.notes),
              max_difference=result.max_difference)
    for p in result.paths:
        out.line(f"wrote {p}")
    for note in result.notes:
        out.line(f"  {note}")
    return EXIT_OK


# --- presets, version, start time -----------------------------------------------------------------


def cmd_list_presets(args: argparse.Namespace, out: Output) -> int:
    import presets

    for name in presets.names():
        p = presets.path(name)
        try:
            title = load(p).name
        except FileFormatError as exc:
            title = f"(cannot be loaded: {exc})"
        out.event("preset", name=name, title=title, path=str(p))
        out.line(f"{name:20s} {title}")
    return EXIT_OK


def kernel_start() -> dict[str, Any]:
    """Time a forward and backward pass of the default preset in this process and say whether
    its Numba kernels came from the cache or were compiled (a first-ever start)."""
    import presets
    from engine.kernels import Kernel

    def counts() -> tuple[int, int]:
        hits = sum(sum(k.fast.stats.cache_hits.values()) for k in Kernel.registry)
        misses = sum(sum(k.fast.stats.cache_misses.values()) for k in Kernel.registry)
        return hits, misses

    hits0, misses0 = counts()
    t0 = time.perf_counter()
    project = load(presets.path(presets.DEFAULT))
    config = TrainingConfig.from_dict(project.training)
    runtime = Runtime(project.graph, seed=config.seed, dtype=config.dtype)
    runtime.forward_backward(data_mod.bind(project.data, project.graph).first_feeds(), config.loss or "")
    seconds = time.perf_counter() - t0
    hits, misses = counts()
    return {"seconds": seconds, "loaded": hits - hits0, "compiled": misses - misses0}


def _version_text(measure: Mapping[str, Any]) -> str:
    import numba

    head = (f"{PROG} {engine.__version__} (Python {sys.version.split()[0]}, numpy {np.__version__}, "
            f"numba {numba.__version__})")
    if measure["compiled"]:
        how = (f"{measure['compiled']} kernels compiled: this was a first-ever start; later starts load them "
               f"from the cache")
    else:
        how = f"{measure['loaded']} kernels loaded from the cache"
    return (f"{head}\nkernel start: {measure['seconds']:.2f} s for a forward and backward pass of the "
            f"{'default preset'} ({how})\n(measure a first-ever compile and a cached start with: {PROG} start-time)")


def cmd_start_time(args: argparse.Namespace, out: Output) -> int:
    """Run ``run DEFAULT`` twice in fresh processes with an empty Numba cache: the first compiles
    everything (a first-ever start), the second loads from the cache."""
    import presets

    target = str(presets.path(presets.DEFAULT))
    times = []
    with tempfile.TemporaryDirectory(prefix="bps-numba-") as cache:
        # The Numba kernels, whatever `run` would pick for one pass: this measures their start.
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "BACKPROP_STUDIO_KERNELS": "numba"}
        for _ in range(2):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "engine.cli", "run", target, "--json"], env=env,
                                  capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise EngineError(f"`run {target}` failed in a fresh process: {proc.stderr.strip()[-300:]}")
    first, cached = times
    out.event("start-time", first_compile_seconds=first, cached_seconds=cached, limit_seconds=START_TIME_LIMIT)
    out.line(f"`{PROG} run {presets.DEFAULT}` in a fresh process:")
    out.line(f"  first-ever start (compiles the kernels): {first:.2f} s")
    out.line(f"  cached start:                            {cached:.2f} s  (goal: under {START_TIME_LIMIT:g} s)")
    return EXIT_OK if cached < START_TIME_LIMIT else EXIT_FAILED


def cmd_warmup(args: argparse.Namespace, out: Output) -> int:
    """Compile every kernel signature the app uses (both dtypes unless --dtype), once."""
    from engine import warmup

    dtypes = (args.dtype,) if args.dtype else ("float32", "float64")
    t0 = time.perf_counter()
    needed, compiled = warmup.warm_everything(dtypes, KernelProgress(out, summary=False))
    seconds = time.perf_counter() - t0
    out.event("warmup", kernels=needed, compiled=compiled, cached=needed - compiled, dtypes=list(dtypes),
              seconds=seconds)
    out.line(f"{needed} kernels ({', '.join(dtypes)}): {compiled} compiled in {seconds:.1f} s, "
             f"{needed - compiled} were already in the cache")
    return EXIT_OK


# --- argument parsing ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Backprop Studio: build neural networks from blocks and watch backpropagation. "
                     "Without a command it opens the editor; these commands work without a display.",
                     epilog="exit codes: 0 ok; 1 ran but failed (NaN/Inf, target not met, gradient check failed, "
                     "the run saved elsewhere than asked); 2 bad usage or unusable file; 3 internal error (a bug); "
                     "130 interrupted")
    parser.add_argument("--version", "-V", action="store_true", help="print the version and how long the kernels take to start")
    parser.add_argument("--debug", action="store_true", help=f"with any command: show the traceback of an error (or set {DEBUG_ENV}=1)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(p: argparse.ArgumentParser, seed: bool = True) -> None:
        p.add_argument("file", help="a .json graph file, a .bps container, or a preset name")
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per line on stdout")
        if seed:
            p.add_argument("--seed", type=int, help="seed for the initial weights (and minibatches); default: the file's")

    p = sub.add_parser("run", help="one forward and backward pass on the first batch; prints the loss and gradients")
    common(p)
    p.add_argument("--trace", action="store_true", help="print one event per node, forward then backward")
    p.add_argument("--dtype", choices=("float32", "float64"), help="default: the file's")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="train with the file's settings; exit 1 if its target is not met")
    common(p)
    p.add_argument("--steps", type=int, help="number of steps (default: the file's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the file's)")
    p.add_argument("--dtype", choices=("float32", "float64"), help="default: the file's")
    p.add_argument("-o", "--output", help="save the trained weights, optimiser state and history to this .bps")
    p.add_argument("--every", type=_positive_int, help="report every N steps (default: every step with --json, else 10%%)")
    p.add_argument("--restart", action="store_true", help="ignore weights and optimiser state saved in the file")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="continue a prompt with a language model, or translate it with a sequence-to-sequence model")
    common(p, seed=False)
    p.add_argument("--prompt", required=True, help="words of the file's vocabulary, e.g. \"the quick brown\"")
    p.add_argument("--temperature", type=float, help="0 = greedy (always the best token); above 0 samples from "
                   "softmax(logits / T); default: the model's GenerateToken setting (greedy for composite blocks)")
    p.add_argument("--max-tokens", type=int, default=20, help="stop after this many new tokens (default 20); eos stops sooner")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    p.add_argument("--weights", help="take trained weights from this .bps (trained from the same file)")
    p.add_argument("--train", action="store_true", help="train with the file's settings first (done anyway when the file holds no weights)")
    p.add_argument("-o", "--output", help="with training: save the trained weights to this .bps")
    p.add_argument("--node", help="the model node to use when the graph has several")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("gradcheck", help="compare every weight's gradient with central differences (float64)")
    common(p)
    p.add_argument("--tolerance", type=float, default=GRADCHECK_TOLERANCE, help=f"largest relative error allowed (default {GRADCHECK_TOLERANCE:g})")
    p.add_argument("--sample", type=_positive_int, default=GRADCHECK_SAMPLE, metavar="N",
                   help=f"with more than N weights, check N of them picked with the seed (default {GRADCHECK_SAMPLE})")
    p.add_argument("--all", action="store_true", help="check every weight, however many")
    p.set_defaults(func=cmd_gradcheck)

    p = sub.add_parser("info", help="nodes, params, shapes, parameter count, data and training settings")
    common(p, seed=False)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="write the graph as a PyTorch module (.py + .safetensors) or an ONNX model (inference)")
    common(p)
    p.add_argument("--to", choices=("torch", "onnx"), help="default: from the suffix of -o (.py or .onnx)")
    p.add_argument("-o", "--output", help="the .py (its weights go to a .safetensors beside it) or .onnx file; "
                   "default: the file's name in the current directory")
    p.add_argument("--returns", action="append", metavar="NODE", help="return this node's value instead of the "
                   "graph's Output nodes (repeat for several); the loss is returned too when its inputs are given")
    p.add_argument("--dtype", choices=("float32", "float64"), help="default: the file's")
    p.add_argument("--no-check", action="store_true", help="do not run the result once against the app's forward pass")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("list-presets", help="the lessons that come with Backprop Studio")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_list_presets)

    p = sub.add_parser("warmup", help="compile every kernel now (done once per machine; otherwise the first run of each does it)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    p.add_argument("--dtype", choices=("float32", "float64"), help="only this dtype (default: both)")
    p.set_defaults(func=cmd_warmup)

    p = sub.add_parser("start-time", help="measure a first-ever (compiling) start and a cached start of `run`")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_start_time)
    return parser


def _exit_code(exc: EngineError) -> int:
    if isinstance(exc, (FileFormatError, GraphError, UsageError, OptimizerError)):
        return EXIT_USAGE
    return EXIT_FAILED


def _subject(args: argparse.Namespace | None, argv: list[str]) -> str:
    """`run` on presets/bert.json: what was being done, for a message about a bug."""
    command = getattr(args, "command", None) or next((a for a in argv if a in COMMANDS), None)
    file = getattr(args, "file", None)
    return (f"`{command}`" if command else "the command") + (f" on {file}" if file else "")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # global: every subcommand takes it
    out = Output("--json" in argv)
    args: argparse.Namespace | None = None
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        out = Output(bool(getattr(args, "json", False)))
        if args.version:
            measure = kernel_start()
            out.event("version", version=engine.__version__, kernel_start_seconds=measure["seconds"],
                      kernels_compiled=measure["compiled"], kernels_loaded=measure["loaded"])
            out.line(_version_text(measure))
            return EXIT_OK
        if not args.command:
            raise UsageError(f"give a command: {', '.join(COMMANDS)} (see {PROG} --help)")
        # NaN and Inf are found explicitly and reported with the node that made them; numpy's
        # own warnings would only add noise without saying where.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            # In a context of its own: the kernel backend a command picks ends with it.
            return int(contextvars.copy_context().run(args.func, args, out))
    except EngineError as exc:
        out.error(str(exc), type(exc).__name__)
        if debug:
            traceback.print_exc(file=out.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        out.error("interrupted", "KeyboardInterrupt")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (``| head``): stop quietly, without a second error at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except MemoryError:
        out.error(f"{_subject(args, argv)} ran out of memory; make the model or the data smaller, or lower "
                  f"{memory.LIMIT_ENV} so that such graphs are refused before they start", "MemoryError")
        if debug:
            traceback.print_exc(file=out.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 -- a bug: one line, and the traceback only on request
        out.error(f"{_subject(args, argv)} failed with an unexpected {type(exc).__name__} ({reason(exc)}). This is a "
                  f"bug in Backprop Studio: please report it, with the file if you can share it"
                  + ("" if debug else " (run again with --debug for the traceback)"), "InternalError")
        if debug:
            traceback.print_exc(file=out.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
