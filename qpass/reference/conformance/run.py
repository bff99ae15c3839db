"""Run one case on one runner and classify the outcome (see the package docstring)."""
from __future__ import annotations

import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable

from qpass.errors import UnsupportedOpError
from .cases import NodeCase, graph_inputs
from .compare import compare
from .sessions import SESSIONS, SessionFactory

OUTCOMES = ("pass", "wrong", "refused", "error", "timeout")
DEFAULT_TIMEOUT = 20.0  # seconds per case


class CaseTimeout(BaseException):
    """Raised inside a case that ran past its time limit (a BaseException: kernels' ``except Exception`` keep out)."""


@dataclass(frozen=True)
class Result:
    """The outcome of one case on one runner, with a one-line reason unless it passed."""

    case: str
    outcome: str
    reason: str = ""
    seconds: float = 0.0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    return f"{type(exc).__name__}: {line}"[:240] if line else type(exc).__name__


@contextmanager
def _time_limit(seconds: float | None):
    """Raise CaseTimeout in the main thread after ``seconds`` (elsewhere the caller checks the elapsed time)."""
    usable = seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(signum, frame):
        raise CaseTimeout()

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_case(case: NodeCase, runner: str | SessionFactory = "reference",
             timeout: float | None = DEFAULT_TIMEOUT) -> Result:
    """Run one case on ``runner`` ("reference", "onnxruntime", or a factory ``model -> (feeds -> outputs)``)
    and classify it."""
    factory = SESSIONS[runner] if isinstance(runner, str) else runner
    model, inputs, expected = case.load()
    feeds = {vi.name: v for vi, v in zip(graph_inputs(model), inputs)}
    t0 = time.perf_counter()

    def done(outcome: str, reason: str = "") -> Result:
        elapsed = time.perf_counter() - t0
        if timeout and elapsed > timeout and outcome != "pass":
            outcome, reason = "timeout", f"over {timeout:g} s"
        return Result(case.name, outcome, reason, elapsed)

    stage = "construction"
    try:
        with _time_limit(timeout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session = factory(model)
            stage = "run"
            got = session(feeds)
    except CaseTimeout:
        return done("timeout", f"over {timeout:g} s ({stage})")
    except UnsupportedOpError as exc:
        return done("refused", str(exc).removeprefix("golden simulator: "))
    except Exception as exc:  # noqa: BLE001 - classified, one line
        if stage == "construction" and runner == "onnxruntime":
            return done("refused", _first_line(exc))
        return done("error", f"{'at construction: ' if stage == 'construction' else ''}{_first_line(exc)}")
    why = compare(expected, got, case.rtol, case.atol)
    return done("pass") if why is None else done("wrong", why)


def run_all(cases: Iterable[NodeCase], runner: str | SessionFactory = "reference",
            timeout: float | None = DEFAULT_TIMEOUT) -> dict[str, Result]:
    return {c.name: run_case(c, runner, timeout) for c in cases}


