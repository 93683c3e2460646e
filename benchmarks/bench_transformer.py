"""Side-by-side timings: TransformerBlock and BERT forward+backward, ours vs torch eager (not a test).

    python benchmarks/bench_transformer.py [--repeats 40] [--threads 1] [--only SUBSTRING] [--fault-steps N] [--blocks N]

One thread everywhere by default (OPENBLAS_NUM_THREADS=1, NUMBA_NUM_THREADS=1,
torch.set_num_threads(1)); ``--threads 2`` gives both sides two. glibc's malloc is left as users
have it (no GLIBC_TUNABLES: the script removes it and re-executes itself), and the minor page
faults of each side per pass are printed, over the first and the second half of the runs (the heap
settling, then steady state): allocation churn shows there; ``--fault-steps N`` lists the steps
that fault, pass by pass, instead of timing; ``--blocks N`` prints what each block of the plan costs
per call, with its kernels and without (the Python and numpy around them). Ours runs through the engine's runtime exactly as the editor
and the CLI do (Input → block, seeded with an upstream gradient, every weight gradient and the
input gradient computed); torch runs ``nn.TransformerEncoderLayer`` (post-norm, dropout 0) with
the same weights, input gradient on and ``.grad`` reset each run. Runs alternate so machine
noise hits both alike; the table shows medians of CPU time (process_time: a loaded, shared machine
disturbs it far less than wall time) and ours/torch ratios. The bar is ratio ≤ 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

from _pinned import pin  # noqa: E402

THREADS = pin(__name__)

import resource  # noqa: E402

import numpy as np  # noqa: E402

from engine.graph import Graph  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

try:  # torch is the reference only
    import torch

    torch.set_num_threads(THREADS)
except ImportError:  # pragma: no cover
    torch = None


def _ours(type_id: str, params: dict, in_shape: tuple[int, ...], ids: bool, rng: np.random.Generator):
    """A graph Input → block, its runtime, and a function running forward + backward once."""
    graph = Graph()
    x = graph.add_node("Input", {"shape": in_shape, "dtype": "ids" if ids else "float"}, name="x")
    node = graph.add_node(type_id, params, name="model")
    graph.connect(x.id, "out", node.id, "ids" if ids else "x")
    runtime = Runtime(graph, seed=0, dtype=np.float32)
    data = rng.integers(0, params.get("vocab", 1), size=in_shape) if ids else rng.standard_normal(in_shape).astype(np.float32)
    out_shape = runtime.program.step(node.id).out_shapes["out"]
    g = rng.standard_normal(out_shape).astype(np.float32)

    def run() -> None:
        p = runtime.start({"x": data}).run_forward()
        p.run_backward(grads={(node.id, "out"): g})

    run.runtime = runtime  # type: ignore[attr-defined]  # for --fault-steps and --blocks
    run.data = data  # type: ignore[attr-defined]
    return runtime, node.id, data, g, run


def _torch_layer(d: int, heads: int, hidden: int, w: dict[str, np.ndarray]) -> "torch.nn.Module":
    layer = torch.nn.TransformerEncoderLayer(d, heads, dim_feedforward=hidden, dropout=0.0, batch_first=True, norm_first=False)
    t = torch.from_numpy
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(t(np.concatenate([w["attn/Wq"].T, w["attn/Wk"].T, w["attn/Wv"].T])))
        layer.self_attn.in_proj_bias.copy_(t(np.concatenate([w["attn/bq"], w["attn/bk"], w["attn/bv"]])))
        layer.self_attn.out_proj.weight.copy_(t(w["attn/Wo"].T.copy()))
        layer.self_attn.out_proj.bias.copy_(t(w["attn/bo"]))
        layer.linear1.weight.copy_(t(w["ffn/W1"].T.copy()))
        layer.linear1.bias.copy_(t(w["ffn/b1"]))
        layer.linear2.weight.copy_(t(w["ffn/W2"].T.copy()))
        layer.linear2.bias.copy_(t(w["ffn/b2"]))
        for i in (1, 2):
            getattr(layer, f"norm{i}").weight.copy_(t(w[f"norm{i}/gamma"]))
            getattr(layer, f"norm{i}").bias.copy_(t(w[f"norm{i}/beta"]))
    return layer


def transformer_case(batch: int, length: int, d: int, heads: int):
    rng = np.random.default_rng(0)
    params = {"dim": d, "heads": heads}
    runtime, nid, x, g, ours = _ours("TransformerBlock", params, (batch, length, d), False, rng)
    layer = _torch_layer(d, heads, 4 * d, runtime.weights[nid])
    tx = torch.from_numpy(x).requires_grad_(True)
    tg = torch.from_numpy(g)

    def theirs() -> None:
        layer.zero_grad(set_to_none=True)
        tx.grad = None
        layer(tx).backward(tg)

    _check(runtime, nid, x, g, lambda: (layer(tx), tx))
    return ours, theirs


def bert_case(batch: int, length: int, d: int, heads: int, layers: int, vocab: int = 1000):
    rng = np.random.default_rng(0)
    params = {"vocab": vocab, "dim": d, "heads": heads, "layers": layers, "max_len": 64}
    runtime, nid, ids, g, ours = _ours("BERT", params, (batch, length), True, rng)
    w = runtime.weights[nid]
    emb = torch.nn.Embedding(vocab, d)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(w["embed/E"]))
    pos = torch.nn.Parameter(torch.from_numpy(w["embed/P"].copy()))
    stack = [_torch_layer(d, heads, 4 * d, {k.split("/", 1)[1]: v for k, v in w.items() if k.startswith(f"block{i}/")})
             for i in range(1, layers + 1)]
    tids = torch.from_numpy(ids)
    tg = torch.from_numpy(g)
    modules = [emb, *stack]

    def forward():
        h = emb(tids) + pos[:length]
        for layer in stack:
            h = layer(h)
        return h

    def theirs() -> None:
        for m in modules:
            m.zero_grad(set_to_none=True)
        pos.grad = None
        forward().backward(tg)

    _check(runtime, nid, ids, g, lambda: (forward(), None))
    return ours, theirs


def _check(runtime: Runtime, nid: str, x: np.ndarray, g: np.ndarray, torch_forward: Callable) -> None:
    """Same numbers before timing anything (float32 rounding)."""
    ours = runtime.forward({"x": x}).values[(nid, "out")]
    theirs, _ = torch_forward()
    err = float(np.max(np.abs(ours - theirs.detach().numpy())))
    if err > 1e-3:
        raise SystemExit(f"ours and torch disagree by {err:.2e}; not timing a different computation")


#: CPU time with one thread (steady on a shared machine); wall time with several (CPU time would add them up).
CLOCK = time.process_time if THREADS == 1 else time.perf_counter


def timed(fns: dict[str, Callable[[], None]], repeats: int,
          warmup: int = 3) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Median seconds, and mean minor page faults per call over the first and the second half of
    the runs (the heap settles over the first passes: the two sides' arrays interleave in one
    glibc heap, which grows to its high-water mark, every new page faulting once; the second
    half is the steady state), runs alternating."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    faults: dict[str, list[int]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = CLOCK()
            fn()
            samples[name].append(CLOCK() - t0)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    half = repeats // 2
    return ({k: statistics.median(v) for k, v in samples.items()},
            {k: (sum(v[:half]) / max(1, half), sum(v[half:]) / max(1, repeats - half)) for k, v in faults.items()})


def fault_steps(ours: Callable[[], None], theirs: Callable[[], None], passes: int) -> None:
    """Which steps of our pass page-fault, pass by pass: ``passes`` runs of ours alone, then as
    many alternating with torch's: every step of the execution plan is timed for minor faults. The plan's code is
    written again with each block's compute/vjp wrapped (elementwise blocks included, so a few
    more small arrays are made than in the timed runs)."""
    from engine import plan as planmod

    def minflt() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    plan = planmod.plan_for(ours.runtime)  # type: ignore[attr-defined]
    log: list[tuple[int, str, int]] = []
    now = [0]

    def counted(fn: Callable, label: str) -> Callable:
        def run(*args):
            f0 = minflt()
            out = fn(*args)
            if minflt() - f0:
                log.append((now[0], label, minflt() - f0))
            return out
        return run

    for i, s in enumerate(plan.steps):
        if s.kind == planmod.BLOCK:
            name = f"{s.type} {'/'.join(s.path)}"
            s.compute, s.vjp = counted(s.compute, f"forward  {name}"), counted(s.vjp, f"backward {name}")
            s.block.array_form = False  # this instance only: every block through compute/vjp
            s.block.output_weight = ""
    planmod._generate(plan)
    alone = []
    for k in range(passes):
        now[0] = -1 - k  # ours alone: listed as passes -1, -2, ...
        f0 = minflt()
        ours()
        alone.append(minflt() - f0)
    print(f"  faults per pass of ours, {passes} passes alone first: {alone}")
    totals = []
    for k in range(passes):
        now[0] = k
        f0 = minflt()
        ours()
        totals.append(minflt() - f0)
        theirs()
    print(f"  faults per pass of ours, {passes} passes alternating with torch's: {totals}")
    for k, label, n in log:
        print(f"    pass {k:3d}  {n:5d}  {label}")


def block_costs(ours: Callable[[], None], calls: int) -> None:
    """Per block step of the execution plan: the best of 5 runs of ``calls`` calls of its
    ``compute`` and of its ``vjp`` on the last pass's arrays, in µs a call; then the same with
    every Numba kernel replaced by a call that does nothing (what is left is the Python and the
    numpy around the kernels: wrappers, views, allocations, dicts). Alone, not beside torch."""
    import timeit

    from engine import kernels
    from engine import plan as planmod

    for _ in range(planmod.GENERATE_AFTER + 2):
        ours()
    runtime = ours.runtime  # type: ignore[attr-defined]
    plan = planmod.plan_for(runtime)
    p = runtime.start({"x": ours.data}).run_forward()  # type: ignore[attr-defined]
    values, saved_all, weights_all, _ = p._plan_state
    steps = [(i, s) for i, s in enumerate(plan.steps) if s.kind == planmod.BLOCK]

    def measure() -> list[tuple[float, float]]:
        rows = []
        for i, s in steps:
            ins = {port: values[slot] for port, slot in s.ins}
            w = weights_all[i]
            full = {port: np.ones(shape, dtype) for port, _slot, _d, shape, dtype in s.grad_outs}
            fwd = min(timeit.repeat(lambda: s.compute(ins, w), number=calls, repeat=5)) / calls
            bwd = min(timeit.repeat(lambda: s.vjp(full, saved_all[i], w), number=calls, repeat=5)) / calls
            rows.append((fwd, bwd))
        return rows

    real = measure()
    saved = [(k, k._lazy._dispatcher) for k in kernels.Kernel.registry]
    try:
        for k, d in saved:
            if d is not None:
                k._lazy._dispatcher = lambda *args: None
        bare = measure()
    finally:
        for k, d in saved:
            k._lazy._dispatcher = d
    print(f"  {'step':44s} {'compute µs':>10s} {'vjp µs':>8s}   without the kernels: {'compute':>7s} {'vjp':>7s}")
    totals = [0.0] * 4
    for (i, s), (f, b), (f0, b0) in zip(steps, real, bare):
        print(f"  {s.type + ' ' + s.path[-1]:44s} {f * 1e6:10.1f} {b * 1e6:8.1f}   {'':21s}{f0 * 1e6:7.1f} {b0 * 1e6:7.1f}")
        for j, v in enumerate((f, b, f0, b0)):
            totals[j] += v
    print(f"  {'all blocks':44s} {totals[0] * 1e6:10.1f} {totals[1] * 1e6:8.1f}   {'':21s}{totals[2] * 1e6:7.1f} {totals[3] * 1e6:7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1, help="threads for BLAS, Numba and torch (default 1)")
    ap.add_argument("--only", default="", help="run only the cases whose label contains this")
    ap.add_argument("--fault-steps", type=int, default=0, metavar="N",
                    help="instead of timing: N passes per case, printing which steps page-fault in which pass")
    ap.add_argument("--blocks", type=int, default=0, metavar="N",
                    help="instead of timing against torch: µs per call of each block's compute and vjp (best of 5 "
                         "runs of N calls), with its kernels and without them (the Python and numpy around them)")
    args = ap.parse_args()
    if torch is None:
        raise SystemExit("torch is not installed; it is the reference this benchmark compares with")
    # (label, make, goal ratio ours/torch from issue 13)
    cases = [
        ("TransformerBlock  B8  L32  d128 h4", lambda: transformer_case(8, 32, 128, 4), None),
        ("BERT 4 layers     B8  L32  d128 h4", lambda: bert_case(8, 32, 128, 4, 4), 0.8),
        ("TransformerBlock  B1  L16  d64  h4", lambda: transformer_case(1, 16, 64, 4), 0.4),
        ("BERT 4 layers     B1  L16  d64  h4", lambda: bert_case(1, 16, 64, 4, 4), 0.4),
        ("TransformerBlock  B8  L64  d128 h4", lambda: transformer_case(8, 64, 128, 4), None),
        ("TransformerBlock  B8  L128 d128 h4", lambda: transformer_case(8, 128, 128, 4), None),
        ("TransformerBlock  B8  L256 d128 h4", lambda: transformer_case(8, 256, 128, 4), 0.9),
    ]
    cases = [c for c in cases if args.only in c[0]]
    print(f"forward+backward, float32, {args.threads} thread(s), median of {args.repeats} alternating runs; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; glibc malloc untuned")
    print("page faults per pass: mean over the first half of the runs (the heap settling) / over the second half "
          "(steady state)")
    print(f"{'case':36s} {'ours ms':>9s} {'torch ms':>9s} {'ratio':>7s} {'goal':>6s} {'faults/pass ours':>17s} {'torch':>11s}")
    worst = 0.0
    by_length: dict[int, float] = {}
    for label, make, goal in cases:
        ours, theirs = make()
        if args.fault_steps:
            print(label)
            fault_steps(ours, theirs, args.fault_steps)
            continue
        if args.blocks:
            print(label)
            block_costs(ours, args.blocks)
            continue
        med, faults = timed({"ours": ours, "torch": theirs}, args.repeats)
        ratio = med["ours"] / med["torch"]
        worst = max(worst, ratio)
        verdict = "" if goal is None else f"{goal:6.2f} {'met' if ratio <= goal else 'NOT met'}"
        print(f"{label:36s} {med['ours'] * 1e3:9.3f} {med['torch'] * 1e3:9.3f} {ratio:7.2f} {verdict:12s} "
              f"{faults['ours'][0]:9.1f} / {faults['ours'][1]:<5.1f} {faults['torch'][0]:5.1f} / {faults['torch'][1]:<5.1f}")
        if label.startswith("TransformerBlock  B8") and "d128" in label:
            by_length[int(label.split("L")[1].split()[0])] = med["ours"]
    if 64 in by_length and 256 in by_length:
        # FLOPs of one block per example: projections and FFN ∝ L·d², scores and A·V ∝ L²·d.
        def flops(n: int) -> float:
            return 12 * n * 128 * 128 + 2 * n * n * 128
        print(f"TransformerBlock L64 → L256: time ×{by_length[256] / by_length[64]:.2f}, FLOPs ×{flops(256) / flops(64):.2f}")
    print(f"worst ratio ours/torch: {worst:.2f}")


if __name__ == "__main__":
    main()
