"""The values inside If / Loop / Scan bodies during a float run, for calibration.

onnxruntime cannot output a value computed inside a subgraph, so each body runs as its own onnxruntime model,
on exactly the inputs it sees: after the parent graph ran (with the values its control-flow nodes read added as
outputs), each control-flow node is driven in Python by the reference interpreter's own kernel for it
(``qpass.reference.ops_control``, the iteration rules of ``qpass.reference.control``), with an onnxruntime
session standing in for the nested executor of each body. Every iteration's values are observed (Loop and Scan
bodies run once per iteration, only the taken If branch runs), nested control flow recurses the same way, and
the values reproduce onnxruntime's own (the same kernels, unoptimised like the parent's calibration session).

Inlining was the alternative: sound only for If, and only per sample (the taken branch), while a Loop would need
unrolling by a trip count known only at run time. Only float values are observed; the iteration number and
condition of a Loop, integer values and values read only as shapes or indices (``value_roles``) never are.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.ir.graph import outer_inputs, subgraphs
from qpass.ir.ort_session import make_session
from qpass.reference.ops_control import empty_like_declared
from qpass.reference.registry import NodeInfo, lookup

Observe = Callable[[str, np.ndarray], None]


class _Settings:
    """What every body of one model shares: opsets, IR version, threads, the observer sink and skipped names."""

    def __init__(self, model: onnx.ModelProto, threads: int, observe: Callable[[list], None], skip: set[str]):
        self.opset_import = list(model.opset_import)
        self.opsets = {("" if o.domain in ("", "ai.onnx") else o.domain): o.version for o in model.opset_import}
        self.ir_version = model.ir_version
        self.threads = threads
        self.observe = observe  # takes a list of (name, value) pairs: one call per body run
        self.skip = skip
        self.problems: list[str] = []  # control-flow nodes not driven (their bodies go unobserved), and why


class BodyValues:
    """Drives the control-flow nodes of a model's main graph after each run of it (``run(values)``, the values of
    the names in ``needed``) and hands every float value computed inside a body to ``observe``. The values of one
    run are gathered per name and handed over flattened, in one piece (up to ``max_bytes`` at a time), as the
    main graph's batches are."""

    def __init__(self, model: onnx.ModelProto, threads: int, observe: Observe, skip: set[str],
                 max_bytes: int = 64 << 20):
        self._observe = observe
        self._max_bytes = max_bytes
        self._gathered: dict[str, list[np.ndarray]] = {}
        self._bytes = 0
        self.flow = ControlFlow(model.graph, _Settings(model, threads, self._gather, skip))
        self.needed = self.flow.needed
        self.problems = self.flow.settings.problems

    def __bool__(self) -> bool:
        return bool(self.flow.nodes)

    def run(self, values: dict[str, np.ndarray]) -> None:
        self.flow.run(values)
        self._flush()

    def _gather(self, pairs: list[tuple[str, np.ndarray]]) -> None:
        gathered, limit = self._gathered, self._max_bytes
        for name, value in pairs:
            parts = gathered.get(name)
            if parts is None:
                parts = gathered[name] = []
            parts.append(value.reshape(-1))  # each body run returns new arrays
            self._bytes += value.nbytes
            if self._bytes > limit:
                self._flush()

    def _flush(self) -> None:
        for name, parts in self._gathered.items():
            self._observe(name, np.concatenate(parts))
        self._gathered.clear()
        self._bytes = 0


class ControlFlow:
    """The control-flow nodes of one graph: ``run(env)`` drives each of them on the values in ``env``."""

    def __init__(self, graph: onnx.GraphProto, settings: _Settings):
        self.settings = settings
        self.nodes: list[_ControlNode] = []
        for n in graph.node:
            if subgraphs(n):
                try:
                    self.nodes.append(_ControlNode(n, settings))
                except ValueError as exc:
                    settings.problems.append(str(exc))
        self.needed = sorted({x for c in self.nodes for x in c.reads})
        wanted = set(self.needed)
        self._constants = {i.name: i for i in graph.initializer if i.name in wanted}
        self._arrays: dict[str, np.ndarray] | None = None

    def constants(self) -> dict[str, np.ndarray]:
        """This graph's initializers that control-flow nodes read."""
        if self._arrays is None:
            self._arrays = {k: numpy_helper.to_array(v) for k, v in self._constants.items()}
        return self._arrays

    def run(self, env: dict[str, np.ndarray]) -> None:
        scope = {**self.constants(), **env}
        for node in self.nodes:
            node.run(scope)


