"""Shared test set-up: Qt runs offscreen; Numba and BLAS stay on one thread for stable figures."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
