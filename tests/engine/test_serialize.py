"""Graph files and containers: round trips byte for byte, and every kind of bad file gets its
own clear FileFormatError (never a traceback, never a half-loaded graph)."""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

import presets
from engine import serialize
from engine.compile import compile_graph
from engine.errors import FileFormatError, GraphError
from engine.graph import Graph
from engine.runtime import Runtime
from engine.serialize import Project
from engine.train import Trainer


class _FixedIdGraph(Graph):
    """Node ids derived from names, so that every call builds the same document."""

    def add_node(self, type_id, params=None, *, node_id=None, name=None, **kw):  # type: ignore[override]
        node_id = node_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"test/{name}"))
        return super().add_node(type_id, params, node_id=node_id, name=name, **kw)


def _linear_project() -> Project:
    g = _FixedIdGraph()
    x = g.add_node("Input", {"shape": (4, 3)}, name="φ(x)", position=(0, 0))
    w = g.add_node("Parameter", {"shape": (3,)}, name="w", position=(0, 100.5))
    y = g.add_node("Input", {"shape": (4,)}, name="y", position=(0, 200))
    s = g.add_node("Dot", {}, name="score", position=(200, 50))
    r = g.add_node("Subtract", {}, name="residual", position=(400, 50))
    q = g.add_node("Square", {}, name="squared", position=(600, 50))
    m = g.add_node("Mean", {"axes": [0]}, name="loss", position=(800, 50))
    g.connect(w.id, "out", s.id, "a")
    g.connect(x.id, "out", s.id, "b")
    g.connect(s.id, "out", r.id, "a")
    g.connect(y.id, "out", r.id, "b")
    g.connect(r.id, "out", q.id, "a")
    g.connect(q.id, "out", m.id, "a")
    data = {
        "φ(x)": {"values": [[1.0, 2.0, 0.5], [0.0, -1.0, 1.0], [2.0, 0.0, 0.0], [1, 1, 1]]},
        "y": {"values": [1.0, -1.0, 0.5, 2]},
    }
    training = {"loss": "loss", "optimizer": {"type": "adam", "lr": 0.05}, "steps": 20, "seed": 3,
                "target": {"metric": "loss_drop", "value": 0.5}}
    return Project(g, "Linear", "A lesson with ünïcode — and a second line.\nYes.", data, training)


def _doc() -> dict:
    return json.loads(serialize.dumps(_linear_project()))


def _ids(doc: dict) -> dict[str, str]:
    return {n["name"]: n["id"] for n in doc["nodes"]}


# --- round trips ----------------------------------------------------------------------------------


def test_json_round_trip_is_byte_identical_and_keeps_everything(tmp_path: Path) -> None:
    project = _linear_project()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    serialize.save(project, a)
    loaded = serialize.load(a)
    serialize.save(loaded, b)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes().decode("utf-8").startswith('{\n  "format": "backprop-studio.graph",\n  "version": 1,')
    assert list(loaded.graph.nodes) == list(project.graph.nodes)  # ids and order kept
    for nid, node in project.graph.nodes.items():
        other = loaded.graph.nodes[nid]
        assert (other.type, other.name, other.position, other.params) == (node.type, node.name, node.position, node.params)
    assert loaded.graph.nodes[_ids(_doc())["loss"]].params["axes"] == (0,)  # lists come back as canonical tuples
    assert set(loaded.graph.links) == set(project.graph.links)
    assert (loaded.name, loaded.description) == (project.name, project.description)
    assert loaded.training["optimizer"] == {"type": "adam", "lr": 0.05}
    assert loaded.weights is None and loaded.optimizer_state is None and loaded.history is None


def test_loaded_graph_runs_like_the_original() -> None:
    project = _linear_project()
    loaded = serialize.loads(serialize.dumps(project))
    feeds = {"φ(x)": np.ones((4, 3)), "y": np.zeros(4)}
    a = Runtime(project.graph, seed=1).forward(feeds)
    b = Runtime(loaded.graph, seed=1).forward(feeds)
    key = (_ids(_doc())["loss"], "out")
    assert np.array_equal(a.values[key], b.values[key])


