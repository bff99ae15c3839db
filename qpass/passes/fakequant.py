"""Fake-quant insertion in any number format, as explicit quantisation nodes (QONNX semantics where they fit).

Which tensors are quantised (placement, after TensorQuant):

- **extrinsic** (default): the inputs of every compute op (Conv, ConvTranspose, Gemm, MatMul, Add, Sub, Mul,
  Concat, AveragePool, GlobalAveragePool). An input reached through order-only ops (MaxPool, Reshape, Flatten,
  Transpose, Squeeze, Unsqueeze, Identity) is quantised before them, so those ops work on quantised values.
- **intrinsic**: additionally the output of every op (graph outputs excepted); the raw output of a linear op is
  its *accumulator*, quantised to ``accumulator`` bits at scale s_in * s_w, so a too-narrow accumulator saturates.

Weights are quantised once, here, with the format's own rounding (stochastic rounding is seeded); their values are
stored on the grid and an idempotent Quant / BipolarQuant node records the grid (scale, bits) for later passes.
Formats without an integer grid (power-of-two, minifloat) store the quantised constant with a datatype annotation.

Rules pick format, rounding, granularity, calibrator and overflow per role (weight, bias, activation,
accumulator), per op type and per node- or tensor-name glob; later rules win::

    - fakequant:
        weights: "sym:8"          # per output channel by default
        activations: "uint8"
        rules:
          - {role: weight, op: Gemm, format: "ternary", granularity: row}
          - {role: activation, match: "/head/*", format: "int16"}
"""
from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from qpass.ir.datatypes import set_annotation
from ..errors import PipelineError
from ..formats import IntGrid, parse_format
from ..formats.rounding import rounding_mode
from qpass.ir.graph import NameAllocator, from_gs, to_gs
from qpass.pipeline.analyses import Calibration
from qpass.pipeline.pass_base import Pass, PassResult
from qpass.ops.common import QONNX_DOMAIN, refuse_if_quantized
from qpass.ops.common import LINEAR_OPS

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Concat", "AveragePool",
               "GlobalAveragePool")
TRANSPARENT_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout")
ROLES = ("weight", "bias", "activation", "accumulator")


@dataclass
class Rule:
    role: str = "*"
    op: str | None = None
    match: str | None = None
    format: str | None = None
    rounding: str | None = None
    granularity: str | None = None
    calibrator: str | None = None
    overflow: str | None = None

    def applies(self, role: str, node: gs.Node, tensor: str) -> bool:
        if self.role not in ("*", role):
            return False
        if self.op and node.op != self.op:
            return False
        if self.match and not (fnmatch.fnmatchcase(node.name, self.match) or fnmatch.fnmatchcase(tensor, self.match)):
            return False
        return True


@dataclass
class FakeQuantOptions:
    weights: str = "sym:8"
    activations: str = "uint8"
    bias: str = "auto"  # int32 at s_in * s_w where both are known, else float; or a format spec; or "float"
    accumulator: str | None = None  # intrinsic placement: e.g. "int16", "fixed:24,0"
    placement: str = "extrinsic"
    rounding: str = "ROUND"  # weights (and bias)
    activation_rounding: str = "ROUND"
    weight_granularity: str = "channel"  # tensor | channel | group:G (G along the reduction axis)
    calibrator: str = "minmax"
    overflow: str = "saturate"
    seed: int = 0
    rules: list = field(default_factory=list)

    def __post_init__(self):
        if self.placement not in ("extrinsic", "intrinsic"):
            raise ValueError(f"placement must be extrinsic or intrinsic, not {self.placement!r}")
        rounding_mode(self.rounding)
        if rounding_mode(self.activation_rounding) == "STOCHASTIC":
            raise ValueError("stochastic rounding is for weights (it needs run-time randomness on activations)")
        rules = []
        for r in self.rules:
            if isinstance(r, Rule):
                rules.append(r)
                continue
            if not isinstance(r, dict):
                raise ValueError(f"each rule is a mapping, got {r!r}")
            unknown = set(r) - {f.name for f in dataclasses.fields(Rule)}
            if unknown:
                raise ValueError(f"unknown rule keys {sorted(unknown)}")
            rule = Rule(**r)
            if rule.role not in ROLES + ("*",):
                raise ValueError(f"rule role must be one of {ROLES}, not {rule.role!r}")
            rules.append(rule)
        self.rules = rules


@dataclass(frozen=True)
class _AccWidth:
    """An accumulator format given by its width alone ("int16", "acc:16", "16")."""
    word_width: int

    @property
    def name(self) -> str:
        return f"int{self.word_width}"


@dataclass
class Choice:
    format: object | None  # a qpass.formats Format, or None for float
    rounding: str
    granularity: str | None
    calibrator: str
    overflow: str


