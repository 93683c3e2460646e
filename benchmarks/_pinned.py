"""Start a benchmark pinned: ``--threads N`` (default 1) BLAS/OpenMP/Numba threads and glibc's
malloc as users have it (no ``GLIBC_TUNABLES``). Both are read when a process starts, so a script
that is not yet pinned sets them and starts itself again::

    from _pinned import pin
    THREADS = pin(__name__)          # before numpy, numba or torch are imported

Also puts the repository on ``sys.path`` (the scripts run as ``python benchmarks/X.py``)."""

from __future__ import annotations

import os
import sys
from typing import Mapping

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def threads_asked() -> int:
    """The ``--threads`` of the command line (1 when not given)."""
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 1


def pin(name: str, extra: Mapping[str, str] | None = None) -> int:
    """Pin the running script (``name`` is its ``__name__``: only ``"__main__"`` restarts) and
    return its thread count; ``extra`` are more variables to set (e.g. the Qt platform)."""
    threads = threads_asked()
    want = {**dict.fromkeys(THREAD_VARIABLES, str(threads)), **(extra or {})}
    if name == "__main__" and (any(os.environ.get(k) != v for k, v in want.items()) or "GLIBC_TUNABLES" in os.environ):
        os.environ.update(want)
        os.environ.pop("GLIBC_TUNABLES", None)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    return threads
