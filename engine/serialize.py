"""Graph files (``.json``) and containers (``.bps``): load, validate, save.

A graph file is UTF-8 JSON::

    {
      "format": "backprop-studio.graph",
      "version": 1,
      "name": "Two-layer neural network",
      "description": "the lesson text, shown next to the graph",
      "nodes": [
        {"id": "<uuid>", "type": "Dot", "name": "score", "params": {}, "position": [360.0, 80.0]},
        ...
      ],
      "links": [{"from": ["<node id>", "out"], "to": ["<node id>", "a"]}, ...],
      "data": {...},        # see engine.data
      "training": {...}     # see engine.train
    }

Links are stored once, as (node, port) pairs; node ids are kept across save and load. The
writer uses a fixed key order and layout (small objects and rows of numbers on one line), so
save → load → save gives the same bytes.

A ``.bps`` container is a zip holding ``graph.json`` (the text above) and, when present,
``weights.npz`` (keys ``<node id>/<weight name>``), ``optimizer.npz`` (see
:mod:`engine.optim`) and ``history.npz`` (``step``, ``loss``, ``grad_norm``, ``seconds``, one
entry per training step). Members are written deterministically (fixed timestamps, sorted
names, arrays written with ``numpy.lib.format``) and read without ever unpickling anything.

Loading goes: bytes (size-checked) → text (strict UTF-8) → JSON (no NaN, no duplicate keys) →
format tag and version (newer versions are refused; older ones go through :data:`MIGRATIONS`)
→ a typed intermediate form (:class:`Document`) → validation of everything (node ids, block
types, params, links, ports, port kinds, one link per input, cycles, data, training, weights)
→ only then a :class:`~engine.graph.Graph`. An unknown block type becomes a placeholder node
that keeps its type, params and wires, and is written back unchanged. Every problem is a
:class:`~engine.errors.FileFormatError` whose message starts with the file name.

Saving writes a temporary file in the same directory, fsyncs it and renames it over the
target, so a crash never leaves half a file behind.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from engine import archive, blocks
from engine import data as data_mod
from engine import train as train_mod
from engine.blocks import Block, Kind
from engine.errors import FileFormatError, GraphError, UnknownBlockError
from engine.graph import Graph, Link, Node, check_references, short

FORMAT = "backprop-studio.graph"
VERSION = 1
#: ``MIGRATIONS[v]`` turns a version-``v`` document (a dict) into a version ``v + 1`` one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_ITEMS = 4_000_000  # values and keys: bounds the memory parsing takes (see _check_json_text)
MAX_JSON_DEPTH = 64
MAX_CONTAINER_BYTES = 512 * 2**20
MAX_ID_LENGTH = 200
MAX_NODES = 20_000  # the editor stays usable with thousands of nodes; more is not a lesson
MAX_LINKS = 100_000
MAX_HISTORY = train_mod.MAX_STEPS  # steps a history.npz may record (and an optimiser step count may reach)
_NPZ_ENTRY_BYTES = 1024  # zip headers (the name twice) and the .npy header of one array, at most
JSON_WIDTH = 120  # objects and lists whose one-line form fits in this many columns stay on one line

GRAPH_MEMBER = "graph.json"
NPZ_MEMBERS = ("history.npz", "optimizer.npz", "weights.npz")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_TOP_KEYS = ("format", "version", "name", "description", "nodes", "links", "data", "training")
_NODE_KEYS = ("id", "type", "name", "params", "position")

Weights = dict[str, dict[str, np.ndarray]]


@dataclass
class Project:
    """Everything a file holds: the graph, the lesson text, data and training settings, and
    (in a ``.bps`` container) weights, optimiser state and training history."""

    graph: Graph
    name: str = ""
    description: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    weights: Weights | None = None
    optimizer_state: dict[str, np.ndarray] | None = None
    history: dict[str, np.ndarray] | None = None


# --- the typed intermediate form ----------------------------------------------------------------


@dataclass(frozen=True)
class NodeRecord:
    id: str
    type: str
    name: str | None
    params: dict[str, Any]
    position: tuple[float, float]
    where: str  # "nodes[3]", for messages before the node is known to be valid


@dataclass(frozen=True)
class LinkRecord:
    src: str
    src_port: str
    dst: str
    dst_port: str
    where: str


@dataclass(frozen=True)
class Document:
    """A parsed (not yet validated) graph file."""

    name: str
    description: str
    nodes: tuple[NodeRecord, ...]
    links: tuple[LinkRecord, ...]
    data: dict[str, Any]
    training: dict[str, Any]


_size = archive.size_text


MAX_MESSAGE = 1000  # characters: whatever a file holds, its error message stays one readable line


def _fail(message: str) -> FileFormatError:
    return FileFormatError(short(" ".join(message.split()), MAX_MESSAGE))


def _kind_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _text(where: str, value: Any, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise _fail(f"{where} must be text, got {_kind_name(value)}")
    if not allow_empty and not value:
        raise _fail(f"{where} must not be empty")
    return value


def _parse_node(i: int, raw: Any) -> NodeRecord:
    where = f"nodes[{i}]"
    if not isinstance(raw, dict):
        raise _fail(f"{where} must be an object with id, type, name, params and position, got {_kind_name(raw)}")
    unknown = sorted(set(raw) - set(_NODE_KEYS))
    if unknown:
        raise _fail(f"{where} has unknown key {unknown[0]!r} (a node has: {', '.join(_NODE_KEYS)})")
    for key in ("id", "type"):
        if key not in raw:
            raise _fail(f"{where} has no {key!r}")
    node_id = _text(f"{where}.id", raw["id"], allow_empty=False)
    if len(node_id) > MAX_ID_LENGTH or "/" in node_id or any(ord(c) < 32 for c in node_id):
        raise _fail(f"{where}.id {node_id[:40]!r} is not a valid node id (at most {MAX_ID_LENGTH} characters, no '/')")
    type_id = _text(f"{where}.type", raw["type"], allow_empty=False)
    if len(type_id) > MAX_ID_LENGTH:
        raise _fail(f"{where}.type is {len(type_id):,} characters long; block types are short names such as 'Linear'")
    name = _text(f"{where}.name", raw["name"]) if "name" in raw else None
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise _fail(f"{where}.params must be an object, got {_kind_name(params)}")
    position = raw.get("position", [0.0, 0.0])
    if (
        not isinstance(position, list) or len(position) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in position)
    ):
        raise _fail(f"{where}.position must be [x, y] (two numbers), got {json.dumps(position)[:40]}")
    return NodeRecord(node_id, type_id, name, params, (float(position[0]), float(position[1])), where)


def _parse_end(where: str, value: Any) -> tuple[str, str]:
    if (
        not isinstance(value, list) or len(value) != 2
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise _fail(f"{where} must be [node id, port name], got {json.dumps(value, ensure_ascii=False)[:60]}")
    if len(value[1]) > MAX_ID_LENGTH:
        raise _fail(f"{where} names a port of {len(value[1]):,} characters; port names are short")
    return value[0], value[1]


def _parse_link(i: int, raw: Any) -> LinkRecord:
    where = f"links[{i}]"
    if not isinstance(raw, dict) or set(raw) != {"from", "to"}:
        raise _fail(f"{where} must be {{\"from\": [node id, port], \"to\": [node id, port]}}")
    src, src_port = _parse_end(f"{where}.from", raw["from"])
    dst, dst_port = _parse_end(f"{where}.to", raw["to"])
    return LinkRecord(src, src_port, dst, dst_port, where)


def _parse_graph_part(obj: Mapping[str, Any]) -> tuple[tuple[NodeRecord, ...], tuple[LinkRecord, ...]]:
    if "nodes" not in obj:
        raise _fail("it has no 'nodes' list")
    if not isinstance(obj["nodes"], list):
        raise _fail(f"'nodes' must be a list, got {_kind_name(obj['nodes'])}")
    links = obj.get("links", [])
    if not isinstance(links, list):
        raise _fail(f"'links' must be a list, got {_kind_name(links)}")
    if len(obj["nodes"]) > MAX_NODES:
        raise _fail(f"it has {len(obj['nodes']):,} nodes; a graph may have at most {MAX_NODES:,}")
    if len(links) > MAX_LINKS:
        raise _fail(f"it has {len(links):,} links; a graph may have at most {MAX_LINKS:,}")
    return (tuple(_parse_node(i, n) for i, n in enumerate(obj["nodes"])),
            tuple(_parse_link(i, l) for i, l in enumerate(links)))


def parse_document(obj: Any) -> Document:
    """Check the format tag and version, migrate, and parse into a :class:`Document`."""
    if not isinstance(obj, dict):
        raise _fail(f"it is not a Backprop Studio graph (the JSON holds {_kind_name(obj)}, not an object)")
    if "format" not in obj:
        raise _fail(f"it is not a Backprop Studio graph (it has no \"format\": \"{FORMAT}\" tag)")
    if obj["format"] != FORMAT:
        raise _fail(f"it is not a Backprop Studio graph (its format tag is {json.dumps(obj['format'], ensure_ascii=False)[:60]}, expected \"{FORMAT}\")")
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _fail(f"its format version must be a whole number, got {json.dumps(version)[:40]}")
    if version > VERSION:
        raise _fail(f"it was made by a newer Backprop Studio (format version {version}; this one reads up to {VERSION})")
    if version < 1:
        raise _fail(f"its format version {version} is not valid (versions start at 1)")
    while version < VERSION:
        obj = MIGRATIONS[version](dict(obj))
        version += 1
    unknown = sorted(set(obj) - set(_TOP_KEYS))
    if unknown:
        raise _fail(f"it has an unknown top-level key {unknown[0]!r} (a graph file has: {', '.join(_TOP_KEYS)})")
    name = _text("'name'", obj.get("name", ""))
    description = _text("'description'", obj.get("description", ""))
    nodes, links = _parse_graph_part(obj)
    sections = {}
    for key, normalize in (("data", data_mod.normalize), ("training", train_mod.normalize)):
        try:
            sections[key] = normalize(obj.get(key))
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            # a value of a type the section's checks did not expect: still the file's problem
            raise _fail(f"its {key!r} section cannot be used ({type(exc).__name__}: {archive.reason(exc)})") from None
    return Document(name, description, nodes, links, sections["data"], sections["training"])


# --- validation ---------------------------------------------------------------------------------


def _record_label(rec: NodeRecord) -> str:
    return f"node {short(rec.name)!r} ({short(rec.type)})" if rec.name else f"node {short(rec.type)} {rec.id[:8]}"


def validate(nodes: Iterable[NodeRecord], links: Iterable[LinkRecord]) -> dict[str, Block | None]:
    """Check node ids, block types, params, links, ports, port kinds, one link per input and
    cycles; returns the block of every node (None for a placeholder). Builds nothing."""
    nodes, links = tuple(nodes), tuple(links)
    by_id: dict[str, NodeRecord] = {}
    for rec in nodes:
        if rec.id in by_id:
            raise _fail(f"{by_id[rec.id].where} and {rec.where} have the same id {rec.id!r}; every node needs its own id")
        by_id[rec.id] = rec
    made: dict[str, Block | None] = {}
    for rec in nodes:
        try:
            made[rec.id] = blocks.create(rec.type, **rec.params)
        except UnknownBlockError:
            made[rec.id] = None  # a placeholder keeps the node; running it reports the unknown type
        except GraphError as exc:
            raise _fail(f"{_record_label(rec)}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise _fail(f"{_record_label(rec)} has params that cannot be used ({exc})") from None
    lookup = {rec.id: Node(rec.id, rec.type, rec.params, rec.name or "", block=made[rec.id]) for rec in nodes}
    for rec in nodes:
        block = made[rec.id]
        if block is not None:
            try:
                check_references(rec.id, block, lookup, strict=False)
            except GraphError as exc:
                raise _fail(f"{_record_label(rec)}: {exc}") from None
    taken: dict[tuple[str, str], LinkRecord] = {}
    successors: dict[str, list[str]] = {node_id: [] for node_id in by_id}
    for link in links:
        for end, node_id in (("comes from", link.src), ("goes into", link.dst)):
            if node_id not in by_id:
                raise _fail(f"{link.where} {end} node {node_id!r}, which is not in the file")
        a, b = by_id[link.src], by_id[link.dst]
        block_a, block_b = made[link.src], made[link.dst]
        kind_out = Kind.ANY
        if block_a is not None:
            outs = {p.name: p for p in block_a.output_ports()}
            if link.src_port not in outs:
                raise _fail(f"{link.where} comes from {_record_label(a)} output {link.src_port!r}, which does not exist (outputs: {', '.join(outs) or 'none'})")
            kind_out = block_a.output_kind(link.src_port)
        kind_in = Kind.ANY
        if block_b is not None:
            ins = {p.name: p for p in block_b.input_ports()}
            if link.dst_port not in ins:
                raise _fail(f"{link.where} goes into {_record_label(b)} input {link.dst_port!r}, which does not exist (inputs: {', '.join(ins) or 'none'})")
            kind_in = ins[link.dst_port].kind
        if not kind_in.accepts(kind_out):
            what = {Kind.IDS: "token ids (integers)", Kind.FLOAT: "real numbers"}
            raise _fail(f"{link.where}: {_record_label(b)} input {link.dst_port!r} takes {what[kind_in]}, but "
                        f"{_record_label(a)} output {link.src_port!r} gives {what[kind_out]}")
        key = (link.dst, link.dst_port)
        if key in taken:
            raise _fail(f"{taken[key].where} and {link.where} both go into {_record_label(b)} input {link.dst_port!r}; an input takes one link")
        taken[key] = link
        successors[link.src].append(link.dst)
    cycle = _find_cycle(successors)
    if cycle:
        labels = [_record_label(by_id[u]) for u in cycle] + [_record_label(by_id[cycle[0]])]
        raise _fail(f"the links make a cycle: {' → '.join(labels)}; a graph must flow one way")
    return made


def _find_cycle(successors: Mapping[str, list[str]]) -> list[str]:
    """The nodes of one cycle in order (depth first from each node in turn), or [] when none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in successors:
        if root in state:
            continue
        path = [root]
        todo = [iter(successors[root])]
        state[root] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(successors[nxt]))
    return []


