"""The first-run experience and the fast paths of issue 13: lazy imports, kernels found and
compiled up front with progress, the vectorised exp, writable contiguous kernel inputs, malloc
tuning, and the runtime's per-pass results staying the caller's own."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from engine import blocks, kernels, warmup
from engine.cli import KernelProgress, Output, main
from engine.graph import Graph
from engine.kernels import contiguous, jit, vecmath
from engine.runtime import Runtime, tune_malloc


def _sigmoid_graph() -> tuple[Graph, str]:
    g = Graph()
    x = g.add_node("Input", {"shape": (3, 4)}, name="x")
    s = g.add_node("Sigmoid", {}, name="s")
    m = g.add_node("Mean", {}, name="loss")
    g.connect(x.id, "out", s.id, "a")
    g.connect(s.id, "out", m.id, "a")
    return g, m.id


def test_quick_commands_import_neither_numba_scipy_nor_networkx() -> None:
    code = ("import sys, io, contextlib\n"
            "from engine import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert cli.main(['list-presets']) == 0 and cli.main(['info', 'two_layer_net']) == 0\n"
            "print(','.join(sorted(m for m in ('numba', 'scipy', 'networkx') if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_needed_kernels_are_exactly_what_the_graph_calls_in_its_dtype() -> None:
    graph, loss = _sigmoid_graph()
    runtime = Runtime(graph, dtype=np.float64)
    needs = warmup.needed_kernels(runtime, loss=(loss, "out"))
    assert [n.name for n in needs] == ["activation", "activation_grad"]  # one kernel for every activation
    assert all(str(t.dtype) == "float64" for n in needs for t in n.signature if hasattr(t, "ndim"))
    # Once the graph has run, nothing is pending and a second prepare costs no compile.
    runtime.forward_backward({"x": np.zeros((3, 4))}, loss)
    assert warmup.pending(needs) == []
    assert warmup.prepare(runtime, loss=(loss, "out")) == 0


def test_needed_kernels_seed_every_unconsumed_output_without_a_loss() -> None:
    g = Graph()
    x = g.add_node("Input", {"shape": (2, 3)}, name="x")
    t = g.add_node("Tanh", {}, name="t")
    g.connect(x.id, "out", t.id, "a")
    names = [n.name for n in warmup.needed_kernels(Runtime(g))]
    assert names == ["activation", "activation_grad"]


def test_compile_kernels_reports_progress_in_order() -> None:
    graph, loss = _sigmoid_graph()
    needs = warmup.needed_kernels(Runtime(graph), loss=(loss, "out"))
    calls: list[tuple[int, int, str]] = []
    assert warmup.compile_kernels(needs, lambda *a: calls.append(a)) == 2
    assert calls == [(0, 2, "activation"), (1, 2, "activation_grad"), (2, 2, "")]


def test_groups_keep_each_kernel_whole_and_come_costliest_first() -> None:
    needs = warmup.registry_needs()
    groups = warmup._groups(needs)
    assert sorted(i for g in groups for i in g) == list(range(len(needs)))
    assert all(len({id(needs[i].kernel) for i in g}) == 1 for g in groups)  # one kernel per group
    assert len(groups) == len({id(n.kernel) for n in needs})  # and never split between groups
    costs = [sum(warmup._cost(needs[i]) for i in g) for g in groups]
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]


def test_compile_workers_follow_the_cores_and_the_amount_of_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(warmup.WORKERS_ENV_VAR, "3")
    assert warmup.compile_workers(100) == 3
    assert warmup.compile_workers(2 * warmup.SIGNATURES_PER_WORKER) == 2  # at least that many each
    assert warmup.compile_workers(warmup.SIGNATURES_PER_WORKER - 1) == 1  # a small graph: here, as before
    monkeypatch.setenv(warmup.WORKERS_ENV_VAR, "1")
    assert warmup.compile_workers(100) == 1
    monkeypatch.setenv(warmup.WORKERS_ENV_VAR, "many")
    with pytest.raises(ValueError, match=warmup.WORKERS_ENV_VAR):
        warmup.compile_workers(100)


def test_compile_workers_count_only_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(warmup.WORKERS_ENV_VAR, raising=False)
    monkeypatch.setattr(warmup.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(warmup.os, "getloadavg", lambda: (0.2, 0.5, 0.5))
    assert warmup.compile_workers(100) == 2  # an idle machine: both cores
    monkeypatch.setattr(warmup.os, "getloadavg", lambda: (1.1, 0.5, 0.5))
    assert warmup.compile_workers(100) == 1  # one core busy with something else: here alone
    monkeypatch.setattr(warmup.os, "getloadavg", lambda: (7.0, 0.5, 0.5))
    assert warmup.compile_workers(100) == 1

def test_workers_take_the_next_kernel_when_free_and_compile_into_the_shared_cache(tmp_path) -> None:
    # A fresh process with an empty cache whose own first compile waits (up to 60 s) until
    # everything else is on disk: a worker must take every other kernel as it frees up (shares
    # fixed up front would leave half of them to the waiting process), and what it compiled
    # must come back through the disk cache (compiled there, not here) and run exactly as the
    # twin computes.
    code = r"""