def weight_axes(op: str, attrs: dict, ndim: int) -> tuple[int, int]:
    """(output-channel axis, reduction axis) of a linear op's weight (``attrs``: the node's, for Gemm's transB)."""
    if op == "Conv":
        return 0, 1
    if op == "ConvTranspose":
        return 1, 0
    if op == "Gemm":
        return (0, 1) if int(attrs.get("transB", 0)) else (1, 0)
    return ndim - 1, ndim - 2  # MatMul


class _Quantizer:
    def __init__(self, graph: gs.Graph, opts: FakeQuantOptions, observers: dict, report: dict):
        self.graph, self.opts, self.observers, self.report = graph, opts, observers, report
        self.names = NameAllocator.for_gs(graph)
        self.act_params: dict[str, IntGrid] = {}  # tensor -> the grid of its quantiser
        self.weight_params: dict[str, IntGrid] = {}  # linear node -> the grid of its weight
        self.annotations: dict[str, str] = {}
        self.rng = np.random.default_rng(opts.seed)
        self._formats: dict[str, object] = {}

    def choose(self, role: str, node: gs.Node, tensor: str) -> Choice:
        o = self.opts
        spec = {"weight": o.weights, "activation": o.activations, "bias": o.bias, "accumulator": o.accumulator}[role]
        c = {"format": spec, "rounding": o.activation_rounding if role == "activation" else o.rounding,
             "granularity": o.weight_granularity if role == "weight" else None,
             "calibrator": o.calibrator, "overflow": o.overflow}
        for r in o.rules:
            if r.applies(role, node, tensor):
                for k in c:
                    if getattr(r, k) is not None:
                        c[k] = getattr(r, k)
        fmt = None
        if role == "accumulator" and c["format"] is not None:
            m = re.fullmatch(r"(?:int|acc:?)?(\d+)", str(c["format"]).strip().lower())
            if m:  # an accumulator is an integer on the s_in * s_w grid: only its width matters
                return Choice(_AccWidth(int(m.group(1))), "ROUND", None, c["calibrator"], c["overflow"])
        if c["format"] not in (None, "float", "auto"):
            fmt = self._formats.get(c["format"])
            if fmt is None:
                fmt = self._formats[c["format"]] = parse_format(c["format"])
        elif c["format"] == "auto":
            fmt = "auto"
        if role == "activation" and rounding_mode(c["rounding"]) == "STOCHASTIC":
            raise PipelineError(f"stochastic rounding of activation {tensor!r}: it needs run-time randomness; "
                                "use it for weights")
        return Choice(fmt, rounding_mode(c["rounding"]), c["granularity"], c["calibrator"], c["overflow"])

    # -- activations -------------------------------------------------------------------------------------
    def act_range(self, tensor: str, calibrator: str) -> tuple[float, float] | None:
        obs = self.observers.get(tensor)
        if obs is None:
            return None
        ob = obs.get(calibrator) if isinstance(obs, dict) else (obs if obs.method == calibrator else None)
        if ob is None:
            raise PipelineError(f"calibrator {calibrator!r} was not run for tensor {tensor!r}: "
                                f"add it to the calibrate pass (calibrate: {{method: [{calibrator}]}})")
        return ob.range()

    def activation_quant(self, t: gs.Variable, fmt, ch: Choice) -> IntGrid | None:
        """The format's grid for the activation's calibrated range, or None if the tensor was not calibrated."""
        rng = self.act_range(t.name, ch.calibrator)
        if rng is None:
            return None
        grid = fmt.quant_params(*rng)
        if grid is None:
            raise PipelineError(f"format {fmt.name} is supported for weights only, not for activation {t.name!r}")
        return grid

    def grid_inputs(self, name: str, grid: IntGrid) -> list[gs.Constant]:
        """The scale (Quant: also zero point and bit width) constants of a quantiser node on tensor ``name``."""
        consts = [gs.Constant(self.names(f"{name}_scale"), np.asarray(grid.scale, np.float32))]
        if not grid.bipolar:
            consts += [gs.Constant(self.names(f"{name}_zeropt"), np.asarray(grid.zero_point, np.float32)),
                       gs.Constant(self.names(f"{name}_bitwidth"), np.asarray(grid.bits, np.float32))]
        return consts

    def insert_act_quant(self, t: gs.Variable, grid: IntGrid, mode: str) -> None:
        g, op, attrs = self.graph, grid.op, grid.attrs(mode)
        consts = self.grid_inputs(t.name, grid)
        if t.inputs:
            pre = gs.Variable(self.names(f"{t.name}_float"), dtype=t.dtype, shape=t.shape)
            prod = t.inputs[0]
            prod.outputs[prod.outputs.index(t)] = pre
            g.nodes.append(gs.Node(op, self.names(f"{t.name}_{op}"), attrs=attrs, inputs=[pre] + consts,
                                   outputs=[t], domain=QONNX_DOMAIN))
            out = t
        else:
            out = gs.Variable(self.names(f"{t.name}_quant"), dtype=np.float32, shape=t.shape)
            readers = list(t.outputs)
            g.nodes.append(gs.Node(op, self.names(f"{t.name}_{op}"), attrs=attrs, inputs=[t] + consts,
                                   outputs=[out], domain=QONNX_DOMAIN))
            for r in readers:
                for i, inp in enumerate(r.inputs):
                    if inp is t:
                        r.inputs[i] = out
        if out.dtype is None:
            out.dtype = np.float32
        self.act_params[out.name] = grid
        self.annotations[out.name] = grid.datatype

    # -- weights and biases ------------------------------------------------------------------------------
    def quantized_const(self, name: str, values: np.ndarray, grid: IntGrid, datatype: str) -> gs.Variable:
        """``values`` (on ``grid``) as a constant read through an idempotent quantiser node that records the grid."""
        new = gs.Constant(self.names(f"{name}_q"), values)
        out = gs.Variable(self.names(f"{name}_quantized"), dtype=np.float32, shape=list(values.shape))
        inputs = [new] + self.grid_inputs(name, grid)
        self.graph.nodes.append(gs.Node(grid.op, self.names(f"{name}_{grid.op}"), attrs=grid.attrs("ROUND"),
                                        inputs=inputs, outputs=[out], domain=QONNX_DOMAIN))
        self.annotations[out.name] = datatype
        return out

    def quantize_weight(self, node: gs.Node, idx: int, role: str) -> None:
        t = node.inputs[idx]
        w = np.asarray(t.values)
        ch = self.choose(role, node, t.name)
        if ch.format is None or ch.format == "auto":
            return
        fmt = ch.format
        if role == "weight":
            fmt = fmt.for_weight(ch.granularity, *weight_axes(node.op, node.attrs, w.ndim))
        res = fmt.quantize(w.astype(np.float64), ch.rounding, ch.overflow, rng=self.rng)
        values = np.asarray(res.values, np.float32)
        self.report.setdefault("weights", {})[t.name] = {"format": fmt.name, "node": node.name,
                                                         "saturated": int(res.saturated), "size": int(w.size)}
        grid = fmt.weight_grid(res, w.shape)
        if grid is None:  # no integer grid: the quantised constant is the whole story
            new = gs.Constant(self.names(f"{t.name}_q"), values)
            node.inputs[idx] = new
            self.annotations[new.name] = fmt.datatype
            return
        node.inputs[idx] = self.quantized_const(t.name, values, grid, grid.datatype)
        self.weight_params[node.name] = grid

    def quantize_bias(self, node: gs.Node) -> None:
        if len(node.inputs) < 3 or not isinstance(node.inputs[2], gs.Constant):
            return
        ch = self.choose("bias", node, node.inputs[2].name)
        if ch.format is None:
            return
        if ch.format != "auto":
            self.quantize_weight(node, 2, "bias")
            return
        a = self.input_params(node)
        w = self.weight_params.get(node.name)
        if a is None or w is None or a.bipolar or w.bipolar or np.size(a.scale) != 1:
            self.report.setdefault("float_bias", []).append(node.name)
            return
        b = np.asarray(node.inputs[2].values, np.float64)
        s_w = np.asarray(w.scale, np.float32).reshape(-1)
        s_b = (np.float32(a.scale) * s_w).astype(np.float32)
        if s_b.size not in (1, b.size):
            return
        s_b = np.broadcast_to(s_b, b.shape).astype(np.float32)
        codes = np.clip(np.round(b / s_b.astype(np.float64)), -(2**31), 2**31 - 1)
        values = (codes * s_b.astype(np.float64)).astype(np.float32)
        grid = IntGrid(s_b, 0, 32, True, False)  # int32 codes at s_in * s_w
        node.inputs[2] = self.quantized_const(node.inputs[2].name, values, grid, "INT32")

    def input_params(self, node: gs.Node) -> tuple | None:
        """The quantiser of a layer's input, looking back through order-only ops."""
        t = node.inputs[0]
        for _ in range(64):
            if t.name in self.act_params:
                return self.act_params[t.name]
            if not t.inputs or t.inputs[0].op not in TRANSPARENT_OPS:
                return None
            t = t.inputs[0].inputs[0]
        return None

    def accumulator_quant(self, node: gs.Node) -> IntGrid | None:
        ch = self.choose("accumulator", node, node.outputs[0].name)
        fmt = ch.format
        if fmt is None:
            return None
        bits = getattr(fmt, "word_width", None)  # None for formats without one, and for "auto"
        a = self.input_params(node)
        w = self.weight_params.get(node.name)
        if bits is None or a is None or w is None or a.bipolar or w.bipolar or np.size(a.scale) != 1:
            self.report.setdefault("float_accumulators", []).append(node.name)
            return None
        s_w = np.asarray(w.scale, np.float32).reshape(-1)
        s = (np.float32(a.scale) * s_w).astype(np.float32)
        if s.size > 1:
            rank = len(node.outputs[0].shape) if node.outputs[0].shape is not None else 2
            shape = [1] * rank
            shape[1 if node.op in ("Conv", "ConvTranspose") else rank - 1] = s.size
            s = s.reshape(shape)
        return IntGrid(s, 0, int(bits), True, False)


