"""Side-by-side timings: TransformerBlock and BERT forward+backward, ours vs torch eager (not a test).

    python benchmarks/bench_transformer.py [--repeats 40]

One thread everywhere (OPENBLAS_NUM_THREADS=1, NUMBA_NUM_THREADS=1, torch.set_num_threads(1))
and glibc's allocator tuned against mmap/trim noise; the script re-executes itself with those
settings when they are missing. Ours runs through the engine's runtime exactly as the editor
and the CLI do (Input → block, seeded with an upstream gradient, every weight gradient and the
input gradient computed); torch runs ``nn.TransformerEncoderLayer`` (post-norm, dropout 0) with
the same weights, input gradient on and ``.grad`` reset each run. Runs alternate so machine
noise hits both alike; the table shows medians and ours/torch ratios. The bar is ratio ≤ 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=16777216:glibc.malloc.trim_threshold=67108864",
}

if __name__ == "__main__" and any(os.environ.get(k) != v for k, v in ENV.items()):
    # Thread counts and malloc tunables are read at start-up: set them, then start again.
    os.environ.update(ENV)
    os.execv(sys.executable, [sys.executable, *sys.argv])

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from engine.graph import Graph  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

try:  # torch is the reference only
    import torch

    torch.set_num_threads(1)
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


def timed(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args()
    if torch is None:
        raise SystemExit("torch is not installed; it is the reference this benchmark compares with")
    cases = [
        ("TransformerBlock  B8  L32 d128 h4", lambda: transformer_case(8, 32, 128, 4)),
        ("BERT 4 layers     B8  L32 d128 h4", lambda: bert_case(8, 32, 128, 4, 4)),
        ("TransformerBlock  B1  L16 d64  h4", lambda: transformer_case(1, 16, 64, 4)),
        ("BERT 4 layers     B1  L16 d64  h4", lambda: bert_case(1, 16, 64, 4, 4)),
    ]
    print(f"forward+backward, float32, one thread, median of {args.repeats} alternating runs")
    print(f"{'case':36s} {'ours ms':>9s} {'torch ms':>9s} {'ratio':>7s}")
    worst = 0.0
    for label, make in cases:
        ours, theirs = make()
        med = timed({"ours": ours, "torch": theirs}, args.repeats)
        ratio = med["ours"] / med["torch"]
        worst = max(worst, ratio)
        print(f"{label:36s} {med['ours'] * 1e3:9.3f} {med['torch'] * 1e3:9.3f} {ratio:7.2f}")
    print(f"worst ratio ours/torch: {worst:.2f} (bar: ≤ 2.00) -> {'OK' if worst <= 2.0 else 'SLOWER THAN THE BAR'}")


if __name__ == "__main__":
    main()
