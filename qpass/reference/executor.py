"""GoldenExecutor: a numpy interpreter for ONNX graphs that defines the reference numbers of qpass.

Construction checks every op against the registry (so an unsupported op fails before any computation), sorts
the nodes, and plans *integer fusion*: a Conv / ConvTranspose / Gemm / MatMul / Add / Mul / AveragePool /
GlobalAveragePool / MaxPool whose data inputs come from DequantizeLinear nodes and whose only consumer is a
QuantizeLinear runs as one integer kernel (see ``ops_integer``), producing the QuantizeLinear output directly,
the way onnxruntime's QLinear* / QGemm kernels do. Everything else runs in float between DQ and Q.

``run`` evaluates only the nodes needed for the requested outputs, caches everything that depends only on
initializers, and frees intermediates after their last use.

Subgraphs (If branches, Loop and Scan bodies) run in nested executors built with the parent (``bodies``): a
node holding subgraphs also reads every outer-scope value its subgraphs capture, and hands them to its kernel as
``scope``. A nested executor takes the parent's constants it captures as its own and the other captured names
(``outer``) as feeds.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.errors import QpassError, UnsupportedOpError
from qpass.ir.graph import outer_inputs, subgraphs, topo_order
from . import ops_control, ops_float, ops_integer, ops_partition, ops_quant, ops_sequence, quant_linear  # noqa: F401
from . import ops_nbits  # noqa: F401  (kernels: com.microsoft MatMulNBits)
from . import conv_fold
from qpass.ops import op_of
from qpass.ops.partition import PartitionStore
from .registry import NodeInfo, lookup
from .steps import GoldenError, Repeated, call as _call, lean, run_live, store as _store

OVERFLOW_MODES = ("saturate", "wrap")


@dataclass
class _Step:
    inputs: list[str]
    outputs: list[str]
    run: Any  # callable(list[np.ndarray | None]) -> list[np.ndarray]
    label: str
    const: bool = False
    node: NodeInfo | None = None
    invariant: bool = False  # depends only on constants and outer-scope values (a subgraph's loop invariant)
    pure: bool = True  # the same inputs give the same outputs (not a random generator)
    # how the plans call it: ``call(*values of args)`` -> one array or a list / tuple of outputs; an empty name in
    # ``args`` reads None (the environment maps "" to None). Default: ``run`` on every input.
    call: Any = None
    args: tuple = ()

    def __post_init__(self):
        if self.call is None:
            self.call, self.args = (lambda *v, run=self.run: run(list(v))), tuple(self.inputs)


@dataclass
class _Plan:
    steps: list[_Step]
    free_after: list[list[str]] = field(default_factory=list)
    # per step, resolved once: (run, inputs, outputs, cache kind 0 none / 1 constant / 2 invariant, names to free,
    # label); the names to free exclude initializers
    compiled: list[tuple] = field(default_factory=list)
    # once every constant step's values are cached: the initializers and those values (``base``), and the
    # compiled steps left to run on a copy of it (``live``)
    base: dict | None = None
    live: list[tuple] = field(default_factory=list)
    lean: list[tuple] = field(default_factory=list)  # ``live`` without the cache kinds (``steps.run_live``)


def _sorted_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Stable topological order of ``graph.node`` (ONNX requires it, exporters do not always comply)."""
    try:
        return topo_order(list(graph.node))
    except ValueError as exc:
        raise GoldenError(str(exc)) from None


class Body:
    """One subgraph of a node, run by a nested executor: ``runner(scope)(formal inputs) -> formal outputs``."""

    def __init__(self, parent: "GoldenExecutor", graph: onnx.GraphProto):
        self.graph = graph
        self.inputs = [i.name for i in graph.input]
        self.outputs = [o.name for o in graph.output]
        self.captured = sorted(outer_inputs(graph))
        consts = {c: parent.initializers[c] for c in self.captured
                  if c in parent.initializers and c not in parent.overridable}
        self.fed = tuple(c for c in self.captured if c not in consts)
        self.executor = parent.nested(graph, consts, self.fed)

    def runner(self, scope: dict[str, np.ndarray]):
        """The body on fixed outer values: what depends only on them (and on formal inputs whose values do not
        change between calls) is computed once per runner."""
        return self.executor.repeated(self.inputs, {c: scope[c] for c in self.fed}, self.outputs)

    def empty_output(self, i: int) -> np.ndarray:
        return ops_control.empty_like_declared(self.graph.output[i])


