"""The ``ray`` engine: calls run as Ray tasks (one CPU each) on a Ray cluster.

Without an address it joins the cluster ``RAY_ADDRESS`` names or, failing that, starts a local one with every CPU
of this machine (``ray.init()``); a Ray instance this process already started is used as it is. With ``address``
(``HOST:PORT`` of a running cluster, or ``auto``) it connects there and ships this qpass package to the workers
(``runtime_env`` ``py_modules``), so every node runs the same code; the nodes need qpass's dependencies installed.
Each ``run_each`` task starts the isolated child process on the node it lands on (``qpass.pipeline.isolate``), so a
crash, hang or out-of-memory there is an Outcome like on one machine. A task Ray itself kills (its memory monitor,
when a cluster node runs short) is recorded as ``oom``, not retried; on a local instance this engine starts, the
monitor is off (``RAY_memory_monitor_refresh_ms=0`` unless set), so the kernel decides as with ``--engine process``. Inputs travel as task arguments and results as
return values: the nodes need no shared file system.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from qpass.errors import QpassError
from .engines import Engine
from .isolate import Outcome, first_line, run_isolated


def _call(fn: Callable, x):
    return fn(x)


def import_ray():
    try:
        import ray
    except ImportError:
        raise QpassError("--engine ray needs Ray: pip install 'qpass[cluster]' (or pip install ray)") from None
    return ray


class RayEngine(Engine):
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        super().__init__()
        ray = self._ray = import_ray()
        self.address = address
        self._owned = False
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            try:
                if address:
                    package = str(Path(__file__).resolve().parents[1])  # this qpass, shipped to the workers
                    ray.init(address=address, runtime_env={"py_modules": [package]}, **kwargs)
                else:
                    # Ray's memory monitor sees the node and kills the task worker, not the isolated child that
                    # holds the memory: on a local instance leave out-of-memory to the kernel, as without Ray
                    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
                    ray.init(num_cpus=num_cpus, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise QpassError(f"cannot start or reach {where}: {first_line(exc)}") from None
            self._owned = True
        self.jobs = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable, items: Iterable) -> list:
        ray = self._ray
        remote = ray.remote(num_cpus=1)(_call)
        fn_ref = ray.put(fn)
        refs = [remote.remote(fn_ref, x) for x in items]
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else QpassError(f"a Ray task failed: {first_line(exc)}")) \
                from None

    def run_each(self, fn: Callable, items: Iterable, timeout: float | None = None,
                 max_memory: int | None = None) -> Iterator[tuple[int, Outcome]]:
        """Tasks go out two per cluster CPU at a time (an item's ``for_remote()``, when it has one, is what is
        sent), so a large zoo never sits in the object store all at once."""
        ray = self._ray
        # no retries: Ray retries a task its memory monitor killed without end, and the memory is the call's own
        remote = ray.remote(num_cpus=1, max_retries=0)(run_isolated)
        fn_ref = ray.put(fn)
        queue = list(enumerate(items))[::-1]
        pending: dict = {}
        try:
            while queue or pending:
                while queue and len(pending) < 2 * self.jobs:
                    i, x = queue.pop()
                    x = x.for_remote() if hasattr(x, "for_remote") else x
                    pending[remote.remote(fn_ref, x, timeout, max_memory)] = i
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a lost task or node is that call's outcome
                        oom = isinstance(exc, ray.exceptions.OutOfMemoryError)
                        out = Outcome("oom" if oom else "crashed", reason=f"the Ray task failed: {first_line(exc)}")
                    yield i, out
        finally:  # stopped early (Ctrl-C): cancel what is queued or running
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort while stopping
                    pass

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False

    def describe(self) -> str:
        return f"ray ({self.address or 'local'}, {self.jobs} CPUs)"
