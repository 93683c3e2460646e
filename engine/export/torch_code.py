"""Write a graph as one self-contained PyTorch source file, plus the state dict of its weights.

Needs neither torch nor safetensors: this is text generation. The file holds

- the classes of :mod:`engine.export.torch_lib` that the graph uses (copied as text, with the
  block's formula from its spec as their docstring), and whatever helpers they need;
- one class per composite block, written from its inner graph (a TransformerBlock becomes a
  module with ``attn``, ``norm1``, ``ffn`` and ``norm2``), shared by identical composites;
- ``class Model(nn.Module)``: one submodule (or parameter, buffer or line) per node, named after
  the node; ``forward`` takes the Input nodes as keyword arguments and returns a dict.

What ``forward`` returns: the graph's Output nodes (or the nodes the caller names), plus the
loss (``training.loss``) when the inputs it needs are given. Inputs that only the loss needs
(the targets) are optional, so the same model serves training and inference. A graph with
neither an Output node nor a loss returns every value nothing else uses.
"""

from __future__ import annotations

import ast
import builtins
import functools
import keyword
import re
import textwrap
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

import engine
from engine import blocks
from engine.compile import Program, Step, compile_graph
from engine.export.exporters import CANNOT_EXPORT, EXPORTERS, CannotExport, NodeView, Torch, snake, unhandled
from engine.graph import Graph

LIBRARY = Path(__file__).with_name("torch_lib.py")
PortKey = tuple[str, str]
Weights = Mapping[str, Mapping[str, np.ndarray]]

#: Attributes of ``torch.nn.Module`` a submodule must not shadow (tests check this list against
#: the installed torch), plus names the generated code itself uses.
MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile", "cpu",
    "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state",
    "get_parameter", "get_submodule", "half", "ipu", "load", "load_state_dict", "modules", "mtia", "named_buffers",
    "named_children", "named_modules", "named_parameters", "parameters", "register_backward_hook", "register_buffer",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "training", "type", "xpu", "zero_grad",
})
RESERVED = frozenset({"self", "torch", "nn", "F", "math", "os", "Path", "Model", "WEIGHTS", "annotations"}) | frozenset(dir(builtins))


class ExportProblem(Exception):
    """Nodes that cannot be exported: ``problems`` lists ``(node label, reason)``."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{label}: {reason}" for label, reason in self.problems))


@dataclass(frozen=True)
class InputInfo:
    """A keyword argument of ``Model.forward``: an Input node."""

    node: str  # node id
    name: str  # the node's name (the ONNX input name)
    ident: str  # the keyword argument
    ids: bool  # token ids (int64) rather than floats
    shape: tuple[int, ...]  # the graph's declared shape (axis 0 is the batch)
    required: bool  # False: only the loss needs it


@dataclass(frozen=True)
class OutputInfo:
    """A key of the dict ``Model.forward`` returns."""

    key: str
    source: PortKey
    shape: tuple[int, ...]
    loss: bool  # the training loss (returned only when its inputs are given)


@dataclass(frozen=True)
class TorchModel:
    """The generated source and the state dict that goes with it."""

    source: str
    state: dict[str, np.ndarray]
    inputs: tuple[InputInfo, ...]
    outputs: tuple[OutputInfo, ...]
    notes: tuple[str, ...]


# --- names ------------------------------------------------------------------------------------------


def identifier(name: str, fallback: str) -> str:
    """A Python identifier from a node name: ``φ(x)`` → ``φ_x``, ``1 − margin`` →
    ``<fallback>_1_margin``. NFKC-normalised, as Python normalises identifiers."""
    text = unicodedata.normalize("NFKC", name)
    # letters and digits of any script (φ stays φ); everything else, even a middle dot that
    # Python would accept, becomes "_" so that the code reads as it runs
    chars = [c if (c.isalnum() or c == "_") and ("a" + c).isidentifier() else "_" for c in text]
    ident = re.sub(r"_+", "_", "".join(chars)).strip("_")
    if not ident:
        return fallback
    if not ident.isidentifier():  # starts with a digit (or another non-starting character)
        ident = f"{fallback}_{ident}"
    return ident


class Names:
    """Hands out unique identifiers in one class: never a keyword, a builtin, a name the code
    uses or an ``nn.Module`` attribute."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def take(self, base: str) -> str:
        if keyword.iskeyword(base) or base in RESERVED or base in MODULE_ATTRIBUTES or base.startswith("__"):
            base = base.strip("_") + "_"
        name, i = base, 2
        while name in self.taken:
            name = f"{base}_{i}"
            i += 1
        self.taken.add(name)
        return name


