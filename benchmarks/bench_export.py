"""Export every lesson to PyTorch and ONNX: how long each export takes, how far the result is
from the app's forward pass, and one training step (forward + backward) of the exported PyTorch
module next to the app's, alternating, one thread.

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_export.py [--lessons a,b] [--no-onnx] [--repeat 15]

Needs the ``export`` extra (pip install -e ".[export]").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import numpy as np
    import torch

    import presets
    from engine import data as data_mod
    from engine import export as export_mod
    from engine.serialize import load
    from engine.train import TrainingConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lessons", default=",".join(presets.names()))
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, one thread; times are medians of {args.repeat} (steps) or one run (exports)")
    print(f"{'lesson':18s} {'generate':>9s} {'torch':>8s} {'diff':>8s} {'onnx':>8s} {'diff':>8s} {'app step':>9s} {'torch step':>10s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.lessons.split(","):
            project = load(presets.path(name))
            t0 = time.perf_counter()
            model, runtime = export_mod.prepare(project)
            t_gen = time.perf_counter() - t0
            t0 = time.perf_counter()
            res_torch = export_mod.export(project, "torch", Path(tmp) / f"{name}.py")
            t_torch = time.perf_counter() - t0
            onnx_cols = "       -        -"
            if not args.no_onnx:
                t0 = time.perf_counter()
                res_onnx = export_mod.export(project, "onnx", Path(tmp) / f"{name}.onnx")
                onnx_cols = f"{time.perf_counter() - t0:7.1f}s {res_onnx.max_difference:8.1e}"
            # one training step each, alternating: the app's runtime vs the exported module
            config = TrainingConfig.from_dict(project.training)
            feeds = runtime.resolve_feeds(data_mod.bind(project.data, project.graph).first_feeds())
            net = export_mod.load_module(model.source).Model()
            net.load_state_dict({k: torch.from_numpy(np.asarray(v, order="C")) for k, v in model.state.items()})
            kwargs = {i.ident: torch.from_numpy(feeds[i.node]) for i in model.inputs}
            key = model.outputs[-1].key
            ours, theirs = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                runtime.forward_backward(feeds, config.loss)
                ours.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                net.zero_grad()
                net(**kwargs)[key].backward()
                theirs.append(time.perf_counter() - t0)
            print(f"{name:18s} {t_gen:8.2f}s {t_torch:7.1f}s {res_torch.max_difference:8.1e} {onnx_cols} "
                  f"{1e3 * statistics.median(ours):7.2f}ms {1e3 * statistics.median(theirs):8.2f}ms")


if __name__ == "__main__":
    main()