import json, time, numpy as np
from engine import kernels, warmup
from engine.kernels import elementwise
names = ("power", "power_grad", "to_images", "from_images")
needs = [n for n in warmup.registry_needs() if n.name in names]
compile_here, first = warmup._compile_here, []

def waiting(need):
    if not first:
        first.append(need.name)
        others = [n for n in needs if n.kernel is not need.kernel]
        deadline = time.monotonic() + 60
        while warmup.pending(others) and time.monotonic() < deadline:
            time.sleep(0.05)
    compile_here(need)

warmup._compile_here = waiting
calls = []
assert warmup.compile_kernels(needs, lambda *a: calls.append(a), workers=2) == len(needs)
here = [i for i, n in enumerate(needs) if n.signature in n.kernel.fast.overloads]
print(json.dumps({
    "n": len(needs), "calls": calls, "pending": len(warmup.pending(needs)), "first": first,
    "here": sorted({needs[i].name for i in here}), "kernels": len({n.name for n in needs}),
    "on_disk": sum(n.signature in warmup._cached_signatures(n.kernel) for n in needs),
    "power": elementwise.power(np.linspace(0.5, 2.0, 7, dtype=np.float32), 3.0).tolist(),
}))
"""
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    env=env).stdout.strip().splitlines()[-1])
    n = out["n"]
    assert n >= 8 and out["kernels"] == 4 and out["pending"] == 0 and out["on_disk"] == n
    assert out["here"] == out["first"]  # this process compiled its first kernel only; a worker, the 3 others
    done = [c[0] for c in out["calls"]]
    assert done == sorted(done) and out["calls"][-1] == [n, n, ""] and done[0] == 0
    x = np.linspace(0.5, 2.0, 7, dtype=np.float32)
    np.testing.assert_allclose(out["power"], x ** 3, rtol=1e-6)


def test_what_a_failed_worker_leaves_is_compiled_here(tmp_path) -> None:
    # Kernels a worker cannot import (defined in this script, its __main__) make it fail on its
    # first group; the caller compiles that group itself at the end and reports every compile.
    code = r"""
import json, numpy as np
from engine import kernels, warmup
from engine.kernels import kernel

def twin(x, out):
    out[:] = x + 1

@kernel(twin)
def plus_one(x, out):
    for i in range(x.shape[0]):
        out[i] = x[i] + 1

@kernel(twin)
def plus_one_too(x, out):
    for i in range(x.shape[0]):
        out[i] = x[i] + np.float32(1)

x = np.zeros(3, np.float32)
with kernels.using("numpy"), kernels.recording() as calls:
    for k in (plus_one, plus_one_too):
        for dt in (np.float32, np.float64):
            k(x.astype(dt), np.empty(3, dt))
needs = warmup.needs_from_calls(calls)
seen = []
theirs = warmup._compile_in_parallel(needs, warmup._Workers(1), lambda *a: seen.append(a))
print(json.dumps({"n": len(needs), "theirs": len(theirs), "seen": seen,
                  "here": sum(n.signature in n.kernel.fast.overloads for n in needs)}))
