"""LLVM's optimisation level for the kernels: compile time and kernel speed, O3 against O2, side
by side in one process (not a test).

    python benchmarks/bench_opt_level.py [--repeats 15] [--levels 3 2] [--only SUBSTRING]

Numba optimises every kernel at ``NUMBA_OPT`` (3 unless set). This script records the kernel
calls of the models that issue 13's speed goals time (the calls, with their real arguments, of
one forward and backward pass on the numpy twins, which call the same kernels with the same
arguments), then compiles every kernel signature they call once per level, each into a
dispatcher of its own (no disk cache), with Numba's pass pipelines at that level, and times the
compiled versions on those arguments, alternating the levels call by call.

It prints, per level: the CPU seconds of compiling (one compile per signature, the levels
alternating which goes first) and, per model, the summed kernel time of one pass (medians of
``--repeats`` alternating runs of each call), with the ratio to the first level.

Measured (2026-12-01, this 2-core AMD EPYC, load 0.7–1.7, three runs): O2 compiles in 0.91–0.98 of
O3's CPU time, and its kernels take 1.09–1.13× O3's time on the ConvNet, 1.01–1.06× on the LSTM,
0.98–1.01× on the Transformer and BERT: not worth it, the kernels stay at Numba's default O3.

NOTE: the levels differ in Numba's pass pipelines only (the function and module passes, where
the optimising is); LLVM's machine-code generator keeps the level of the process's first
compile, which at O2 and O3 does the same for this code.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

from _pinned import pin  # noqa: E402

THREADS = pin(__name__)

import numpy as np  # noqa: E402

import bench_models  # noqa: E402
import bench_transformer  # noqa: E402
from engine import kernels  # noqa: E402
from engine.kernels import ERROR_MODEL, Kernel  # noqa: E402


def model_calls() -> dict[str, list[tuple[Kernel, tuple[Any, ...]]]]:
    """The kernel calls of one forward + backward pass of each model, recorded on the twins."""
    cases: dict[str, Callable[[], tuple[Callable[[], None], Any]]] = {
        "LSTM B16 L50 d64 h64": lambda: bench_models.lstm_case(16, 50, 64, 64),
        "ConvNet B32 1x28x28 ch 8/16": lambda: bench_models.convnet_case(32, (8, 16)),
        "TransformerBlock B8 L64 d128": lambda: bench_transformer.transformer_case(8, 64, 128, 4),
        "TransformerBlock B1 L16 d64": lambda: bench_transformer.transformer_case(1, 16, 64, 4),
        "BERT-4 B8 L32 d128": lambda: bench_transformer.bert_case(8, 32, 128, 4, 4),
    }
    out = {}
    for name, make in cases.items():
        ours, _ = make()
        with kernels.using("numpy"), kernels.recording() as calls:
            ours()
        out[name] = [(k, tuple(np.copy(a) if isinstance(a, np.ndarray) else a for a in args)) for k, args in calls]
    return out


def compile_at(level: int, kernel: Kernel, args: tuple[Any, ...]) -> tuple[Any, float]:
    """A fresh dispatcher of ``kernel`` compiled for ``args`` at LLVM level ``level``; its CPU s."""
    import numba
    from numba.core import config

    config.OPT = config._OptLevel(level)
    fast = kernel.fast  # the project's dispatcher: its options, and its module's helpers materialised
    d = numba.njit(fastmath=fast.targetoptions.get("fastmath"), error_model=ERROR_MODEL, nogil=True)(kernel._lazy.py_func)
    t0 = time.process_time()
    d.compile(tuple(fast.typeof_pyval(a) for a in args))
    return d, time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--levels", type=int, nargs=2, default=[3, 2])
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    import numba
    from numba.core import config

    first = config.OPT
    calls = {k: v for k, v in model_calls().items() if args.only in k}
    # every distinct signature once, compiled at each level (alternating which level goes first)
    compiled: dict[tuple[int, tuple[Any, ...]], list[Any]] = {}
    compile_cpu = {lvl: 0.0 for lvl in args.levels}
    for model in calls.values():
        for kernel, a in model:
            key = (id(kernel), tuple(kernel.fast.typeof_pyval(x) for x in a))
            if key in compiled:
                continue
            order = args.levels if len(compiled) % 2 == 0 else args.levels[::-1]
            got = {}
            for lvl in order:
                got[lvl], cpu = compile_at(lvl, kernel, a)
                compile_cpu[lvl] += cpu
            compiled[key] = [got[lvl] for lvl in args.levels]
    config.OPT = first
    print(f"threads {THREADS}; numba {numba.__version__}; {len(compiled)} kernel signatures, each compiled at "
          f"O{args.levels[0]} and O{args.levels[1]} (no disk cache)")
    a, b = args.levels
    print(f"compile CPU: O{a} {compile_cpu[a]:.2f} s, O{b} {compile_cpu[b]:.2f} s, ratio O{b}/O{a} "
          f"{compile_cpu[b] / compile_cpu[a]:.3f}")
    print(f"{'model':<30} {'calls':>5} {f'O{a} ms':>9} {f'O{b} ms':>9} {'ratio':>6}   (kernel time of one pass, medians of "
          f"{args.repeats} alternating runs per call)")
    for model, mcalls in calls.items():
        total = {lvl: 0.0 for lvl in args.levels}
        for kernel, a_ in mcalls:
            key = (id(kernel), tuple(kernel.fast.typeof_pyval(x) for x in a_))
            ds = compiled[key]
            times: list[list[float]] = [[], []]
            for r in range(args.repeats):
                for j in ((0, 1) if r % 2 == 0 else (1, 0)):
                    t0 = time.perf_counter()
                    ds[j](*a_)
                    times[j].append(time.perf_counter() - t0)
            total[a] += statistics.median(times[0])
            total[b] += statistics.median(times[1])
        print(f"{model:<30} {len(mcalls):>5} {1e3 * total[a]:>9.3f} {1e3 * total[b]:>9.3f} {total[b] / total[a]:>6.3f}")


if __name__ == "__main__":
    main()
