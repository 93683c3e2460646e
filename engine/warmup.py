"""Compile the Numba kernels a graph needs before it runs, with progress: the first-run experience.

Numba compiles a kernel the first time it is called with new argument types and keeps the
machine code in its on-disk cache, so only a first-ever run pays. This module makes that wait
visible and lets it happen up front (the CLI's progress line, ``backprop-studio warmup``, the
editor's status bar) instead of in the middle of the first forward pass:

- :func:`needed_kernels` runs the graph once on the numpy twins (no compiling) and records every
  kernel call, which gives exactly the kernels and type signatures this graph uses, in this
  dtype, and nothing else;
- :func:`pending` keeps those that are neither compiled in this process nor in the disk cache;
- :func:`compile_kernels` compiles them, calling ``progress(done, total, name)``; many of them
  (``warmup``, a first run of a big graph) are shared between this process and worker processes
  that compile into the same disk cache, one per core (:func:`compile_workers`).

:func:`prepare` does all three for a runtime; :func:`warm_everything` does it for every block of
the registry (the ``warmup`` command). :func:`plan` decides whether compiling pays at all: a
workload of a few passes (``run``: one) finishes sooner on the numpy twins, which compute the same
function, than Numba starts up, let alone compiles (measured in benchmarks/bench_cli.py). Both are safe to call from a worker thread (Numba
serialises compiling with its own lock), which is how the editor should use them::

    threading.Thread(target=warmup.prepare, args=(runtime,), kwargs={"progress": report}).start()

A cached start costs one look at the cache index per kernel (a few milliseconds in all).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np

from engine import kernels
from engine.kernels import Kernel

if TYPE_CHECKING:
    from engine.runtime import PortKey, Runtime

#: ``progress(done, total, kernel_name)``: called before each compile and once at the end.
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Need:
    """One kernel and one Numba type signature that a graph calls it with."""

    kernel: Kernel
    signature: tuple[Any, ...]

    @property
    def name(self) -> str:
        return self.kernel.__name__


def _signature(kernel: Kernel, args: tuple[Any, ...]) -> tuple[Any, ...]:
    dispatcher = kernel.fast
    return tuple(dispatcher.typeof_pyval(a) for a in args)


def needs_from_calls(calls: Iterable[tuple[Kernel, tuple[Any, ...]]]) -> list[Need]:
    """Distinct (kernel, signature) pairs, in the order first called."""
    seen: dict[tuple[int, tuple[Any, ...]], Need] = {}
    for kernel, args in calls:
        sig = _signature(kernel, args)
        seen.setdefault((id(kernel), sig), Need(kernel, sig))
    return list(seen.values())


def _dry_feeds(runtime: "Runtime") -> dict[str, np.ndarray]:
    feeds = {}
    for step in runtime.program.input_nodes:
        ids = step.block.output_kind("out").value == "ids"
        feeds[step.node] = np.zeros(step.out_shapes["out"], np.int64 if ids else runtime.dtype)
    return feeds


def needed_kernels(runtime: "Runtime", feeds: Mapping[str, np.ndarray] | None = None,
                   loss: "PortKey | None" = None) -> list[Need]:
    """The kernels (and signatures) one forward and backward pass of ``runtime`` calls.

    Runs the pass on the numpy twins, with ``feeds`` (zeros of the Input shapes when None), and
    back-propagates from ``loss`` (or from ones at every output nobody consumes). A graph that
    fails on these numbers needs nothing up front: the real run reports the failure."""
    return needs_from_calls(_dry_run(runtime, feeds, loss)[0])


def _dry_run(runtime: "Runtime", feeds: Mapping[str, np.ndarray] | None,
             loss: "PortKey | None") -> tuple[list[tuple[Kernel, tuple[Any, ...]]], float]:
    """One pass on the numpy twins: the kernel calls it made and its CPU seconds."""
    from engine.runtime import Pass

    t0 = time.process_time()
    with kernels.recording() as calls, np.errstate(all="ignore"):
        try:
            p: Pass = runtime.start(dict(feeds) if feeds is not None else _dry_feeds(runtime)).run_forward()
            if loss is not None:
                p.run_backward(loss)
            else:
                used = {src for step in runtime.program.steps for src in step.sources.values()}
                seeds = {(s.node, port): np.ones(np.shape(p.values[(s.node, port)]), p.values[(s.node, port)].dtype)
                         for s in runtime.program.steps for port in s.out_shapes
                         if (s.node, port) not in used and (s.node, port) in p.values
                         and np.issubdtype(p.values[(s.node, port)].dtype, np.floating)}
                p.run_backward(grads=seeds)
        except Exception:  # noqa: BLE001 - best effort: the real run raises the real error
            pass
    return calls, time.process_time() - t0


def _cached_signatures(kernel: Kernel) -> set[tuple[Any, ...]]:
    """Signatures compiled in this process or stored in Numba's disk cache for ``kernel``."""
    dispatcher = kernel.fast
    sigs = set(dispatcher.overloads)
    with contextlib.suppress(Exception):  # NOTE: Numba's cache index is not public API: degrade to "not cached"
        index = dispatcher._cache._cache_file._load_index()
        sigs.update(key[0] for key in index)
    return sigs