"""
    script = tmp_path / "kernels_here.py"  # a file: Numba caches only what has one
    script.write_text(code)
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    out = json.loads(subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                                    env=env).stdout.strip().splitlines()[-1])
    assert out["n"] == 4 and out["theirs"] == 2 and out["here"] == 4  # the worker's group too
    assert [s[0] for s in out["seen"]] == [0, 1, 2, 2]  # its two, then the failed worker's, here


def test_warm_everything_starts_its_workers_before_finding_the_signatures(monkeypatch: pytest.MonkeyPatch) -> None:
    # The workers import Numba while this process runs every block example on the twins; with
    # nothing left to compile (this tree's cache holds it all) they are stopped, not waited for.
    seen: list[str] = []
    started: list[warmup._Workers] = []
    real_init, real_needs = warmup._Workers.__init__, warmup.registry_needs

    def init(self, count):
        real_init(self, count)
        started.append(self)
        seen.append(f"workers {count}")

    def needs(dtypes):
        seen.append(f"needs, workers running: {sum(p.poll() is None for p in started[0].procs)}")
        return real_needs(dtypes)

    monkeypatch.setattr(warmup._Workers, "__init__", init)
    monkeypatch.setattr(warmup, "registry_needs", needs)
    monkeypatch.setattr(warmup, "_maybe_missing", lambda dtype: True)
    monkeypatch.setenv(warmup.WORKERS_ENV_VAR, "2")
    needed, compiled = warmup.warm_everything(["float64"])
    assert seen == ["workers 1", "needs, workers running: 1"]
    assert needed >= 20 and compiled == 0
    assert [p.poll() is not None for p in started[0].procs] == [True]  # ended with the call


def test_prepare_does_nothing_on_the_numpy_twins() -> None:
    graph, _ = _sigmoid_graph()
    with kernels.using("numpy"):
        assert warmup.prepare(Runtime(graph)) == 0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_kernel_progress_draws_one_line_on_a_terminal_and_nothing_elsewhere() -> None:
    err = _Terminal()
    progress = KernelProgress(Output(False, stdout=io.StringIO(), stderr=err))
    progress(0, 11, "layernorm_fwd")
    progress(3, 11, "attention_core")
    progress(11, 11, "")
    text = err.getvalue()
    assert "\rcompiling kernels for first use, once: 1/11 (layernorm_fwd)" in text
    assert "\rcompiling kernels for first use, once: 4/11 (attention_core)" in text
    assert "compiled 11 kernels in" in text and text.endswith("\n") and text.count("\n") == 1
    plain = io.StringIO()
    KernelProgress(Output(False, stdout=io.StringIO(), stderr=plain))(0, 11, "x")
    assert plain.getvalue() == ""


def test_warmup_command_reports_what_it_compiled(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warmup", "--json", "--dtype", "float64"]) == 0
    (event,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert event["event"] == "warmup" and event["dtypes"] == ["float64"]
    assert event["kernels"] >= 20 and event["compiled"] + event["cached"] == event["kernels"]
    assert main(["warmup", "--json", "--dtype", "float64"]) == 0  # now everything is there
    assert json.loads(capsys.readouterr().out)["compiled"] == 0


@jit
def _exp_each(src, dst):
    for j in range(src.shape[0]):
        dst[j] = vecmath.exp(src[j])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorised_exp_is_within_an_ulp_and_keeps_inf_zero_and_nan(dtype) -> None:
    special = np.array([np.nan, np.inf, -np.inf, 100, -100, 0, 88.7, 88.72, 88.73, -87.3, -103.9, -110, 1e-3], dtype)
    x = np.concatenate([special, np.random.default_rng(0).uniform(-103, 88.7, 20000).astype(dtype)])
    got = np.empty_like(x)
    _exp_each(x, got)
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(x.astype(np.float64)).astype(dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    ulps = np.abs(got[finite].astype(np.float64) - want[finite]) / np.spacing(want[finite])
    assert float(np.max(ulps)) <= 1.0


def test_contiguous_gives_writable_arrays_and_copies_only_when_needed() -> None:
    a = np.arange(6.0)
    assert contiguous(a) is a
    ro = np.broadcast_to(np.arange(3.0), (2, 3))
    got = contiguous(ro, np.float32)
    assert got.flags.writeable and got.flags.c_contiguous and got.dtype == np.float32
    frozen = np.arange(4.0)
    frozen.flags.writeable = False
    assert contiguous(frozen).flags.writeable


def test_malloc_is_tuned_once_per_process() -> None:
    Runtime(_sigmoid_graph()[0]).start({"x": np.zeros((3, 4))})
    assert tune_malloc() is False  # the first pass did it already


def test_each_pass_keeps_its_own_values_and_gradients() -> None:
    """The editor keeps a Pass's values and gradients as snapshots: a later pass must never
    write into them."""
    graph, loss = _sigmoid_graph()
    runtime = Runtime(graph)
    first = runtime.forward_backward({"x": np.zeros((3, 4))}, loss)
    kept = {k: v.copy() for k, v in first.values.items()}
    kept_grads = {k: v.copy() for k, v in first.grads.items()}
    second = runtime.forward_backward({"x": np.full((3, 4), 2.0)}, loss)
    assert not np.array_equal(second.values[(loss, "out")], kept[(loss, "out")])
    for k, v in kept.items():
        np.testing.assert_array_equal(first.values[k], v)
    for k, v in kept_grads.items():
        np.testing.assert_array_equal(first.grads[k], v)


def test_composite_called_directly_with_float_ids_still_gets_the_full_checks() -> None:
    bert = blocks.create("BERT", vocab=10, dim=8, heads=2, layers=1, max_len=8)
    w = bert.init_weights({"ids": (1, 4)}, np.random.default_rng(0))
    ids = np.array([[1, 2, 3, 4]], np.int64)
    good, _ = bert.forward({"ids": ids}, w)
    again, _ = bert.forward({"ids": ids.astype(np.float64)}, w)  # whole numbers as floats: converted
    np.testing.assert_allclose(good["out"], again["out"])


def test_one_pass_runs_on_the_twins_and_never_starts_numba() -> None:
    code = ("import sys, io, contextlib, os\n"
            "os.environ.pop('BACKPROP_STUDIO_KERNELS', None)\n"
            "from engine import cli\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    assert cli.main(['run', 'two_layer_net', '--json']) == 0\n"
            "import json\n"
            "print(json.loads(buf.getvalue().splitlines()[-1])['kernels'], 'numba' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["numpy", "False"]


def test_plan_compiles_only_when_it_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKPROP_STUDIO_KERNELS", raising=False)
    graph, loss = _sigmoid_graph()
    runtime = Runtime(graph)
    few = warmup.plan(runtime, 1, loss=(loss, "out"))
    assert few.backend == "numpy" and few.pending == [] and "less than starting Numba" in few.reason
    many = warmup.plan(runtime, 10**9, loss=(loss, "out"))
    assert many.backend == "numba"
    assert {n.name for n in many.pending} <= {"sigmoid", "sigmoid_grad"}
    monkeypatch.setenv("BACKPROP_STUDIO_KERNELS", "numba")
    assert warmup.plan(runtime, 1, loss=(loss, "out")).backend == kernels.backend()


def test_plan_depends_on_the_workload_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twins and kernels agree only to rounding: the same command must get the same backend
    whatever the kernel cache holds and however loaded the machine is."""
    monkeypatch.delenv("BACKPROP_STUDIO_KERNELS", raising=False)
    graph, loss = _sigmoid_graph()
    runtime = Runtime(graph)
    passes = 10**6
    first = warmup.plan(runtime, passes, loss=(loss, "out"))
    monkeypatch.setattr(warmup, "pending", lambda needs: [])  # as if everything were cached
    slow_clock = iter(range(0, 10**6, 1000))
    monkeypatch.setattr(warmup.time, "process_time", lambda: float(next(slow_clock)))  # as if very loaded
    for n in (1, passes):
        assert warmup.plan(runtime, n, loss=(loss, "out")).backend == (first.backend if n == passes else "numpy")


def test_a_command_picks_its_backend_without_changing_the_callers(capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKPROP_STUDIO_KERNELS", raising=False)
    before = kernels.backend()
    assert main(["train", "two_layer_net", "--steps", "3", "--json"]) in (0, 1)
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["event"] == "start" and start["kernels"] == "numpy"  # 3 small steps: not worth compiling
    assert kernels.backend() == before