class _ControlNode:
    """One If / Loop / Scan node, run with its reference kernel and onnxruntime bodies."""

    def __init__(self, node: onnx.NodeProto, settings: _Settings):
        self.proto = node
        self.settings = settings
        self.failed = False
        self.info = NodeInfo.from_proto(node, settings.opsets)
        self.kernel = lookup(node.domain, node.op_type)
        self.bodies = {self.info.name: {attr: _OrtBody(g, settings) for attr, g in subgraphs(node)}}
        captured = sorted({c for b in self.bodies[self.info.name].values() for c in b.captured})
        self.reads = [x for x in node.input if x] + captured
        self.captured = captured
        why = self._problem()
        if why:
            raise ValueError(f"{node.op_type} node {node.name!r}: {why}")

    def _problem(self) -> str | None:
        if self.kernel is None or not self.kernel.with_executor:
            return "no control-flow kernel runs its subgraphs"
        return self.kernel.check(self, self.info) if self.kernel.check is not None else None

    def run(self, env: dict[str, np.ndarray]) -> None:
        if self.failed:
            return
        args = [env[x] if x else None for x in self.proto.input]
        while args and args[-1] is None:
            args.pop()
        try:
            self.kernel.fn(self, self.info, *args, scope={c: env[c] for c in self.captured})
        except Exception as exc:  # noqa: BLE001 - observing bodies is best effort: the main graph's ranges stand
            self.failed = True
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.settings.problems.append(f"{self.info.label}: {first}")


class _OrtBody:
    """A subgraph as its own onnxruntime model (inputs: its formal inputs and the names it captures, typed from the
    first values fed; outputs: every value it computes); the same interface as the reference's ``Body``."""

    def __init__(self, graph: onnx.GraphProto, settings: _Settings):
        self.graph = graph
        self.settings = settings
        self.inputs = [i.name for i in graph.input]
        self.outputs = [o.name for o in graph.output]
        self.captured = sorted(outer_inputs(graph))
        self.computed = list(dict.fromkeys(o for n in graph.node for o in n.output if o))
        self.inner = ControlFlow(graph, settings)
        self._watched = ([n for n in self.inputs if n not in settings.skip],
                         [n for n in self.computed if n not in settings.skip])
        self._sessions: dict[tuple, object] = {}

    def empty_output(self, i: int) -> np.ndarray:
        return empty_like_declared(self.graph.output[i])

    def runner(self, scope: dict[str, np.ndarray]):
        outer = {c: np.asarray(scope[c]) for c in self.captured}

        def run(values: list) -> list:
            feeds = {k: np.asarray(v) for k, v in zip(self.inputs, values)}
            feeds.update(outer)
            got = dict(zip(self.computed, self._session(feeds).run(self.computed, feeds))) if self.computed else {}
            self._observe(feeds, got)
            env = {**feeds, **got}
            self.inner.run(env)
            consts = self.inner.constants()
            return [got[o] if o in got else feeds[o] if o in feeds else self._constant(o, consts) for o in self.outputs]

        return run

    def _constant(self, name: str, consts: dict) -> np.ndarray:
        if name in consts:
            return consts[name]
        init = next(i for i in self.graph.initializer if i.name == name)
        return numpy_helper.to_array(init)

    def _observe(self, feeds: dict, got: dict) -> None:
        inputs, computed = self._watched
        pairs = [(name, feeds[name]) for name in inputs if feeds[name].dtype.kind == "f"]
        if got:  # sequence values (lists) are not observed, their tensors are
            pairs += [(name, v) for name in computed if isinstance(v := got[name], np.ndarray) and v.dtype.kind == "f"]
        if pairs:
            self.settings.observe(pairs)

    def _session(self, feeds: dict):
        key = tuple((k, v.dtype.str, v.ndim) for k, v in feeds.items())
        sess = self._sessions.get(key)
        if sess is None:
            sess = self._sessions[key] = make_session(self._model(feeds), threads=self.settings.threads,
                                                      optimize=False)
        return sess

    def _model(self, feeds: dict) -> onnx.ModelProto:
        g = onnx.GraphProto()
        g.CopyFrom(self.graph)
        del g.input[:]
        g.input.extend(onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype),
                                                          [None] * v.ndim) for k, v in feeds.items())
        del g.output[:]
        g.output.extend(onnx.helper.make_value_info(name, onnx.TypeProto()) for name in self.computed)
        model = onnx.helper.make_model(g, opset_imports=self.settings.opset_import)
        model.ir_version = self.settings.ir_version
        return model