def _is_float_act(t) -> bool:
    return t is not None and t.name and not isinstance(t, gs.Constant) and \
        (t.dtype is None or np.dtype(t.dtype) in (np.dtype(np.float32), np.dtype(np.float16)))


def _back_through_transparent(t: gs.Variable) -> gs.Variable:
    seen = 0
    while t.inputs and t.inputs[0].op in TRANSPARENT_OPS and seen < 64:
        prod = t.inputs[0]
        src = prod.inputs[0]
        if isinstance(src, gs.Constant) or len(src.outputs) != 1:
            break
        t, seen = src, seen + 1
    return t


def activation_targets(graph: gs.Graph, placement: str) -> list[tuple[gs.Variable, gs.Node]]:
    """(tensor, deciding node) pairs to quantise, in graph order."""
    out, seen = [], set()

    def add(t, node):
        if _is_float_act(t) and t.name not in seen:
            seen.add(t.name)
            out.append((t, node))

    outputs = {t.name for t in graph.outputs}
    for node in graph.nodes:
        if node.op in COMPUTE_OPS:
            for t in node.inputs:
                if _is_float_act(t):
                    add(_back_through_transparent(t), node)
        if placement == "intrinsic" and node.op not in TRANSPARENT_OPS and node.op not in LINEAR_OPS:
            for t in node.outputs:
                if t.name not in outputs:
                    add(t, node)
    return out


