"""Where one pass's inputs come from: a lesson's first batch, a single example, or seeded random
inputs for a graph that has no data.

``backprop-studio run FILE`` and the editor's Run controls both start here, so the loss the
editor shows is the loss ``run`` prints, to the last digit::

    setup = lesson_pass(project)                     # what `run` does: the first batch, the file's seed
    p = setup.runtime.start(setup.feeds, trace=True)

    setup = prepare(project, one_example=True)       # the lecture's picture: one example, plain numbers
    setup = prepare(Project(graph))                  # a graph without data: seeded random inputs

Feeds are keyed by Input node id. Nothing here keeps state; every function returns new objects.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from engine import data as data_mod
from engine import warmup
from engine.blocks import Category, Kind
from engine.errors import EngineError, GraphError
from engine.graph import Graph
from engine.runtime import Runtime
from engine.serialize import Project
from engine.train import TrainingConfig, TrainingError

PortKey = tuple[str, str]

#: Block categories of the lecture's scalar lessons: one example makes every wire a few plain numbers.
_ELEMENTARY = frozenset({Category.DATA, Category.MATH, Category.LOSSES})
#: Random float inputs: N(0, 1) scaled so sums over a few features stay in a readable range.
_RANDOM_SCALE = 1.0
_DEFAULT_IDS = 2  # ids range when nothing downstream says how many there are


@dataclass(frozen=True)
class PassSetup:
    """Everything one pass needs: the runtime (graph, weights, dtype), the feeds by Input node
    id, the loss to take gradients of (None: forward only) and a sentence saying where the data
    came from."""

    runtime: Runtime
    feeds: dict[str, np.ndarray]
    loss: PortKey | None
    source: str  # "lesson" | "one example" | "random"
    note: str
    batch: int = 1
    rows: int = 1

    def ready(self, progress: "warmup.Progress | None" = None) -> "warmup.Plan":
        """The kernel backend for this one pass, with what it needs compiled: the same choice
        ``backprop-studio run`` makes, so a pass run under ``kernels.using(plan.backend)``
        gives the same numbers in the editor as on the command line."""
        return warmup.ready(self.runtime, 1, self.feeds, self.loss, progress)


def loss_key(runtime: Runtime, config: TrainingConfig, required: bool) -> PortKey | None:
    """The output named by ``training.loss`` (None when there is none and it is not required);
    raises :class:`TrainingError` when it names nothing or something that is not one number."""
    if not config.loss:
        if required:
            raise TrainingError("the file names no loss: set training.loss to the name of the node whose output is the loss")
        return None
    try:
        key = runtime.loss_port(config.loss)
    except GraphError as exc:
        raise TrainingError(f"training.loss is {config.loss!r}, but {exc}") from None
    step = runtime.program.step(key[0])
    if step.out_shapes.get(key[1]) != ():
        raise TrainingError(f"training.loss is {step.label}, whose output has shape {step.out_shapes.get(key[1])}; the loss must be a single number")
    return key


def auto_loss(runtime: Runtime) -> PortKey | None:
    """The graph's loss when no file names one: the last output, in schedule order, that is a
    single float number and feeds nothing."""
    used = {src for step in runtime.program.steps for src in step.sources.values()}
    found = None
    for step in runtime.program.steps:
        for port, shape in step.out_shapes.items():
            if shape == () and (step.node, port) not in used and step.block.output_kind(port) is not Kind.IDS:
                found = (step.node, port)
    return found


def lesson_pass(project: Project, *, seed: int | None = None, dtype: Any = None) -> PassSetup:
    """The pass ``backprop-studio run FILE`` makes: the file's data (its first batch), its
    seed and dtype, its saved weights when it has them, and ``training.loss``."""
    config = TrainingConfig.from_dict(project.training).with_overrides(seed=seed, dtype=dtype)
    dataset = data_mod.bind(project.data, project.graph)
    runtime = Runtime(project.graph, weights=project.weights, seed=config.seed, dtype=config.dtype)
    key = loss_key(runtime, config, required=False)
    rows = f"the first {dataset.batch} of {dataset.rows} rows" if dataset.batch < dataset.rows else f"all {dataset.rows} rows"
    note = f"the lesson's data: {rows}, seed {config.seed}, {runtime.dtype}"
    return PassSetup(runtime, dataset.first_feeds(), key, "lesson", note, dataset.batch, dataset.rows)


def suits_one_example(graph: Graph) -> bool:
    """Whether the graph is one of the lecture's scalar pictures: elementary blocks only
    (inputs, arithmetic, losses) fed by batched Inputs, so one example turns every wire into a
    few plain numbers."""
    batched = False
    for node in graph.nodes.values():
        if node.block is None or node.block.spec().category not in _ELEMENTARY:
            return False
        if node.type == "Input" and len(node.params["shape"]) >= 1:
            batched = True
    return batched


def single_example(project: Project) -> Project:
    """The same lesson on a single example: every batched Input takes a batch of one row (the
    first row of its data), so the slides' scalars are plain numbers on the wires. Weights and
    the rest of the file are unchanged. Raises :class:`GraphError` when the graph does not work
    with a batch of one."""
    graph = project.graph.copy()
    for node in graph.nodes.values():
        if node.type == "Input" and len(node.params["shape"]) >= 1:
            graph.set_params(node.id, {"shape": (1, *node.params["shape"][1:])})
    report = graph.infer()
    if report.errors:
        nid, message = next(iter(report.errors.items()))
        raise GraphError(f"one example does not fit this graph: {graph.nodes[nid].label}: {message}")
    return dataclasses.replace(project, graph=graph)


def _id_range(graph: Graph, node_id: str) -> int:
    """How many ids an ids Input may take: the smallest vocabulary (or class count) among the
    blocks it feeds."""
    report = graph.infer()
    limits = []
    for link in graph.links_of(node_id):
        if link.src != node_id:
            continue
        consumer = graph.nodes[link.dst]
        params = consumer.params
        for key in (f"{link.dst_port}_vocab", "vocab", "classes"):
            if isinstance(params.get(key), int):
                limits.append(params[key])
                break
        else:
            if link.dst_port == "target":
                # a loss: as many classes as the scores it compares with have columns
                for other in graph.links_of(consumer.id):
                    if other.dst == consumer.id and other.dst_port != "target":
                        shape = report.shapes.get((other.src, other.src_port))
                        if shape:
                            limits.append(int(shape[-1]))
    return max(1, min(limits)) if limits else _DEFAULT_IDS


def random_feeds(graph: Graph, seed: int = 0, dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """Seeded random data for every Input of ``graph``, of its declared shape: N(0, 1) floats,
    and ids below the vocabulary (or class count) of the blocks they feed. One generator per
    Input, keyed by its id, so adding an Input does not change the others' data."""
    from engine.runtime import node_rng

    feeds: dict[str, np.ndarray] = {}
    for node in graph.nodes.values():
        if node.type != "Input":
            continue
        shape = tuple(node.params["shape"])
        rng = node_rng(seed + 1, node.id)
        if node.params.get("dtype") == "ids":
            feeds[node.id] = rng.integers(0, _id_range(graph, node.id), size=shape, dtype=np.int64)
        else:
            feeds[node.id] = np.asarray(_RANDOM_SCALE * rng.standard_normal(shape), dtype=dtype)
    return feeds