# --- the library of torch classes --------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def library() -> dict[str, tuple[str, frozenset[str]]]:
    """Top-level definitions of ``torch_lib.py`` in file order: name -> (source, names it uses)."""
    text = LIBRARY.read_text(encoding="utf-8")
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            name = node.name
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        else:
            continue  # the docstring and the imports
        source = ast.get_source_segment(text, node) or ""
        out[name] = (source, frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name)))
    return out


def _with_formula(name: str, source: str) -> str:
    """A library class with the block's formula (from its spec) as its docstring."""
    try:
        spec = blocks.spec(name)
    except Exception:  # not a block type (a helper class)
        return source
    head, _, rest = source.partition("\n")
    formula = spec.formula.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return f'{head}\n    """{spec.type_id}: {formula}"""\n\n{rest}'


def _library_code(used: set[str]) -> str:
    lib = library()
    need: set[str] = set()
    todo = [n for n in used if n in lib]
    while todo:
        name = todo.pop()
        if name in need:
            continue
        need.add(name)
        todo.extend(r for r in lib[name][1] if r in lib and r not in need)
    parts = [_with_formula(name, src) for name, (src, _) in lib.items() if name in need]
    return "\n\n\n".join(parts)


# --- one class per graph ------------------------------------------------------------------------------


@dataclass
class _Body:
    """The parts of one generated class."""

    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    state: dict[str, np.ndarray] = field(default_factory=dict)


def _unsupported(type_id: str) -> str | None:
    """Why a primitive block type cannot be exported, or None."""
    if type_id in CANNOT_EXPORT:
        return CANNOT_EXPORT[type_id]
    if type_id not in EXPORTERS:
        return f"no PyTorch exporter for block type {type_id!r} yet"
    return None


def _comment(text: str) -> str:
    return "# " + " ".join(text.split())


