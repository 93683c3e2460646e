"""Greedy generation: CPU time per new token against the length of the prefix, with the cache
between tokens (keys and values of the causal attention) and without it (the whole prefix run
again for every token), not a test.

    python benchmarks/bench_generate.py [--tokens 20] [--repeats 5]

A 2-layer transformer LanguageModel (dim 64, 4 heads, max_len 512) with random weights; prompts of
8, 64 and 256 tokens; each run generates ``--tokens`` tokens after the prompt, and the time of
the prompt itself (one pass over it) is subtracted, so the figure is the cost of one more token.
Medians of ``--repeats`` runs, alternating cached and recomputing; one thread pinned.

Goal (issue 13): with the cache, the cost per token is flat in the prefix length.
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

from engine import blocks  # noqa: E402
from engine.generate import generate  # noqa: E402


def _generate(model, prompt, max_new_tokens, cached):  # type: ignore[no-untyped-def]
    """generate(), also on an older checkout without the cache (``--base``-style runs): there
    every token recomputes the prefix whatever ``cached`` says."""
    import inspect

    if "cached" in inspect.signature(generate).parameters:
        return generate(model, prompt, max_new_tokens=max_new_tokens, cached=cached)
    return generate(model, prompt, max_new_tokens=max_new_tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    block = blocks.create("LanguageModel", vocab=64, dim=64, model="transformer", layers=2, heads=4, max_len=512)
    weights = {k: np.asarray(v, np.float32) for k, v in block.init_weights({"x": (1, 8)}, np.random.default_rng(0)).items()}
    model = (block, weights)
    lengths = (8, 64, 256)
    per_token: dict[tuple[int, bool], float] = {}
    print(f"greedy generation, 2-layer transformer dim 64, float32, one thread; load average {os.getloadavg()[0]:.2f}; "
          f"median of {args.repeats}, ms of CPU per token after the prompt")
    print(f"{'prefix':>7s} {'cached':>9s} {'recompute':>10s} {'ratio':>7s}")
    for length in lengths:
        prompt = [int(t) for t in np.random.default_rng(length).integers(0, 64, length)]
        samples: dict[bool, list[float]] = {True: [], False: []}
        for cached in (True, False):
            _generate(model, prompt, 2, cached)  # compile, warm up
        for _ in range(args.repeats):
            for cached in (True, False):
                t0 = time.process_time()
                _generate(model, prompt, 1, cached)
                t1 = time.process_time()
                _generate(model, prompt, 1 + args.tokens, cached)
                t2 = time.process_time()
                samples[cached].append(((t2 - t1) - (t1 - t0)) / args.tokens)
        for cached in (True, False):
            per_token[(length, cached)] = statistics.median(samples[cached])
        c, r = per_token[(length, True)], per_token[(length, False)]
        print(f"{length:7d} {c * 1e3:9.2f} {r * 1e3:10.2f} {r / c:7.1f}")
    flat = per_token[(lengths[-1], True)] / per_token[(lengths[0], True)]
    grow = per_token[(lengths[-1], False)] / per_token[(lengths[0], False)]
    print(f"cost per token, prefix {lengths[-1]} / prefix {lengths[0]}: cached ×{flat:.2f}, recomputing ×{grow:.1f} "
          f"(prefix ×{lengths[-1] // lengths[0]})")


if __name__ == "__main__":
    main()