class GoldenExecutor:
    """Run an ONNX model in numpy, bit-exactly, with onnxruntime's integer semantics for fused QDQ layers.

    ``acc_bits``: width of the signed accumulators of fused integer layers (None: exact int64). ``overflow``:
    what an accumulator does when a partial sum leaves that range: ``"saturate"`` (clamp after every addition,
    bias first, then the products in weight order) or ``"wrap"`` (two's complement). ``stats`` holds per fused
    node: exact accumulator range, overflowed accumulators, saturation events, clipped outputs.
    """

    def __init__(self, model: onnx.ModelProto, acc_bits: int | None = None, overflow: str = "saturate",
                 partitions: PartitionStore | None = None, outer: tuple[str, ...] = (),
                 constants: dict[str, np.ndarray] | None = None):
        if overflow not in OVERFLOW_MODES:
            raise ValueError(f"overflow must be one of {OVERFLOW_MODES}, not {overflow!r}")
        if acc_bits is not None and not (2 <= int(acc_bits) <= 64):
            raise ValueError("acc_bits must be between 2 and 64")
        self.model = model
        self.partitions = partitions if partitions is not None else PartitionStore()
        self._sub_executors: dict[int, "GoldenExecutor"] = {}
        self.acc_bits = None if acc_bits is None else int(acc_bits)
        self.overflow = overflow
        g = model.graph
        self.opsets = {("" if imp.domain in ("", "ai.onnx") else imp.domain): imp.version for imp in model.opset_import}
        self.initializers: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.initializers.update(constants or {})
        self.outer = tuple(outer)  # names a subgraph reads from enclosing scopes, fed with the formal inputs
        self.input_names = [vi.name for vi in g.input if vi.name not in self.initializers]
        self.overridable = {vi.name for vi in g.input if vi.name in self.initializers}
        self.output_names = [o.name for o in g.output]
        self.input_dtypes = {}
        # sequence- and optional-typed inputs: a list fed for one is a sequence value, never stacked into a tensor
        self._typed_inputs = frozenset(vi.name for vi in g.input if vi.type.WhichOneof("value") in
                                       ("sequence_type", "optional_type"))
        for vi in g.input:
            et = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
            if et and vi.name not in self.initializers:
                self.input_dtypes[vi.name] = onnx.helper.tensor_dtype_to_np_dtype(et)
        self.nodes = []
        seen: set[str] = set()
        for i, proto in enumerate(_sorted_nodes(g)):
            n = NodeInfo.from_proto(proto, self.opsets, i)
            base, k = n.name, 1
            while n.name in seen:  # fusion plans and stats are keyed by node name
                n.name, k = f"{base}__{k}", k + 1
            seen.add(n.name)
            self.nodes.append(n)
        self.stats: dict[str, dict[str, Any]] = {}  # shared with the nested executors of subgraphs
        self.bodies: dict[str, dict[str, Body]] = {}  # node name -> {attribute: nested executor of a subgraph}
        self._check_supported()
        self.fused: dict[str, str] = {}  # compute node name -> fused kernel kind
        self.not_fused: dict[str, str] = {}  # compute node name -> reason it runs in float
        self._build_steps()
        self._const_cache: dict[str, np.ndarray] = {}
        self.scratch: dict = {}  # kernels' per-node working copies of constant operands (ops_float.linear)
        self._plans: dict[tuple, _Plan] = {}
        self._required = tuple(self.input_names) + self.outer  # names every run must be fed

    # ------------------------------------------------------------------ construction

    def _check_supported(self) -> None:
        problems = []
        for n in self.nodes:
            why = self._build_bodies(n)
            if why:
                problems.append(f"{n.label}: {why}")
                continue
            k = lookup(n.domain, n.op_type)
            if k is None:
                problems.append(f"no kernel for {n.label}")
                continue
            if k.check is not None:
                reason = k.check(self, n) if k.with_executor else k.check(n)
                if reason:
                    problems.append(f"{n.label}: {reason}")
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UnsupportedOpError(f"golden simulator: {problems[0]}{more}")

    def _build_bodies(self, n: NodeInfo) -> str | None:
        graphs = subgraphs(n.proto) if n.proto is not None else []
        if not graphs:
            return None
        try:
            self.bodies[n.name] = {attr: Body(self, g) for attr, g in graphs}
        except UnsupportedOpError as exc:
            return f"in its subgraph: {str(exc).removeprefix('golden simulator: ')}"
        return None

    def nested(self, graph: onnx.GraphProto, constants: dict[str, np.ndarray],
               outer: tuple[str, ...]) -> "GoldenExecutor":
        """An executor of a subgraph of this model, with this executor's settings and statistics."""
        model = onnx.helper.make_model(graph, opset_imports=self.model.opset_import)
        ex = GoldenExecutor(model, self.acc_bits, self.overflow, self.partitions, outer, constants)
        ex._share_stats(self.stats)
        return ex

    def _share_stats(self, stats: dict) -> None:
        self.stats = stats
        for bodies in self.bodies.values():
            for b in bodies.values():
                b.executor._share_stats(stats)

    def _build_steps(self) -> None:
        self.quant_linear = quant_linear.plan(self.nodes, self.initializers)
        fctx = ops_integer.FusionContext(self)
        plans = fctx.plan_all()
        self.fused = {name: op.kind for name, op in plans.items() if not isinstance(op, str)}
        self.not_fused = {name: op for name, op in plans.items() if isinstance(op, str)}
        fused_q = {op.q_node: op for op in plans.values() if not isinstance(op, str)}
        fused_compute = {name: op for name, op in plans.items() if not isinstance(op, str)}
        steps: list[_Step] = []
        for n in self.nodes:
            if n.name in fused_q:
                continue  # its output comes from the fused step
            op = fused_compute.get(n.name)
            if op is None or {o for o in n.outputs if o} != {op.output}:
                steps.append(self._node_step(n))  # (a float-output fusion, e.g. QGemm: its step replaces the node's)
            if op is not None:
                steps.append(_Step(list(op.inputs), [op.output], self._fused_runner(op), f"{op.kind} {n.name!r}",
                                   node=n))
        self.steps = steps
        consts = set(self.initializers) - self.overridable
        invariant = consts | set(self.outer)
        for s in steps:
            s.pure = s.node is not None and \
                s.node.op_type not in ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike")
            s.const = s.pure and all((not x) or x in consts for x in s.inputs)
            s.invariant = s.pure and not s.const and all((not x) or x in invariant for x in s.inputs)
            if s.const:
                consts.update(o for o in s.outputs if o)
            if s.const or s.invariant:
                invariant.update(o for o in s.outputs if o)
        self._producer = {o: i for i, s in enumerate(steps) for o in s.outputs if o}
        self._plan_folds(set(fused_q) | set(fused_compute) | set(self.quant_linear))

    def _plan_folds(self, skip: set) -> None:
        """Conv + BatchNormalization (+ Relu) chains onnxruntime folds at load time (``conv_fold``): per chain, the
        indices of its steps and the one step that replaces them in a plan that needs none of the hidden names."""
        consts = {k: v for k, v in self.initializers.items() if k not in self.overridable}
        index = {id(s.node): i for i, s in enumerate(self.steps) if s.node is not None}
        self._folds = []
        for f in conv_fold.find_folds(self.nodes, consts, self.output_names, frozenset(skip)):
            members = [index.get(id(n)) for n in f.members]
            if None in members:
                continue
            first = self.steps[members[0]]
            step = _Step([f.conv.inputs[0]], [f.output], None, f"Conv+BatchNormalization {f.conv.name!r}",
                         node=f.conv, invariant=first.invariant, call=conv_fold.runner(f, self),
                         args=(f.conv.inputs[0],))
            step.const = first.const
            self._folds.append((tuple(members), step, frozenset(f.hidden)))

    def sub_executor(self, model: onnx.ModelProto) -> "GoldenExecutor":
        """A nested interpreter for a sub-model (a dataflow partition), built once per model and sharing this
        executor's settings and partition store."""
        ex = self._sub_executors.get(id(model))
        if ex is None:
            ex = GoldenExecutor(model, self.acc_bits, self.overflow, self.partitions)
            self._sub_executors[id(model)] = ex
        return ex

    def _node_step(self, n: NodeInfo) -> _Step:
        k = lookup(n.domain, n.op_type)
        kernel = (lambda node, *a, fn=k.fn, **kw: fn(self, node, *a, **kw)) if k.with_executor else k.fn
        if n.name in self.quant_linear:
            info = self.quant_linear[n.name]

            def run_int(values, n=n, kernel=kernel, info=info):
                args = list(values)
                while args and args[-1] is None:
                    args.pop()
                return [quant_linear.run(n, kernel, info, *args)]

            return _Step(list(n.inputs), list(n.outputs), run_int, n.label + " (integer)", node=n)

        op = op_of(n)
        saturated = op.saturated if op is not None else None
        captured = sorted({c for b in self.bodies.get(n.name, {}).values() for c in b.captured})
        explicit = len(n.inputs)
        has_bodies = n.name in self.bodies

        def run(values, n=n, kernel=kernel):
            args = list(values[:explicit])
            while args and args[-1] is None and len(args) > 0:
                args.pop()
            scope = {"scope": dict(zip(captured, values[explicit:]))} if has_bodies else {}
            out = kernel(n, *args, **scope)
            if saturated is not None and args[0] is not None:
                self._count_saturation(n, saturated(n, *args))
            return list(out) if isinstance(out, (tuple, list)) else [out]

        step = _Step(list(n.inputs) + captured, list(n.outputs), run, n.label, node=n)
        if saturated is None and not has_bodies:  # the kernel itself, its node bound, absent trailing inputs dropped
            step.call = functools.partial(k.fn, self, n) if k.with_executor else functools.partial(k.fn, n)
            step.args = tuple(n.inputs[:max((i + 1 for i, x in enumerate(n.inputs) if x), default=0)])
        return step

    def _fused_runner(self, op):
        def run(values, op=op):
            return [op.compute(values, self)]
        return run

    def record(self, node: str, kind: str, **counts) -> None:
        """Accumulate integer-kernel statistics of one call (used by the fused kernels)."""
        st = self.stats.setdefault(node, {"kind": kind, "calls": 0, "outputs": 0, "acc_bits": self.acc_bits,
                                          "overflow": self.overflow, "acc_min": None, "acc_max": None,
                                          "overflowed": 0, "saturation_events": 0, "output_clipped": 0})
        st["calls"] += 1
        for k, v in counts.items():
            if k == "acc_min":
                st[k] = v if st[k] is None else min(st[k], v)
            elif k == "acc_max":
                st[k] = v if st[k] is None else max(st[k], v)
            elif v is not None:
                st[k] = st.get(k, 0) + int(v)

    def _count_saturation(self, n: NodeInfo, counts: tuple[int, int] | None) -> None:
        """Every quantiser counts the elements it saturated (its op's ``saturated``; None: none this call)."""
        if counts is None:
            return
        st = self.stats.setdefault(n.name, {"kind": "quant", "calls": 0, "outputs": 0, "saturated": 0})
        st["calls"] += 1
        st["outputs"] += counts[0]
        st["saturated"] += counts[1]

    def reset_stats(self) -> None:
        self.stats.clear()

    # ------------------------------------------------------------------ running

    def _plan(self, outputs: tuple[str, ...]) -> _Plan:
        if outputs in self._plans:
            return self._plans[outputs]
        known = set(self.initializers) | set(self.input_names) | set(self.outer)
        need: set[str] = set(outputs)
        chosen = [False] * len(self.steps)
        for i in range(len(self.steps) - 1, -1, -1):
            s = self.steps[i]
            if any(o in need for o in s.outputs if o):
                chosen[i] = True
                need.update(x for x in s.inputs if x)
        missing = [o for o in outputs if o not in self._producer and o not in known]
        if missing:
            raise GoldenError(f"unknown output {missing[0]!r}: no node produces it")
        folded: dict[int, _Step | None] = {}  # step index -> its folded replacement (None: dropped)
        for members, step, hidden in self._folds:
            if all(chosen[i] for i in members) and not hidden.intersection(outputs):
                folded.update(dict.fromkeys(members[:-1]))
                folded[members[-1]] = step
        steps = [folded.get(i, s) for i, s in enumerate(self.steps) if chosen[i] and folded.get(i, s) is not None]
        last: dict[str, int] = {}
        for i, s in enumerate(steps):
            for x in s.inputs:
                if x:
                    last[x] = i
        free = [[] for _ in steps]
        keep = set(outputs)
        for name, i in last.items():
            if name not in keep:
                free[i].append(name)
        plan = _Plan(steps, free)
        plan.compiled = [(st.call, st.args, tuple(st.outputs), 1 if st.const else 2 if st.invariant else 0,
                          tuple(x for x in f if x not in self.initializers), st.label) for st, f in zip(steps, free)]
        self._plans[outputs] = plan
        return plan

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None,
            memo: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Evaluate the graph on ``feeds``; return ``{name: array}`` for ``outputs`` (default: graph outputs).

        ``memo`` (a subgraph's): keeps the values that depend only on constants and the ``outer`` feeds, for
        the next call with the same outer values (the iterations of one Loop or Scan)."""
        outputs = tuple(outputs or self.output_names)
        for n in self._required:
            if n not in feeds:
                raise GoldenError(f"no value fed for graph input {n!r}")
        plan = self._plan(outputs)
        if plan.base is None:
            env: dict[str, np.ndarray] = dict(self.initializers)
            steps = plan.compiled
        else:
            env, steps = plan.base.copy(), plan.live
        for k, v in feeds.items():
            env[k] = self._fed(k, v)
        if plan.base is not None and memo is None:  # nothing to cache: every step runs, no probes
            run_live(plan.lean, env)
            return {o: env[o] for o in outputs}
        self._execute(steps, env, memo)
        if plan.base is None:
            self._settle(plan)
        return {o: env[o] for o in outputs}

    def _settle(self, plan: _Plan) -> None:
        """After a plan's first run: its constant steps' values become part of the environment each run starts
        from, and those steps leave the list to run (no per-run cache probes)."""
        const = [c for c in plan.compiled if c[3] == 1]
        if not all(o in self._const_cache for c in const for o in c[2] if o):
            return
        base = dict(self.initializers)
        base.update({o: self._const_cache[o] for c in const for o in c[2] if o})
        plan.base, plan.live = base, [c for c in plan.compiled if c[3] != 1]
        plan.lean = lean(plan.live)
        plan.base[""] = None

    def repeated(self, inputs: list[str], outer: dict[str, np.ndarray], outputs: list[str]):
        """``run(values) -> [outputs]`` of this (sub)graph called again and again on the same ``outer`` values
        (a Loop's or Scan's iterations): see ``steps.Repeated``."""
        return Repeated(self, inputs, outer, tuple(outputs)).run

    def repeat_plan(self, outputs: tuple[str, ...], fixed: frozenset) -> tuple[list[tuple], list[tuple]]:
        """The compiled steps of ``outputs`` with the invariant ones (cache kind 2) re-marked to count the formal
        inputs ``fixed`` as invariant too, and the steps left to run on every call after the first (without the
        kind)."""
        key = ("repeat", outputs, fixed)
        if key not in self._plans:
            plan = self._plan(outputs)
            invariant = set(self.initializers) - self.overridable
            invariant.update(self.outer, fixed)
            first = []
            for st, c in zip(plan.steps, plan.compiled):
                if c[3] == 0 and st.pure and all((not x) or x in invariant for x in st.inputs):
                    c = c[:3] + (2,) + c[4:]
                if c[3]:
                    invariant.update(o for o in st.outputs if o)
                first.append(c)
            self._plans[key] = first, lean([c for c in first if c[3] == 0])
        return self._plans[key]

    def start(self, feeds: dict, compiled: list[tuple], memo: dict) -> dict:
        """The environment after running ``compiled`` on checked ``feeds`` (invariant values into ``memo``)."""
        for n in self._required:
            if n not in feeds:
                raise GoldenError(f"no value fed for graph input {n!r}")
        env = dict(self.initializers)
        for k, v in feeds.items():
            env[k] = self._fed(k, v)
        self._execute(compiled, env, memo)
        return env

    def _fed(self, name: str, v):
        """A fed value as the graph declares it: a list for a sequence- or optional-typed input is a sequence
        value (never stacked); numbers of another numeric dtype are cast to the declared one."""
        if type(v) is not np.ndarray:
            v = ops_sequence.as_value(v) if name in self._typed_inputs else np.asarray(v)
        want = self.input_dtypes.get(name)
        if want is not None and v.dtype != want and v.dtype.kind in "biuf" and want.kind in "biuf":
            v = v.astype(want)  # e.g. float64 data for a float32 input: compute as the model declares
        return v

    def _execute(self, compiled: list[tuple], env: dict, memo: dict | None) -> None:
        """Run compiled steps on ``env`` (in place): constant steps read / fill the executor's cache, invariant
        ones ``memo`` (when given), intermediates are freed after their last use."""
        const_cache = self._const_cache
        env[""] = None  # an absent input
        for call, args, outs, kind, free, label in compiled:
            cache = None if kind == 0 else const_cache if kind == 1 else memo
            if cache is not None and all(o in cache for o in outs if o):
                for o in outs:
                    if o:
                        env[o] = cache[o]
            else:
                _store(_call(call, args, env, label), outs, env, cache)
            for name in free:
                env.pop(name, None)

    # ------------------------------------------------------------------ introspection

    def describe(self) -> str:
        lines = [f"{len(self.nodes)} nodes, {len(self.fused)} integer-fused layers"]
        for name, kind in self.fused.items():
            lines.append(f"  {kind:26s} {name}")
        for name, why in self.not_fused.items():
            lines.append(f"  float {name}: {why}")
        return "\n".join(lines)