class Generator:
    """Writes the classes of one model (see the module docstring)."""

    def __init__(self) -> None:
        self.classes: dict[str, str] = {}  # class name -> source, in order of first use
        self.by_source: dict[str, str] = {}  # source with a placeholder name -> class name
        self.uses: set[str] = set()  # names used from the library
        self.problems: list[tuple[str, str]] = []
        self.notes: list[str] = []

    # --- a node ------------------------------------------------------------------------------

    def node(self, graph: Graph, step: Step, ident: str, args: Mapping[str, str], owners: Mapping[str, str],
             weights: Mapping[str, np.ndarray] | None, where: str) -> tuple[Torch | None, dict[str, np.ndarray]]:
        """The node as torch, and its part of the state dict (keys below ``self.<ident>``)."""
        node = graph.nodes[step.node]
        label = f"{where}{node.label} ({node.type})"
        block = step.block
        if block.composite:
            return self.composite(step, ident, args, weights, f"{where}{node.name or node.label} › ")
        reason = _unsupported(node.type)
        if reason:
            self.problems.append((label, reason))
            return None, {}
        exporter = EXPORTERS[node.type]
        extra = unhandled(node.type, block.p, {p.name: p.coerce(node.type, p.default) for p in block.spec().params})
        if extra:
            self.problems.append((label, f"parameter {extra[0]!r} = {block.p[extra[0]]!r} is not exported yet "
                                         f"(export it at its default, {block.spec().param(extra[0]).default!r})"))
            return None, {}
        view = NodeView(node.name, node.type, block, step.in_shapes, step.out_shapes, step.weight_shapes,
                        ident, args, owners)
        try:
            torch_ = exporter(view)
        except CannotExport as exc:
            self.problems.append((label, str(exc)))
            return None, {}
        state: dict[str, np.ndarray] = {}
        if weights:
            converted = torch_.weights(weights) if torch_.weights else dict(weights)
            state = {k: np.asarray(v) for k, v in converted.items()}
        return torch_, state

    def composite(self, step: Step, ident: str, args: Mapping[str, str], weights: Mapping[str, np.ndarray] | None,
                  where: str) -> tuple[Torch, dict[str, np.ndarray]]:
        block = step.block
        inner = block.inner(step.in_shapes)  # type: ignore[attr-defined]
        inner_weights = block.split_weights(inner, weights) if weights else None  # type: ignore[attr-defined]
        spec = block.spec()
        names = Names()
        params = [names.take(identifier(port, "x")) for port in inner.inputs]
        body = self.body(inner.graph, inner.program, dict(zip(inner.inputs, params)), inner_weights, where, names,
                         returns=[(port, (port, "out")) for port in inner.outputs])
        doc = f'"""{spec.type_id}: {spec.formula}"""'
        sig = ", ".join(["self", *params])
        text = "\n".join([
            "class {name}(nn.Module):", f"    {doc}", "",
            "    def __init__(self) -> None:", "        super().__init__()", *("        " + l for l in body.init), "",
            f"    def forward({sig}):", *("        " + l for l in body.forward),
        ])
        cls = self.by_source.get(text)
        if cls is None:
            cls, i = spec.type_id, 2
            while cls in self.classes or cls in library() or cls == "Model":
                cls, i = f"{spec.type_id}{i}", i + 1
            self.by_source[text] = cls
            self.classes[cls] = text.replace("{name}", cls, 1)
        call = f"self.{ident}({', '.join(args[p] for p in inner.inputs)})"
        return Torch(call, ports=tuple(inner.outputs), module=f"{cls}()"), body.state

    # --- a graph -------------------------------------------------------------------------------

    def body(self, graph: Graph, program: Program, inputs: Mapping[str, str], weights: Weights | None, where: str,
             names: Names, returns: Sequence[tuple[str, PortKey]], loss: tuple[str, PortKey] | None = None,
             result: str | None = None) -> _Body:
        """The ``__init__`` and ``forward`` lines of the class for ``graph``. ``inputs`` maps each
        Input node id to its argument name. Inner classes return ``returns`` (one value or a
        tuple); the model (``result`` set) fills the dict ``result`` and adds the loss when the
        inputs it alone needs are given (see the module docstring)."""
        out = _Body()
        values: dict[PortKey, str] = {}
        idents: dict[str, str] = {}
        for step in program.steps:
            if step.node in inputs:
                idents[step.node] = inputs[step.node]
        for step in program.steps:
            if step.node not in idents:
                node = graph.nodes[step.node]
                idents[step.node] = names.take(identifier(node.name, snake(node.type)))
        needed = _ancestors(program, [src for _, src in returns])
        loss_only = (_ancestors(program, [loss[1]]) - needed) if loss else set()
        optional = [inputs[n] for n in loss_only if n in inputs]
        unused = [s for s in program.steps if s.node not in needed and s.node not in loss_only]
        for s in unused:
            node = graph.nodes[s.node]
            if node.type not in ("Input",):
                self.notes.append(f"{where}{node.label} ({node.type}) feeds no output{' or loss' if loss else ''}: "
                                  f"it is not computed (its weights are kept)")
        lines: dict[str, list[str]] = {}
        for step in program.steps:
            node = graph.nodes[step.node]
            ident = idents[step.node]
            args = {port: values[src] for port, src in step.sources.items() if src in values}
            if len(args) < len(step.sources):  # downstream of a node that cannot be exported
                reason = None if step.block.composite else _unsupported(node.type)
                if reason:  # named too, so that one export lists every problem
                    self.problems.append((f"{where}{node.label} ({node.type})", reason))
                continue
            own = weights.get(step.node) if weights else None
            torch_, state = self.node(graph, step, ident, args, idents, own, where)
            if torch_ is None:
                continue
            for key, value in state.items():
                out.state[f"{ident}.{key}" if key else ident] = value
            name_note = f"  # {node.name}" if node.name and node.name != ident else ""
            if torch_.module:
                out.init.append(f"self.{ident} = {torch_.module}{name_note}")
            elif torch_.parameter:
                out.init.append(f"self.{ident} = nn.Parameter({torch_.parameter}){name_note}")
            elif torch_.buffer:
                out.init.append(f"self.register_buffer({ident!r}, {torch_.buffer}, persistent=False){name_note}")
            ports = torch_.ports or tuple(p.name for p in step.block.output_ports())
            if torch_.alias:
                values[(step.node, ports[0])] = torch_.expr
                continue
            if step.node not in needed and step.node not in loss_only:
                continue
            if len(ports) == 1:
                targets = [ident]
            else:
                targets = [names.take(f"{ident}_{port}") for port in ports]
            for port, var in zip(ports, targets):
                values[(step.node, port)] = var
            formula = step.block.spec().formula
            comment = f"{node.name or node.label} ({node.type}): {formula}"
            if torch_.notes:
                comment += "; " + "; ".join(torch_.notes)
            part = lines.setdefault("loss" if step.node in loss_only else "main", [])
            part += [_comment(comment), f"{', '.join(targets)} = {torch_.expr}"]
            self.uses.update(re.findall(r"\b[A-Za-z_]\w*\b", torch_.expr + (torch_.module or "")))
        if self.problems:
            return out
        out.forward += lines.get("main", [])
        if result is None:  # an inner class
            vals = [values[src] for _, src in returns]
            out.forward.append(f"return {', '.join(vals)}")
            return out
        entries = ", ".join(f"{key!r}: {values[src]}" for key, src in returns)
        out.forward.append(f"{result} = {{{entries}}}")
        if loss is not None:
            if optional:
                out.forward += [f"if {' or '.join(f'{o} is None' for o in sorted(optional))}:",
                                f"    return {result}  # no target given: no loss"]
            out.forward += lines.get("loss", [])
            out.forward.append(f"{result}[{loss[0]!r}] = {values[loss[1]]}")
        out.forward.append(f"return {result}")
        return out


