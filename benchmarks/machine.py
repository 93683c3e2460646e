"""One line saying what machine a benchmark ran on, printed with every figure it measures.

    python benchmarks/machine.py
"""

from __future__ import annotations

import os
import platform
import time


def describe() -> str:
    """``AMD EPYC, 2 cores, 23.5 GiB, Linux 6.x, Python 3.11.7, numpy 2.4.6, numba 0.68.1, 2026-11-30``."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = "memory unknown"
    versions = [f"Python {platform.python_version()}"]
    for name in ("numpy", "numba"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f}"
    return (f"{cpu}, {os.cpu_count()} cores, {memory}, {platform.system()} {platform.release().split('-')[0]}, "
            f"{', '.join(versions)}, {time.strftime('%Y-%m-%d')}{load}")


if __name__ == "__main__":
    print(describe())
