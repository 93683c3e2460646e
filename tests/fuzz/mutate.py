"""Damaged and hostile files, made from the lessons: the seeds and the mutations of the fuzz test.

Seeds are every preset as saved JSON and a few presets trained for two steps and saved as
``.bps`` containers (weights, optimiser state and history). A case is a seed, one to three
mutations and an integer that seeds the mutations' own choices; hypothesis draws and shrinks
cases (:func:`cases`). The mutations cover what an attacker or a bad disk does:

- bytes: flips, truncation, bytes spliced in;
- JSON: a value anywhere replaced by a hostile one (wrong types, huge and negative numbers,
  long strings, deep nesting), size params set absurd (10⁹ vocab, 10,000 layers), whole texts
  that are deep, wide, or not JSON at all;
- zip: header fields (flags, method, version, sizes, offsets, CRC, name length) changed,
  members duplicated, added, removed or made into a bomb;
- npz: members replaced by arrays with hostile ``.npy`` headers (negative, huge or 100 dims,
  object or odd dtypes) or with values that are wrong for the graph (NaN weights, a step
  counter near 2⁶³, negative second moments, shapes that do not fit).
"""

from __future__ import annotations

import functools
import io
import json
import random
import struct
import warnings
import zipfile
from typing import Any, Callable

import numpy as np

Mutator = Callable[[bytes, str, random.Random], bytes]

HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**9, 10**30, 1e308, -1e308, 1e-320,
    0.5, "", "x" * 10_000, "\u0000", "../../etc/passwd", "NaN", [], {}, [[[[[]]]]], [1, "a", None], {"a": {"b": {}}},
    list(range(1000)), [10**9, 10**9],
]
SIZE_VALUES = [0, -1, 10**4, 10**9, 2**31 - 1, 2**31, 2**62, 2**63 + 5]


@functools.lru_cache(maxsize=None)
def seeds() -> dict[str, tuple[bytes, str]]:
    """name → (bytes, suffix): every preset's JSON, and trained containers of a few."""
    import presets
    from engine import serialize
    from engine.train import Trainer

    out: dict[str, tuple[bytes, str]] = {}
    for name in presets.names():
        out[f"{name}.json"] = (presets.path(name).read_bytes(), ".json")
    for name in ("two_layer_net", "language_model", "seq2seq", "convnet"):
        project = serialize.load(presets.path(name))
        trainer = Trainer.from_project(project, steps=2)
        trainer.run(2)
        out[f"{name}.bps"] = (serialize.container_bytes(trainer.to_project(project)), ".bps")
    return out


# --- bytes ---------------------------------------------------------------------------------------


def flip_bytes(data: bytes, suffix: str, rnd: random.Random) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        i = rnd.randrange(len(b))
        b[i] ^= rnd.randrange(1, 256)
    return bytes(b)


def truncate(data: bytes, suffix: str, rnd: random.Random) -> bytes:
    return data[: rnd.randrange(len(data))] if data else data


def splice(data: bytes, suffix: str, rnd: random.Random) -> bytes:
    i = rnd.randrange(len(data) + 1)
    junk = rnd.choice([b"\x00" * 64, b"\xff" * 7, b"PK\x03\x04", b"PK\x05\x06" + b"\x00" * 18, bytes(rnd.randrange(256) for _ in range(32))])
    return data[:i] + junk + data[i:]


# --- JSON ----------------------------------------------------------------------------------------


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:50]):
            out += _paths(v, prefix + (i,))
    return out


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return obj


