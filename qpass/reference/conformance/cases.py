"""The ONNX node tests as cases: generated from the installed onnx package's ``onnx.backend.test.case``
generators (what onnx's ``gen_node_data`` writes), cached once per onnx version in onnx's own layout
(``node/<case>/model.onnx``, ``node/<case>/test_data_set_0/{input,output}_<i>.pb``) plus an ``index.json``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

ONNX_DOMAINS = ("", "ai.onnx")
_EXPANDED = re.compile(r"_expanded(_ver\d+)?$")


@dataclass(frozen=True)
class NodeCase:
    """One generated node test: the op it tests (for an ``_expanded`` case, the function op its body expands),
    every op its model uses (``domain::op`` outside the default domain), tolerances and its folder."""

    name: str
    op_type: str
    domain: str
    op_types: tuple[str, ...]
    rtol: float
    atol: float
    path: Path

    def load(self) -> tuple[onnx.ModelProto, list[Any], list[Any]]:
        """The model, its inputs and expected outputs (read as onnx's backend test runner reads them)."""
        model = onnx.load(str(self.path / "model.onnx"))
        data = self.path / "test_data_set_0"
        ins = [_read_value(data / f"input_{i}.pb", vi.type) for i, vi in enumerate(graph_inputs(model))
               if (data / f"input_{i}.pb").exists()]
        outs = [_read_value(data / f"output_{i}.pb", vi.type) for i, vi in enumerate(model.graph.output)]
        return model, ins, outs


def cache_dir(onnx_version: str | None = None) -> Path:
    """Where the node tests of ``onnx_version`` (default: the installed one) are cached."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qpass" / "onnx-node-tests" / (onnx_version or onnx.__version__)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _value_proto(value: Any, name: str, type_proto: onnx.TypeProto):
    if isinstance(value, onnx.TensorProto):
        return value
    if type_proto.HasField("sequence_type"):
        return numpy_helper.from_list(value, name)
    if type_proto.HasField("optional_type"):
        return numpy_helper.from_optional(value, name)
    if type_proto.HasField("map_type"):
        return numpy_helper.from_dict(value, name)
    return numpy_helper.from_array(np.asarray(value), name)


def _read_value(path: Path, type_proto: onnx.TypeProto) -> Any:
    raw = path.read_bytes()
    if type_proto.HasField("sequence_type"):
        p = onnx.SequenceProto()
        p.ParseFromString(raw)
        return numpy_helper.to_list(p)
    if type_proto.HasField("optional_type"):
        p = onnx.OptionalProto()
        p.ParseFromString(raw)
        return numpy_helper.to_optional(p)
    if type_proto.HasField("map_type"):
        p = onnx.MapProto()
        p.ParseFromString(raw)
        return numpy_helper.to_dict(p)
    t = onnx.TensorProto()
    t.ParseFromString(raw)
    return numpy_helper.to_array(t)


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ONNX_DOMAINS else f"{node.domain}::{node.op_type}"


def _write_case(root: Path, case) -> None:
    d = root / "node" / case.name
    data = d / "test_data_set_0"
    data.mkdir(parents=True)
    (d / "model.onnx").write_bytes(case.model.SerializeToString())
    inputs, outputs = case.data_sets[0]
    graph = case.model.graph
    for kind, values, infos in (("input", inputs, graph.input), ("output", outputs, graph.output)):
        for j, (v, vi) in enumerate(zip(values, infos)):
            (data / f"{kind}_{j}.pb").write_bytes(_value_proto(v, vi.name, vi.type).SerializeToString())


def _index_entries(cases: Sequence) -> list[dict]:
    single = {c.name: c.model.graph.node[0] for c in cases if len(c.model.graph.node) == 1}
    out = []
    for c in cases:
        tested = single.get(_EXPANDED.sub("", c.name)) or single.get(c.name) or c.model.graph.node[0]
        out.append({"name": c.name, "op_type": tested.op_type, "domain": tested.domain,
                    "op_types": sorted({_op_key(n) for n in c.model.graph.node}), "rtol": c.rtol, "atol": c.atol})
    return out


def generate(dest: Path) -> Path:
    """Generate every node test of the installed onnx into ``dest`` (written to a temporary folder, then moved
    into place, so concurrent runs never see half a cache). Returns ``dest``."""
    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in node_cases.collect_testcases() if c.model is not None and c.data_sets]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        for c in cases:
            _write_case(tmp, c)
        (tmp / "index.json").write_text(json.dumps({"onnx": onnx.__version__, "cases": _index_entries(cases)},
                                                   indent=0))
        try:
            tmp.rename(dest)
        except OSError:  # another run finished first
            if not (dest / "index.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_cases(cache: Path | None = None) -> list[NodeCase]:
    """Every cached node test (generated first when the cache is missing)."""
    root = Path(cache) if cache is not None else cache_dir()
    if not (root / "index.json").exists():
        generate(root)
    index = json.loads((root / "index.json").read_text())
    return [NodeCase(e["name"], e["op_type"], e["domain"], tuple(e["op_types"]), float(e["rtol"]), float(e["atol"]),
                     root / "node" / e["name"]) for e in index["cases"]]


def registered_ops() -> set[str]:
    """Default-domain op types of the reference registry."""
    from ..registry import supported_ops

    return {op for d, ops in supported_ops().items() if d in ONNX_DOMAINS for op in ops}


def runnable(cases: Iterable[NodeCase], ops: set[str] | None = None) -> list[NodeCase]:
    """The cases whose every node is a default-domain op in ``ops`` (default: the reference's)."""
    ops = registered_ops() if ops is None else ops
    return [c for c in cases if set(c.op_types) <= ops]

