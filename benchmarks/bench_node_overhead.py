"""Per-node cost of a user-built graph of primitive blocks, forward + backward, vs torch eager per op.

    python benchmarks/bench_node_overhead.py [--nodes 60] [--repeats 30]

A chain Input (4, 8) → [Multiply by a Parameter → Tanh → Add a Parameter → Sigmoid] × n/4 →
Mean, run through the engine's runtime exactly as the editor and the CLI run it (loss seeded,
every weight gradient computed); torch runs the same ops with autograd on. Tensors are tiny, so
this measures the bookkeeping per node, not arithmetic. Runs alternate; medians of CPU time (process_time).

Goal (issue 13): ≤ 10 µs per primitive node, forward and backward together.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_k, "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from engine.graph import Graph  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    torch = None

SHAPE = (4, 8)
PATTERN = ("Multiply", "Tanh", "Add", "Sigmoid")


def build(n: int) -> tuple[Graph, str, int]:
    g = Graph()
    prev = g.add_node("Input", {"shape": SHAPE}, name="x").id
    count = 0
    for i in range(n):
        kind = PATTERN[i % len(PATTERN)]
        if kind in ("Multiply", "Add"):
            p = g.add_node("Parameter", {"shape": SHAPE[1:], "init": "normal", "scale": 0.5}, name=f"p{i}").id
            node = g.add_node(kind, {}, name=f"n{i}").id
            g.connect(prev, "out", node, "a")
            g.connect(p, "out", node, "b")
            count += 2
        else:
            node = g.add_node(kind, {}, name=f"n{i}").id
            g.connect(prev, "out", node, "a")
            count += 1
        prev = node
    loss = g.add_node("Mean", {}, name="loss").id
    g.connect(prev, "out", loss, "a")
    return g, loss, count + 2  # + Input and Mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    graph, loss, nodes = build(args.nodes)
    runtime = Runtime(graph, seed=0, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    key = runtime.loss_port(loss)

    def ours() -> None:
        runtime.forward_backward({"x": x}, key)

    fns = {"ours": ours}
    ops = 0
    if torch is not None:
        params = []
        for i in range(args.nodes):
            if PATTERN[i % len(PATTERN)] in ("Multiply", "Add"):
                params.append(torch.from_numpy(runtime.weights[graph.find(f"p{i}").id]["value"].copy()).requires_grad_())
        tx = torch.from_numpy(x)

        def theirs() -> None:
            h = tx
            it = iter(params)
            for i in range(args.nodes):
                kind = PATTERN[i % len(PATTERN)]
                h = h * next(it) if kind == "Multiply" else h + next(it) if kind == "Add" else torch.tanh(h) if kind == "Tanh" else torch.sigmoid(h)
            torch.autograd.grad(h.mean(), params)

        fns["torch"] = theirs
        ops = args.nodes + 1
    for _ in range(3):
        for f in fns.values():
            f()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, f in fns.items():
            t0 = time.process_time()
            f()
            samples[k].append(time.process_time() - t0)
    med = {k: statistics.median(v) for k, v in samples.items()}
    per = med["ours"] / nodes
    print(f"{nodes} nodes ({args.nodes} operations, {nodes - args.nodes - 2} Parameters, Input, Mean) on {SHAPE}; "
          f"load average {os.getloadavg()[0]:.2f}; medians of {args.repeats}")
    print(f"ours : {med['ours'] * 1e3:7.3f} ms per forward+backward, {per * 1e6:6.1f} µs per node (goal ≤ 10 µs: "
          f"{'met' if per <= 10e-6 else 'NOT met'})")
    if "torch" in med:
        print(f"torch: {med['torch'] * 1e3:7.3f} ms, {med['torch'] / ops * 1e6:6.1f} µs per op ({ops} ops); "
              f"ours/torch per pass {med['ours'] / med['torch']:.2f}")


if __name__ == "__main__":
    main()
