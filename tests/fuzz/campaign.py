"""The large fuzz campaign: many hypothesis-drawn cases, every outcome recorded, a summary printed.

    python -m tests.fuzz.campaign --cases 3000 [--seed 1] [--keep findings/]

Unlike the test (which stops at the first finding), this runs every case and reports: how many
of each outcome, per target and per mutation; the slowest case and the largest memory peak; and
every finding (crash, hang, blow-up) with what reproduces it, its file saved under ``--keep``.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

import presets
from tests.fuzz import mutate
from tests.fuzz.harness import MEMORY_BUDGET, TIMEOUT, Harness, Outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=Path("fuzz-findings"))
    args = parser.parse_args()
    results: list[tuple[tuple, Outcome]] = []
    t0 = time.perf_counter()
    with Harness(warm=[str(presets.path("two_layer_net"))]) as harness:

        @hypothesis_seed(args.seed)
        @settings(max_examples=args.cases, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=mutate.cases())
        def run(case: tuple) -> None:
            target, seed, mutations, salt = case
            try:
                data, suffix = mutate.make(seed, mutations, salt)
            except Exception as exc:  # noqa: BLE001 -- a mutation that breaks is the harness's bug, not a finding
                print(f"MUTATION FAILED {case}: {exc!r}", file=sys.stderr, flush=True)
                return
            outcome = harness.outcome(target, data, suffix)
            results.append((case, outcome))
            if not outcome.acceptable:
                args.keep.mkdir(parents=True, exist_ok=True)
                name = args.keep / f"{len(results)}-{target}{suffix}"
                name.write_bytes(data)
                print(f"FINDING {name}: {target} {seed} {mutations} salt={salt}: {outcome}", flush=True)
            if len(results) % 250 == 0:
                print(f"{len(results)} cases, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

        run()
    seconds = time.perf_counter() - t0
    kinds = collections.Counter(o.kind for _, o in results)
    print(f"\n{len(results)} cases in {seconds:.0f} s on {platform.node()} ({os.cpu_count()} cores, Python "
          f"{platform.python_version()}), each under a {MEMORY_BUDGET // 2**20} MiB address-space budget and a {TIMEOUT} s timeout")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    for label, key in (("target", lambda c: c[0]), ("seed", lambda c: c[1])):
        table = collections.defaultdict(collections.Counter)
        for case, o in results:
            table[key(case)][o.kind] += 1
        print(f"by {label}:")
        for k in sorted(table):
            print(f"  {k:22s} " + ", ".join(f"{kind} {n}" for kind, n in table[k].most_common()))
    per_mutation = collections.defaultdict(collections.Counter)
    for case, o in results:
        for m in set(case[2]):
            per_mutation[m][o.kind] += 1
    print("by mutation (a case counts once for each mutation it used):")
    for m in sorted(per_mutation):
        print(f"  {m:22s} " + ", ".join(f"{kind} {n}" for kind, n in per_mutation[m].most_common()))
    times = [o.seconds for _, o in results]
    peaks = [o.peak_mb for _, o in results]
    slowest = max(results, key=lambda r: r[1].seconds)
    biggest = max(results, key=lambda r: r[1].peak_mb)
    print(f"seconds per case: median {statistics.median(times):.2f}, max {max(times):.1f} ({slowest[0][0]} {slowest[0][1]} {slowest[0][2]})")
    print(f"peak memory per case: median {statistics.median(peaks):.0f} MB, max {max(peaks):.0f} MB "
          f"({biggest[0][0]} {biggest[0][1]} {biggest[0][2]})")
    findings = [(c, o) for c, o in results if not o.acceptable]
    print(f"findings: {len(findings)}")
    for case, o in findings:
        print(f"  {case}: {o}")
    messages = collections.Counter(re.sub(r"^.*?case\d+\.\w+: ", "", o.message)[:70] for _, o in results if o.kind == "error")
    print("most common refusals:")
    for text, n in messages.most_common(12):
        print(f"  {n:5d}  {text}")


if __name__ == "__main__":
    main()
