"""Private Numba kernels, each paired with a plain-numpy twin.

Blocks call :class:`Kernel` objects; a kernel runs its ``@njit`` version unless the numpy twin
is selected, either for the whole process with ``BACKPROP_STUDIO_KERNELS=numpy`` (debugging,
comparisons) or for a block of code with ``with kernels.using("numpy"):`` (the tests).

Rules (GUIDE.md): ``cache=True`` everywhere; fastmath flags come from :data:`FASTMATH`, which
leaves out ``nnan`` and ``ninf`` so NaN and Inf stay visible; kernels take contiguous arrays and
scalars only, and the wrappers in each kernel module make sure of that (:func:`contiguous`).

Numba is imported on first use, not at import: ``import numba`` costs a few tenths of a second
that commands such as ``info`` and ``list-presets`` never need. :func:`jit` therefore returns a
:class:`LazyJit` placeholder that becomes a real Numba dispatcher the first time a kernel of its
module runs; every placeholder of that module is swapped for its dispatcher at that moment, so
kernels calling ``@jit`` helpers compile as before. :mod:`engine.warmup` finds the kernels a
graph needs (:func:`recording`) and compiles them up front with progress.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from typing import Any, Callable, Iterator

import numpy as np

#: fastmath without ``nnan``/``ninf``: NaN and exploding gradients must reach the user.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
#: numpy's error model: a float division by zero gives ±inf or NaN, as in the numpy twins,
#: instead of a check and a ZeroDivisionError per division. NOTE: the check also stopped LLVM
#: from vectorising every loop with a division in it (σ, tanh, softmax): 1.1 against 0.13 ns
#: per element for ``1 / (1 + x)`` in float32 (measured, benchmarks/README.md).
ERROR_MODEL = "numpy"

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


def select(name: str) -> None:
    """Run kernels on ``name`` from now on in the current context (a whole CLI command runs in
    its own context); :func:`using` is the scoped form."""
    if name not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    _backend.set(name)


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


# What :func:`recording` collects: (kernel, args) of every kernel call made on the numpy twins.
_recorder: contextvars.ContextVar["list[tuple[Kernel, tuple[Any, ...]]] | None"] = contextvars.ContextVar(
    "backprop_studio_kernel_recorder", default=None)


@contextlib.contextmanager
def recording() -> Iterator["list[tuple[Kernel, tuple[Any, ...]]]"]:
    """Run kernels on their numpy twins and collect every call as ``(kernel, args)``: what a
    graph needs, found without compiling anything (see :mod:`engine.warmup`)."""
    calls: list[tuple[Kernel, tuple[Any, ...]]] = []
    token = _recorder.set(calls)
    try:
        with using("numpy"):
            yield calls
    finally:
        _recorder.reset(token)


_swap_lock = threading.RLock()


class LazyJit:
    """A function to be ``@njit``-ed on first use (see the module docstring)."""

    def __init__(self, fn: Callable[..., Any], fastmath: frozenset[str] = FASTMATH, inline: bool = False,
                 signature: str | None = None) -> None:
        self.py_func = fn
        self.fastmath = fastmath
        self.inline = inline
        self.signature = signature
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._dispatcher: Any = None

    @property
    def dispatcher(self) -> Any:
        """The Numba dispatcher (created, with its module's other helpers, on first access)."""
        if self._dispatcher is None:
            _materialise(self.py_func.__globals__)
        return self._dispatcher

    def __call__(self, *args: Any) -> Any:
        return self.dispatcher(*args)


def _materialise(namespace: dict[str, Any]) -> None:
    """Give every :class:`LazyJit` of a module its dispatcher and put the dispatchers in the
    module's namespace, where Numba looks up the helpers a kernel calls when it compiles it.
    A helper imported from another module (``blas.gemm``) has its home module materialised
    too, since Numba compiles it against that module's namespace."""
    import numba

    from engine.kernels import blas, vecmath

    with _swap_lock:
        # What the kernels call that only exists once Numba does: the link names of their BLAS
        # calls and the vectorisable exp, registered before any kernel compiles or loads.
        blas.bind()
        vecmath.bind()
        for name, value in list(namespace.items()):
            if isinstance(value, LazyJit):
                home = value.py_func.__globals__
                if home is not namespace and value._dispatcher is None:
                    _materialise(home)
                if value._dispatcher is None:
                    value._dispatcher = _njit(numba, value.fastmath, value.inline, value.signature)(value.py_func)
                namespace[name] = value._dispatcher
        for value in list(namespace.values()):
            if isinstance(value, Kernel) and value._lazy._dispatcher is None:
                value._lazy._dispatcher = _njit(numba, FASTMATH)(value._lazy.py_func)


def _njit(numba: Any, fastmath: frozenset[str], inline: bool = False,
          signature: str | None = None) -> Callable[[Callable[..., Any]], Any]:
    options = dict(cache=True, fastmath=set(fastmath), error_model=ERROR_MODEL, nogil=True,
                   inline="always" if inline else "never")
    return numba.njit(signature, **options) if signature else numba.njit(**options)


def jit(fn: Callable[..., Any] | None = None, *, fastmath: frozenset[str] = FASTMATH, inline: bool = False,
        signature: str | None = None) -> Any:
    """``@njit`` with the project's caching and fastmath settings, created on first use.

    ``@jit(fastmath=...)`` narrows the flags for a helper whose arithmetic must not be
    reordered (its own instructions keep them when it is inlined into a kernel).
    ``@jit(inline=True)`` inlines a small helper into its callers before typing (Numba's
    ``inline="always"``): no separate compilation per caller's argument types, which is what
    made the first compile of every kernel slow (a helper called with arrays of three layouts
    compiled three times, each a whole pipeline run of its own).

    ``@jit(signature="void(int64, ...)")`` compiles a helper for that one signature (when its
    module is first used, or from the disk cache) and no other: callers' arguments are
    converted to it, so a helper called with literal flags, int64 or uint64 addresses compiles
    once instead of once per combination."""
    if fn is None:
        return lambda f: LazyJit(f, fastmath, inline, signature)
    return LazyJit(fn, fastmath, inline, signature)


def contiguous(a: Any, dtype: Any = None) -> np.ndarray:
    """``a`` as a C-contiguous, writable array (of ``dtype`` if given), copied only when needed.

    NOTE: writable because Numba compiles a separate specialisation for a read-only array (a
    broadcast view, a frozen constant): seconds of compiling for nothing."""
    a = np.asarray(a, dtype=dtype, order="C")  # not ascontiguousarray: that turns a 0-d array into (1,)
    return a if a.flags.writeable else a.copy()


class Kernel:
    """A jitted kernel and its numpy twin; calling it runs the selected one."""

    registry: "list[Kernel]" = []

    def __init__(self, fn: Callable[..., Any], twin: Callable[..., Any], twin_ns_per_element: float = 10.0) -> None:
        self._lazy = LazyJit(fn)
        self.twin = twin
        #: rough cost of the numpy twin per array element it is given, for a deterministic
        #: estimate of a workload (engine.warmup.plan); twins that loop in Python cost more.
        self.twin_ns_per_element = twin_ns_per_element
        self.__name__ = getattr(twin, "__name__", "kernel").removesuffix("_np")
        self.__doc__ = twin.__doc__
        Kernel.registry.append(self)

    @property
    def fast(self) -> Any:
        """The Numba dispatcher (imports Numba the first time it is needed)."""
        return self._lazy.dispatcher

    def __call__(self, *args: Any) -> Any:
        if _backend.get() == "numba":
            dispatcher = self._lazy._dispatcher
            return (dispatcher if dispatcher is not None else self._lazy.dispatcher)(*args)
        calls = _recorder.get()
        if calls is not None:
            calls.append((self, args))
        return self.twin(*args)

    def __repr__(self) -> str:
        return f"Kernel({self.__name__})"


def kernel(twin: Callable[..., Any], *, twin_ns_per_element: float = 10.0) -> Callable[[Callable[..., Any]], Kernel]:
    """Decorator pairing a to-be-jitted function with its numpy twin::

        def relu_np(x): return np.maximum(x, 0)

        @kernel(relu_np)
        def relu(x): ...loops...
    """

    def wrap(fn: Callable[..., Any]) -> Kernel:
        return Kernel(fn, twin, twin_ns_per_element)

    return wrap