def test_container_round_trip_with_weights_optimizer_state_and_history(tmp_path: Path) -> None:
    project = _linear_project()
    trainer = Trainer.from_project(project)
    trainer.run(5)
    trained = trainer.to_project(project)
    a, b = tmp_path / "a.bps", tmp_path / "b.bps"
    serialize.save(trained, a)
    loaded = serialize.load(a)
    serialize.save(loaded, b)
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        assert zf.namelist() == ["graph.json", "history.npz", "optimizer.npz", "weights.npz"]
        assert zf.read("graph.json").decode() == serialize.dumps(project)
    for node, ws in trained.weights.items():
        for name, w in ws.items():
            got = loaded.weights[node][name]
            assert got.dtype == w.dtype == np.float32 and np.array_equal(got, w)
    assert set(loaded.optimizer_state) == set(trained.optimizer_state)
    assert int(loaded.optimizer_state["adam/step"]) == 5 and loaded.optimizer_state["adam/step"].shape == ()
    assert loaded.history["loss"].shape == (5,) and np.array_equal(loaded.history["loss"], trained.history["loss"])


def test_container_bytes_are_deterministic() -> None:
    project = _linear_project()
    project.weights = {_ids(_doc())["w"]: {"value": np.arange(3, dtype=np.float32)}}
    assert serialize.container_bytes(project) == serialize.container_bytes(project)
    assert serialize.npz_bytes({"b": np.zeros(2), "a": np.ones(()), "c": np.arange(3)}) == serialize.npz_bytes(
        {"c": np.arange(3), "a": np.ones(()), "b": np.zeros(2)})


def test_json_save_holds_the_graph_only(tmp_path: Path) -> None:
    project = _linear_project()
    project.weights = {_ids(_doc())["w"]: {"value": np.ones(3, np.float32)}}
    serialize.save(project, tmp_path / "g.json")
    assert serialize.load(tmp_path / "g.json").weights is None


def test_graph_to_dict_subset_and_back() -> None:
    project = _linear_project()
    ids = _ids(_doc())
    part = serialize.graph_to_dict(project.graph, [ids["w"], ids["φ(x)"], ids["score"]])
    assert [n["name"] for n in part["nodes"]] == ["φ(x)", "w", "score"]
    assert len(part["links"]) == 2  # links to nodes outside the subset are left out
    g = serialize.graph_from_dict(json.loads(json.dumps(part)))
    assert set(g.nodes) == {ids["w"], ids["φ(x)"], ids["score"]}
    assert g.infer().shapes[(ids["score"], "out")] == (4,)
    with pytest.raises(FileFormatError, match="same id"):
        serialize.graph_from_dict({"nodes": part["nodes"] * 2, "links": []})


def test_a_unknown_block_is_a_placeholder_that_keeps_type_params_and_wires(tmp_path: Path) -> None:
    doc = _doc()
    ids = _ids(doc)
    for n in doc["nodes"]:
        if n["name"] == "squared":
            n["type"], n["params"] = "FancySquare", {"power": 2, "mode": ["x", 1]}
    text = json.dumps(doc, ensure_ascii=False)
    project = serialize.loads(text)
    node = project.graph.nodes[ids["squared"]]
    assert node.is_placeholder and node.type == "FancySquare" and node.params == {"power": 2, "mode": ["x", 1]}
    assert node.placeholder_ports == (("a",), ("out",))
    assert len(project.graph.links) == 6
    saved = json.loads(serialize.dumps(project))
    again = [n for n in saved["nodes"] if n["id"] == ids["squared"]][0]
    assert again["type"] == "FancySquare" and again["params"] == {"power": 2, "mode": ["x", 1]}
    assert serialize.dumps(serialize.loads(serialize.dumps(project))) == serialize.dumps(project)
    with pytest.raises(GraphError, match="unknown block type 'FancySquare'"):
        compile_graph(project.graph)


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.json"
    target.write_text("the original\n")
    os.chmod(target, 0o600)

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(FileFormatError, match="keep.json: cannot be saved \\(No space left on device\\)"):
        serialize.save(_linear_project(), target)
    assert target.read_text() == "the original\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]  # no temporary file left behind
    monkeypatch.undo()
    serialize.save(_linear_project(), target)
    assert serialize.load(target).name == "Linear"
    assert (target.stat().st_mode & 0o777) == 0o600  # the replaced file's permissions are kept


def test_save_refuses_an_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match=r"use \.json \(the graph only\) or \.bps"):
        serialize.save(_linear_project(), tmp_path / "x.txt")


def test_every_preset_is_stored_canonically() -> None:
    for name in presets.names():
        p = presets.path(name)
        assert serialize.dumps(serialize.load(p)).encode("utf-8") == p.read_bytes(), name


# --- bad files ---------------------------------------------------------------------------------------


def _edit(change) -> str:
    doc = _doc()
    change(doc, _ids(doc))
    return json.dumps(doc, ensure_ascii=False)


def _node(doc: dict, name: str) -> dict:
    return [n for n in doc["nodes"] if n["name"] == name][0]