def prepare(project: Project, *, one_example: bool = False, overrides: Mapping[str, np.ndarray] | None = None,
            seed: int | None = None) -> PassSetup:
    """The editor's pass for any graph. A lesson runs on its own data exactly as ``run`` does
    (:func:`lesson_pass`); with ``one_example`` on its first example only (:func:`single_example`). A graph without data,
    or whose data no longer fits it (the user changed the Inputs), runs on seeded
    :func:`random_feeds`, and the note says why. ``overrides`` (Input id → array, typed by the
    user) replace those Inputs' data. The loss is ``training.loss``, else :func:`auto_loss`."""
    if one_example:
        project = single_example(project)
    note_prefix = "one example of " if one_example else ""
    setup: PassSetup | None = None
    reason = ""
    if project.data:
        try:
            setup = lesson_pass(project, seed=seed)
        except EngineError as exc:
            reason = f" (the lesson's data does not fit the graph any more: {exc})"
    if setup is None:
        config = TrainingConfig.from_dict(project.training).with_overrides(seed=seed)
        runtime = Runtime(project.graph, weights=project.weights, seed=config.seed, dtype=config.dtype)
        try:
            key = loss_key(runtime, config, required=False)
        except TrainingError:
            key = None
        feeds = random_feeds(project.graph, config.seed, runtime.dtype)
        setup = PassSetup(runtime, feeds, key, "random",
                          f"random inputs of the declared shapes, seed {config.seed}{reason}")
    elif one_example:
        setup = dataclasses.replace(setup, source="one example", note=note_prefix + setup.note.replace("the first 1 of", "the first of"))
    if setup.loss is None:
        setup = dataclasses.replace(setup, loss=auto_loss(setup.runtime))
    if overrides:
        feeds = dict(setup.feeds)
        typed = []
        for node_id, value in overrides.items():
            if node_id in feeds:
                feeds[node_id] = np.asarray(value)
                typed.append(setup.runtime.graph.nodes[node_id].name or node_id[:8])
        setup.runtime.resolve_feeds(feeds)  # checks shapes and kinds now, with the Input's name
        if typed:
            setup = dataclasses.replace(setup, feeds=feeds, note=setup.note + "; typed by hand: " + ", ".join(typed))
    return setup
