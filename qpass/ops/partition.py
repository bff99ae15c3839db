"""``qpass::StreamingDataflowPartition``: one node of a parent graph standing for a dataflow partition, whose body
is a separate ONNX model (FINN's ``StreamingDataflowPartition``).

Attributes: ``model`` (the partition file, relative to the parent's folder), ``model_sha256`` (of the partition
model serialised deterministically) and ``partition_id``. The node's inputs and outputs are the partition model's
graph inputs and outputs, in order.

Where the partition models live is a ``PartitionStore`` handed to whoever runs or inlines the parent (the
reference interpreter, ``qpass.hw.partition.inline_partitions``): models by content hash, then files relative to
the store's folders. A store may also name a *runner* per partition (a callable ``feeds -> outputs``), e.g. the C
simulation of an exported HLS project, so the end-to-end reference run checks generated code.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable

import onnx

from qpass.errors import QpassError
from qpass.ops.base import Attr, OpDef
from qpass.ops.common import QPASS_DOMAIN

PARTITION_OP = "StreamingDataflowPartition"
PARTITION_DOMAIN = QPASS_DOMAIN

Runner = Callable[[dict], dict]


def model_sha256(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def is_partition(node) -> bool:
    """A partition node (onnx NodeProto or graphsurgeon Node)."""
    return getattr(node, "op_type", getattr(node, "op", None)) == PARTITION_OP and node.domain == PARTITION_DOMAIN


def partition_ref(node: onnx.NodeProto) -> tuple[str, str | None]:
    """``(model file, sha256 or None)`` of a partition node (a QpassError when it names no model)."""
    return StreamingDataflowPartition.ref(node)


class StreamingDataflowPartition(OpDef):
    """The op's facts. Its reference kernel (``qpass.reference.ops_partition``) runs the partition model with a
    nested interpreter; it has no lowering (``qpass.hw.partition.inline_partitions`` puts the body back)."""

    op_type = PARTITION_OP
    domains = (PARTITION_DOMAIN,)
    attrs = {"model": Attr(str, ""), "model_sha256": Attr(str, ""), "partition_id": Attr(int, 0)}

    @classmethod
    def ref(cls, node) -> tuple[str, str | None]:
        """``(model file, sha256 or None)`` (a QpassError when the node names no model)."""
        rel = cls.attr(node, "model")
        if not rel:
            raise QpassError(f"dataflow partition node {node.name!r} has no 'model' attribute")
        return rel, cls.attr(node, "model_sha256") or None

    @classmethod
    def check(cls, node) -> str | None:
        try:
            cls.ref(node)
        except QpassError as exc:
            return str(exc)
        return None

    @classmethod
    def shape_stand_in(cls, node):
        """None: the shapes are the partition model's (``infer_shape``)."""
        return None

    @classmethod
    def infer_shape(cls, node, input_shapes: list, partitions: "PartitionStore | None" = None) -> list:
        """The partition model's graph output shapes (``None`` for a dimension without a value)."""
        if partitions is None:
            raise QpassError(f"the output shapes of partition {node.name!r} need its PartitionStore")
        model = partitions.resolve(*cls.ref(node))
        return [[d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim]
                for o in model.graph.output]


class PartitionStore:
    """The partition models a parent graph references (see the module docstring). Not shared between runs:
    each partitioned model, loaded file or export owns one."""

    def __init__(self, models: Iterable[onnx.ModelProto] | dict = (), base_dir: str | os.PathLike | None = None,
                 runners: dict[str, Runner] | None = None):
        self._models: dict[str, onnx.ModelProto] = {}
        self._dirs: list[Path] = []
        self.runners: dict[str, Runner] = dict(runners or {})  # partition sha256 or node name -> runner
        self.add(models, base_dir)

    def add(self, models: Iterable[onnx.ModelProto] | dict = (), base_dir: str | os.PathLike | None = None) -> None:
        for m in (models.values() if isinstance(models, dict) else models):
            self._models[model_sha256(m)] = m
        if base_dir is not None:
            d = Path(base_dir).resolve()
            if d not in self._dirs:
                self._dirs.insert(0, d)

    def with_runners(self, runners: dict[str, Runner]) -> "PartitionStore":
        """A store with the same models whose named partitions run through ``runners`` instead."""
        out = PartitionStore(runners={**self.runners, **runners})
        out._models, out._dirs = dict(self._models), list(self._dirs)
        return out

    def runner(self, sha: str | None, node_name: str) -> Runner | None:
        return self.runners.get(sha or "") or self.runners.get(node_name)

    def resolve(self, rel: str, sha: str | None = None) -> onnx.ModelProto:
        """The partition model: by hash among the store's models, else the file ``rel`` (absolute, or relative to
        the store's folders, then to the current directory) whose hash matches."""
        if sha and sha in self._models:
            return self._models[sha]
        p = Path(rel)
        cands = [p] if p.is_absolute() else [d / p for d in self._dirs] + [Path.cwd() / p]
        for c in cands:
            if c.is_file():
                try:
                    m = onnx.load(str(c))
                except Exception:  # noqa: BLE001 - a broken candidate is not the partition
                    continue
                got = model_sha256(m)
                if sha and got != sha:
                    continue
                self._models[got] = m
                return m
        raise QpassError(f"dataflow partition model {rel!r} not found "
                         f"(searched {', '.join(str(c) for c in cands)})")