def _set_params(name: str, params: dict):
    def change(doc: dict, ids: dict) -> None:
        _node(doc, name)["params"] = params
    return change


def _add_link(src: str, src_port: str, dst: str, dst_port: str):
    def change(doc: dict, ids: dict) -> None:
        doc["links"].append({"from": [ids.get(src, src), src_port], "to": [ids.get(dst, dst), dst_port]})
    return change


def _duplicate_id(doc: dict, ids: dict) -> None:
    _node(doc, "residual")["id"] = ids["score"]


def _ids_into_float(doc: dict, ids: dict) -> None:
    _node(doc, "y")["params"] = {"shape": [4], "dtype": "ids"}
    doc["links"] = [l for l in doc["links"] if l["from"][0] != ids["y"]]
    doc["nodes"].append({"id": "s1", "type": "Sigmoid", "name": "sig", "params": {}, "position": [0, 0]})
    doc["links"].append({"from": [ids["y"], "out"], "to": ["s1", "a"]})


def _cycle(doc: dict, ids: dict) -> None:
    doc["links"] = [l for l in doc["links"] if l["to"] != [ids["residual"], "b"]]
    doc["links"].append({"from": [ids["squared"], "out"], "to": [ids["residual"], "b"]})


BAD_TEXT = [
    pytest.param("hello, world", r"it is not valid JSON \(line 1, column 1: Expecting value\)", id="not-json"),
    pytest.param('{"format": "backprop-studio.graph", "version": 1, "nodes": [{"id": "a", "ty',
                 r"it is incomplete: the JSON text ends too early", id="truncated"),
    pytest.param('{"format": "backprop-studio.graph", "version": 1, "nodes": [', r"ends too early", id="truncated-at-bracket"),
    pytest.param("[1, 2]", r"not a Backprop Studio graph \(the JSON holds a list", id="not-an-object"),
    pytest.param('{"version": 1, "nodes": []}', r"it has no \"format\": \"backprop-studio.graph\" tag", id="no-format-tag"),
    pytest.param('{"format": "keras.model", "version": 1, "nodes": []}',
                 r"its format tag is \"keras.model\", expected \"backprop-studio.graph\"", id="wrong-format-tag"),
    pytest.param('{"format": "backprop-studio.graph", "version": 7, "nodes": []}',
                 r"made by a newer Backprop Studio \(format version 7; this one reads up to 1\)", id="future-version"),
    pytest.param('{"format": "backprop-studio.graph", "version": "1", "nodes": []}', r"format version must be a whole number",
                 id="version-not-int"),
    pytest.param('{"format": "backprop-studio.graph", "version": 1}', r"it has no 'nodes' list", id="missing-nodes"),
    pytest.param('{"format": "backprop-studio.graph", "version": 1, "nodes": [], "nodes": []}', r"the key 'nodes' twice",
                 id="duplicate-key"),
    pytest.param('{"format": "backprop-studio.graph", "version": 1, "nodes": [{"id": "a", "type": "Scale", "params": {"factor": NaN}}]}',
                 r"it contains NaN", id="nan"),
    pytest.param(_edit(_set_params("score", {"size": 3})), r"node 'score' \(Dot\): Dot has no parameter 'size'", id="unknown-param"),
    pytest.param(_edit(_set_params("w", {"shape": "abc"})),
                 r"node 'w' \(Parameter\): Parameter: parameter 'shape' must be a list of whole numbers", id="bad-param-value"),
    pytest.param(_edit(_set_params("w", {"shape": [0]})), r"parameter 'shape' must contain sizes ≥ 1", id="param-out-of-range"),
    pytest.param(_edit(_add_link("nope", "out", "loss", "a")), r"links\[6\] comes from node 'nope', which is not in the file",
                 id="link-from-missing-node"),
    pytest.param(_edit(_add_link("w", "out", "score", "c")),
                 r"links\[6\] goes into node 'score' \(Dot\) input 'c', which does not exist \(inputs: a, b\)", id="link-to-missing-port"),
    pytest.param(_edit(_add_link("w", "value", "squared", "a")), r"output 'value', which does not exist \(outputs: out\)",
                 id="link-from-missing-port"),
    pytest.param(_edit(_add_link("y", "out", "score", "a")),
                 r"links\[0\] and links\[6\] both go into node 'score' \(Dot\) input 'a'; an input takes one link", id="two-links-one-input"),
    pytest.param(_edit(_cycle), r"the links make a cycle: .*'residual'.*; a graph must flow one way", id="cycle"),
    pytest.param(_edit(_duplicate_id), r"nodes\[3\] and nodes\[4\] have the same id", id="duplicate-ids"),
    pytest.param(_edit(_ids_into_float), r"'sig' \(Sigmoid\) input 'a' takes real numbers, but node 'y' \(Input\) output 'out' gives token ids",
                 id="port-kinds"),
    pytest.param(_edit(lambda d, i: d["nodes"][0].update(position=[0, "top"])), r"nodes\[0\].position must be \[x, y\]", id="bad-position"),
    pytest.param(_edit(lambda d, i: d["nodes"][0].pop("type")), r"nodes\[0\] has no 'type'", id="node-without-type"),
    pytest.param(_edit(lambda d, i: d.update(extra=1)), r"unknown top-level key 'extra'", id="unknown-top-level-key"),
    pytest.param(_edit(lambda d, i: d["data"].update(y={"kind": "synthetic", "name": "spiral"})),
                 r"data 'y': unknown synthetic set 'spiral' \(choose one of: linear, blobs, xor, circles, sine, bars, recall\)", id="bad-data"),
    pytest.param(_edit(lambda d, i: d["data"].update(y={"values": [[1, 2], [3]]})), r"data 'y': 'values' is not rectangular",
                 id="ragged-data"),
    pytest.param(_edit(lambda d, i: d["training"].update(lrate=0.1)), r"training has no setting 'lrate'", id="bad-training"),
    pytest.param(_edit(lambda d, i: d["training"].update(optimizer={"type": "adam", "lr": -1})),
                 r"training: 'optimizer.lr' must be ≥ 0, got -1.0", id="negative-lr"),
]


