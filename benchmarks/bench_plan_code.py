"""Does the code the execution plan writes (engine.plan._generate) pay for itself? (not a test)

    python benchmarks/bench_plan_code.py [--repeats 60]

The same graph twice (two copies, two plans), one plan running the straight-line Python it
writes after GENERATE_AFTER passes, the other kept on its loops; alternating runs, one thread
pinned, medians of CPU time, ratio written code / loops. Cases: the primitive-node chain of
bench_node_overhead.py (92 nodes on (4, 8)), BERT-4 and a TransformerBlock at B1 L16 d64.
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

from benchmarks.bench_node_overhead import build  # noqa: E402
from engine.graph import Graph  # noqa: E402
from engine.plan import plan_for  # noqa: E402
from engine.runtime import Runtime  # noqa: E402


def model(type_id: str, params: dict) -> tuple[Graph, str, dict]:
    g = Graph()
    ids = type_id == "BERT"
    x = g.add_node("Input", {"shape": (1, 16), "dtype": "ids"} if ids else {"shape": (1, 16, 64)}, name="x")
    m = g.add_node(type_id, params, name="model")
    loss = g.add_node("Mean", {}, name="loss")
    g.connect(x.id, "out", m.id, m.block.input_ports()[0].name)
    g.connect(m.id, m.block.output_ports()[0].name, loss.id, "a")
    rng = np.random.default_rng(0)
    feed = rng.integers(0, 50, (1, 16)) if ids else rng.standard_normal((1, 16, 64)).astype(np.float32)
    return g, loss.id, {"x": feed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=60)
    args = ap.parse_args()
    chain, chain_loss, _ = build(60)
    cases = {
        "92-node primitive chain (4, 8)": (chain, chain_loss, {"x": np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)}),
        "BERT-4 B1 L16 d64": model("BERT", {"vocab": 50, "dim": 64, "heads": 4, "layers": 4, "hidden": 128, "max_len": 16,
                                             "dropout": 0.0, "pad_id": None}),
        "TransformerBlock B1 L16 d64": model("TransformerBlock", {"dim": 64, "heads": 4, "hidden": 128}),
    }
    print(f"load average {os.getloadavg()[0]:.2f}; medians of {args.repeats} alternating runs, CPU time, one thread")
    for label, (graph, loss, feeds) in cases.items():
        code = Runtime(graph, seed=0, dtype=np.float32)
        loops = Runtime(graph.copy(), seed=0, dtype=np.float32)
        plan_for(loops)._passes = -(10**9)  # never reaches GENERATE_AFTER: stays on its loops
        fns = {name: (lambda r=r, feeds=feeds, loss=loss: r.forward_backward(feeds, loss))
               for name, r in (("code", code), ("loops", loops))}
        for _ in range(5):
            for f in fns.values():
                f()
        assert plan_for(code)._fwd_code is not None and plan_for(loops)._fwd_code is None
        samples: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, f in fns.items():
                t0 = time.process_time()
                f()
                samples[k].append(time.process_time() - t0)
        med = {k: statistics.median(v) for k, v in samples.items()}
        print(f"{label:32s} written code {med['code'] * 1e3:7.3f} ms, loops {med['loops'] * 1e3:7.3f} ms, "
              f"code/loops {med['code'] / med['loops']:.2f}")


if __name__ == "__main__":
    main()