def _on_graph(data: bytes, suffix: str, edit: Callable[[Any], Any]) -> bytes:
    """Apply ``edit`` to the graph JSON, in a plain file or inside a container."""
    if suffix == ".json":
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            return data
        return json.dumps(edit(doc), ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        members = _members(data)
        doc = json.loads(members["graph.json"])
    except (_Unreadable, KeyError, ValueError, RecursionError):
        return data
    members["graph.json"] = json.dumps(edit(doc), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return _zip(members)


def json_value(data: bytes, suffix: str, rnd: random.Random) -> bytes:
    def edit(doc: Any) -> Any:
        return _set(doc, rnd.choice(_paths(doc)), rnd.choice(HOSTILE_VALUES))

    return _on_graph(data, suffix, edit)


def absurd_size(data: bytes, suffix: str, rnd: random.Random) -> bytes:
    """A size param (vocab, dim, hidden, layers, channels, shape, rows, ...) set absurd."""
    def edit(doc: Any) -> Any:
        spots = [p for p in _paths(doc) if p and isinstance(p[-1], str) and p[-1] in (
            "vocab", "dim", "hidden", "layers", "heads", "out_features", "out_channels", "channels", "max_len", "window",
            "stages", "kernel", "classes", "src_vocab", "tgt_vocab", "rows", "steps", "shape", "context", "features", "size",
            "ignore_index", "t", "axes")]
        if not spots:
            return doc
        path = rnd.choice(spots)
        value = rnd.choice(SIZE_VALUES)
        old = doc
        for key in path:
            old = old[key]
        if isinstance(old, list):
            value = [value if rnd.random() < 0.5 else v for v in old] or [value]
        return _set(doc, path, value)

    return _on_graph(data, suffix, edit)


def json_text(data: bytes, suffix: str, rnd: random.Random) -> bytes:
    """Hostile JSON text in place of the graph: deep, wide, huge numbers, not JSON."""
    n = rnd.choice([100, 10_000, 200_000])
    text = rnd.choice([
        "[" * n + "]" * n,
        "[" * n,
        '{"a":' * n + "1" + "}" * n,
        "[" + ",".join(["{}"] * n) + "]",
        "[" + ",".join(["[]"] * n) + "]",
        '{"format": "backprop-studio.graph", "version": 1, "nodes": [' + ",".join(['{"id": "%d", "type": "Add"}' % i for i in range(n)]) + "]}",
        '{"format": "backprop-studio.graph", "version": 1, "nodes": [], "x": NaN}',
        '{"format": "backprop-studio.graph", "version": 1, "version": 2, "nodes": []}',
        '{"format": "backprop-studio.graph", "version": ' + "9" * 5000 + ', "nodes": []}',
        "\ufeff{}",
        "\xff\xfe{}",
    ])
    raw = text.encode("utf-8") if not text.startswith("\xff") else b"\xff\xfe{}"
    if suffix == ".json":
        return raw
    try:
        members = _members(data)
    except (_Unreadable, KeyError, ValueError, RecursionError):
        return data
    members["graph.json"] = raw
    return _zip(members)


# --- zip ---------------------------------------------------------------------------------------------


class _Unreadable(Exception):
    """An earlier mutation broke the zip: this one leaves the bytes as they are."""


def _members(data: bytes) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {i.filename: zf.read(i) for i in zf.infolist()}
    except Exception as exc:  # noqa: BLE001 -- zipfile raises many types on damaged input
        raise _Unreadable() from exc


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


def _headers(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    for magic in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"):
        i = data.find(magic)
        while i >= 0:
            out.append((i, magic))
            i = data.find(magic, i + 4)
    return out


# (offset within the header, struct format) of the fields worth breaking, per header kind
_FIELDS = {
    b"PK\x03\x04": [(4, "<H"), (6, "<H"), (8, "<H"), (14, "<I"), (18, "<I"), (22, "<I"), (26, "<H"), (28, "<H")],
    b"PK\x01\x02": [(6, "<H"), (8, "<H"), (10, "<H"), (16, "<I"), (20, "<I"), (24, "<I"), (28, "<H"), (30, "<H"), (42, "<I")],
    b"PK\x05\x06": [(8, "<H"), (10, "<H"), (12, "<I"), (16, "<I"), (20, "<H")],
}


def _break_headers(data: bytes, rnd: random.Random) -> bytes:
    found = _headers(data)
    if not found:
        return data
    b = bytearray(data)
    for _ in range(rnd.randint(1, 3)):
        at, magic = rnd.choice(found)
        offset, fmt = rnd.choice(_FIELDS[magic])
        if at + offset + struct.calcsize(fmt) > len(b):
            continue
        top = 0xFFFF if fmt == "<H" else 0xFFFFFFFF
        value = rnd.choice([0, 1, 9, 12, 14, 20, 45, 63, 99, 0x8000, 0x7FFF, top, top - 1, rnd.randrange(top + 1)])
        if fmt == "<H" and offset in (6, 8) and rnd.random() < 0.5:
            value = struct.unpack_from(fmt, b, at + offset)[0] | rnd.choice([1, 8, 64, 0x2000])  # flag bits
        struct.pack_into(fmt, b, at + offset, value)
    return bytes(b)


def zip_headers(data: bytes, suffix: str, rnd: random.Random) -> bytes:
    """Header fields of the container, or of an .npz inside it, changed."""
    if suffix != ".bps":
        return data
    if rnd.random() < 0.5:
        return _break_headers(data, rnd)
    try:
        members = _members(data)
    except (_Unreadable, KeyError, ValueError, RecursionError):
        return data
    npz = [k for k in members if k.endswith(".npz")]
    if not npz:
        return _break_headers(data, rnd)
    name = rnd.choice(npz)
    members[name] = _break_headers(members[name], rnd)
    return _zip(members)


def zip_structure(data: bytes, suffix: str, rnd: random.Random) -> bytes:
    """Members duplicated, added, dropped, bombs, stored instead of deflated."""
    if suffix != ".bps":
        return data
    try:
        members = _members(data)
    except (_Unreadable, KeyError, ValueError, RecursionError):
        return data
    choice = rnd.randrange(6)
    names = list(members)
    if choice == 0 and names:
        name = rnd.choice(names)
        buf = io.BytesIO()
        with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            warnings.simplefilter("ignore")  # "Duplicate name": that is the point
            for k, v in members.items():
                zf.writestr(k, v)
            zf.writestr(name, members[name])  # twice
        return buf.getvalue()
    if choice == 1:
        members[rnd.choice(["evil.py", "../x", "graph.json/", "weights.npz.npz", "a" * 300])] = b"print(1)"
    elif choice == 2 and names:
        del members[rnd.choice(names)]
    elif choice == 3:
        name = rnd.choice(["weights.npz", "optimizer.npz", "history.npz", "graph.json"])
        members[name] = b"\x00" * rnd.choice([2**20, 64 * 2**20, 300 * 2**20])  # deflates ~1000 times
    elif choice == 4:
        return _zip(members, zipfile.ZIP_STORED)
    else:
        inner = _zip(members)
        members = {"graph.json": inner}  # a zip where the JSON should be
    return _zip(members)


# --- npz -------------------------------------------------------------------------------------------


def _npy(shape: Any, descr: Any = "<f8", fortran: bool = False, payload: bytes | None = None, version: int = 1) -> bytes:
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode("latin1")
    pre = 10 if version == 1 else 12
    header += b" " * ((64 - (pre + len(header) + 1) % 64) % 64) + b"\n"
    length = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header + (payload if payload is not None else b"\x00" * 64)


def _npz_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for k, v in entries.items():
            zf.writestr(k, v)
    return buf.getvalue()


def _arrays(raw: bytes) -> dict[str, np.ndarray]:
    """The arrays of an .npz an earlier mutation may have broken (read the careful way: np.load
    itself raises OverflowError on an absurd header); empty when they cannot be read."""
    from engine import archive
    from engine.errors import FileFormatError

    try:
        return archive.read_npz(raw, "npz", 2**30)
    except FileFormatError:
        return {}


def npz_hostile(data: bytes, suffix: str, rnd: random.Random) -> bytes:
    """An .npz member replaced by one with a hostile header or values wrong for the graph."""
    if suffix != ".bps":
        return data
    try:
        members = _members(data)
    except (_Unreadable, KeyError, ValueError, RecursionError):
        return data
    name = rnd.choice(["weights.npz", "optimizer.npz", "history.npz"])
    arrays = _arrays(members[name]) if name in members else {}
    key = rnd.choice(sorted(arrays)) if arrays else "x/W"
    kind = rnd.randrange(4)
    if kind == 0:  # hostile header
        shape = rnd.choice([(-1,), (-2, 3), (2**62, 2**62), (10**30,), (1,) * 100, (2**31, 2**31, 2**31), ("a",), 3, (3.5,), ()])
        descr = rnd.choice(["<f8", ">f4", "|O", "<U10", "<c16", "<f99", [("a", "<f8", (10**9, 10**9))], "V8", "<M8[s]", 7])
        entry = _npy(shape, descr, rnd.random() < 0.2, version=rnd.choice([1, 2]))
        raw = {f"{k}.npy": _npy_of(v) for k, v in arrays.items()}
        raw[f"{key}.npy"] = entry
        members[name] = _npz_of(raw)
    elif kind == 1 and arrays:  # values wrong for the graph
        a = arrays[key]
        value = rnd.choice([
            np.full(a.shape, np.nan), np.full(a.shape, np.inf), -np.abs(a) - 1, np.zeros((2,) + a.shape),
            np.zeros(a.shape, np.int64), np.array(2**63 - 2, np.int64), np.array(-5), np.zeros(0),
            np.asarray(a, ">f8"), np.asfortranarray(np.atleast_2d(a)), np.zeros(10**6),
        ])
        arrays[key] = value
        members[name] = _npz_of({f"{k}.npy": _npy_of(v) for k, v in arrays.items()})
    elif kind == 2 and arrays:  # names that do not fit
        arrays[rnd.choice(["ghost/W", "adam/exp_avg/ghost/W", "sgd/step", "adam/step", "adam/nothing/x/y", key + "x", "step"])] = arrays.pop(key)
        members[name] = _npz_of({f"{k}.npy": _npy_of(v) for k, v in arrays.items()})
    else:  # not an npz, or an npz with odd members
        members[name] = rnd.choice([b"", b"PK\x05\x06" + b"\x00" * 18, _npz_of({"a.txt": b"hi"}), _npz_of({"x/W.npy": b"\x93NUMPY"}),
                                    _npz_of({"x/W.npy": _npy((2,), payload=b"\x00" * 15)})])
    return _zip(members)


def _npy_of(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


MUTATORS: dict[str, Mutator] = {
    "flip_bytes": flip_bytes, "truncate": truncate, "splice": splice, "json_value": json_value, "absurd_size": absurd_size,
    "json_text": json_text, "zip_headers": zip_headers, "zip_structure": zip_structure, "npz_hostile": npz_hostile,
}


def make(seed: str, mutations: list[str], salt: int) -> tuple[bytes, str]:
    """The bytes and suffix of one case."""
    data, suffix = seeds()[seed]
    rnd = random.Random(salt)
    for name in mutations:
        data = MUTATORS[name](data, suffix, rnd)
    return data, suffix


def cases(targets: tuple[str, ...] = ("load", "info", "run")) -> Any:
    """A hypothesis strategy of (target, seed, mutations, salt)."""
    from hypothesis import strategies as st

    return st.tuples(
        st.sampled_from(targets),
        st.sampled_from(sorted(seeds())),
        st.lists(st.sampled_from(sorted(MUTATORS)), min_size=1, max_size=3),
        st.integers(0, 2**32 - 1),
    )