def _ancestors(program: Program, sources: Sequence[PortKey]) -> set[str]:
    """Nodes whose values the given outputs need (themselves included)."""
    seen: set[str] = set()
    todo = [node for node, _ in sources]
    while todo:
        nid = todo.pop()
        if nid in seen:
            continue
        seen.add(nid)
        todo.extend(src for src, _ in program.step(nid).sources.values())
    return seen


# --- the model ------------------------------------------------------------------------------------------


def _returns(graph: Graph, program: Program, outputs: Sequence[str] | None, loss: str | None) -> tuple[list[tuple[str, PortKey]], tuple[str, PortKey] | None]:
    """What ``forward`` returns: ``[(key, (node, port))]`` and the loss, if any."""

    def key(node_id: str, port: str, single: bool) -> str:
        node = graph.nodes[node_id]
        name = node.name or node.label
        return name if single else f"{name}.{port}"

    def ports(node_id: str) -> list[tuple[str, PortKey]]:
        step = program.step(node_id)
        ps = list(step.out_shapes)
        return [(key(node_id, p, len(ps) == 1), (node_id, p)) for p in ps]

    loss_key = None
    if loss:
        node = graph.find(loss)
        port = node.output_ports()[0].name
        loss_key = (key(node.id, port, True), (node.id, port))
    returns: list[tuple[str, PortKey]] = []
    if outputs:
        for name in outputs:
            returns += ports(graph.find(name).id)
    else:
        for step in program.steps:
            if step.type == "Output":
                returns += ports(step.node)
        if not returns and loss_key is None:
            used = {src for s in program.steps for src in s.sources.values()}
            for step in program.steps:
                if step.type != "Input" and not any((step.node, p) in used for p in step.out_shapes):
                    returns += ports(step.node)
    if loss_key is not None:
        returns = [r for r in returns if r[1] != loss_key[1]]
        if not returns:  # nothing but the loss: it is what forward computes, from every input
            returns, loss_key = [loss_key], None
    keys = [k for k, _ in returns] + ([loss_key[0]] if loss_key else [])
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ExportProblem([(repr(dup[0]), "two returned values have this name; give the nodes distinct names")])
    return returns, loss_key


def _doc_rows(rows: Sequence[tuple[str, str, str]]) -> list[str]:
    w0 = max((len(a) for a, _, _ in rows), default=0)
    w1 = max((len(b) for _, b, _ in rows), default=0)
    return [f"    {a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def generate(graph: Graph, weights: Weights, *, dtype: np.dtype, title: str = "", description: str = "",
             origin: str = "", weights_note: str = "", outputs: Sequence[str] | None = None,
             loss: str | None = None) -> TorchModel:
    """The source of a PyTorch module for ``graph`` and its state dict (see the module docstring).

    ``weights`` are the runtime's (``{node id: {name: array}}``, every weight); ``outputs`` names
    the nodes to return instead of the Output nodes; ``loss`` is the loss node (training.loss).
    Raises :class:`ExportProblem` naming every node that cannot be exported."""
    program = compile_graph(graph)
    returns, loss_key = _returns(graph, program, outputs, loss)
    gen = Generator()
    names = Names()
    inputs: dict[str, str] = {}
    for step in program.input_nodes:
        node = graph.nodes[step.node]
        inputs[step.node] = names.take(identifier(node.name, "input"))
    result = names.take("outputs")
    body = gen.body(graph, program, inputs, weights, "", names, returns, loss_key, result=result)
    if gen.problems:
        raise ExportProblem(gen.problems)
    needed = _ancestors(program, [src for _, src in returns])
    infos = []
    for step in program.input_nodes:
        node = graph.nodes[step.node]
        infos.append(InputInfo(step.node, node.name or node.label, inputs[step.node], node.params["dtype"] == "ids",
                               tuple(node.params["shape"]), step.node in needed or loss_key is None))
    loss_source = graph.find(loss).id if loss else None
    outs = [OutputInfo(k, src, tuple(program.step(src[0]).out_shapes[src[1]]), src[0] == loss_source) for k, src in returns]
    if loss_key is not None:
        outs.append(OutputInfo(loss_key[0], loss_key[1], (), True))
    source = _source(gen, body, infos, outs, result, dtype=dtype, title=title, description=description,
                     origin=origin, weights_note=weights_note)
    return TorchModel(source, body.state, tuple(infos), tuple(outs), tuple(gen.notes))


