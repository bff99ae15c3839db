"""Execution engines: where a batch of independent, picklable calls runs.

An engine offers two things:

- ``map(fn, items)``: ``[fn(x) for x in items]`` in order, an exception in any call propagates (the bitwidth
  search fans its per-layer sensitivity runs out this way; results do not depend on the engine);
- ``run_each(fn, items, timeout=, max_memory=)``: each call in its own fresh process (``qpass.pipeline.isolate``),
  yielding ``(index, Outcome)`` as calls finish; a call that crashes, hangs or runs out of memory becomes an
  Outcome and never stops the others (``qpass zoo`` converts one model per call).

Engines: ``local`` (this process, one call after another; ``run_each`` still isolates each call), ``process``
(a pool of ``jobs`` worker processes on this machine) and ``ray`` (tasks on a Ray cluster: ``pip install
qpass[cluster]``; see ``qpass.pipeline.ray_engine``). ``make_engine(name, jobs=, address=)`` builds one; use it
as a context manager so its workers stop when done.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
from functools import partial
from typing import Any, Callable, Iterable, Iterator

from qpass.errors import QpassError
from .isolate import Children, Outcome, run_isolated

ENGINES = ("local", "process", "ray")


class Engine:
    """Base class: serial ``map`` and sequential isolated ``run_each``; subclasses parallelise."""

    name = "local"
    jobs = 1

    def __init__(self):
        self.children = Children()

    def map(self, fn: Callable, items: Iterable) -> list:
        return [fn(x) for x in items]

    def run_each(self, fn: Callable, items: Iterable, timeout: float | None = None,
                 max_memory: int | None = None) -> Iterator[tuple[int, Outcome]]:
        for i, x in enumerate(items):
            yield i, run_isolated(fn, x, timeout, max_memory, self.children)

    def stop(self) -> None:
        """Kill every running call (after Ctrl-C); the engine yields nothing more."""
        self.children.kill_all()

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            self.stop()
        self.close()
        return False

    def describe(self) -> str:
        return self.name


def map_chunk(fn: Callable, chunk: list) -> list:
    return [fn(x) for x in chunk]


class LocalEngine(Engine):
    """Everything in this process, one call after another."""


class ProcessEngine(Engine):
    """``jobs`` worker processes on this machine (fresh interpreters: no state leaks in from the parent)."""

    name = "process"

    def __init__(self, jobs: int | None = None):
        super().__init__()
        self.jobs = int(jobs or os.cpu_count() or 1)

    def map(self, fn: Callable, items: Iterable) -> list:
        """One fresh worker process per chunk of the items (``jobs`` chunks at most, run at once)."""
        items = list(items)
        if len(items) <= 1 or self.jobs <= 1:
            return [fn(x) for x in items]
        n = min(self.jobs, len(items))
        chunks = [items[k::n] for k in range(n)]
        with cf.ThreadPoolExecutor(max_workers=n) as threads:
            outs = list(threads.map(lambda c: run_isolated(partial(map_chunk, fn), c, children=self.children),
                                    chunks))
        results: list = [None] * len(items)
        for k, out in enumerate(outs):
            if not out.ok:
                raise out.value if isinstance(out.value, Exception) else QpassError(
                    f"a {self.name} worker failed ({out.status}): {out.reason}")
            results[k::n] = out.value
        return results

    def run_each(self, fn: Callable, items: Iterable, timeout: float | None = None,
                 max_memory: int | None = None) -> Iterator[tuple[int, Outcome]]:
        items = list(items)
        with cf.ThreadPoolExecutor(max_workers=max(1, self.jobs)) as threads:
            futs = {threads.submit(run_isolated, fn, x, timeout, max_memory, self.children): i
                    for i, x in enumerate(items)}
            try:
                for f in cf.as_completed(futs):
                    yield futs[f], f.result()
            finally:  # the consumer stopped early (Ctrl-C): nothing more starts, what runs is killed
                pending = [f for f in futs if not f.done()]
                for f in pending:
                    f.cancel()
                if pending:
                    self.children.kill_all()

    def describe(self) -> str:
        return f"process ({self.jobs} workers)"


def make_engine(name: str = "local", jobs: int | None = None, address: str | None = None,
                **ray_options: Any) -> Engine:
    """An engine by name: ``local``, ``process`` (``jobs`` workers) or ``ray`` (``address`` of a running cluster;
    None: the one ``RAY_ADDRESS`` names, else a new local one)."""
    if address is not None and name != "ray":
        raise QpassError(f"--address names a Ray cluster; it needs --engine ray (not {name})")
    if name == "local":
        return LocalEngine()
    if name == "process":
        return ProcessEngine(jobs)
    if name == "ray":
        from .ray_engine import RayEngine

        return RayEngine(address=address, **ray_options)
    raise QpassError(f"unknown engine {name!r} (known: {', '.join(ENGINES)})")