def _build(nodes: tuple[NodeRecord, ...], links: tuple[LinkRecord, ...], made: Mapping[str, Block | None]) -> Graph:
    graph = Graph()
    # Names for nodes the file leaves unnamed, "Add", "Add 2", ...: worked out here in one pass
    # (Graph.unique_name looks at every node, once per node: quadratic in a big file).
    taken = {rec.name for rec in nodes if rec.name is not None}
    next_free: dict[str, int] = {}
    ports_in: dict[str, list[str]] = {}
    ports_out: dict[str, list[str]] = {}
    for l in links:
        ports_in.setdefault(l.dst, []).append(l.dst_port)
        ports_out.setdefault(l.src, []).append(l.src_port)
    for rec in nodes:
        name = rec.name
        if name is None:
            name, i = rec.type, next_free.get(rec.type, 2)
            while name in taken:
                name, i = f"{rec.type} {i}", i + 1
            next_free[rec.type] = i
            taken.add(name)
        node = graph.add_node(rec.type, rec.params, node_id=rec.id, name=name, position=rec.position, allow_unknown=True)
        if made[rec.id] is None:
            node.placeholder_ports = (tuple(dict.fromkeys(ports_in.get(rec.id, ()))), tuple(dict.fromkeys(ports_out.get(rec.id, ()))))
    for l in links:
        graph.add_link(Link(l.src, l.src_port, l.dst, l.dst_port))
    return graph


