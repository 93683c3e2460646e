"""Issue 13's goals, this tree against an older checkout, side by side in one run (not a test).

    python benchmarks/bench_goals.py --base DIR [--repeats 20] [--rounds 1] [--compile]

Runs this tree's benchmark scripts (the same harness on both sides) against the engine of this
tree and of ``--base DIR`` (for example a checkout of main:
``git -C /work/main worktree add --detach /tmp/base-main main``), alternating tree by tree and
script by script so that machine noise hits both alike, each with one thread pinned (the
scripts pin it themselves):

- ``bench_models.py``: LSTM B16 L50 d64 h64 and ConvNet B32 1×28×28 channels 8/16, training
  step (forward + backward) against torch eager;
- ``bench_transformer.py``: TransformerBlock at L 32…256 (B8 d128), BERT-4 B8 L32 d128, and
  both at batch 1 (B1 L16 d64) against torch eager;
- ``bench_node_overhead.py``: µs per primitive node of a user-built graph, forward + backward;
- with ``--compile``: ``bench_kernel_cache.py --base DIR`` (the first-ever compile of every
  kernel, in fresh processes with an empty Numba cache; it alternates the trees itself).

Each script prints its own table (medians, ours/torch ratios, the issue's goal); this one prints
them one after the other under a heading naming the tree. How: each tree is staged in a
temporary directory holding links to its ``engine``, ``editor`` and ``presets`` and a copy of
this tree's ``benchmarks`` (the scripts put their parent directory first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage(tree: Path, into: Path) -> Path:
    """A directory whose engine/editor/presets are ``tree``'s and whose benchmarks are ours."""
    into.mkdir()
    for package in ("engine", "editor", "presets"):
        (into / package).symlink_to(tree / package, target_is_directory=True)
    shutil.copytree(ROOT / "benchmarks", into / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    return into


def run(where: Path, script: str, args: list[str]) -> str:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the staged directory decides which engine runs
    done = subprocess.run([sys.executable, str(where / "benchmarks" / script), *args], cwd=where, env=env,
                          capture_output=True, text=True, check=False)
    return done.stdout + (f"\n(stderr)\n{done.stderr[-2000:]}" if done.returncode else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="an older checkout (e.g. of main)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1, help="times to run every script on each tree")
    ap.add_argument("--compile", action="store_true", help="also the first-ever compile of every kernel")
    args = ap.parse_args()
    base = args.base.resolve()
    scripts = [
        ("bench_models.py", ["--repeats", str(args.repeats)]),
        ("bench_transformer.py", ["--repeats", str(args.repeats)]),
        ("bench_node_overhead.py", ["--repeats", str(args.repeats)]),
    ]
    print(f"this tree: {ROOT}\nbase:      {base}\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"{sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench-goals-") as tmp:
        trees = {"base": stage(base, Path(tmp) / "base"), "this": stage(ROOT, Path(tmp) / "this")}
        for script, extra in scripts:  # a first, untimed run per tree compiles (or loads) the kernels
            for where in trees.values():
                run(where, script, ["--repeats", "1"])
        for r in range(args.rounds):
            for script, extra in scripts:
                for name, where in trees.items():
                    print(f"\n=== {script} on {name} (round {r + 1})", flush=True)
                    print(run(where, script, extra), flush=True)
    if args.compile:
        print("\n=== bench_kernel_cache.py --base", flush=True)
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_kernel_cache.py"), "--base", str(base)],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                              check=False)
        print(done.stdout + (done.stderr[-2000:] if done.returncode else ""))


if __name__ == "__main__":
    main()