@pytest.mark.parametrize("text,message", BAD_TEXT)
def test_bad_graph_text_gets_its_own_message(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FileFormatError, match=message) as info:
        serialize.load(path)
    assert str(info.value).startswith(f"{path}: ")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"format": "backprop-studio.graph", "name": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(FileFormatError, match=r"latin1.json: it is not UTF-8 text \(byte 0xe9 at position 48"):
        serialize.load(path)


def test_empty_file_and_missing_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_bytes(b"  \n")
    with pytest.raises(FileFormatError, match="empty.json: it is empty"):
        serialize.load(tmp_path / "empty.json")
    with pytest.raises(FileFormatError, match="nothing.json: no such file"):
        serialize.load(tmp_path / "nothing.json")
    with pytest.raises(FileFormatError, match="it is a folder"):
        serialize.load(tmp_path)


def test_oversized_files_are_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(65 * 2**20)  # sparse: costs no disk, but stat says 65 MiB
    with pytest.raises(FileFormatError, match=r"big.json: it is too large \(65 MiB; graph files are limited to 64 MiB\)"):
        serialize.load(big)
    big_zip = tmp_path / "big.bps"
    with big_zip.open("wb") as f:
        f.write(b"PK\x03\x04")
        f.truncate(513 * 2**20)
    with pytest.raises(FileFormatError, match=r"it is too large \(513 MiB; containers are limited to 512 MiB\)"):
        serialize.load(big_zip)


def test_zip_bomb_is_refused_from_the_declared_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _ids(_doc())
    graph = serialize.dumps(_linear_project()).encode()
    bomb = tmp_path / "bomb.bps"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("graph.json", graph)
        zf.writestr("weights.npz", _npz(**{f"{ids['w']}/value": np.zeros(2**21)}))  # 16 MiB of zeros
    assert bomb.stat().st_size < 100_000
    with pytest.raises(FileFormatError, match=r"bomb.bps: its member 'weights.npz' would unpack from 16.\d KiB to 16.0 MiB, "
                                              r"more than 200 times its packed size \(a zip bomb\?\)"):
        serialize.load(bomb)
    # Within the ratio (four values at random deflate about 20 times), the declared total is refused.
    big = tmp_path / "big.bps"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("graph.json", graph)
        zf.writestr("weights.npz", _npz(**{f"{ids['w']}/value": np.random.default_rng(0).integers(0, 4, 2**18).astype(float)}))
    monkeypatch.setattr(serialize, "MAX_CONTAINER_BYTES", 2**20)
    with pytest.raises(FileFormatError, match=r"big.bps: it unpacks to 2.0 MiB, more than the 1 MiB limit \(a zip bomb\?\)"):
        serialize.load(big)