def pending(needs: Iterable[Need]) -> list[Need]:
    """The needs that would compile: neither compiled in this process nor in the disk cache."""
    known: dict[int, set[tuple[Any, ...]]] = {}
    out = []
    for need in needs:
        sigs = known.setdefault(id(need.kernel), _cached_signatures(need.kernel))
        if need.signature not in sigs:
            out.append(need)
    return out


def compile_kernels(needs: Iterable[Need], progress: Progress | None = None, workers: int | None = None,
                    started: _Workers | None = None) -> int:
    """Compile (or load from the disk cache) each need, reporting before each one and at the
    end. Returns how many there were.

    With many to compile, ``workers`` processes share the work (None: :func:`compile_workers`
    decides; 1: this process alone), each taking the next kernel as it is free
    (:func:`_compile_in_parallel`); the others compile into the same disk cache, and this
    process loads their kernels from the cache on first use. Numba compiles in one thread per
    process, so on idle cores the wait becomes about the sum of all divided by the processes
    (benchmarks/bench_kernel_cache.py prints each process's CPU seconds and the wall time
    against one process). ``started``: worker processes started earlier (:func:`warm_everything`),
    used instead when there is enough to compile."""
    needs = list(needs)
    count = compile_workers(len(needs)) if workers is None else max(1, min(int(workers), len(needs)))
    if started is not None and started.procs and len(needs) >= 2 * SIGNATURES_PER_WORKER:
        _compile_in_parallel(needs, started, progress)
    elif count > 1:
        with _Workers(count - 1) as pool:
            _compile_in_parallel(needs, pool, progress)
    else:
        for i, need in enumerate(needs):
            if progress is not None:
                progress(i, len(needs), need.name)
            _compile_here(need)
    if progress is not None and needs:
        progress(len(needs), len(needs), "")
    return len(needs)


#: Fewest kernel signatures worth a worker process: a fresh one spends ~1 s CPU importing Numba
#: and scipy and compiles the helpers (``blas.product``) again, where one signature costs
#: 0.1–2.5 s (bench_kernel_cache.py lists them).
SIGNATURES_PER_WORKER = 8
#: Most processes compiling at once (each holds ~250 MB while compiling).
MAX_WORKERS = 4
#: ``BACKPROP_STUDIO_COMPILE_WORKERS=1`` keeps every compile in the calling process.
WORKERS_ENV_VAR = "BACKPROP_STUDIO_COMPILE_WORKERS"