# --- JSON text ----------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise _fail(f"it contains {name}, which is not a number JSON allows")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _fail(f"it has the key {k!r} twice in one object")
        out[k] = v
    return out


def _check_json_text(text: str) -> None:
    """Bounds checked before parsing: the size, and an upper bound on how many values the
    parser would make. Every value after the first in its container follows a comma, every
    object value a colon, every first value an opening bracket; counting those four characters
    (a C-speed scan, and an over-count when strings hold them) bounds the Python objects, and so
    the memory, that parsing can take: about 100 bytes per counted item at worst."""
    if len(text) > MAX_JSON_BYTES:
        raise _fail(f"it is too large ({_size(len(text))}; graph files are limited to {_size(MAX_JSON_BYTES)})")
    items = text.count(",") + text.count(":") + text.count("[") + text.count("{")
    if items > MAX_JSON_ITEMS:
        raise _fail(f"it holds too many values (up to {items:,}; graph files are limited to {MAX_JSON_ITEMS:,})")


def _check_depth(obj: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_JSON_DEPTH` before any recursive code sees it
    (iteratively: the check itself cannot run out of stack)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _fail(f"it is nested too deeply (more than {MAX_JSON_DEPTH} levels of lists and objects)")
        if isinstance(value, (dict, list)):
            children = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in children if isinstance(v, (dict, list)))


def _parse_json(text: str) -> Any:
    _check_json_text(text)
    try:
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        end = len(text.rstrip())
        if exc.msg.startswith("Unterminated string") or exc.pos >= end:
            raise _fail("it is incomplete: the JSON text ends too early (was the file cut off while saving or copying?)") from None
        raise _fail(f"it is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        # json's C parser stops at the interpreter's recursion limit, long before memory runs out
        raise _fail(f"it is nested too deeply (more than {MAX_JSON_DEPTH} levels of lists and objects)") from None
    except ValueError as exc:  # a number with thousands of digits (Python's int conversion limit)
        raise _fail(f"it is not valid JSON ({archive.reason(exc).split(';')[0]})") from None
    _check_depth(obj)
    return obj


def parse_json(text: str, *, source: str = "") -> Any:
    """JSON text → Python values, within the bounds every graph file gets: size
    (:data:`MAX_JSON_BYTES`), values (:data:`MAX_JSON_ITEMS`), nesting (:data:`MAX_JSON_DEPTH`),
    no NaN/Infinity, no key twice in one object. For any JSON a person hands over (a file, the
    clipboard); raises :class:`FileFormatError`, whose message starts with ``source``."""
    try:
        return _parse_json(text)
    except FileFormatError as exc:
        raise _with_source(exc, source) from None


def _decode(raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte order mark, as some editors write
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"it is not UTF-8 text (byte 0x{raw[exc.start]:02x} at position {exc.start} cannot be decoded)") from None


def _plain(value: Any) -> Any:
    """JSON-ready copy: tuples become lists, numpy scalars Python numbers; NaN/Inf refused."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(f"cannot write {value!r}: JSON files hold finite numbers only")
    return value


def _format(value: Any, indent: int = 0) -> str:
    one_line = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
    if not isinstance(value, (dict, list)) or not value or indent + len(one_line) <= JSON_WIDTH:
        return one_line
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {_format(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _format(v, indent + 2) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def _node_dict(graph: Graph, node_id: str) -> dict[str, Any]:
    n = graph.nodes[node_id]
    return {"id": n.id, "type": n.type, "name": n.name, "params": _plain(n.params), "position": [float(n.position[0]), float(n.position[1])]}


def graph_to_dict(graph: Graph, node_ids: Iterable[str] | None = None) -> dict[str, Any]:
    """``{"nodes": [...], "links": [...]}`` for the whole graph or for ``node_ids`` (then only
    the links between those nodes): what copy and paste carry."""
    keep = list(graph.nodes) if node_ids is None else [n for n in graph.nodes if n in set(node_ids)]
    kept = set(keep)
    return {
        "nodes": [_node_dict(graph, n) for n in keep],
        "links": [{"from": [l.src, l.src_port], "to": [l.dst, l.dst_port]} for l in graph.links if l.src in kept and l.dst in kept],
    }


def graph_from_dict(d: Mapping[str, Any]) -> Graph:
    """A validated :class:`Graph` from :func:`graph_to_dict`'s output (or a whole document);
    raises FileFormatError."""
    if not isinstance(d, Mapping):
        raise _fail(f"a graph must be an object with 'nodes' and 'links', got {_kind_name(d)}")
    if "format" in d:
        doc = parse_document(dict(d))
        nodes, links = doc.nodes, doc.links
    else:
        nodes, links = _parse_graph_part(d)
    return _build(nodes, links, validate(nodes, links))


def document_dict(project: Project) -> dict[str, Any]:
    """The graph file as a dict, in the canonical key order."""
    part = graph_to_dict(project.graph)
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": str(project.name),
        "description": str(project.description),
        "nodes": part["nodes"],
        "links": part["links"],
        "data": _plain(data_mod.normalize(project.data)),
        "training": _plain(train_mod.normalize(project.training)),
    }


def dumps(project: Project) -> str:
    """The graph JSON text of ``project`` (no weights), ending with a newline."""
    return _format(document_dict(project)) + "\n"


def _with_source(exc: FileFormatError, source: str) -> FileFormatError:
    message = f"{source}: {exc}" if source else str(exc)
    message = short(" ".join(message.split()), MAX_MESSAGE + len(source) + 2)  # one line, never a megabyte
    return type(exc)(message) if type(exc) in (FileFormatError, data_mod.DataError, train_mod.TrainingError) else FileFormatError(message)


def _loads(text: str) -> Project:
    doc = parse_document(_parse_json(text))
    graph = _build(doc.nodes, doc.links, validate(doc.nodes, doc.links))
    return Project(graph, doc.name, doc.description, doc.data, doc.training)


def loads(text: str, *, source: str = "") -> Project:
    """A project from graph JSON text; ``source`` (a file name) starts every error message."""
    try:
        return _loads(text)
    except FileFormatError as exc:
        raise _with_source(exc, source) from None


# --- .npz members ---------------------------------------------------------------------------------


def _zip_info(name: str, compress: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = compress
    info.create_system = 3  # unix, whatever system writes it: same bytes everywhere
    info.external_attr = 0o644 << 16
    return info


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """A deterministic ``.npz``: members sorted, fixed timestamps, no pickling."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key in sorted(arrays):
            arr = np.asarray(arrays[key])
            if arr.dtype.hasobject:
                raise _fail(f"cannot save {key!r}: it holds Python objects, not numbers")
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arr, order="C"), allow_pickle=False)  # keeps 0-d arrays 0-d
            zf.writestr(_zip_info(f"{key}.npy", zipfile.ZIP_STORED), member.getvalue())
    return buf.getvalue()


def read_npz(raw: bytes, member: str, budget: int) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` held in memory, every size checked before it is read (see
    :mod:`engine.archive`); ``budget`` bounds the arrays' bytes together."""
    return archive.read_npz(raw, member, budget)


# --- containers -----------------------------------------------------------------------------------


def _flatten(weights: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{node}/{name}": np.asarray(w) for node, ws in weights.items() for name, w in ws.items()}


def container_bytes(project: Project) -> bytes:
    """The ``.bps`` container of ``project`` as bytes. Refuses (FileFormatError) to make a
    container that :func:`load` would refuse as too large."""
    members = {GRAPH_MEMBER: dumps(project).encode("utf-8")}
    if project.weights is not None:
        members["weights.npz"] = npz_bytes(_flatten(project.weights))
    if project.optimizer_state is not None:
        members["optimizer.npz"] = npz_bytes(project.optimizer_state)
    if project.history is not None:
        members["history.npz"] = npz_bytes(project.history)
    total = sum(len(m) for m in members.values())
    if total > MAX_CONTAINER_BYTES:
        parts = ", ".join(f"{k} {_size(len(v))}" for k, v in members.items())
        raise _fail(f"the project is too large to save: {_size(total)} ({parts}); containers are limited to "
                    f"{_size(MAX_CONTAINER_BYTES)}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compresslevel=6) as zf:
        for name in sorted(members):
            zf.writestr(_zip_info(name, zipfile.ZIP_DEFLATED), members[name])
    return buf.getvalue()


def _node_label(graph: Graph, node_id: str) -> str:
    node = graph.nodes[node_id]
    return f"node {short(node.name)!r} ({short(node.type)})" if node.name else f"node {short(node.type)} {node_id[:8]}"


def _member_limits(graph: Graph) -> dict[str, int]:
    """The most ``weights.npz`` and ``optimizer.npz`` can hold for this graph: every weight at
    its inferred shape in float64, plus headers. Empty (no bound beyond the container's) when
    some weights cannot be sized: a placeholder node, or shapes that do not infer."""
    report = graph.infer()
    total, entries = 0, 0
    for nid, node in graph.nodes.items():
        if node.block is None:
            return {}
        if not node.block.weights and not node.block.composite:
            continue
        if nid in report.errors or graph.input_shapes(nid, report) is None:
            return {}
        for shape in graph.weight_shapes(nid, report).values():
            total += math.prod(shape) * 8
            entries += 1
    weights = total + entries * _NPZ_ENTRY_BYTES + 1024
    return {"weights.npz": weights, "optimizer.npz": 2 * weights + 1024}


def _check_floats(where: str, arr: np.ndarray, *, nonnegative: bool = False) -> None:
    if arr.dtype.kind != "f":
        raise _fail(f"{where} has dtype {arr.dtype}; it holds real numbers")
    if not np.isfinite(arr).all():
        raise _fail(f"{where} holds NaN or Inf; a saved run only ever holds finite numbers")
    if nonnegative and (arr < 0).any():
        raise _fail(f"{where} holds negative numbers; it must be ≥ 0")


def _check_weights(graph: Graph, flat: Mapping[str, np.ndarray]) -> Weights:
    weights: Weights = {}
    report = graph.infer()
    for key in sorted(flat):
        arr = flat[key]
        node_id, _, name = key.partition("/")
        if not name:
            raise _fail(f"weights.npz entry {key!r} is not named <node id>/<weight name>")
        if node_id not in graph.nodes:
            raise _fail(f"weights.npz has weights for node {node_id!r}, which is not in the graph")
        node = graph.nodes[node_id]
        label = _node_label(graph, node_id)
        if arr.dtype.kind != "f":
            raise _fail(f"weights.npz: {label} weight {name!r} has dtype {arr.dtype}; weights are real numbers")
        if node.block is not None:
            expected = graph.weight_shapes(node_id, report)
            if expected:
                if name not in expected:
                    raise _fail(f"weights.npz: {label} has no weight {name!r} (its weights: {', '.join(expected)})")
                if tuple(arr.shape) != tuple(expected[name]):
                    raise _fail(f"weights.npz: {label} weight {name!r} has shape {tuple(arr.shape)}, but the graph needs {tuple(expected[name])}")
            elif not node.block.weights and not node.block.composite:
                raise _fail(f"weights.npz has weight {name!r} for {label}, which has no weights")
        _check_floats(f"weights.npz: {label} weight {name!r}", arr)
        weights.setdefault(node_id, {})[name] = arr
    return weights


def _check_optimizer(graph: Graph, weights: Weights | None, state: Mapping[str, np.ndarray],
                     history_steps: int | None) -> dict[str, np.ndarray]:
    """Every entry against the optimiser's declared state and the graph's weights: names, dtype,
    shape, finite values, signs, and a step count no larger than the steps trained."""
    from engine import optim

    kinds = {k.partition("/")[0] for k in state}
    if len(kinds) > 1 or not kinds <= set(optim.OPTIMIZERS):
        raise _fail(f"optimizer.npz holds state of {', '.join(sorted(kinds))}; expected one of {', '.join(optim.OPTIMIZERS)}")
    if not kinds:
        return {}
    type_id = next(iter(kinds))
    cls = optim.OPTIMIZERS[type_id]
    if f"{type_id}/step" not in state:
        raise _fail("optimizer.npz has no step count")
    report = graph.infer()
    for key in sorted(state):
        arr = state[key]
        rest = key.partition("/")[2]
        if rest == "step":
            if arr.shape != () or arr.dtype.kind not in "iu":
                raise _fail(f"optimizer.npz: {key!r} must be a single whole number")
            top, what = (history_steps, "the steps recorded in history.npz") if history_steps is not None else (MAX_HISTORY, "the most steps a file records")
            if not 0 <= int(arr) <= top:
                raise _fail(f"optimizer.npz: the step count {int(arr):,} is out of range (0 to {top:,}, {what})")
            continue
        slot, _, wkey = rest.partition("/")
        node_id, _, name = wkey.partition("/")
        if slot not in cls.slots:
            raise _fail(f"optimizer.npz entry {key!r}: {type_id} keeps no {slot!r} (its state: step, {', '.join(cls.slots)})")
        if not name:
            raise _fail(f"optimizer.npz entry {key!r} is not named {type_id}/<slot>/<node id>/<weight name>")
        if node_id not in graph.nodes:
            raise _fail(f"optimizer.npz has state for node {node_id!r}, which is not in the graph")
        label = _node_label(graph, node_id)
        expected = graph.weight_shapes(node_id, report) if graph.nodes[node_id].block is not None else {}
        want = None
        if expected:
            if name not in expected:
                raise _fail(f"optimizer.npz: {label} has no weight {name!r} (its weights: {', '.join(expected)})")
            want = tuple(expected[name])
        elif weights is not None and name in weights.get(node_id, {}):
            want = tuple(weights[node_id][name].shape)
        if want is not None and tuple(arr.shape) != want:
            raise _fail(f"optimizer.npz: {key!r} has shape {tuple(arr.shape)}, but the weight has shape {want}")
        _check_floats(f"optimizer.npz: {key!r}", arr, nonnegative=slot in cls.nonnegative)
    return dict(state)


def _check_history(history: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One entry per training step: ``step`` counts 1, 2, 3, …; losses, gradient norms and
    times are finite (norms and times ≥ 0)."""
    lengths = set()
    for key, arr in history.items():
        if arr.ndim != 1:
            raise _fail(f"history.npz: {key!r} must be one value per step (1-D), got shape {arr.shape}")
        lengths.add(arr.shape[0])
    if len(lengths) > 1:
        raise _fail("history.npz columns have different lengths")
    columns = train_mod.HISTORY_KEYS
    missing, unknown = sorted(set(columns) - set(history)), sorted(set(history) - set(columns))
    if missing or unknown:
        what = f"has no {missing[0]!r} column" if missing else f"has an unknown column {unknown[0]!r}"
        raise _fail(f"history.npz {what} (its columns: {', '.join(columns)})")
    n = lengths.pop()
    if n > MAX_HISTORY:
        raise _fail(f"history.npz records {n:,} steps, more than the {MAX_HISTORY:,} a file can hold")
    step = history["step"]
    if step.dtype.kind not in "iu" or not np.array_equal(step, np.arange(1, n + 1)):
        raise _fail("history.npz: 'step' must count 1, 2, 3, … (one entry per training step)")
    for key in columns:
        if key != "step":
            _check_floats(f"history.npz: {key!r}", history[key], nonnegative=key != "loss")
    return dict(history)


def _load_container(path: Path, size: int) -> Project:
    if size > MAX_CONTAINER_BYTES:
        raise _fail(f"it is too large ({_size(size)}; containers are limited to {_size(MAX_CONTAINER_BYTES)})")
    with archive.open_zip(str(path), "it is damaged: not a readable zip container") as zf:
        infos = archive.check_members(zf, "it", size, MAX_CONTAINER_BYTES, {GRAPH_MEMBER: MAX_JSON_BYTES})
        names = [i.filename for i in infos]
        unknown = sorted(set(names) - {GRAPH_MEMBER, *NPZ_MEMBERS})
        if unknown:
            raise _fail(f"it has an unexpected member {unknown[0][:60]!r} (a container holds {GRAPH_MEMBER}, {', '.join(NPZ_MEMBERS)})")
        if GRAPH_MEMBER not in names:
            raise _fail(f"it has no {GRAPH_MEMBER}: it is not a Backprop Studio container")
        by_name = {i.filename: i for i in infos}

        def read(name: str) -> bytes:
            return archive.read_member(zf, by_name[name], f"it is damaged: member {name!r} cannot be read")

        text = read(GRAPH_MEMBER)
        try:
            project = _loads(_decode(text))
        except FileFormatError as exc:
            raise type(exc)(f"{GRAPH_MEMBER}: {exc}") from None
        # Now that the graph is known, so is the most each member can honestly hold.
        archive.check_members(zf, "it", size, MAX_CONTAINER_BYTES, _member_limits(project.graph))
        arrays: dict[str, dict[str, np.ndarray]] = {}
        for name in NPZ_MEMBERS:
            if name in by_name:
                arrays[name] = read_npz(read(name), name, MAX_CONTAINER_BYTES)  # the raw bytes are dropped at once
    if "weights.npz" in arrays:
        project.weights = _check_weights(project.graph, arrays.pop("weights.npz"))
    if "history.npz" in arrays:
        project.history = _check_history(arrays.pop("history.npz"))
    if "optimizer.npz" in arrays:
        steps = len(project.history["step"]) if project.history is not None else None
        project.optimizer_state = _check_optimizer(project.graph, project.weights, arrays.pop("optimizer.npz"), steps)
    return project


def load(path: str | os.PathLike[str]) -> Project:
    """Load a ``.json`` graph file or a ``.bps`` container (recognised by content).

    Raises :class:`FileFormatError` with a message that starts with the file name."""
    p = Path(path)
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise _fail("it is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise _fail("it is not a regular file (a device, a pipe or a socket)")
        size = st.st_size
        with p.open("rb") as f:
            head = f.read(4)
            if head in _ZIP_MAGIC:
                project = _load_container(p, size)
            else:
                if size > MAX_JSON_BYTES:
                    raise _fail(f"it is too large ({_size(size)}; graph files are limited to {_size(MAX_JSON_BYTES)})")
                raw = head + f.read(MAX_JSON_BYTES + 1 - len(head))
                if len(raw) > MAX_JSON_BYTES:
                    raise _fail(f"it is too large (graph files are limited to {_size(MAX_JSON_BYTES)})")
                if not raw.strip():
                    raise _fail("it is empty")
                project = _loads(_decode(raw))
    except FileNotFoundError:
        raise FileFormatError(f"{p}: no such file") from None
    except PermissionError:
        raise FileFormatError(f"{p}: permission denied") from None
    except FileFormatError as exc:
        raise _with_source(exc, str(p)) from None
    except OSError as exc:
        raise FileFormatError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    return project


# --- saving ---------------------------------------------------------------------------------------

#: A save writes ``.<name>.<pid>.<random>.tmp`` next to the target, then renames it over the
#: target. A save killed before the rename leaves that file behind; the next save of the same
#: target removes it once no live process owns it (or it is a day old: pids get reused).
STALE_TEMP_SECONDS = 24 * 3600


def _umask() -> int:
    """The process umask, read without changing it where the system allows (another thread may
    be creating files at the same moment)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists, owned by someone else
    return True


def _remove_stale_temps(directory: Path, name: str) -> None:
    """Remove what killed saves of ``name`` left in ``directory`` (see :data:`STALE_TEMP_SECONDS`)."""
    prefix = f".{name}."
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        parts = entry.name[len(prefix):-len(".tmp")].split(".")
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if len(parts) == 2 and parts[0].isdigit():  # ours: .<name>.<pid>.<random>.tmp
                pid = int(parts[0])
                stale = age > STALE_TEMP_SECONDS or (pid != os.getpid() and not _alive(pid))
            else:  # .<name>.<random>.tmp, written before saves named their process
                stale = len(parts) == 1 and age > 3600
            if stale:
                os.unlink(entry.path)
        except OSError:
            pass


def _atomic_write(path: Path, payload: bytes, *, private: bool = False) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    _remove_stale_temps(directory, path.name)
    if private:
        mode = 0o600
    else:
        try:
            mode = path.stat().st_mode & 0o777  # keep the permissions of the file being replaced
        except OSError:
            mode = 0o666 & ~_umask()  # a new file gets what the user's umask allows
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; not possible everywhere (Windows), so best effort
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _payload(project: Project, p: Path) -> bytes:
    suffix = p.suffix.lower()
    if suffix == ".json":
        payload = dumps(project).encode("utf-8")
        _check_json_text(payload.decode("utf-8"))  # never write what load would refuse
        return payload
    if suffix == ".bps":
        return container_bytes(project)
    raise _fail(f"cannot save as {suffix or 'a file without a suffix'!r}: use .json (the graph only) or .bps (the graph with weights, optimiser state and history)")


def save(project: Project, path: str | os.PathLike[str], *, private: bool = False) -> None:
    """Save atomically: ``.json`` writes the graph file only; ``.bps`` the container with
    weights, optimiser state and history.

    A new file gets the permissions the umask allows, a replaced file keeps its own;
    ``private`` makes it readable by its owner only (0600), as a recovery file holding someone's
    unsaved work should be. Temporary files left by an earlier save that was killed are removed
    (see :data:`STALE_TEMP_SECONDS`)."""
    p = Path(path)
    try:
        _atomic_write(p, _payload(project, p), private=private)
    except FileFormatError as exc:
        raise _with_source(exc, str(p)) from None
    except OSError as exc:
        raise FileFormatError(f"{p}: cannot be saved ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class Rescued:
    """Where :func:`save_rescue` saved, what, and why the attempts before failed."""

    path: Path
    what: str
    problems: tuple[str, ...]

    @property
    def as_asked(self) -> bool:
        return not self.problems


def rescue_places(path: Path) -> list[Path]:
    """Where to save when ``path`` cannot be written: a new name next to it, then the current
    folder, the home folder and the temporary folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{path.stem}.rescued-{stamp}{path.suffix}"
    places = [path, path.with_name(name), Path.cwd() / name, Path.home() / name, Path(tempfile.gettempdir()) / name]
    seen: set[str] = set()
    unique = []
    for place in places:
        key = os.path.abspath(place)
        if key not in seen:
            seen.add(key)
            unique.append(place)
    return unique


def save_rescue(path: str | os.PathLike[str], versions: Iterable[tuple[str, Callable[[], Project]]]) -> Rescued:
    """Save work that must not be lost (a finished training run): the first of ``versions``
    (a description and a function making the project: everything first, then less) that can be
    made, written first at ``path``, then where :func:`rescue_places` says. Returns where and
    what was saved, with the reasons earlier attempts failed; raises FileFormatError listing
    them when nothing at all could be saved."""
    p = Path(path)
    problems: list[str] = []
    places = rescue_places(p)
    for what, make in versions:
        try:
            payload = _payload(make(), p)
        except Exception as exc:  # noqa: BLE001 -- whatever went wrong, try saving less
            problems.append(f"{what} could not be written out ({archive.reason(exc)})")
            continue
        for place in places:
            try:
                _atomic_write(place, payload)
                return Rescued(place, what, tuple(problems))
            except OSError as exc:
                problems.append(f"{place}: cannot be saved ({exc.strerror or archive.reason(exc)})")
    raise FileFormatError(f"{p}: nothing could be saved: " + "; ".join(problems))


__all__ = [
    "FORMAT", "VERSION", "MIGRATIONS", "MAX_JSON_BYTES", "MAX_CONTAINER_BYTES", "Project", "Document", "NodeRecord",
    "LinkRecord", "parse_document", "validate", "graph_to_dict", "graph_from_dict", "document_dict", "dumps",
    "loads", "load", "save", "save_rescue", "Rescued", "rescue_places", "parse_json", "container_bytes", "npz_bytes",
    "read_npz",
]