def _container(tmp_path: Path, members: dict[str, bytes], name: str = "c.bps") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return path


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_corrupted_zip(tmp_path: Path) -> None:
    project = _linear_project()
    project.weights = {_ids(_doc())["w"]: {"value": np.arange(3, dtype=np.float32)}}
    good = serialize.container_bytes(project)
    path = tmp_path / "damaged.bps"
    path.write_bytes(good[: len(good) // 2])  # cut off: the central directory is gone
    with pytest.raises(FileFormatError, match=r"damaged.bps: it is damaged: not a readable zip container"):
        serialize.load(path)
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        info = zf.getinfo("graph.json")
        start = info.header_offset + 30 + len(info.filename) + 10
    flipped = bytearray(good)
    flipped[start] ^= 0xFF  # damage the compressed graph.json
    path.write_bytes(bytes(flipped))
    with pytest.raises(FileFormatError, match=r"damaged.bps: it is damaged: member 'graph.json' cannot be read"):
        serialize.load(path)


def test_npz_member_with_a_pickled_object_array_is_refused(tmp_path: Path) -> None:
    ids = _ids(_doc())
    evil = _npz(**{f"{ids['w']}/value": np.array([{"a": 1}, None], dtype=object)})
    path = _container(tmp_path, {"graph.json": serialize.dumps(_linear_project()).encode(), "weights.npz": evil})
    with pytest.raises(FileFormatError, match=r"weights.npz entry '.*/value' holds Python objects \(pickled data\); Backprop Studio never loads pickled data"):
        serialize.load(path)


def test_weights_of_the_wrong_shape_or_for_unknown_nodes(tmp_path: Path) -> None:
    ids = _ids(_doc())
    graph = serialize.dumps(_linear_project()).encode()
    cases = [
        ({f"{ids['w']}/value": np.zeros(2, np.float32)},
         r"weights.npz: node 'w' \(Parameter\) weight 'value' has shape \(2,\), but the graph needs \(3,\)"),
        ({"ghost/value": np.zeros(3)}, r"weights.npz has weights for node 'ghost', which is not in the graph"),
        ({f"{ids['w']}/bias": np.zeros(3)}, r"node 'w' \(Parameter\) has no weight 'bias' \(its weights: value\)"),
        ({f"{ids['score']}/value": np.zeros(3)}, r"weights.npz has weight 'value' for node 'score' \(Dot\), which has no weights"),
        ({f"{ids['w']}/value": np.zeros(3, np.int64)}, r"weight 'value' has dtype int64; weights are real numbers"),
        ({f"{ids['w']}/value": np.array(["a", "b", "c"])}, r"has dtype <U1, not numbers"),
    ]
    for i, (arrays, message) in enumerate(cases):
        path = _container(tmp_path, {"graph.json": graph, "weights.npz": _npz(**arrays)}, f"w{i}.bps")
        with pytest.raises(FileFormatError, match=message):
            serialize.load(path)


def test_container_structure_problems(tmp_path: Path) -> None:
    graph = serialize.dumps(_linear_project()).encode()
    cases = [
        ({"weights.npz": _npz()}, r"it has no graph.json: it is not a Backprop Studio container"),
        ({"graph.json": graph, "evil.py": b"print(1)"}, r"it has an unexpected member 'evil.py'"),
        ({"graph.json": b'{"format": "x"'}, r"graph.json: it is incomplete"),
        ({"graph.json": graph, "history.npz": _npz(loss=np.zeros(3), step=np.zeros(2))}, r"history.npz columns have different lengths"),
        ({"graph.json": graph, "optimizer.npz": _npz(**{"rmsprop/step": np.array(1)})}, r"optimizer.npz holds state of rmsprop"),
        ({"graph.json": graph, "weights.npz": b"not a zip at all"}, r"weights.npz is damaged"),
    ]
    for i, (members, message) in enumerate(cases):
        with pytest.raises(FileFormatError, match=message):
            serialize.load(_container(tmp_path, members, f"s{i}.bps"))


def test_truncated_npy_inside_npz(tmp_path: Path) -> None:
    ids = _ids(_doc())
    member = io.BytesIO()
    np.lib.format.write_array(member, np.zeros(1000))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{ids['w']}/value.npy", member.getvalue()[:200])
    path = _container(tmp_path, {"graph.json": serialize.dumps(_linear_project()).encode(), "weights.npz": buf.getvalue()})
    with pytest.raises(FileFormatError, match=r"weights.npz entry '.*/value' is truncated"):
        serialize.load(path)


def test_migrations_run_for_older_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _doc()
    doc["version"] = 1
    monkeypatch.setattr(serialize, "VERSION", 2)

    def to_v2(d: dict) -> dict:
        d["name"] = d["name"] + " (migrated)"
        return d

    monkeypatch.setitem(serialize.MIGRATIONS, 1, to_v2)
    assert serialize.loads(json.dumps(doc)).name == "Linear (migrated)"