def compile_workers(signatures: int) -> int:
    """How many processes compile ``signatures`` kernel signatures: one per idle core this
    process may run on (:func:`idle_cores`), at most :data:`MAX_WORKERS`, with at least :data:`SIGNATURES_PER_WORKER` each
    (so a graph needing a few kernels compiles them here, as before). The environment variable
    :data:`WORKERS_ENV_VAR` overrides the core count."""
    wanted = os.environ.get(WORKERS_ENV_VAR, "").strip()
    if wanted:
        try:
            cores = max(1, int(wanted))
        except ValueError:
            raise ValueError(f"{WORKERS_ENV_VAR} must be a whole number, got {wanted!r}") from None
    else:
        cores = min(idle_cores(), MAX_WORKERS)
    return max(1, min(cores, signatures // SIGNATURES_PER_WORKER))


def idle_cores() -> int:
    """The cores this process may run on that nothing else keeps busy (at least one): a worker
    on a core that is busy anyway only takes turns with this process and makes the whole
    compile slower (bench_kernel_cache.py at load ~1 on 2 cores: 1.15–1.24× one process's wall
    time, against 0.57× on an idle machine). Busy means the last minute's load average, rounded."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this system
        busy = 0
    return max(1, cores - busy)


def _cost(need: Need) -> int:
    """A deterministic stand-in for a signature's compile time: the size of its kernel's
    bytecode plus a fixed part (bench_kernel_cache.py: about 0.1 s + 1 ms per byte of
    bytecode: from 0.1 s for ``power`` to 2 s for ``lstm_backward``)."""
    return 100 + len(need.kernel._lazy.py_func.__code__.co_code)


def _groups(needs: list[Need]) -> list[list[int]]:
    """The needs' indices grouped by kernel, the costliest group first (:func:`_cost`): the
    units of work handed out to the processes that compile.

    NOTE: one kernel, one process: Numba's cache index of a function is read, extended and
    written back without a lock between processes, so two processes adding different
    signatures of one function at once could pair an index entry with the other's machine
    code. Helpers that kernels call without inlining them have one fixed signature
    (``@jit(signature=...)``), so processes that compile one of them again write the same
    entry with the same code."""
    by_kernel: dict[int, list[int]] = {}
    for i, need in enumerate(needs):
        by_kernel.setdefault(id(need.kernel), []).append(i)
    return sorted(by_kernel.values(), key=lambda g: (-sum(_cost(needs[i]) for i in g), g[0]))


def _compile_here(need: Need) -> None:
    need.kernel.fast.compile(need.signature)


class _Workers:
    """Worker processes (``python -m engine.warmup``) that compile kernels into the shared disk
    cache as they are handed them. Started as soon as it is known that much will compile, they
    import Numba and the kernels while the caller is still finding the signatures; used by
    :func:`_compile_in_parallel`, ended (killed if need be) when the ``with`` block ends."""

    def __init__(self, count: int) -> None:
        import subprocess
        import sys

        self.procs = [subprocess.Popen([sys.executable, "-m", "engine.warmup"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for _ in range(count)]
        self.used = False  # handed work (else there was too little to compile: they are stopped)

    def __enter__(self) -> "_Workers":
        return self

    def __exit__(self, *exc: object) -> None:
        import subprocess

        for proc in self.procs:
            if not self.used or exc[0] is not None:
                proc.kill()  # handed nothing (too little to compile), or this process failed
            assert proc.stdin is not None
            with contextlib.suppress(OSError):
                proc.stdin.close()  # a worker ends when its input does
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if not self.used:  # else its reader thread closes it at the end of the output
                assert proc.stdout is not None
                proc.stdout.close()


def _compile_in_parallel(needs: list[Need], workers: _Workers, progress: Progress | None) -> set[int]:
    """Compile ``needs`` here and in the ``workers``, which write into the same disk cache,
    reporting progress as compiles finish anywhere. Returns the indices the workers compiled.

    The work is handed out as it goes, not split up front: each process, this one included,
    takes the next kernel's group (costliest first) when it has finished its last, so the
    processes finish within about one kernel of each other whatever the cost of each kernel,
    the time a worker takes to start, or another program's load on a core (with shares fixed
    up front by an estimate, the caller and its worker ended 2.5–3.4 s apart on an idle
    machine: benchmarks/bench_kernel_cache.py). Whatever a worker did not compile (it failed
    or was stopped) is compiled here at the end."""
    import pickle
    import queue
    import subprocess
    import threading

    todo = _groups(needs)
    lock = threading.Lock()
    done: queue.Queue[int | None] = queue.Queue()  # indices a worker compiled; None when a worker ends
    theirs: set[int] = set()  # handed to a worker

    def take() -> list[int] | None:
        with lock:
            return todo.pop(0) if todo else None

    def hand(proc: subprocess.Popen[bytes]) -> bool:
        """Give ``proc`` the next group (True), or close its input when none is left (False)."""
        assert proc.stdin is not None
        group = take()
        try:
            if group is None:
                proc.stdin.close()
                return False
            # NOTE: the signatures go to our own child through a pipe, pickled (Numba types
            # pickle), one frame per group; nothing is read back but indices and "next".
            theirs.update(group)
            payload = pickle.dumps([(i, _where(needs[i].kernel), needs[i].signature) for i in group])
            proc.stdin.write(b"%d\n" % len(payload) + payload)
            proc.stdin.flush()
            return True
        except OSError:  # the worker has ended: its group is compiled here at the end
            return False

    def serve(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                if line.strip() == b"next":
                    hand(proc)
                else:
                    with contextlib.suppress(ValueError):
                        done.put(int(line))
        done.put(None)

    finished = 0

    def report(name: str) -> None:
        if progress is not None:
            progress(finished, len(needs), name)

    workers.used = True
    running = 0
    for proc in workers.procs:
        if proc.poll() is None and hand(proc):
            threading.Thread(target=serve, args=(proc,), daemon=True).start()
            running += 1
        else:  # it ended before any work (or none is left for it): nobody reads its output
            assert proc.stdout is not None
            proc.stdout.close()

    def drain(wait: bool) -> None:
        """Report what the workers finished; with ``wait``, until every worker has ended."""
        nonlocal finished, running
        while running:
            try:
                item = done.get(block=wait)
            except queue.Empty:
                return
            if item is None:
                running -= 1
            else:
                finished += 1
                report(needs[item].name)

    while (group := take()) is not None:
        for i in group:
            drain(False)
            report(needs[i].name)
            _compile_here(needs[i])
            finished += 1
    drain(True)
    # What the workers left undone (a worker that failed: its error shows here, where it is raised).
    for need in pending(needs[i] for i in sorted(theirs)):
        report(need.name)
        _compile_here(need)
    return theirs


def _where(kernel: Kernel) -> tuple[str, str]:
    """``(module, name)`` under which ``kernel`` can be imported again in a worker process."""
    fn = kernel._lazy.py_func
    return fn.__module__, fn.__name__


def _worker() -> None:
    """A compiling worker (``python -m engine.warmup``): imports Numba and every kernel's module
    first (while its caller may still be finding the signatures), then reads frames of pickled
    ``(index, (module, name), signature)`` lists from stdin (a line with the frame's size, then
    the frame), compiles each signature and prints its index, then prints ``next`` and waits for
    the next frame, until stdin closes."""
    import importlib
    import pickle
    import sys

    from engine import blocks  # noqa: F401 - imports every kernel module

    for kernel in Kernel.registry:
        kernel.fast  # noqa: B018 - Numba, scipy's BLAS and the dispatchers, before any work comes
    stdin = sys.stdin.buffer
    while size := stdin.readline().strip():
        for index, (module, name), signature in pickle.loads(stdin.read(int(size))):
            kernel = getattr(importlib.import_module(module), name)
            if not isinstance(kernel, Kernel):
                raise TypeError(f"{module}.{name} is not a kernel")
            kernel.fast.compile(signature)
            print(index, flush=True)
        print("next", flush=True)


def prepare(runtime: "Runtime", feeds: Mapping[str, np.ndarray] | None = None, loss: "PortKey | None" = None,
            progress: Progress | None = None) -> int:
    """Compile what one forward and backward pass of ``runtime`` needs and has never compiled;
    returns how many kernels that was (0 on a cached start, where it costs milliseconds).
    Does nothing when the numpy twins are selected."""
    if kernels.backend() != "numba":
        return 0
    if not _maybe_missing(runtime.dtype):
        return 0
    return compile_kernels(pending(needed_kernels(runtime, feeds, loss)), progress)


#: CPU seconds a fresh process spends before its first kernel runs even with every kernel
#: cached: importing Numba and scipy's BLAS and loading Numba's registries (bench_cli.py: a
#: cached `run two_layer_net` takes ~1 s more CPU on the kernels than on the twins).
NUMBA_START_SECONDS = 1.0
#: CPU seconds of one first-ever compile of a kernel signature, on average (bench_kernel_cache.py).
COMPILE_SECONDS = 1.0
#: How many times faster the kernels run a pass than the numpy twins, taken low on purpose (the
#: measured gain is 1–40× depending on the block): compiling must pay for itself.
KERNEL_SPEEDUP = 2.0


@dataclass(frozen=True)
class Plan:
    """Which backend a workload should run on, and what would have to compile first."""

    backend: str  # "numba" | "numpy"
    pending: list[Need] = field(default_factory=list)
    twin_seconds: float = 0.0  # estimated CPU seconds of one pass on the numpy twins
    reason: str = ""


#: CPU seconds of a twin call beyond its per-element cost (Python and numpy call overhead).
TWIN_CALL_SECONDS = 30e-6


def estimate_twin_seconds(calls: Iterable[tuple[Kernel, tuple[Any, ...]]]) -> float:
    """A deterministic estimate of one pass's CPU seconds on the numpy twins, from the kernel
    calls it makes: each call's array elements times its kernel's per-element cost, plus a fixed
    cost per call. Never a measured time, so the same workload always gets the same plan."""
    total = 0.0
    for kernel, args in calls:
        elements = sum(a.size for a in args if isinstance(a, np.ndarray))
        total += TWIN_CALL_SECONDS + elements * kernel.twin_ns_per_element * 1e-9
    return total


def plan(runtime: "Runtime", passes: int, feeds: Mapping[str, np.ndarray] | None = None,
         loss: "PortKey | None" = None) -> Plan:
    """Decide between the Numba kernels and the numpy twins for ``passes`` forward and backward
    passes of ``runtime``: the kernels when the time they would save (at a conservative
    :data:`KERNEL_SPEEDUP`) exceeds what starting Numba and compiling every kernel the graph
    needs would cost on a fresh machine.

    NOTE: the decision depends only on the workload (the graph, its shapes, the number of
    passes), never on a measured time or on what happens to be in the kernel cache: twins and
    kernels agree only to rounding, so a choice that flipped with the machine's load or cache
    would make the same command give different bits. The CLI and the editor ask the same
    question for the same workload and so compute the same numbers.

    ``BACKPROP_STUDIO_KERNELS`` in the environment overrides the decision. Numba is imported only
    when the kernels are chosen."""
    if os.environ.get(kernels.ENV_VAR, "").strip():
        return Plan(kernels.backend(), reason=f"chosen by {kernels.ENV_VAR}")
    calls, _ = _dry_run(runtime, feeds, loss)
    twin = estimate_twin_seconds(calls)
    saving = passes * twin * (1.0 - 1.0 / KERNEL_SPEEDUP)
    needs = needs_from_calls(calls) if saving >= NUMBA_START_SECONDS else []
    cost = NUMBA_START_SECONDS + COMPILE_SECONDS * len(needs)
    if saving < cost:
        return Plan("numpy", twin_seconds=twin,
                    reason=f"{passes} pass(es) of ~{twin * 1e3:.0f} ms on the numpy twins: less than starting Numba"
                           + (f" and compiling {len(needs)} kernels" if needs else ""))
    return Plan("numba", pending(needs), twin, f"{passes} passes of ~{twin * 1e3:.0f} ms: worth the kernels")


def ready(runtime: "Runtime", passes: int, feeds: Mapping[str, np.ndarray] | None = None,
          loss: "PortKey | None" = None, progress: Progress | None = None) -> Plan:
    """:func:`plan` the workload and, when it picks the Numba kernels, compile what they still
    need (reporting ``progress``). Run the workload under ``kernels.using(plan.backend)`` (or
    ``kernels.select``): the CLI and the editor both come through here, so the same workload
    runs on the same backend in both and gives the same numbers."""
    chosen = plan(runtime, passes, feeds, loss)
    if chosen.backend == "numba":
        compile_kernels(chosen.pending, progress)
    return chosen


def _maybe_missing(dtype: Any) -> bool:
    """Cheap first look: False when every registered kernel already has a signature in this
    dtype (in memory or on disk), so the dry run can be skipped altogether."""
    import numba

    want = numba.from_dtype(np.dtype(dtype))
    for kernel in Kernel.registry:
        if not any(getattr(t, "dtype", None) == want for sig in _cached_signatures(kernel) for t in sig):
            return True
    return False


def registry_needs(dtypes: Iterable[Any] = (np.float32, np.float64)) -> list[Need]:
    """What every example of every registered block calls, forward and backward, per dtype:
    every kernel signature the app uses."""
    from engine import blocks

    calls: list[tuple[Kernel, tuple[Any, ...]]] = []
    with np.errstate(all="ignore"):
        for name in blocks.names():
            for example in blocks.spec(name).examples:
                block = blocks.create(name, **example.params)
                for dtype in dtypes:
                    rng = np.random.default_rng(0)
                    x = example.sample(block, rng, dtype)
                    w = {k: np.asarray(v, dtype) for k, v in block.init_weights(example.inputs, rng).items()}
                    with kernels.recording() as got:
                        outs, saved = block.forward(x, w)
                        block.backward({k: np.ones_like(v) for k, v in outs.items()
                                        if np.issubdtype(np.asarray(v).dtype, np.floating)}, saved, w)
                    calls.extend(got)
    return needs_from_calls(calls)


def warm_everything(dtypes: Iterable[Any] = (np.float32, np.float64),
                   progress: Progress | None = None) -> tuple[int, int]:
    """Compile every kernel signature the app uses that is not cached yet (``backprop-studio
    warmup``); returns how many signatures the app uses and how many of them were compiled.

    When something is missing from the cache, the worker processes start before the signatures
    are found (a dry run of every block example, ~1.5 s), so that they are ready to compile when
    the work is known."""
    dtypes = list(dtypes)
    count = compile_workers(len(Kernel.registry) * len(dtypes)) if any(_maybe_missing(d) for d in dtypes) else 1
    with _Workers(count - 1) as started:
        needs = registry_needs(dtypes)
        return len(needs), compile_kernels(pending(needs), progress, started=started)


if __name__ == "__main__":
    _worker()
