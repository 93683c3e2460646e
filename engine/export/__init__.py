"""Export a graph to PyTorch (a readable ``.py`` + ``.safetensors`` weights) or to ONNX.

::

    from engine.export import export
    result = export(project, to="torch", path="model.py")   # also writes model.safetensors
    result.paths, result.notes                              # what was written, what to know
    export(project, to="onnx", path="model.onnx")           # inference only

The PyTorch module computes exactly what the app computes, with the same weights (the file's
trained ones, or the initial ones the app draws from the seed) and the same gradients, so it
trains under torch as it trains here. ONNX is the same module exported for inference (no
gradients, no training) with ``torch.onnx.export``; onnxruntime runs it.

Optional dependencies, the ``export`` extra (``pip install "backprop-studio[export]"``):
``safetensors`` to write the weights, ``torch`` to check the module (and for ONNX), ``onnx``,
``onnxscript`` and ``onnxruntime`` for ONNX. The engine never imports any of them until an export
asks for them. A node that cannot be exported is named with the reason; nothing is dropped.

For the editor's File › Export: call :func:`export` off the GUI thread (an ONNX export takes
seconds, a minute for a 24-layer BERT) and show ``ExportResult.paths`` and ``.notes``;
:class:`MissingExtraError` and :class:`ExportError` (and the engine's GraphError for a graph that
does not compile) carry a message to show as it is. :func:`require` tells beforehand whether a
target can be exported here.

The exporter table, one entry per block type, is :mod:`engine.export.exporters`; the code
generator :mod:`engine.export.torch_code`; the torch classes the generated files are made of
:mod:`engine.export.torch_lib`; ONNX :mod:`engine.export.onnx_export`.
"""

from __future__ import annotations

import importlib.util
import math
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from engine.errors import EngineError, GraphError

if TYPE_CHECKING:
    from engine.export.torch_code import TorchModel
    from engine.runtime import Runtime
    from engine.serialize import Project

__all__ = ["TARGETS", "SUFFIXES", "EXTRA", "ExportError", "MissingExtraError", "ExportResult", "export", "require",
           "prepare", "load_module", "example_feeds"]

TARGETS = ("torch", "onnx")
#: The file each target writes (a .py also gets a .safetensors beside it).
SUFFIXES = {"torch": ".py", "onnx": ".onnx"}
EXTRA = "export"
INSTALL = f'pip install "backprop-studio[{EXTRA}]"'
#: Python modules each target needs (import name -> package name).
NEEDS = {
    "torch": {"safetensors": "safetensors"},
    "onnx": {"torch": "torch", "onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime"},
}
#: Largest difference from the app's own forward pass that a check accepts (float32 rounding of
#: different summation orders stays far below it; a wrong export is far above it).
CHECK_TOLERANCE = {"float32": 1e-4, "float64": 1e-9}


class ExportError(EngineError):
    """An export that cannot be done: a node without a torch equivalent, a failed check."""


