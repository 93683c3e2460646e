"""ONNX: the generated PyTorch module, exported with ``torch.onnx.export`` (the dynamo exporter,
which needs onnxscript), checked with ``onnx.checker`` and run once with onnxruntime.

Inference only: the ONNX graph computes the forward pass, no gradients and no training. Inputs
and outputs carry the names of the Input and Output nodes. The batch axis (and the sequence
length of token-id and (B, L, d) inputs) are exported as dynamic where the graph allows it
(``torch.export.Dim.AUTO``: the exporter keeps an axis dynamic unless the code fixes its size)
and named ``batch`` / ``<input>_length``; the notes say which stayed fixed.

What the ONNX model outputs: what ``Model.forward`` returns when given only the inputs it
requires, so targets that only the loss needs are left out. A graph with no Output node
returns its loss (and then takes every input): the notes say so and how to export predictions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.export import ExportError, ExportResult, compare, example_feeds, load_module, _write

if TYPE_CHECKING:
    from engine.export.torch_code import InputInfo, TorchModel
    from engine.runtime import Runtime
    from engine.serialize import Project

#: torch.export.Dim.AUTO (dynamic unless the code fixes the size) appeared in torch 2.6.
MIN_TORCH = (2, 6)


def _dynamic_axes(info: "InputInfo") -> dict[int, str]:
    """The axes to try as dynamic, with their names: the batch, and a sequence length."""
    axes = {0: "batch"} if info.shape else {}
    if (info.ids and len(info.shape) == 2) or (not info.ids and len(info.shape) == 3):
        axes[1] = f"{info.ident}_length"
    return axes


def _dynamic_shapes(required: list["InputInfo"], Dim: Any, shared: bool) -> dict[str, Any]:
    """``dynamic_shapes`` for torch.onnx.export: ``Dim.AUTO`` on every dynamic axis, or (``shared``)
    one ``Dim("batch")`` for every input's batch axis, which ties them."""
    batch = Dim("batch") if shared else Dim.AUTO
    return {i.ident: {axis: (batch if axis == 0 else Dim.AUTO) for axis in _dynamic_axes(i)} or None for i in required}


def _trace_inputs(model: "TorchModel", runtime: "Runtime", feeds: dict[str, np.ndarray], grow: bool) -> dict[str, np.ndarray]:
    """Inputs for tracing. ``grow`` makes every dynamic axis at least 2 long, since the exporter
    takes a size of 1 for a fixed one."""
    out = {}
    for info in model.inputs:
        if not info.required:
            continue
        value = feeds[info.node]
        if grow:
            for axis in _dynamic_axes(info):
                if value.shape[axis] < 2:
                    value = np.concatenate([value, value], axis=axis)
        out[info.ident] = value
    return out


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporter's progress lines, warnings and logging are about its internals: keep them
    from the user (an error still surfaces as an exception)."""
    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _reason(exc: BaseException) -> str:
    """The first line of the innermost cause: the exporter wraps the real reason in advice."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _rename_dims(proto: Any, names: dict[str, str]) -> None:
    """Give the exporter's symbols (``s23``) our names (``batch``) everywhere they appear."""
    if not names:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(names, key=len, reverse=True)) + r")\b")
    graph = proto.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: names[m.group(1)], dim.dim_param)


def export_onnx(project: "Project", model: "TorchModel", runtime: "Runtime", path: Path, check: bool) -> ExportResult:
    import onnx
    import torch

    if tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2]) < MIN_TORCH:
        raise ExportError(f"exporting to ONNX needs torch {'.'.join(map(str, MIN_TORCH))} or newer; this is torch {torch.__version__}")
    from torch.export import Dim

    required = [i for i in model.inputs if i.required]
    returned = [o for o in model.outputs if not (o.loss and len(required) < len(model.inputs))]
    notes: list[str] = ["ONNX is for inference: it computes the forward pass only (no gradients, no training)"]
    if all(o.loss for o in returned):
        notes.append(f"the graph has no Output node, so the ONNX model computes the loss {returned[0].key!r} from every "
                     f"input; to export predictions, add an Output node after them (or name the nodes to return)")
    clash = {o.key for o in returned} & {i.name for i in required}
    if clash:
        raise ExportError(f"an Input and a returned value are both named {sorted(clash)[0]!r}; ONNX needs distinct names")
    dtype = {"float32": torch.float32, "float64": torch.float64}[runtime.dtype.name]
    module = load_module(model.source)
    net = module.Model(dtype)
    net.load_state_dict({k: torch.from_numpy(np.asarray(v, order="C")) for k, v in model.state.items()})
    net.eval()
    feeds = example_feeds(project, runtime)
    program = None
    errors = []
    # One batch size for every input: a true batch, which may be grown for tracing. Sizes that
    # differ mean some axis 0 of size 1 is shared by the batch (an RNNCell's h): kept as it is.
    one_batch = len({i.shape[0] for i in required if i.shape}) <= 1
    attempts = ((True, True), (False, True), (False, False)) if one_batch else ((False, False),)
    for shared, grow in attempts:
        dynamic = _dynamic_shapes(required, Dim, shared)
        kwargs = {k: torch.from_numpy(np.asarray(v, order="C")) for k, v in _trace_inputs(model, runtime, feeds, grow).items()}
        try:
            with _quiet():
                program = torch.onnx.export(net, (), kwargs=kwargs, dynamo=True, dynamic_shapes=dynamic,
                                            input_names=[i.name for i in required], output_names=[o.key for o in returned],
                                            verbose=False, optimize=True)
            break
        except Exception as exc:  # the exporter's own errors: many types, all "could not export"
            errors.append(_reason(exc))
    if program is None:
        raise ExportError(f"torch.onnx.export could not export this graph: {errors[-1]}")
    proto = program.model_proto
    names: dict[str, str] = {}
    fixed: list[str] = []
    for info, value in zip(required, proto.graph.input):
        dims = value.type.tensor_type.shape.dim
        for axis, name in _dynamic_axes(info).items():
            symbol = dims[axis].dim_param
            if not symbol:
                fixed.append(f"{'the batch' if axis == 0 else 'the length'} of {info.name!r} is fixed at {dims[axis].dim_value}")
            elif symbol not in names:
                # one name per symbol: inputs whose sizes the model does not tie get names of their own
                names[symbol] = name if name not in names.values() else f"{info.ident}_{name}"
    _rename_dims(proto, names)
    dynamic_names = sorted(set(names.values()))
    if dynamic_names:
        notes.append(f"dynamic axes: {', '.join(dynamic_names)}")
    notes += fixed
    proto.doc_string = (f"{project.name or 'A model'}, exported from Backprop Studio for inference "
                        f"(forward pass only). Inputs: {', '.join(i.name for i in required)}. "
                        f"Outputs: {', '.join(o.key for o in returned)}.")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejects the exported model: {str(exc).strip().splitlines()[0]}") from None
    payload = proto.SerializeToString()
    worst = None
    if check:
        import onnxruntime

        session = onnxruntime.InferenceSession(payload, providers=["CPUExecutionProvider"])
        got_list = session.run(None, {i.name: np.asarray(feeds[i.node], order="C") for i in required})
        got = {o.name: v for o, v in zip(session.get_outputs(), got_list)}
        worst = compare(got, model, runtime, feeds, "onnxruntime")
        notes.append(f"checked: on the first batch onnxruntime matches the app's forward pass to {worst:.2g} "
                     f"(opset {next((o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')), '?')})")
    _write(path, payload)
    return ExportResult((path,), tuple(notes), worst)
