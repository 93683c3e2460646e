"""First-ever compile vs cached start of every kernel, in fresh processes.

    python benchmarks/bench_kernel_cache.py [--base DIR] [--dtypes float32 float64] [--warmups N] [--warmup-only]

Runs every block example of the registry forward and backward in float32 and float64 (which
touches every kernel signature the app uses) in a child process with an empty NUMBA_CACHE_DIR,
then again with the cache it left behind. Prints wall and CPU seconds (CPU: user + system of
the child, which other engineers' load disturbs much less than wall time), and the kernels that
cost the most to compile (CPU seconds of their first call). It also times what
``backprop-studio warmup`` runs, ``engine.warmup.warm_everything()``, from another empty cache:
there the compiling may be shared by worker processes (``engine.warmup.compile_workers``; CPU
then counts every process), alternating with the same in one process and with the base, ``N``
times each. ``--base DIR`` runs an older checkout the same way, interleaved,
for a before/after comparison; a checkout from before the warmup command (the code issue 13
measured, 0646395: ``git -C /work/main worktree add --detach /tmp/issue13 0646395``) runs
every block example in one process instead, as its first use did, so that the ratio of the
warmup's wall time to it can be set against the issue's (25 s of its 80 s: 0.31) on a
machine whose speed moves by half from hour to hour.

Goal (issue 13): the first-ever compile of every kernel ≤ 25 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np
from engine import blocks
from engine.kernels import Kernel

costs = {}
original = Kernel.__call__


def call(self, *args):
    fast = self.fast
    before = len(fast.overloads)
    t0 = time.process_time()
    result = original(self, *args)
    if len(fast.overloads) > before:
        key = f"{self.__name__}[{getattr(args[0], 'dtype', type(args[0]).__name__)}]"
        costs[key] = costs.get(key, 0.0) + time.process_time() - t0
    return result


Kernel.__call__ = call
dtypes = [np.dtype(d) for d in sys.argv[1:]]
for name in blocks.names():
    for ex in blocks.spec(name).examples:
        b = blocks.create(name, **ex.params)
        for dtype in dtypes:
            rng = np.random.default_rng(0)
            x = ex.sample(b, rng, dtype)
            w = {k: np.asarray(v, dtype) for k, v in b.init_weights(ex.inputs, rng).items()}
            outs, saved = b.forward(x, w)
            b.backward({k: np.ones_like(v) for k, v in outs.items() if np.issubdtype(np.asarray(v).dtype, np.floating)}, saved, w)
print(json.dumps(costs))
"""

# Prepended to CHILD by --split: CPU seconds in Numba's stages, by patching the functions that
# run them (Numba's internals, for this measurement only; their nesting: lowering includes the
# LLVM function passes run when a function's module is added, finalising includes LLVM's module
# passes and machine code).
SPLIT = r"""
import atexit, json, time
from llvmlite.binding import newpassmanagers
from numba.core import codegen, lowering, typed_passes

split = {"typing": 0.0, "lowering": 0.0, "finalising": 0.0, "LLVM passes": 0.0, "LLVM machine code": 0.0}


def _timed(stage, fn):
    def run(*args, **kwargs):
        t0 = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            split[stage] += time.process_time() - t0
    return run


typed_passes.type_inference_stage = _timed("typing", typed_passes.type_inference_stage)
lowering.Lower.lower = _timed("lowering", lowering.Lower.lower)
codegen.CPUCodeLibrary.finalize = _timed("finalising", codegen.CPUCodeLibrary.finalize)
newpassmanagers.ModulePassManager.run = _timed("LLVM passes", newpassmanagers.ModulePassManager.run)
newpassmanagers.FunctionPassManager.run = _timed("LLVM passes", newpassmanagers.FunctionPassManager.run)
codegen.JITCodeLibrary._finalize_specific = _timed("LLVM machine code", codegen.JITCodeLibrary._finalize_specific)
atexit.register(lambda: print(json.dumps({"split": split, "cpu": time.process_time()})))
"""

WARMUP = r"""
import json, resource
from engine import warmup
got = warmup.warm_everything()
compiled = got[1] if isinstance(got, tuple) else got  # (needed, compiled); an older tree: compiled
me, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"compiled": compiled, "self": me.ru_utime + me.ru_stime, "workers": workers.ru_utime + workers.ru_stime}))
"""