class MissingExtraError(ExportError):
    """An optional dependency of the export is not installed; the message says what to install."""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and what the user should know about it."""

    paths: tuple[Path, ...]
    notes: tuple[str, ...]
    max_difference: float | None = None  # largest difference from the app's forward pass, when checked


def _missing(target: str) -> list[str]:
    return [pkg for mod, pkg in NEEDS[target].items() if importlib.util.find_spec(mod) is None]


def require(target: str) -> None:
    """Raise :class:`MissingExtraError` naming the packages that exporting to ``target`` needs."""
    missing = _missing(target)
    if missing:
        what = "PyTorch" if target == "torch" else "ONNX"
        raise MissingExtraError(
            f"exporting to {what} needs {', '.join(NEEDS[target].values())}; not installed here: "
            f"{', '.join(missing)}. Install the '{EXTRA}' extra: {INSTALL}"
        )


def _weights_note(project: "Project", seed: int) -> str:
    if project.weights is None:
        return f"initial weights drawn with seed {seed}, as the app draws them"
    steps = len(project.history["loss"]) if project.history and "loss" in project.history else 0
    return f"weights trained for {steps} steps" if steps else "the file's weights"


def prepare(project: "Project", *, outputs: Sequence[str] | None = None, seed: int | None = None,
            dtype: str | None = None, origin: str = "") -> tuple["TorchModel", "Runtime"]:
    """The generated PyTorch model for ``project`` and the app's runtime it mirrors (same
    weights, same dtype). Raises :class:`ExportError` naming every node that cannot be exported."""
    from engine.export.torch_code import ExportProblem, generate
    from engine.runtime import Runtime
    from engine.train import TrainingConfig

    for name in outputs or ():
        try:
            project.graph.find(name)
        except GraphError as exc:
            raise GraphError(f"cannot return {name!r}: {exc}") from None
    config = TrainingConfig.from_dict(project.training).with_overrides(seed=seed, dtype=dtype)
    runtime = Runtime(project.graph, weights=project.weights, seed=config.seed, dtype=config.dtype)
    loss = config.loss
    if loss:
        try:
            node = project.graph.find(loss)
        except GraphError as exc:
            raise ExportError(f"training.loss is {loss!r}, but {exc}") from None
        if runtime.program.step(node.id).out_shapes.get(node.output_ports()[0].name) != ():
            loss = None  # not a scalar: not a loss to train on (the trainer refuses it too)
    try:
        model = generate(project.graph, runtime.weights, dtype=runtime.dtype, title=project.name,
                         description=project.description, origin=origin,
                         weights_note=_weights_note(project, config.seed), outputs=outputs, loss=loss)
    except ExportProblem as exc:
        listed = "; ".join(f"{label}: {reason}" for label, reason in exc.problems)
        raise ExportError(f"cannot export {len(exc.problems)} node{'s' if len(exc.problems) > 1 else ''}: {listed}") from None
    return model, runtime


def load_module(source: str, path: str | Path = "<exported model>") -> types.ModuleType:
    """Run generated source as a module (needs torch); ``path`` becomes its ``__file__``."""
    module = types.ModuleType("backprop_studio_exported_model")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - our own generated code
    return module


def example_feeds(project: "Project", runtime: "Runtime", seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs at the graph's declared shapes, keyed by Input node id: the first batch of the
    file's data when it has data, else random numbers (and token ids 0)."""
    from engine import data as data_mod

    try:
        return runtime.resolve_feeds(data_mod.bind(project.data, project.graph).first_feeds())
    except EngineError:
        pass
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for step in runtime.program.input_nodes:
        shape = step.out_shapes["out"]
        if step.block.output_kind("out").value == "ids":
            feeds[step.node] = np.zeros(shape, np.int64)
        else:
            feeds[step.node] = rng.uniform(-1.0, 1.0, size=shape).astype(runtime.dtype)
    return feeds


