"""Lowering of quantisation ops to standard ONNX, so that any qpass model runs in plain onnxruntime.

- ``Quant`` with ROUND rounding, an integer zero point, at most 8 bits (16 at opset >= 21), and a per-tensor or
  per-axis scale becomes QuantizeLinear -> (Clip on the integer range when narrower) -> DequantizeLinear, which
  onnxruntime runs with integer kernels.
- Everything else is emulated exactly in float32 with standard ops, in the same operation order as the op's
  definition (qpass/qops.py), so the golden simulator and onnxruntime compute the same values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UnsupportedOpError
from qpass.ir.graph import NameAllocator, from_gs, main_opset, to_gs
from qpass.pipeline.analyses import Calibration
from qpass.pipeline.pass_base import Pass, PassResult
from qpass.ops.common import QONNX_DOMAINS, QPASS_DOMAIN, int_bounds, mt_channel_axis

LOWERINGS = {}


def lowering(op_type: str):
    def deco(fn):
        LOWERINGS[op_type] = fn
        return fn

    return deco


class _Builder:
    """Appends nodes to a graph with fresh names derived from the node being lowered."""

    def __init__(self, graph: gs.Graph, names: NameAllocator, base: str):
        self.graph, self.names, self.base = graph, names, base

    def const(self, value, dtype=np.float32) -> gs.Constant:
        return gs.Constant(self.names(f"{self.base}_c"), np.asarray(value, dtype=dtype))

    def op(self, op_type: str, inputs, attrs=None, out: gs.Variable | None = None, dtype=np.float32) -> gs.Variable:
        out = out if out is not None else gs.Variable(self.names(f"{self.base}_{op_type.lower()}"), dtype=dtype)
        self.graph.nodes.append(gs.Node(op_type, self.names(f"{self.base}_{op_type}"), attrs=attrs or {},
                                        inputs=list(inputs), outputs=[out]))
        return out


def _const_value(t) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def round_with_mode(b: _Builder, y: gs.Variable, mode: str, out: gs.Variable | None = None) -> gs.Variable:
    mode = mode.upper()
    if mode in ("ROUND", "HALF_EVEN"):
        return b.op("Round", [y], out=out)
    if mode == "FLOOR":
        return b.op("Floor", [y], out=out)
    if mode == "CEIL":
        return b.op("Ceil", [y], out=out)
    sign = b.op("Sign", [y])
    mag = b.op("Abs", [y])
    if mode == "DOWN":
        r = b.op("Floor", [mag])
    elif mode == "UP":
        r = b.op("Ceil", [mag])
    elif mode == "HALF_UP":  # ties away from zero
        r = b.op("Floor", [b.op("Add", [mag, b.const(0.5)])])
    elif mode == "HALF_DOWN":  # ties toward zero
        r = b.op("Ceil", [b.op("Sub", [mag, b.const(0.5)])])
    else:
        raise UnsupportedOpError(f"rounding mode {mode!r} cannot be lowered to ONNX")
    return b.op("Mul", [sign, r], out=out)


def _per_axis(scale: np.ndarray, x_rank: int | None) -> int | None | str:
    """None for a scalar scale, the axis for a scale varying along one axis, 'no' otherwise."""
    if scale.size == 1:
        return None
    nontrivial = [i for i, d in enumerate(scale.shape) if d != 1]
    if len(nontrivial) != 1 or x_rank is None:
        return "no"
    return x_rank - scale.ndim + nontrivial[0]


@lowering("Quant")
def lower_quant(b: _Builder, node: gs.Node, opset: int) -> None:
    x, s_t, z_t, bw_t = node.inputs[:4]
    out = node.outputs[0]
    signed = bool(node.attrs.get("signed", 1))
    narrow = bool(node.attrs.get("narrow", 1))  # QONNX: required, default 1
    mode = node.attrs.get("rounding_mode", "ROUND")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    scale, zp, bits = _const_value(s_t), _const_value(z_t), _const_value(bw_t)
    if bits is None:
        raise UnsupportedOpError(f"Quant node {node.name!r} has a run-time bit width; qpass needs a constant")
    bits = int(bits)
    lo, hi = int_bounds(bits, signed, narrow)
    native = (scale is not None and zp is not None and mode.upper() in ("ROUND", "HALF_EVEN")
              and np.all(zp == np.round(zp)) and np.all(np.mod(zp, 2) == 0)  # round(v+z) == round(v)+z needs even z
              and np.all(scale > 0) and np.unique(zp).size == 1
              and bits > 1 and (bits <= 8 or (bits <= 16 and opset >= 21)))
    axis = _per_axis(scale, len(x.shape) if x.shape is not None else None) if native else "no"
    if native and axis != "no" and isinstance(x, gs.Constant) and signed and bits <= 8 and np.all(zp == 0):
        # a quantised constant (weights): store its codes as uint8 + 128, the encoding onnxruntime's x86 integer
        # kernels compute exactly (int8 weights saturate int16 pair sums on AVX2; see quantize_qdq)
        v = np.asarray(x.values, np.float32) / scale.astype(np.float32)
        codes = np.round(np.clip(v, np.float32(lo), np.float32(hi))).astype(np.int16) + 128
        flat = scale.reshape(-1).astype(np.float32)
        attrs = {"axis": int(axis)} if axis is not None else {}
        z_c = np.full(flat.shape, 128, np.uint8) if axis is not None else np.uint8(128)
        b.op("DequantizeLinear", [b.const(codes.astype(np.uint8), np.uint8),
                                  b.const(flat if axis is not None else flat[0]), b.const(z_c, np.uint8)],
             attrs, out=out)
        return
    if native and axis != "no":
        width = 8 if bits <= 8 else 16
        npdt = {(8, True): np.int8, (8, False): np.uint8, (16, True): np.int16, (16, False): np.uint16}[(width, signed)]
        flat = scale.reshape(-1).astype(np.float32)
        s_c = b.const(flat if axis is not None else flat[0])
        z_c = b.const(np.full(flat.shape, int(zp.reshape(-1)[0])) if axis is not None else int(zp.reshape(-1)[0]),
                      npdt)
        attrs = {"axis": int(axis)} if axis is not None else {}
        q = b.op("QuantizeLinear", [x, s_c, z_c], attrs, dtype=npdt)
        info = np.iinfo(npdt)
        if (lo, hi) != (info.min, info.max):
            q = b.op("Clip", [q, b.const(lo, npdt), b.const(hi, npdt)], dtype=npdt)
        b.op("DequantizeLinear", [q, s_c, z_c], attrs, out=out)
        return
    s_f = s_t if scale is None else b.const(scale.astype(np.float32))
    z_f = z_t if zp is None else b.const(zp.astype(np.float32))
    y = b.op("Add", [b.op("Div", [x, s_f]), z_f])
    if bits == 1 and signed:  # QONNX's special case: a 1-bit signed Quant is a sign function
        cond = b.op("GreaterOrEqual", [y, b.const(0.0)], dtype=np.bool_)
        y = b.op("Where", [cond, b.const(1.0), b.const(-1.0)])
    else:
        y = b.op("Clip", [y, b.const(lo), b.const(hi)])
        y = round_with_mode(b, y, mode)
    b.op("Mul", [b.op("Sub", [y, z_f]), s_f], out=out)


@lowering("BipolarQuant")
def lower_bipolar(b: _Builder, node: gs.Node, opset: int) -> None:
    x, s = node.inputs[:2]
    cond = b.op("GreaterOrEqual", [x, b.const(0.0)], dtype=np.bool_)
    pm = b.op("Where", [cond, b.const(1.0), b.const(-1.0)])
    b.op("Mul", [pm, s], out=node.outputs[0])


@lowering("Trunc")
def lower_trunc(b: _Builder, node: gs.Node, opset: int) -> None:
    if len(node.inputs) != 5:
        raise UnsupportedOpError(f"Trunc node {node.name!r}: only Trunc v1 (5 inputs) is supported")
    x, s, z, in_bw, out_bw = node.inputs
    ib, ob = _const_value(in_bw), _const_value(out_bw)
    if ib is None or ob is None:
        raise UnsupportedOpError(f"Trunc node {node.name!r} has run-time bit widths")
    mode = node.attrs.get("rounding_mode", "FLOOR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    y = b.op("Round", [b.op("Add", [b.op("Div", [x, s]), z])])
    y = b.op("Div", [y, b.const(np.float32(2.0 ** (float(ib) - float(ob))))])
    y = round_with_mode(b, y, mode)
    b.op("Mul", [b.op("Sub", [y, z]), s], out=node.outputs[0])


@lowering("MultiThreshold")
def lower_multithreshold(b: _Builder, node: gs.Node, opset: int) -> None:
    x, t = node.inputs[:2]
    thr = _const_value(t)
    if thr is None or x.shape is None:
        raise UnsupportedOpError(f"MultiThreshold {node.name!r} needs constant thresholds and a known input rank")
    rank = len(x.shape)
    layout = node.attrs.get("data_layout", "")
    layout = layout.decode() if isinstance(layout, bytes) else layout
    axis = mt_channel_axis(layout, rank)
    c, steps = thr.shape
    shape = [1] * (rank + 1)
    shape[axis] = c
    shape[-1] = steps
    t_c = b.const(thr.astype(np.float32).reshape(shape))
    xe = b.op("Unsqueeze", [x, b.const([rank], np.int64)])
    ge = b.op("GreaterOrEqual", [xe, t_c], dtype=np.bool_)
    cnt = b.op("ReduceSum", [b.op("Cast", [ge], {"to": 1}), b.const([rank], np.int64)], {"keepdims": 0})
    out_scale = float(node.attrs.get("out_scale", 1.0))
    out_bias = float(node.attrs.get("out_bias", 0.0))
    y = b.op("Mul", [cnt, b.const(out_scale)])
    b.op("Add", [y, b.const(out_bias)], out=node.outputs[0])


@dataclass
class LowerOptions:
    keep_native_qdq: bool = True


class LowerOrt(Pass):
    name = "lower_ort"
    preserves = (Calibration,)  # as before the analysis manager: lowering kept the calibrated ranges
    Options = LowerOptions

    def run(self, model, ctx):
        graph = to_gs(model)
        opset = main_opset(model)
        names = NameAllocator.for_gs(graph)
        custom = [n for n in graph.nodes if n.domain in QONNX_DOMAINS or n.domain == QPASS_DOMAIN]
        missing = sorted({f"{n.domain}::{n.op}" for n in custom if n.op not in LOWERINGS})
        if missing:
            raise UnsupportedOpError(f"no ONNX lowering for {', '.join(missing)}")
        for node in custom:
            LOWERINGS[node.op](_Builder(graph, names, node.name or node.op), node, opset)
            node.outputs.clear()
            node.inputs.clear()
        if not custom:
            return PassResult(model, False)
        out = from_gs(graph, model)
        keep = [o for o in out.opset_import if o.domain not in QONNX_DOMAINS + (QPASS_DOMAIN,)]
        del out.opset_import[:]
        out.opset_import.extend(keep)
        return PassResult(out, True, [f"lowered {len(custom)} quantisation ops to standard ONNX"])