def timed(tree: Path, env: dict[str, str], dtypes: list[str], code: str = CHILD) -> tuple[float, float, dict[str, float]]:
    """Wall and CPU seconds of ``code`` in a fresh process (CPU of it and every process it
    waited for), and what it printed last (JSON)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *dtypes], env={**env, "PYTHONPATH": str(tree)}, cwd=tree,
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, help="an older checkout to compare with")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--split", action="store_true", help="only: where this tree's first-ever compile spends its CPU")
    ap.add_argument("--warmups", type=int, default=1, help="alternating runs of the warmup command per contender")
    ap.add_argument("--warmup-only", action="store_true", help="only the warmup command's runs")
    args = ap.parse_args()
    trees = {"this tree": ROOT}
    if args.base:
        trees["base"] = args.base.resolve()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; dtypes {' '.join(args.dtypes)}")
    if args.split:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                       PYTHONPATH=str(ROOT))
            out = subprocess.run([sys.executable, "-c", SPLIT + CHILD, *args.dtypes], env=env, cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()
        costs, got = json.loads(out[-2]), json.loads(out[-1])
        total = got["cpu"]
        print(f"first-ever compile of every kernel, this tree: {total:.1f} s CPU in the process, "
              f"{sum(costs.values()):.1f} s in first calls ({len(costs)} signatures), of which (s CPU, % of the process):")
        for stage, seconds in got["split"].items():
            print(f"  {stage:18s} {seconds:5.1f}  {100 * seconds / total:3.0f} %")
        print("  (lowering includes LLVM's function passes, finalising its module passes and machine code)")
        return
    results = {}
    for name, tree in ({} if args.warmup_only else trees).items():
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
            first = timed(tree, env, args.dtypes)
            cached = sorted((timed(tree, env, args.dtypes) for _ in range(3)), key=lambda r: r[0])[1]
        results[name] = (first, cached)
        costs = first[2]
        print(f"{name}: first-ever compile of every kernel {first[0]:.1f} s wall, {first[1]:.1f} s CPU "
              f"({len(costs)} kernel signatures, {sum(costs.values()):.1f} s CPU in first calls); "
              f"cached start {cached[0]:.1f} s wall, {cached[1]:.1f} s CPU   goal ≤ 25 s")
        top = sorted(costs.items(), key=lambda kv: -kv[1])[:8]
        print("  costliest first calls (CPU s): " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    if args.base and results:
        (a, _), (b, _) = results["this tree"], results["base"]
        print(f"ratio this tree / base, first-ever compile: {a[0] / b[0]:.2f} wall, {a[1] / b[1]:.2f} CPU")
    # The warmup command, alternating: this tree as it chooses (worker processes), this tree in
    # one process (BACKPROP_STUDIO_COMPILE_WORKERS=1), and the base.
    # NOTE: "this tree" gets one process per core, as an idle machine chooses (warmup.idle_cores):
    # left to choose, it would read the load average this script's own previous compiles raised.
    cores = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    contenders = {"this tree": (ROOT, {"BACKPROP_STUDIO_COMPILE_WORKERS": cores}),
                  "this tree, one process": (ROOT, {"BACKPROP_STUDIO_COMPILE_WORKERS": "1"})}
    codes = {}
    if args.base:
        base = args.base.resolve()
        if "def warm_everything" in (base / "engine" / "warmup.py").read_text() if (base / "engine" / "warmup.py").exists() else "":
            contenders["base"] = (base, {"BACKPROP_STUDIO_COMPILE_WORKERS": cores})  # its workers, like this tree's
        else:  # a revision from before the warmup command (e.g. the one issue 13 measured): what it ran first
            contenders["base, every block example"] = (base, {})
            codes["base, every block example"] = (CHILD, args.dtypes)
    warm: dict[str, list[tuple[float, float, dict[str, float]]]] = {name: [] for name in contenders}
    for _ in range(args.warmups):
        for name, (tree, extra) in contenders.items():
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **extra)
                code, argv = codes.get(name, (WARMUP, []))
                wall, cpu, got = timed(tree, env, argv, code)
                if code is CHILD:  # the same keys as a warmup's report
                    got = {"compiled": len(got), "self": cpu, "workers": 0.0}
                warm[name].append((wall, cpu, got))
    print(f"first-ever `warmup` (warm_everything, both dtypes), medians of {args.warmups} alternating runs, "
          f"load average now {os.getloadavg()[0]:.2f}:")
    for name, runs in warm.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        me = statistics.median(r[2]["self"] for r in runs)
        workers = statistics.median(r[2]["workers"] for r in runs)
        print(f"  {name}: {runs[0][2]['compiled']} signatures, {wall:.1f} s wall, {cpu:.1f} s CPU in all processes "
              f"(the calling process {me:.1f} s, its workers {workers:.1f} s; the longer of the two is the wall "
              f"time on idle cores)   goal ≤ 25 s")
    for name in warm:
        if name != "this tree":
            a, b = warm["this tree"], warm[name]
            print(f"  ratio this tree / {name}: {statistics.median(r[0] for r in a) / statistics.median(r[0] for r in b):.2f} wall, "
                  f"{statistics.median(r[1] for r in a) / statistics.median(r[1] for r in b):.2f} CPU")

if __name__ == "__main__":
    main()