def _torch_outputs(module: types.ModuleType, model: "TorchModel", runtime: "Runtime", feeds: Mapping[str, np.ndarray],
                   state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    dtype = {"float32": torch.float32, "float64": torch.float64}[runtime.dtype.name]
    net = module.Model(dtype)
    net.load_state_dict({k: torch.from_numpy(np.asarray(v, order="C")) for k, v in state.items()})
    net.eval()  # the app's forward pass runs in evaluation mode (Dropout off, BatchNorm's running statistics)
    kwargs = {i.ident: torch.from_numpy(np.asarray(feeds[i.node], order="C")) for i in model.inputs}
    with torch.no_grad():
        out = net(**kwargs)
    return {k: v.numpy() for k, v in out.items()}


def compare(got: Mapping[str, np.ndarray], model: "TorchModel", runtime: "Runtime", feeds: Mapping[str, np.ndarray],
            what: str) -> float:
    """Largest difference between ``got`` (by output key) and the app's forward pass; raises
    :class:`ExportError` above :data:`CHECK_TOLERANCE`."""
    values = runtime.forward(feeds).values
    worst = 0.0
    for info in model.outputs:
        if info.key not in got:
            continue
        ours = np.asarray(values[info.source], dtype=np.float64)
        theirs = np.asarray(got[info.key], dtype=np.float64)
        if ours.shape != theirs.shape:
            raise ExportError(f"check failed: {what} gives output {info.key!r} the shape {theirs.shape}, the app {ours.shape}")
        if ours.size:
            scale = np.maximum(1.0, np.abs(ours))
            finite = np.isfinite(ours) & np.isfinite(theirs)
            if not np.array_equal(np.isfinite(ours), np.isfinite(theirs)):
                raise ExportError(f"check failed: {what} and the app disagree on which values of {info.key!r} are finite")
            worst = max(worst, float(np.max(np.abs(ours - theirs)[finite] / scale[finite], initial=0.0)))
    tolerance = CHECK_TOLERANCE[runtime.dtype.name]
    if not math.isfinite(worst) or worst > tolerance:
        raise ExportError(f"check failed: {what} differs from the app's forward pass by {worst:.3g} "
                          f"(more than {tolerance:g}); please report this as a bug")
    return worst


def _write(path: Path, payload: bytes) -> None:
    from engine.serialize import _atomic_write

    try:
        _atomic_write(path, payload)
    except OSError as exc:
        raise ExportError(f"{path}: cannot be written ({exc.strerror or exc})") from None


def _export_torch(project: "Project", model: "TorchModel", runtime: "Runtime", path: Path, check: bool) -> ExportResult:
    from safetensors.numpy import save

    weights = path.with_suffix(".safetensors")
    state = {k: np.asarray(v, order="C") for k, v in model.state.items()}
    payload = save(state, metadata={"format": "pt", "producer": "backprop-studio", "dtype": runtime.dtype.name})
    notes = list(model.notes)
    worst = None
    if check and importlib.util.find_spec("torch") is not None:
        feeds = example_feeds(project, runtime)
        worst = compare(_torch_outputs(load_module(model.source, path), model, runtime, feeds, state), model, runtime,
                        feeds, "the PyTorch module")
        notes.append(f"checked: on the first batch the module matches the app's forward pass to {worst:.2g}")
    elif check:
        notes.append("torch is not installed here, so the module was not run")
    _write(path, model.source.encode("utf-8"))
    _write(weights, payload)
    notes.append(f"Model.load() reads {weights.name} beside {path.name} ({len(state)} tensors, {runtime.dtype.name})")
    return ExportResult((path, weights), tuple(notes), worst)


def export(project: "Project", to: str, path: str | Path, *, outputs: Sequence[str] | None = None,
           seed: int | None = None, dtype: str | None = None, check: bool = True, origin: str = "") -> ExportResult:
    """Export ``project`` to ``"torch"`` (``path`` is the ``.py``; the ``.safetensors`` goes beside
    it) or ``"onnx"``. ``outputs`` names nodes whose values forward returns instead of the
    graph's Output nodes; ``seed`` and ``dtype`` override the file's training settings (initial
    weights and float type); ``check`` runs the result once against the app's forward pass.
    Raises :class:`MissingExtraError` (with the install command), :class:`ExportError`, or the
    engine's usual errors for a graph that does not compile."""
    if to not in TARGETS:
        raise ExportError(f"cannot export to {to!r}: choose one of {', '.join(TARGETS)}")
    path = Path(path)
    want = SUFFIXES[to]
    if path.suffix.lower() != want:
        raise ExportError(f"{path}: {'a PyTorch module' if to == 'torch' else 'an ONNX model'} is written to a {want} file")
    require(to)
    model, runtime = prepare(project, outputs=outputs, seed=seed, dtype=dtype, origin=origin)
    if to == "torch":
        return _export_torch(project, model, runtime, path, check)
    from engine.export.onnx_export import export_onnx

    return export_onnx(project, model, runtime, path, check)
