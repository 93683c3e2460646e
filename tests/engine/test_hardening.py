"""Issue 10: every hostile or damaged file gets a clear message within bounded time and memory,
and no unsaved work is lost. One test per class of failure (the fuzz test covers the rest)."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import presets
from engine import archive, blocks, cli, memory, serialize
from engine.errors import FileFormatError, MemoryLimitError, ParamError, ShapeError
from engine.gradcheck import FAILED, KINK, OK, check_block
from engine.graph import Graph
from engine.runtime import Runtime
from engine.serialize import Project
from engine.train import Trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained() -> Project:
    project = serialize.load(presets.path("two_layer_net"))
    trainer = Trainer.from_project(project, steps=3)
    trainer.run(3)
    return trainer.to_project(project)


def _members(project: Project) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(serialize.container_bytes(project))) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    return serialize.npz_bytes(arrays)


def _arrays(raw: bytes) -> dict[str, np.ndarray]:
    return serialize.read_npz(raw, "x", 2**30)


def _load(tmp_path: Path, data: bytes, name: str = "f.bps") -> serialize.Project:
    path = tmp_path / name
    path.write_bytes(data)
    return serialize.load(path)


def _patch(data: bytes, magic: bytes, offset: int, fmt: str, value: int | None = None, bits: int = 0) -> bytes:
    """Set a field in every zip header of one kind (value, or OR in flag bits)."""
    b = bytearray(data)
    i = b.find(magic)
    while i >= 0:
        old = struct.unpack_from(fmt, b, i + offset)[0]
        struct.pack_into(fmt, b, i + offset, old | bits if value is None else value)
        i = b.find(magic, i + 4)
    return bytes(b)


LOCAL, CENTRAL, END = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"


# --- 1. exceptions that escaped the loader ----------------------------------------------------------


def _zip_cases(good: bytes) -> list[tuple[bytes, str]]:
    return [
        (_patch(_patch(good, LOCAL, 6, "<H", bits=1), CENTRAL, 8, "<H", bits=1),
         r"its member 'graph.json' is encrypted; Backprop Studio never writes encrypted files"),
        (_patch(_patch(good, LOCAL, 8, "<H", 99), CENTRAL, 10, "<H", 99),
         r"its member 'graph.json' uses compression method 99 \(AES encryption\); Backprop Studio files use only deflate"),
        (_patch(_patch(good, LOCAL, 8, "<H", 12), CENTRAL, 10, "<H", 12), r"compression method 12 \(bzip2\)"),
        (_patch(good, CENTRAL, 6, "<H", 231), r"needs zip version 23.1|not a readable zip container \(zip file version 23.1\)"),
        (_patch(good, CENTRAL, 42, "<I", 0xFFFFFFF0), r"it is damaged: the zip directory puts its member .* outside the archive"),
        (_patch(good, END, 16, "<I", 0xFFFFFFFF), r"it is damaged"),
        (_patch(good, LOCAL, 26, "<H", 300), r"it is damaged: member 'graph.json' cannot be read \(File name in directory"),
    ]


def test_hostile_zip_headers_get_the_loaders_own_error(tmp_path: Path, trained: Project) -> None:
    good = serialize.container_bytes(trained)
    for i, (data, message) in enumerate(_zip_cases(good)):
        with pytest.raises(FileFormatError, match=message):
            _load(tmp_path, data, f"z{i}.bps")


def test_hostile_npz_inside_a_container_gets_the_loaders_own_error(tmp_path: Path, trained: Project) -> None:
    members = _members(trained)
    inner = members["weights.npz"]
    cases = [
        (_patch(_patch(inner, LOCAL, 6, "<H", bits=1), CENTRAL, 8, "<H", bits=1), r"weights.npz member '.*' is encrypted"),
        (_patch(_patch(inner, LOCAL, 8, "<H", 99), CENTRAL, 10, "<H", 99), r"weights.npz member .* uses compression method 99"),
        (_patch(inner, CENTRAL, 42, "<I", 0x80000000), r"weights.npz is damaged: the zip directory puts .* outside the archive"),
        (_patch(inner, END, 16, "<I", 0xFFFFFFFF), r"weights.npz is damaged"),  # was: ValueError, negative seek value
    ]
    for i, (data, message) in enumerate(cases):
        with pytest.raises(FileFormatError, match=message):
            _load(tmp_path, _zip({**members, "weights.npz": data}), f"n{i}.bps")


def _npy(shape: object, descr: object = "<f8", payload: bytes = b"\x00" * 16, version: int = 1, length: int | None = None) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    n = len(header) if length is None else length
    size = struct.pack("<H", n) if version == 1 else struct.pack("<I", n)
    return b"\x93NUMPY" + bytes([version, 0]) + size + header + payload


@pytest.mark.parametrize("entry, message", [
    (_npy((-1,)), r"its header gives the shape \(-1,\), with a negative size"),
    (_npy((2**62, 2**62)), r"is truncated \(its header promises more than a PiB of data; 16 bytes follow\)"),
    (_npy((10**30,)), r"is truncated \(its header promises more than a PiB"),
    (_npy((1,) * 100), r"its header gives 100 dimensions; at most 32 are read"),
    (_npy((2,), descr=[("a", "<f8", (10**9, 10**9))]), r"is damaged \("),
    (_npy((2,), descr="<f99"), r"is damaged \(descr is not a valid dtype descriptor"),
    (_npy((2,), descr="|O"), r"holds Python objects \(pickled data\)"),
    (_npy((2,), version=2, length=2**31), r"its header claims 2 GiB; an array header is a few dozen bytes"),
    (_npy((2,), version=3), r"uses .npy format version 3.0"),
    (_npy((2,), payload=b"\x00" * 17), r"is damaged \(1 bytes follow its data\)"),
    (b"\x93NUMPY", r"is not a numpy array"),
], ids=["negative", "overflow", "absurd", "rank-100", "subarray", "bad-descr", "object", "huge-header", "version-3",
        "trailing", "cut"])
def test_hostile_npy_headers_get_the_loaders_own_error(entry: bytes, message: str) -> None:
    with pytest.raises(FileFormatError, match=message):
        archive.read_npz(_zip({"x/W.npy": entry}, zipfile.ZIP_STORED), "weights.npz", 2**20)


def test_big_endian_and_fortran_arrays_still_load() -> None:
    a = np.arange(6.0).reshape(2, 3)
    for variant in (a.astype(">f8"), np.asfortranarray(a)):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, variant)
        got = archive.read_npz(_zip({"x.npy": buf.getvalue()}), "t", 2**20)["x"]
        assert got.dtype == np.float64 and got.dtype.isnative and np.array_equal(got, a)


# --- 3. memory amplification ------------------------------------------------------------------------


def test_a_zip_bomb_is_refused_from_its_headers_without_inflating(tmp_path: Path, trained: Project) -> None:
    members = _members(trained)
    members["weights.npz"] = b"\x00" * (256 * 2**20)  # deflates to ~250 KiB
    data = _zip(members)
    assert len(data) < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match=r"its member 'weights.npz' would unpack from .* to 256 MiB, more than 200 times"):
            _load(tmp_path, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # nothing was inflated


def test_a_member_larger_than_the_graph_can_need_is_refused_before_it_is_read(tmp_path: Path, trained: Project) -> None:
    members = _members(trained)
    noise = np.random.default_rng(0).integers(0, 4, 2**20).astype(float)  # 8 MiB that deflate ~20 times
    members["weights.npz"] = _npz({**_arrays(members["weights.npz"]), "pad": noise})
    with pytest.raises(FileFormatError, match=r"its member 'weights.npz' unpacks to 8.0 MiB, more than the .* KiB it can hold for this graph"):
        _load(tmp_path, _zip(members))


def test_json_values_and_depth_are_bounded_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wide = "[" + ",".join(["{}"] * 300_000) + "]"
    monkeypatch.setattr(serialize, "MAX_JSON_ITEMS", 100_000)
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match=r"it holds too many values \(up to 600,000; graph files are limited to 100,000\)"):
            serialize.loads(wide)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20  # the text was counted, not parsed (300,000 dicts would take ~20 MB)
    for deep in ("[" * 100 + "]" * 100, "[" * 100_000 + "]" * 100_000, '{"a":' * 70 + "1" + "}" * 70):
        with pytest.raises(FileFormatError, match=r"it is nested too deeply \(more than 64 levels"):
            serialize.loads(deep)
    with pytest.raises(FileFormatError, match=r"it is not valid JSON \(Exceeds the limit \(4300 digits\)"):
        serialize.loads('{"format": "backprop-studio.graph", "version": ' + "9" * 5000 + "}")
    assert serialize.parse_json("[[1], {\"a\": 2}]") == [[1], {"a": 2}]
    for scalar in ("true", "1", '"text"', "null"):
        with pytest.raises(FileFormatError, match=r"it is not a Backprop Studio graph \(the JSON holds"):
            serialize.loads(scalar)


def test_a_node_name_of_a_megabyte_gives_a_short_message(tmp_path: Path) -> None:
    doc = json.loads(serialize.dumps(serialize.load(presets.path("two_layer_net"))))
    doc["nodes"][0]["name"] = "n" * 10**6
    doc["nodes"][0]["params"]["shape"] = "oops"
    with pytest.raises(FileFormatError) as info:
        serialize.loads(json.dumps(doc), source="big.json")
    assert len(str(info.value)) < 1100 and "\n" not in str(info.value) and "nnn…" in str(info.value)


def test_graphs_too_big_to_be_lessons_are_refused_at_once() -> None:
    nodes = [{"id": str(i), "type": "Add"} for i in range(serialize.MAX_NODES + 1)]
    with pytest.raises(FileFormatError, match=r"it has 20,001 nodes; a graph may have at most 20,000"):
        serialize.loads(json.dumps({"format": serialize.FORMAT, "version": 1, "nodes": nodes}))


# --- 4. saved state that was accepted but wrong ---------------------------------------------------


def _with(members: dict[str, bytes], member: str, change) -> bytes:
    arrays = _arrays(members[member])
    change(arrays)
    return _zip({**members, member: _npz(arrays)})


def _first(arrays: dict[str, np.ndarray], prefix: str) -> str:
    return next(k for k in sorted(arrays) if k.startswith(prefix))


@pytest.mark.parametrize("member, change, message", [
    ("optimizer.npz", lambda a: a.update({"adam/step": np.array(2**63 - 2, np.int64)}),
     r"optimizer.npz: the step count 9,223,372,036,854,775,806 is out of range \(0 to 3, the steps recorded in history.npz\)"),
    ("optimizer.npz", lambda a: a.update({"adam/step": np.array(-1)}), r"the step count -1 is out of range"),
    ("optimizer.npz", lambda a: a.__setitem__(_first(a, "adam/exp_avg/"), a[_first(a, "adam/exp_avg/")] * np.nan),
     r"optimizer.npz: 'adam/exp_avg/.*' holds NaN or Inf"),
    ("optimizer.npz", lambda a: a.__setitem__(_first(a, "adam/exp_avg_sq/"), -1 - a[_first(a, "adam/exp_avg_sq/")]),
     r"'adam/exp_avg_sq/.*' holds negative numbers; it must be ≥ 0"),
    ("optimizer.npz", lambda a: a.__setitem__(_first(a, "adam/exp_avg/"), np.zeros(7)), r"has shape \(7,\), but the weight has shape"),
    ("optimizer.npz", lambda a: a.__setitem__(_first(a, "adam/exp_avg/"), a[_first(a, "adam/exp_avg/")].astype(np.int32)),
     r"has dtype int32; it holds real numbers"),
    ("optimizer.npz", lambda a: a.__setitem__("adam/velocity/x/W", np.zeros(2)), r"adam keeps no 'velocity' \(its state: step, exp_avg, exp_avg_sq\)"),
    ("history.npz", lambda a: a.__setitem__("step", np.array([1, 2, 2])), r"history.npz: 'step' must count 1, 2, 3"),
    ("history.npz", lambda a: a.__setitem__("loss", np.array([1.0, np.inf, 0.5])), r"history.npz: 'loss' holds NaN or Inf"),
    ("history.npz", lambda a: a.__setitem__("seconds", np.array([1.0, -1.0, 0.5])), r"history.npz: 'seconds' holds negative numbers"),
    ("history.npz", lambda a: a.__setitem__("grad_norm", np.array(["a", "b", "c"])), r"has dtype <U1, not numbers"),
    ("history.npz", lambda a: a.pop("seconds"), r"history.npz has no 'seconds' column"),
    ("weights.npz", lambda a: a.__setitem__(sorted(a)[0], a[sorted(a)[0]] * np.inf), r"weights.npz: node .* weight 'value' holds NaN or Inf"),
], ids=["step-2^63", "step-negative", "nan-moment", "negative-second-moment", "shape", "dtype", "slot", "history-steps",
        "history-inf", "history-negative-time", "history-text", "history-column", "weights-inf"])
def test_saved_state_is_checked_against_the_graph(tmp_path: Path, trained: Project, member: str, change, message: str) -> None:
    with pytest.raises(FileFormatError, match=message):
        _load(tmp_path, _with(_members(trained), member, change))


def test_a_good_container_still_loads_and_resumes(tmp_path: Path, trained: Project) -> None:
    loaded = _load(tmp_path, serialize.container_bytes(trained))
    assert int(loaded.optimizer_state["adam/step"]) == 3 and list(loaded.history["step"]) == [1, 2, 3]
    trainer = Trainer.from_project(loaded, steps=1)
    trainer.run(1)
    assert trainer.step_count == 4


def test_train_o_saves_what_it_can_when_the_full_save_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    # The folder cannot exist (its parent is a file) and the optimiser state cannot be written.
    monkeypatch.setattr(Trainer, "to_project", lambda self, base: (_ for _ in ()).throw(OverflowError("step too big")))
    code = cli.main(["train", "linear_regression", "--steps", "3", "-o", str(blocked / "run.bps")])
    _, err = capsys.readouterr()
    assert code == cli.EXIT_FAILED
    assert "the weights, optimiser state and history could not be written out (step too big)" in err
    assert f"{blocked / 'run.bps'}: cannot be saved (Not a directory)" in err
    saved = [p for p in tmp_path.iterdir() if p.name.startswith("run.rescued-")]
    assert len(saved) == 1
    assert f"the run is not lost: saved the weights and history (without the optimiser state) to {tmp_path / saved[0].name}" in err
    rescued = serialize.load(saved[0])
    assert rescued.weights and rescued.optimizer_state is None and list(rescued.history["step"]) == [1, 2, 3]


def test_ctrl_c_during_train_o_finishes_the_step_and_saves(tmp_path: Path) -> None:
    out = tmp_path / "run.bps"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with subprocess.Popen([sys.executable, "-m", "engine.cli", "train", "linear_regression", "--steps", "10000000",
                           "--every", "1", "-o", str(out)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("step 3/"):
                break
        proc.send_signal(2)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == cli.EXIT_INTERRUPTED
    assert "interrupted: finishing this step to save the run" in rest and "saved to" in rest
    steps = len(serialize.load(out).history["step"])
    assert steps >= 3


# --- 5. params that reference the wrong thing ---------------------------------------------------------


def _lm_graph() -> Graph:
    g = Graph()
    g.add_node("Input", {"shape": (2, 3), "dtype": "ids"}, node_id="ids", name="ids")
    g.add_node("EmbedToken", {"vocab": 5, "dim": 4}, node_id="emb", name="emb")
    g.add_node("Linear", {"out_features": 4}, node_id="lin", name="lin")
    g.add_node("GenerateToken", {"vocab": 5}, node_id="gen", name="gen")
    g.add_node("GenerateToken", {"vocab": 5}, node_id="gen2", name="gen2")
    g.connect("ids", "out", "emb", "ids")
    g.connect("emb", "out", "lin", "x")
    g.connect("lin", "out", "gen", "x")
    g.connect("lin", "out", "gen2", "x")
    return g


@pytest.mark.parametrize("tie, message", [
    ("gen", r"parameter 'tie_to' names this node itself"),
    ("lin", r"parameter 'tie_to' names 'lin' \(Linear\), which has no weight 'E' to share"),
    ("nowhere", r"parameter 'tie_to' names node 'nowhere', which is not in this graph"),
])
def test_tie_to_is_checked_when_edited(tie: str, message: str) -> None:
    g = _lm_graph()
    with pytest.raises(ParamError, match=message):
        g.check_params("gen", {"tie_to": tie})
    with pytest.raises(ParamError, match=message):
        g.set_params("gen", {"tie_to": tie})
    assert g.nodes["gen"].params["tie_to"] == ""  # unchanged


def test_tie_to_a_node_that_borrows_is_refused_when_edited_and_shown_when_it_becomes_so() -> None:
    g = _lm_graph()
    g.set_params("gen2", {"tie_to": "gen"})  # gen owns its E: fine
    g.set_params("gen", {"tie_to": "emb"})  # now gen borrows: gen2's tie is a chain
    assert "shares weight 'E', but its tie names 'gen' (GenerateToken), which borrows its 'E' from another node itself" \
        in g.infer().errors["gen2"]
    with pytest.raises(ShapeError, match="borrows its 'E' from another node itself"):
        Runtime(g)  # not a KeyError at run
    with pytest.raises(ParamError, match=r"which borrows its 'E' from another node itself; name the node that owns it"):
        g.set_params("gen2", {"tie_to": "gen"})


@pytest.mark.parametrize("tie, message", [
    ("gen", r"node 'gen' \(GenerateToken\): GenerateToken: parameter 'tie_to' names this node itself"),
    ("lin", r"parameter 'tie_to' names 'lin' \(Linear\), which has no weight 'E'"),
])
def test_tie_to_is_checked_at_load(tie: str, message: str) -> None:
    doc = json.loads(serialize.dumps(Project(_lm_graph())))
    next(n for n in doc["nodes"] if n["id"] == "gen")["params"]["tie_to"] = tie
    with pytest.raises(FileFormatError, match=message):
        serialize.loads(json.dumps(doc), source="lm.json")


def test_whole_number_params_fit_int32_everywhere() -> None:
    with pytest.raises(ParamError, match=r"CrossEntropy: parameter 'ignore_index' must be ≤ 2,147,483,647, got 1.84e\+19"):
        blocks.create("CrossEntropy", ignore_index=2**64)
    g = Graph()
    loss = g.add_node("CrossEntropy", {})
    with pytest.raises(ParamError, match=r"must be ≥ -2,147,483,647"):
        g.set_params(loss.id, {"ignore_index": -(2**40)})
    with pytest.raises(ParamError, match=r"BERT: parameter 'layers' must be ≤ 64, got 10,000"):
        blocks.create("BERT", layers=10_000)
    with pytest.raises(ParamError, match=r"parameter 'shape' must be ≤ 2,147,483,647"):
        blocks.create("Input", shape=(2, 2**40))


# --- 2. sizes: the memory estimate ------------------------------------------------------------------


def test_the_estimate_counts_weights_and_outputs_from_shapes() -> None:
    g = Graph()
    x = g.add_node("Input", {"shape": (8, 3)})
    fc = g.add_node("Linear", {"out_features": 5})
    g.connect(x.id, "out", fc.id, "x")
    est = memory.estimate(g, np.float32)
    assert est.weights == (3 * 5 + 5) * 4
    assert est.activations == (8 * 3 + 8 * 5) * 4
    assert est.needed == 2 * (est.weights + est.activations) and est.complete
    assert memory.estimate(g, np.float64).weights == 2 * est.weights


def test_a_composite_counts_its_inner_values() -> None:
    g = Graph()
    x = g.add_node("Input", {"shape": (2, 5, 8)})
    t = g.add_node("TransformerBlock", {"dim": 8, "heads": 2, "hidden": 16})
    g.connect(x.id, "out", t.id, "x")
    node = next(n for n in memory.estimate(g).nodes if n.node == t.id)
    assert node.activations > 2 * 5 * 8 * 4 * 4  # attention, norms, feed-forward: many (2, 5, 8) values
    assert node.weights == sum(int(np.prod(s)) for s in g.weight_shapes(t.id).values()) * 4


def test_an_absurd_size_is_refused_before_anything_is_allocated(monkeypatch: pytest.MonkeyPatch) -> None:
    project = serialize.load(presets.path("bert"))
    bert = next(n for n in project.graph.nodes.values() if n.type == "BERT")
    project.graph.set_params(bert.id, {"vocab": 10**9})
    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)
    tracemalloc.start()
    try:
        with pytest.raises(MemoryLimitError, match=r"this graph needs about 238.4 GiB for a forward and backward pass in float32 .* more "
                                                   r"than the memory limit of .* \(half of .*; set BACKPROP_STUDIO_MEMORY_LIMIT.*\); "
                                                   r"'BERT' \(BERT\) alone needs 119.2 GiB, its weight 'embed/E' \(1,000,000,000, 32\)"):
            Runtime(project.graph)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


def test_the_limit_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = serialize.load(presets.path("two_layer_net")).graph
    monkeypatch.setenv(memory.LIMIT_ENV, "1K")
    with pytest.raises(MemoryLimitError, match=r"the memory limit of 1 KiB \(set by BACKPROP_STUDIO_MEMORY_LIMIT=1K\)"):
        memory.check(graph)
    monkeypatch.setenv(memory.LIMIT_ENV, "none")
    assert memory.check(graph).needed > 1024
    monkeypatch.setenv(memory.LIMIT_ENV, "lots")
    with pytest.raises(MemoryLimitError, match=r"BACKPROP_STUDIO_MEMORY_LIMIT='lots' is not a size; write it like 8G"):
        memory.limit()
    assert [memory.parse_size(t) for t in ("8G", "512 MiB", "1.5g", "2000")] == [8 * 2**30, 512 * 2**20, 3 * 2**29, 2000]


def test_info_shows_the_estimate_and_says_when_it_is_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(memory.LIMIT_ENV, "4K")
    assert cli.main(["info", "two_layer_net"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "memory: about 9.8 KiB for a forward and backward pass in float32" in out
    assert "limit 4 KiB (set by BACKPROP_STUDIO_MEMORY_LIMIT=4K): OVER THE LIMIT, so `run` and `train` refuse this graph" in out
    assert cli.main(["info", "two_layer_net", "--json"]) == cli.EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert info["memory"]["over_limit"] and info["memory"]["needed_bytes"] == 2 * (info["memory"]["weights_bytes"] + info["memory"]["activations_bytes"])
    assert cli.main(["run", "two_layer_net"]) == cli.EXIT_USAGE
    assert "more than the memory limit of 4 KiB" in capsys.readouterr().err


# --- 6. files ---------------------------------------------------------------------------------------


def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path: Path) -> None:
    project = serialize.load(presets.path("linear_regression"))
    old = os.umask(0o027)
    try:
        serialize.save(project, tmp_path / "a.json")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
        (tmp_path / "a.json").chmod(0o604)
        serialize.save(project, tmp_path / "a.json")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o604
        serialize.save(project, tmp_path / "a.json", private=True)
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o600
        serialize.save(project, tmp_path / "b.bps", private=True)
        assert stat.S_IMODE((tmp_path / "b.bps").stat().st_mode) == 0o600
    finally:
        os.umask(old)


# --- the CLI: exit codes and unexpected errors --------------------------------------------------


def test_an_unexpected_exception_is_one_line_asking_for_a_bug_report(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def broken(args, out):
        raise KeyError("surprise")

    monkeypatch.setattr(cli, "cmd_info", broken)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.main(["info", "two_layer_net"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert ("`info` on two_layer_net failed with an unexpected KeyError ('surprise'). This is a bug in Backprop Studio: "
            "please report it, with the file if you can share it (run again with --debug for the traceback)") in err
    assert cli.main(["info", "two_layer_net", "--debug"]) == cli.EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_running_out_of_memory_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def greedy(args, out):
        raise MemoryError()

    monkeypatch.setattr(cli, "cmd_run", greedy)
    assert cli.main(["run", "two_layer_net"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`run` on two_layer_net ran out of memory" in err


def test_a_damaged_file_exits_2_with_one_line(tmp_path: Path, trained: Project, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "enc.bps"
    path.write_bytes(_zip_cases(serialize.container_bytes(trained))[0][0])
    for command in ("info", "run", "train", "gradcheck"):
        assert cli.main([command, str(path)]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is encrypted" in err


# --- gradient checks at a kink ------------------------------------------------------------------------


@pytest.mark.parametrize("block, inputs", [
    ("ReLU", {"a": np.array([[-1.0, 0.0, 2.0]])}),
    ("Max", {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([1.0, 0.0, 3.0])}),
    ("MaxPool2d", {"x": np.zeros((1, 2, 4, 4))}),
    ("ReLU", {"a": np.concatenate([np.zeros(60), np.linspace(-1, 1, 100)])}),  # random directions, then elements
])
def test_a_kink_is_reported_as_not_differentiable(block: str, inputs: dict) -> None:
    (check,) = [c for c in check_block(blocks.create(block), inputs, {}) if c.error > 1e-5][:1]
    assert check.status() == KINK and check.kinks
    assert all(k.subgradient for k in check.kinks)
    assert check.explain().startswith("not differentiable here: ") and "sits at a kink: slope" in check.explain()


def test_a_wrong_gradient_at_a_kink_still_fails() -> None:
    relu = blocks.create("ReLU")

    class Wrong(type(relu)):
        def vjp(self, gout, saved, weights):  # slope 2 where ReLU's slopes are 0 and 1
            gin, gw = super().vjp(gout, saved, weights)
            return {"a": 2 * gout["out"]}, gw

    (check,) = check_block(Wrong(), {"a": np.array([0.0, 1.0])}, {})
    assert check.status() == FAILED and "TOO LARGE" in check.explain() and "is neither slope" in check.explain()


def test_a_kink_within_the_step_is_resolved_by_a_smaller_step() -> None:
    (check,) = check_block(blocks.create("ReLU"), {"a": np.array([-1.0, 3e-7, 2.0])}, {})
    assert check.error > 1e-5 and check.status() == OK and "with a step 10 times smaller" in check.explain()


def test_cli_gradcheck_says_where_the_graph_is_not_differentiable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a learned tensor that starts at zeros, into a ReLU: the weight itself sits at the kink
    g = Graph()
    w = g.add_node("Parameter", {"shape": (3,), "init": "zeros"}, name="w")
    relu = g.add_node("ReLU", {}, name="relu")
    loss = g.add_node("Sum", {}, name="loss")
    g.connect(w.id, "out", relu.id, "a")
    g.connect(relu.id, "out", loss.id, "a")
    path = tmp_path / "kink.json"
    serialize.save(Project(g, training={"loss": "loss"}), path)
    assert cli.main(["gradcheck", str(path)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "'w' weight value" in out and "not differentiable here: element (0,) (and 2 more) sits at a kink: slope 0 from the left, 1" in out
    assert "(1 of them sit at a kink, where the function is not differentiable" in out
