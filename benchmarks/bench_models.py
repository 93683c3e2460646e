"""Side-by-side: the LSTM and ConvNet of issue 13, forward + backward, ours vs torch eager (not a test).

    python benchmarks/bench_models.py [--repeats 30] [--threads 1] [--only SUBSTRING]

Ours runs through the engine's runtime as the editor and the CLI do (Input → block, an upstream
gradient seeded, every weight and input gradient computed); torch runs ``nn.LSTM`` and an
equivalent ``nn.Sequential`` with the same weights, outputs checked equal before timing. Runs
alternate; medians of CPU time (process_time, steadier than wall time on a shared machine) and
ours/torch ratios. Threads pinned (re-executes itself with
OPENBLAS/NUMBA/OMP_NUM_THREADS set); glibc malloc as users have it (no GLIBC_TUNABLES).

Goals (issue 13): LSTM B16 L50 d64 h64 ≤ 0.8×, ConvNet B32 1×28×28 channels 8/16 ≤ 0.8×.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

from _pinned import pin  # noqa: E402

THREADS = pin(__name__)

import numpy as np  # noqa: E402

from engine.graph import Graph  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

try:
    import torch

    torch.set_num_threads(THREADS)
except ImportError:  # pragma: no cover
    torch = None


def _ours(type_id: str, params: dict, in_shape: tuple[int, ...], out_port: str, rng: np.random.Generator):
    graph = Graph()
    x = graph.add_node("Input", {"shape": in_shape}, name="x")
    node = graph.add_node(type_id, params, name="model")
    graph.connect(x.id, "out", node.id, "x")
    runtime = Runtime(graph, seed=0, dtype=np.float32)
    data = rng.standard_normal(in_shape).astype(np.float32)
    g = rng.standard_normal(runtime.program.step(node.id).out_shapes[out_port]).astype(np.float32)

    def run() -> None:
        p = runtime.start({"x": data}).run_forward()
        p.run_backward(grads={(node.id, out_port): g})

    return runtime, runtime.weights.get(node.id, {}), data, g, run, node.id


def _check(ours: np.ndarray, theirs: "torch.Tensor", what: str) -> None:
    err = float(np.max(np.abs(ours - theirs.detach().numpy())))
    if err > 1e-3:
        raise SystemExit(f"{what}: ours and torch disagree by {err:.2e}; not timing a different computation")


def lstm_case(B: int, L: int, D: int, H: int):
    rng = np.random.default_rng(0)
    runtime, w, x, g, ours, nid = _ours("SequenceRNN", {"cell": "LSTM", "hidden": H}, (B, L, D), "seq", rng)
    mod = torch.nn.LSTM(D, H, batch_first=True)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(w["Wx"].T.copy()))
        mod.weight_hh_l0.copy_(torch.from_numpy(w["Wh"].T.copy()))
        mod.bias_ih_l0.copy_(torch.from_numpy(w["b"]))
        mod.bias_hh_l0.zero_()
    tx = torch.from_numpy(x).requires_grad_()
    tg = torch.from_numpy(g)
    _check(runtime.forward({"x": x}).values[(nid, "seq")], mod(tx)[0], "LSTM")

    def theirs() -> None:
        out, _ = mod(tx)
        torch.autograd.grad(out, [tx, *mod.parameters()], tg)

    return ours, theirs


def convnet_case(B: int, channels: tuple[int, ...], classes: int = 10, hidden: int = 64):
    rng = np.random.default_rng(0)
    params = {"channels": list(channels), "stages": len(channels), "classes": classes, "hidden": hidden}
    runtime, w, x, g, ours, nid = _ours("ConvNet", params, (B, 1, 28, 28), "out", rng)
    layers: list[torch.nn.Module] = []
    c_in = 1
    t = torch.from_numpy
    for s, c in enumerate(channels, start=1):
        conv = torch.nn.Conv2d(c_in, c, 3, padding=1)
        with torch.no_grad():
            conv.weight.copy_(t(w[f"conv{s}/W"]))
            conv.bias.copy_(t(w[f"conv{s}/b"]))
        layers += [conv, torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
        c_in = c
    flat = w["ffn/W1"].shape[0]
    l1, l2 = torch.nn.Linear(flat, hidden), torch.nn.Linear(hidden, classes)
    with torch.no_grad():
        l1.weight.copy_(t(w["ffn/W1"].T.copy()))
        l1.bias.copy_(t(w["ffn/b1"]))
        l2.weight.copy_(t(w["ffn/W2"].T.copy()))
        l2.bias.copy_(t(w["ffn/b2"]))
    net = torch.nn.Sequential(*layers, torch.nn.Flatten(), l1, torch.nn.ReLU(), l2)
    tx = torch.from_numpy(x).requires_grad_()
    tg = torch.from_numpy(g)
    _check(runtime.forward({"x": x}).values[(nid, "out")], net(tx), "ConvNet")

    def theirs() -> None:
        torch.autograd.grad(net(tx), [tx, *net.parameters()], tg)

    return ours, theirs


#: CPU time with one thread (steady on a shared machine); wall time with several (CPU time would add them up).
CLOCK = time.process_time if THREADS == 1 else time.perf_counter


def timed(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = CLOCK()
            fn()
            samples[name].append(CLOCK() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    if torch is None:
        raise SystemExit("torch is not installed; it is the reference this benchmark compares with")
    cases = [
        ("LSTM    B16 L50 d64 h64", lambda: lstm_case(16, 50, 64, 64), 0.8),
        ("ConvNet B32 1x28x28 ch 8/16", lambda: convnet_case(32, (8, 16)), 0.8),
    ]
    print(f"forward+backward, float32, {args.threads} thread(s), median of {args.repeats} alternating runs; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'case':30s} {'ours ms':>9s} {'torch ms':>9s} {'ratio':>7s} {'goal':>6s}")
    for label, make, goal in cases:
        if args.only not in label:
            continue
        ours, theirs = make()
        med = timed({"ours": ours, "torch": theirs}, args.repeats)
        ratio = med["ours"] / med["torch"]
        print(f"{label:30s} {med['ours'] * 1e3:9.3f} {med['torch'] * 1e3:9.3f} {ratio:7.2f} {goal:6.2f} "
              f"{'met' if ratio <= goal else 'NOT met'}")


if __name__ == "__main__":
    main()
