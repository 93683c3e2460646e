"""The fuzz harness: bytes of a file in, an :class:`Outcome` out, every case isolated and bounded.

``Harness().outcome(target, data, suffix)`` writes ``data`` to a file and hands it to one of the
:data:`tests.fuzz.targets.TARGETS` (``load``, ``info``, ``run``; the editor's Open path can be
added there). Each case runs in a child forked from a server process that imported the engine
once (a fresh interpreter per case would cost ~2 s of imports), under

- an address-space limit (``RLIMIT_AS``: what the server had mapped plus :data:`MEMORY_BUDGET`),
- a timeout (``SIGALRM``), and with stdout and stderr captured.

The outcome is one of:

- ``ok``: the target accepted the file (exit 0), or ran it and reported a failure of the run
  (exit 1) in one line;
- ``error``: it refused the file with one clear line (exit 2);
- ``crash``: a traceback, an internal error ("bug in Backprop Studio", exit 3), a signal, an
  exit code that means nothing, or an error message that is not one line;
- ``hang``: the timeout struck;
- ``blowup``: it ran out of memory under the limit (a MemoryError, or a message saying so).

Only the first two are acceptable; :meth:`Outcome.acceptable` says so.

Run ``python -m tests.fuzz.harness --serve`` to start a server by hand (the client does it).
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEMORY_BUDGET = 1536 * 2**20  # bytes a case may map beyond what the server had
TIMEOUT = 60  # seconds per case: generous, since the machine is shared; a real hang takes forever
MAX_MESSAGE = 2000  # characters: a longer error line is not a clear message
_HARNESS_FAILURE = 70  # the target itself raised: a crash of the case


@dataclass(frozen=True)
class Outcome:
    kind: str  # ok | error | crash | hang | blowup
    code: int | None  # exit code (None: killed by a signal)
    message: str  # the error line, or what went wrong
    seconds: float
    peak_mb: float  # the child's peak resident memory

    @property
    def acceptable(self) -> bool:
        return self.kind in ("ok", "error")

    def __str__(self) -> str:
        return f"{self.kind} (exit {self.code}, {self.seconds:.1f} s, {self.peak_mb:.0f} MB): {self.message[:300]}"


def classify(code: int | None, signal_name: str | None, stdout: str, stderr: str, seconds: float, peak_mb: float) -> Outcome:
    """What a finished case means (see the module docstring)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    # Progress notes are not errors; the error line is the one the CLI marks as such.
    errors = [line for line in lines if "error:" in line]
    message = errors[-1] if errors else (lines[-1] if lines else stdout.strip()[-300:])
    if signal_name == "SIGALRM":
        return Outcome("hang", None, f"no answer within {TIMEOUT} s", seconds, peak_mb)
    if signal_name is not None:
        return Outcome("crash", None, f"killed by {signal_name}; stderr: {stderr[-500:]}", seconds, peak_mb)
    if "MemoryError" in stderr or "ran out of memory" in stderr:
        return Outcome("blowup", code, message, seconds, peak_mb)
    if "Traceback" in stderr or code == _HARNESS_FAILURE:
        return Outcome("crash", code, stderr[-1500:], seconds, peak_mb)
    if "bug in Backprop Studio" in stderr or code not in (0, 1, 2):
        return Outcome("crash", code, message, seconds, peak_mb)
    if code != 0 and (len(errors) != 1 or len(errors[0]) > MAX_MESSAGE):
        return Outcome("crash", code, f"not one clear line: {len(errors)} error lines, {len(message)} characters: {message[:300]}",
                       seconds, peak_mb)
    return Outcome("error" if code == 2 else "ok", code, message, seconds, peak_mb)


# --- the server (a process that forks one child per case) --------------------------------------


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _run_case(target: str, path: str, timeout: int, budget: int) -> dict:
    from tests.fuzz.targets import TARGETS

    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the case
            code = _HARNESS_FAILURE
            try:
                os.dup2(out_f.fileno(), 1)
                os.dup2(err_f.fileno(), 2)
                limit = _vm_size() + budget
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
                signal.alarm(timeout)
                code = TARGETS[target](path)
            except BaseException:  # noqa: BLE001 -- anything escaping the target is the finding
                traceback.print_exc()
                code = _HARNESS_FAILURE
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code if isinstance(code, int) and 0 <= code < 256 else _HARNESS_FAILURE)
        _, status, usage = os.wait4(pid, 0)
        seconds = time.monotonic() - t0
        out_f.seek(0)
        err_f.seek(0)
        stdout = out_f.read().decode("utf-8", "replace")
        stderr = err_f.read().decode("utf-8", "replace")
    sig = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    return asdict(classify(code, sig, stdout, stderr, seconds, usage.ru_maxrss / 1024))


def serve(warm: list[str]) -> None:
    """Answer one JSON request per line on stdin ({"target", "path", "timeout", "budget"}) with
    one JSON outcome per line on stdout."""
    import engine.cli  # noqa: F401  -- import once, here, so that every child starts warm
    import engine.serialize  # noqa: F401

    out = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), encoding="utf-8", line_buffering=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # whatever the warm-up prints must not corrupt the answers
    from tests.fuzz.targets import TARGETS

    for path in warm:  # kernels loaded here are loaded for every child
        for target in ("info", "run"):
            try:
                TARGETS[target](path)
            except Exception:  # noqa: BLE001 -- warming only
                pass
    out.write("ready\n")
    for line in sys.stdin:
        req = json.loads(line)
        out.write(json.dumps(_run_case(req["target"], req["path"], req.get("timeout", TIMEOUT), req.get("budget", MEMORY_BUDGET))) + "\n")


# --- the client --------------------------------------------------------------------------------


class Harness:
    """Runs cases through a server process (started on first use; :meth:`close` stops it)."""

    def __init__(self, *, warm: list[str] | None = None, timeout: int = TIMEOUT, budget: int = MEMORY_BUDGET) -> None:
        self.timeout = timeout
        self.budget = budget
        self.dir = Path(tempfile.mkdtemp(prefix="bps-fuzz-"))
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", PYTHONHASHSEED="0",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
        env.pop("BACKPROP_STUDIO_MEMORY_LIMIT", None)  # the engine's own limit follows RLIMIT_AS
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.harness", "--serve", *(warm or [])], cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        ready = self.proc.stdout.readline()  # type: ignore[union-attr]
        if ready.strip() != "ready":
            raise RuntimeError(f"the fuzz server did not start: {ready!r}")
        self.count = 0

    def outcome(self, target: str, data: bytes, suffix: str) -> Outcome:
        """Hand ``data`` (the bytes of a file named ``*{suffix}``) to ``target``."""
        self.count += 1
        path = self.dir / f"case{self.count}{suffix}"
        path.write_bytes(data)
        try:
            req = {"target": target, "path": str(path), "timeout": self.timeout, "budget": self.budget}
            self.proc.stdin.write(json.dumps(req) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            answer = self.proc.stdout.readline()  # type: ignore[union-attr]
            if not answer:
                raise RuntimeError("the fuzz server died")
            return Outcome(**json.loads(answer))
        finally:
            path.unlink(missing_ok=True)
            for leftover in self.dir.iterdir():  # what a case saved next to its file
                leftover.unlink(missing_ok=True)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()  # type: ignore[union-attr]
        for leftover in self.dir.iterdir():
            leftover.unlink(missing_ok=True)
        self.dir.rmdir()

    def __enter__(self) -> "Harness":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2:])
    else:
        print(__doc__)