def _source(gen: Generator, body: _Body, inputs: Sequence[InputInfo], outputs: Sequence[OutputInfo], result: str, *,
            dtype: np.dtype, title: str, description: str, origin: str, weights_note: str) -> str:
    float_name = {"float32": "torch.float32", "float64": "torch.float64"}[np.dtype(dtype).name]
    required = [i for i in inputs if i.required]
    optional = [i for i in inputs if not i.required]
    sig = [f"{i.ident}: torch.Tensor" for i in required] + [f"{i.ident}: torch.Tensor | None = None" for i in optional]
    sig = ["self", "*", *sig] if sig else ["self"]
    example_args = ", ".join(f"{i.ident}=..." for i in inputs)
    first = next((o.key for o in outputs if o.loss), outputs[0].key if outputs else "")
    in_rows = [(i.ident, f"{'int64' if i.ids else 'float'} {_shape_text(i.shape)}",
                f"Input {i.name!r}" + ("" if i.required else ", needed only for the loss")) for i in inputs]
    given = f", when {', '.join(i.ident for i in optional)} {'is' if len(optional) == 1 else 'are'} given" if optional else ""
    out_rows = [(repr(o.key), _shape_text(o.shape), f"the loss{given}" if o.loss else "") for o in outputs]
    doc = [title or "A model exported from Backprop Studio.", ""]
    if description:
        doc += textwrap.wrap(description, 96) + [""]
    doc += ["forward takes keyword arguments (axis 0 is the batch; any batch size works):", *_doc_rows(in_rows), "",
            "and returns a dict:", *_doc_rows(out_rows)]
    if re.search(r"F\.dropout\(|= BatchNorm\(", "\n".join([*gen.classes.values(), *body.init, *body.forward])):
        doc += ["", "Dropout and BatchNorm act as in the app: model.train() while training (torch draws its own",
                "dropout masks), model.eval() to compute what the app's forward pass computes."]
    doc_text = "\n".join(("    " + l if l else "") for l in doc)
    init = "\n".join("        " + l for l in body.init) or "        pass"
    forward = "\n".join("        " + l for l in body.forward)
    model = f'''class Model(nn.Module):
    """{doc_text.strip()}
    """

    def __init__(self, dtype: torch.dtype = {float_name}) -> None:
        super().__init__()
{init}
        self.to(dtype)  # tables and constants are built in float64, then cast once

    def forward({", ".join(sig)}) -> dict[str, torch.Tensor]:
{forward}

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, dtype: torch.dtype | None = None) -> "Model":
        """The model with the exported weights (default: the .safetensors file beside this one),
        in their dtype unless ``dtype`` says otherwise."""
        from safetensors.torch import load_file

        state = load_file(WEIGHTS if path is None else path)
        if dtype is None:
            dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
        model = cls(dtype)
        model.load_state_dict(state)
        return model'''
    used = set(gen.uses)
    for text in gen.classes.values():
        used.update(re.findall(r"\b[A-Za-z_]\w*\b", text))
    lib = _library_code(used)
    classes = "\n\n\n".join(gen.classes.values())
    code_so_far = lib + classes + model
    header = [f'"""{title or "Model"}: a PyTorch model exported from Backprop Studio {engine.__version__}.', "",
              "    model = Model.load()  # the weights in the .safetensors file beside this one",
              f"    out = model({example_args})",
              f"    out[{first!r}]" + (".backward()" if any(o.loss for o in outputs) else ""), ""]
    if origin or weights_note:
        where = f"Exported from {origin}" if origin else "Exported"
        header += textwrap.wrap(where + (f", with {weights_note}" if weights_note else "") + ".", 96) + [""]
    header += textwrap.wrap("Every block is a class or a line below with the block's formula beside it, and Model "
                            "wires them as the graph does: change it like any PyTorch model. Depends on torch only "
                            "(and safetensors to load the weights).", 96)
    header += ['"""', "", "from __future__ import annotations", ""]
    if re.search(r"\bmath\.", code_so_far):
        header.append("import math")
    header += ["import os", "from pathlib import Path", "", "import torch", "import torch.nn.functional as F",
               "from torch import nn", "", 'WEIGHTS = Path(__file__).with_suffix(".safetensors")']
    parts = ["\n".join(header), lib, classes, model]
    return "\n\n\n".join(p for p in parts if p) + "\n"
