"""Golden-simulator kernel for ``qpass::StreamingDataflowPartition``: runs the referenced partition model with a
GoldenExecutor (cached per partition), so a partitioned model (host nodes + partitions) runs end to end.

Partition models are found by the node's ``model_sha256`` among the models registered in this process (by
``qpass.dataflow.partition.partition`` / ``load_partitioned`` / ``PartitionedModel.save``), else by its ``model``
path: absolute, or relative to a registered folder, or to the current directory.

``use_csim(projects)`` (a context manager) makes the kernel run chosen partitions through the g++ C simulation of
their exported HLS projects instead, so the end-to-end golden run checks the generated C++.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import onnx

from ..golden import GoldenError, register
from ..golden.registry import QPASS_DOMAIN

PARTITION_OP = "StreamingDataflowPartition"

_lock = threading.Lock()
_models: dict[str, onnx.ModelProto] = {}  # sha256 -> partition model
_dirs: list[Path] = []
_executors: dict[str, object] = {}
_local = threading.local()  # per thread: {partition node name or model sha256: exported project folder}


def _csim_map() -> dict[str, str]:
    if not hasattr(_local, "csim"):
        _local.csim = {}
    return _local.csim


def _sha(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def register_models(models: dict[str, onnx.ModelProto], base_dir: str | os.PathLike | None = None) -> None:
    """Make partition models findable by content hash (and ``base_dir`` a folder to resolve relative paths)."""
    with _lock:
        for m in models.values():
            _models[_sha(m)] = m
        if base_dir is not None:
            d = Path(base_dir).resolve()
            if d not in _dirs:
                _dirs.insert(0, d)


def resolve(rel: str, sha: str | None = None, base_dir: str | os.PathLike | None = None) -> onnx.ModelProto:
    """The partition model a node references (see the module docstring)."""
    if sha and sha in _models:
        return _models[sha]
    p = Path(rel)
    cands = [p] if p.is_absolute() else \
        ([Path(base_dir) / p] if base_dir is not None else []) + [d / p for d in _dirs] + [Path.cwd() / p]
    for c in cands:
        if c.is_file():
            m = onnx.load(str(c))
            got = _sha(m)
            if sha and got != sha:
                continue
            with _lock:
                _models[got] = m
            return m
    raise GoldenError(f"dataflow partition model {rel!r} not found (searched {', '.join(str(c) for c in cands)})")


def _attrs(node) -> tuple[str, str | None]:
    rel = node.attr("model")
    if not rel:
        raise GoldenError(f"{node.label}: no 'model' attribute")
    return str(rel), node.attr("model_sha256")


def _check(node) -> str | None:
    try:
        resolve(*_attrs(node))
    except GoldenError as exc:
        return str(exc)
    return None


def _executor(model: onnx.ModelProto, sha: str):
    from ..golden import GoldenExecutor

    ex = _executors.get(sha)
    if ex is None:
        ex = GoldenExecutor(model)
        _executors[sha] = ex
    return ex


@register(PARTITION_OP, domain=QPASS_DOMAIN, check=_check)
def run_partition(node, *inputs):
    rel, sha = _attrs(node)
    model = resolve(rel, sha)
    sha = sha or _sha(model)
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    feeds = {n: np.asarray(v) for n, v in zip(names, inputs)}
    cs = _csim_map()
    project = cs.get(sha) or cs.get(node.name)
    if project is not None:
        from .csim_runner import csim

        outs = csim(project, feeds)
    else:
        outs = _executor(model, sha).run(feeds)
    return tuple(np.asarray(outs[o.name], np.float32) for o in model.graph.output)


@contextlib.contextmanager
def use_csim(projects: dict[str, str | os.PathLike]):
    """Within the block (in this thread), the partitions named by model sha256 (or partition node name) run through
    the C simulation of the given exported project folders."""
    cs = _csim_map()
    saved = dict(cs)
    cs.update({k: str(v) for k, v in projects.items()})
    try:
        yield
    finally:
        cs.clear()
        cs.update(saved)