class FakeQuant(Pass):
    name = "fakequant"
    requires = (Calibration,)
    Options = FakeQuantOptions

    def run(self, model, ctx):
        refuse_if_quantized(model, "fakequant")
        graph = to_gs(model)
        opts = self.opts
        bw = ctx.report.results.get("bitwidth")
        if bw:  # a bitwidth search ran before: its per-layer rules come after ours (later rules win)
            try:
                opts = dataclasses.replace(opts, rules=list(opts.rules) + list(bw.get("rules", [])),
                                           placement=bw.get("placement") or opts.placement)
            except (TypeError, ValueError) as exc:
                raise PipelineError(f"fakequant: bad rules from the bitwidth pass: {exc}") from None
        report: dict = {"placement": opts.placement}
        qz = _Quantizer(graph, opts, ctx.analyses.get(Calibration, model).observers, report)
        graph.toposort()
        linear = [n for n in graph.nodes if n.op in LINEAR_OPS and len(n.inputs) > 1
                  and isinstance(n.inputs[1], gs.Constant) and np.asarray(n.inputs[1].values).dtype.kind == "f"]
        acc_nodes = list(linear) if opts.placement == "intrinsic" else []
        n_act = 0
        for t, node in activation_targets(graph, opts.placement):
            ch = qz.choose("activation", node, t.name)
            if ch.format is None or ch.format == "auto":
                continue
            q = qz.activation_quant(t, ch.format, ch)
            if q is None:
                report.setdefault("uncalibrated", []).append(t.name)
                continue
            qz.insert_act_quant(t, q, ch.rounding)
            n_act += 1
        for node in linear:
            qz.quantize_weight(node, 1, "weight")
            qz.quantize_bias(node)
        for node in acc_nodes:
            q = qz.accumulator_quant(node)
            if q is not None:
                y = node.outputs[0]
                if y.name not in {o.name for o in graph.outputs}:
                    qz.insert_act_quant(y, q, "ROUND")
                    report.setdefault("accumulators", {})[node.name] = q.bits
        out = from_gs(graph, model)
        if not any(o.domain == QONNX_DOMAIN for o in out.opset_import):
            out.opset_import.append(onnx.helper.make_opsetid(QONNX_DOMAIN, 1))
        for name, dt in qz.annotations.items():
            set_annotation(out, name, dt)
        report["activations"] = {k: v.summary() for k, v in qz.act_params.items()}
        ctx.report.results["fakequant"] = report
        return PassResult(out, True, [f"{n_act} activation and {len(report.get('weights', {}))} weight quantisers "
                                      f"({opts.placement})"])

