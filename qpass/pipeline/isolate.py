"""Run one picklable call in a fresh Python process that may crash, hang or run out of memory without harm.

``run_isolated(fn, arg, timeout, max_memory)`` pickles ``(fn, arg)`` into a private temporary folder, starts
``python -m qpass.pipeline.isolate FOLDER`` in its own session, and waits. The child sets its address-space limit
(``max_memory`` MB, ``RLIMIT_AS``) and asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``), so
a killed driver leaves no orphan behind. What happened comes back as an ``Outcome``:

- ``ok``: ``value`` is what ``fn`` returned;
- ``error``: ``fn`` raised (``reason``: the exception's type and first line; ``value``: the exception, when it
  pickles);
- ``oom``: ``fn`` raised MemoryError (or onnxruntime failed to allocate), or the process was killed by SIGKILL
  while no timeout was pending (the kernel's out-of-memory killer);
- ``timeout``: still running after ``timeout`` seconds (the process group is killed);
- ``crashed``: the process died some other way (a signal such as SIGSEGV, or an exit without a result).
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

STATUSES = ("ok", "error", "oom", "timeout", "crashed")
OOM_MARKERS = ("bad_alloc", "Failed to allocate memory", "out of memory", "Cannot allocate memory")


@dataclass
class Outcome:
    """The result of one isolated call: ``status`` in STATUSES, ``value`` when ok, else a one-line ``reason``."""

    status: str
    value: Any = None
    reason: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}".rstrip(": ")


def classify(exc: BaseException) -> str:
    """``oom`` for an allocation failure (the exception or one it was raised from), else ``error``."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, MemoryError) or any(m in str(exc) for m in OOM_MARKERS):
            return "oom"
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return "error"


class Children:
    """The live child processes of one engine, so an interrupted run can kill them all (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopping = False

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)
        if self.stopping:
            kill_group(proc)

    def remove(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        self.stopping = True
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            kill_group(p)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_reason(code: int) -> str:
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _python_path() -> str:
    """PYTHONPATH for the child: this qpass first (it may come from a Ray runtime_env), then the caller's."""
    here = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join([here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def run_isolated(fn: Callable, arg: Any, timeout: float | None = None, max_memory: int | None = None,
                 children: Children | None = None) -> Outcome:
    """Call ``fn(arg)`` in a fresh process; never raises for what happens inside it (see the module doc)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qpass-isolated-") as tmp:
        folder = Path(tmp)
        with open(folder / "call.pkl", "wb") as f:
            pickle.dump((fn, arg), f, protocol=pickle.HIGHEST_PROTOCOL)
        env = dict(os.environ, QPASS_ISOLATED_PARENT=str(os.getpid()),
                   QPASS_ISOLATED_MEMORY=str(int(max_memory or 0)), PYTHONPATH=_python_path())
        with open(folder / "stderr.txt", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "qpass.pipeline.isolate", str(folder)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                    start_new_session=True)
            if children is not None:
                children.add(proc)
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                kill_group(proc)
                proc.wait()
            finally:
                if children is not None:
                    children.remove(proc)
        seconds = time.perf_counter() - t0
        if timed_out:
            return Outcome("timeout", reason=f"still running after the {timeout:g} s timeout", seconds=seconds)
        result = folder / "result.pkl"
        if proc.returncode == 0 and result.is_file():
            with open(result, "rb") as f:
                status, value, reason = pickle.load(f)
            return Outcome(status, value, reason, seconds)
        last = _tail(folder / "stderr.txt")
        if proc.returncode == -signal.SIGKILL and not (children is not None and children.stopping):
            return Outcome("oom", reason="killed by SIGKILL (the out-of-memory killer?)" + (f": {last}" if last else ""),
                           seconds=seconds)
        why = _signal_reason(proc.returncode) if proc.returncode < 0 else f"exited with code {proc.returncode}"
        if any(m in last for m in OOM_MARKERS):
            return Outcome("oom", reason=f"{why}: {last}", seconds=seconds)
        return Outcome("crashed", reason=why + (f": {last}" if last else ""), seconds=seconds)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere); exit if it already has."""
    parent = int(os.environ.get("QPASS_ISOLATED_PARENT", "0") or 0)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent and os.getppid() != parent:
        os._exit(3)


def _limit_memory() -> None:
    mb = int(os.environ.get("QPASS_ISOLATED_MEMORY", "0") or 0)
    if mb > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))


def _child(folder: Path) -> None:
    _die_with_parent()
    _limit_memory()
    with open(folder / "call.pkl", "rb") as f:
        fn, arg = pickle.load(f)
    try:
        out = ("ok", fn(arg), "")
    except BaseException as exc:  # noqa: BLE001 - every failure of the call is reported, none escapes
        out = (classify(exc), exc, first_line(exc))
    try:
        data = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - an exception that does not pickle travels as its reason only
        data = pickle.dumps((out[0], None, out[2]) if out[0] != "ok" else ("error", None, "the result does not pickle"))
    tmp = folder / "result.pkl.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / "result.pkl")


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
