"""Private Numba kernels, each paired with a plain-numpy twin.

Blocks call :class:`Kernel` objects; a kernel runs its ``@njit`` version unless the numpy twin
is selected, either for the whole process with ``BACKPROP_STUDIO_KERNELS=numpy`` (debugging,
comparisons) or for a block of code with ``with kernels.using("numpy"):`` (the tests).

Rules (GUIDE.md): ``cache=True`` everywhere; fastmath flags come from :data:`FASTMATH`, which
leaves out ``nnan`` and ``ninf`` so NaN and Inf stay visible; kernels take contiguous arrays and
scalars only, and the wrappers in each kernel module make sure of that.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Any, Callable, Iterator

import numba

#: fastmath without ``nnan``/``ninf``: NaN and exploding gradients must reach the user.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

BACKENDS = ("numba", "numpy")
ENV_VAR = "BACKPROP_STUDIO_KERNELS"


def _default_backend() -> str:
    value = os.environ.get(ENV_VAR, "numba").strip().lower() or "numba"
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(BACKENDS)}, got {value!r}")
    return value


_backend: contextvars.ContextVar[str] = contextvars.ContextVar("backprop_studio_kernels", default=_default_backend())


def backend() -> str:
    """The backend kernels run on in this context: ``"numba"`` or ``"numpy"``."""
    return _backend.get()


@contextlib.contextmanager
def using(name: str) -> Iterator[None]:
    """Run kernels on ``name`` (``"numba"`` or ``"numpy"``) inside the ``with`` block."""
    if name not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    token = _backend.set(name)
    try:
        yield
    finally:
        _backend.reset(token)


def jit(fn: Callable[..., Any]) -> Any:
    """``@njit`` with the project's caching and fastmath settings."""
    return numba.njit(cache=True, fastmath=set(FASTMATH), nogil=True)(fn)


class Kernel:
    """A jitted kernel and its numpy twin; calling it runs the selected one."""

    registry: "list[Kernel]" = []

    def __init__(self, fast: Callable[..., Any], twin: Callable[..., Any]) -> None:
        self.fast = fast
        self.twin = twin
        self.__name__ = getattr(twin, "__name__", "kernel").removesuffix("_np")
        self.__doc__ = twin.__doc__
        Kernel.registry.append(self)

    def __call__(self, *args: Any) -> Any:
        if _backend.get() == "numba":
            return self.fast(*args)
        return self.twin(*args)

    def __repr__(self) -> str:
        return f"Kernel({self.__name__})"


def kernel(twin: Callable[..., Any]) -> Callable[[Callable[..., Any]], Kernel]:
    """Decorator pairing a to-be-jitted function with its numpy twin::

        def relu_np(x): return np.maximum(x, 0)

        @kernel(relu_np)
        def relu(x): ...loops...
    """

    def wrap(fn: Callable[..., Any]) -> Kernel:
        return Kernel(jit(fn), twin)

    return wrap
