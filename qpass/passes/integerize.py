"""Streamlining, part 1: make the tensors between quantisers integer.

- ``to_int_codes``: every activation quantiser ``Quant(x, s, z, b)`` becomes ``Quant(Div(x, s), 1, z, b)``, whose
  output is the integer code c = q - z, followed by a dequantising ``Mul(c, s)``. Bit-exact: Quant computes x / s
  first and its output is c * s.
- ``move_dequant``: a dequantising Mul by a scalar moves forward through order-only ops (and MaxPool when s > 0),
  so that it sits right before the layer that reads it.
- ``integer_linear``: a Conv / Gemm / MatMul reading ``Mul(c, s_in)`` with a weight on an integer grid
  (``Quant(W, s_w)``) becomes the integer op on (c, codes) -- the accumulator -- followed by ``Mul(acc, s_in*s_w)``
  and ``Add(bias)``. This is exactly how the golden simulator evaluates such a layer of the fake-quant graph.
- ``integer_add``: an Add of two dequantised integer tensors whose scales are powers of two (exact in float)
  becomes an integer Add of codes aligned by an integer factor, followed by one dequantising Mul; with other scales,
  an Add followed by a quantiser becomes ``p*a + q*b`` and a MultiThreshold when that is exact on every input pair
  (``qpass.passes.exact_add``).
- ``integer_pool``: GlobalAveragePool / AveragePool (no padding) over a power-of-two-scaled integer tensor becomes
  an integer window sum followed by ``Mul(s)`` and ``Div(N)`` (the same float result, since s * c is exact); a global
  average with another scale too, when no sum lies within float rounding of the next quantiser's steps
  (``qpass.passes.exact_add.average_is_exact``).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.ir.builder import GraphBuilder
from qpass.ir.graph import from_gs, to_gs
from qpass.analysis.intinfo import (LINEAR_OPS, TRANSPARENT_OPS, const, int_range, is_int_quant, is_pow2, is_quant,
                       quant_params, weight_codes)
from qpass.pipeline.pass_base import Pass, PassResult
from qpass.ops.common import QONNX_DOMAINS


class _IntPass(Pass):
    def run(self, model, ctx):
        graph = to_gs(model)
        self.b = GraphBuilder(graph)
        n = self.rewrite(graph, ctx)
        if not n:
            return PassResult(model, False)
        return PassResult(from_gs(graph, model), True, [f"{n} rewrites"])



def dequant_of(t: gs.Tensor):
    """(codes tensor, scalar scale) if ``t`` is ``Mul(c, s)`` of an integer tensor c by a constant scalar."""
    if isinstance(t, gs.Constant) or not t.inputs:
        return None
    m = t.inputs[0]
    if m.op != "Mul":
        return (t, np.float32(1.0)) if int_range(t) is not None else None
    if len(m.inputs) != 2:
        return None
    for ci, si in ((0, 1), (1, 0)):
        s = const(m.inputs[si])
        if s is not None and s.size == 1 and const(m.inputs[ci]) is None and int_range(m.inputs[ci]) is not None:
            return m.inputs[ci], np.float32(s.reshape(-1)[0])
    return None


class ToIntCodes(_IntPass):
    name = "to_int_codes"

    def rewrite(self, graph, ctx):
        count = 0
        for q in list(graph.nodes):
            if not q.outputs or q.domain not in QONNX_DOMAINS or isinstance(q.inputs[0], gs.Constant):
                continue
            if is_quant(q):
                p = quant_params(q)
                if p is None or is_int_quant(q) or np.size(p[0]) != 1 or np.size(p[1]) != 1:
                    continue
                x, y = q.inputs[0], q.outputs[0]
                scaled = self.b.var(f"{x.name}_div")
                self.b.node("Div", [x, self.b.const(p[0].reshape(()), name=f"{q.name}_s")], [scaled])
                codes = self.b.var(f"{y.name}_codes", y)
                q.inputs[0] = scaled
                q.inputs[1] = self.b.const(1.0, name=f"{q.name}_one")
                q.outputs[0] = codes
                self.b.node("Mul", [codes, self.b.const(p[0].reshape(()), name=f"{q.name}_deq")], [y])
                count += 1
            elif is_quant(q, "BipolarQuant"):
                s = const(q.inputs[1])
                if s is None or np.all(s == 1):
                    continue
                y = q.outputs[0]
                codes = self.b.var(f"{y.name}_codes", y)
                q.inputs[1] = self.b.const(1.0, name=f"{q.name}_one")
                q.outputs[0] = codes
                self.b.node("Mul", [codes, self.b.const(s, name=f"{q.name}_deq")], [y])
                count += 1
        return count


class MoveDequant(_IntPass):
    name = "move_dequant"

    def rewrite(self, graph, ctx):
        count = 0
        for m in list(graph.nodes):
            if m.op != "Mul" or not m.outputs:
                continue
            y = m.outputs[0]
            d = dequant_of(y)
            if d is None or len(y.outputs) != 1 or y in graph.outputs:
                continue
            c, s = d
            nxt = y.outputs[0]
            if nxt.op not in TRANSPARENT_OPS or nxt.inputs[0] is not y or (nxt.op == "MaxPool" and not s > 0):
                continue
            if len(nxt.outputs) != 1:
                continue
            out = nxt.outputs[0]
            moved = self.b.var(f"{out.name}_codes", out)
            nxt.inputs[0] = c
            nxt.outputs[0] = moved
            m.inputs[0] = moved
            m.inputs[1] = self.b.const(s, name=f"{m.name}_s")
            m.outputs[0] = out
            count += 1
        return count


def _channel_shape(node: gs.Node, rank: int | None, channels: int) -> list[int]:
    rank = rank or 2
    shape = [1] * rank
    shape[1 if node.op in ("Conv", "ConvTranspose") else rank - 1] = channels
    return shape


class IntegerLinear(_IntPass):
    name = "integer_linear"

    def rewrite(self, graph, ctx):
        count = 0
        for node in list(graph.nodes):
            if node.op not in LINEAR_OPS or len(node.inputs) < 2 or not node.outputs:
                continue
            d = dequant_of(node.inputs[0])
            wc = weight_codes(node.inputs[1])
            if d is None or wc is None:
                continue
            if node.op == "MatMul" and wc[0].ndim != 2:
                continue
            c, s_in = d
            codes, s_w = wc
            has_bias = len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].name
            if c is node.inputs[0] and isinstance(node.inputs[1], gs.Constant) and np.all(s_w == 1) \
                    and s_in == 1 and not has_bias:
                continue  # already integer
            out_axis = {"Conv": 0, "ConvTranspose": 1}.get(node.op)
            if node.op == "Gemm":
                out_axis = 0 if int(node.attrs.get("transB", 0)) else 1
            elif node.op == "MatMul":
                out_axis = 1
            channels = codes.shape[out_axis]
            s_w = np.asarray(s_w, np.float32).reshape(-1)
            if s_w.size not in (1, channels):
                continue
            s_comb = (np.float32(s_in) * s_w).astype(np.float32)
            bias = None
            if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].name:
                bias = node.inputs[2]
            y = node.outputs[0]
            rank = len(y.shape) if y.shape is not None else None
            acc = self.b.var(f"{y.name}_acc", y)
            node.inputs[0] = c
            node.inputs[1] = self.b.const(codes, name=f"{node.name}_wcodes")
            while len(node.inputs) > 2:
                node.inputs.pop()
            node.outputs[0] = acc
            shaped = s_comb.reshape(_channel_shape(node, rank, channels)) if s_comb.size > 1 else s_comb.reshape(())
            if bias is None:
                self.b.node("Mul", [acc, self.b.const(shaped, name=f"{node.name}_scale")], [y])
            else:
                mid = self.b.var(f"{y.name}_scaled", y)
                self.b.node("Mul", [acc, self.b.const(shaped, name=f"{node.name}_scale")], [mid])
                b = bias
                bv = const(b) if isinstance(b, gs.Constant) else None
                if bv is not None:
                    b = self.b.const(bv.reshape(_channel_shape(node, rank, bv.size)), name=f"{node.name}_bias")
                elif b.inputs and is_quant(b.inputs[0]) and isinstance(b.inputs[0].inputs[0], gs.Constant):
                    bv = np.asarray(b.inputs[0].inputs[0].values, np.float32)  # already on its grid
                    b = self.b.const(bv.reshape(_channel_shape(node, rank, bv.size)), name=f"{node.name}_bias")
                self.b.node("Add", [mid, b], [y])
            count += 1
        return count


class IntegerAdd(_IntPass):
    name = "integer_add"

    def rewrite(self, graph, ctx):
        count = 0
        for node in list(graph.nodes):
            if node.op != "Add" or len(node.inputs) != 2 or not node.outputs or int_range(node.outputs[0]) is not None:
                continue
            da, db = dequant_of(node.inputs[0]), dequant_of(node.inputs[1])
            if da is None or db is None or not (is_pow2(da[1]) and is_pow2(db[1])):
                if da is not None and db is not None:
                    from qpass.passes.exact_add import threshold_add

                    ok, why = threshold_add(graph, self.b, node, da, db)
                    if ok:
                        ctx.report.streamline_notes.pop(node.name, None)
                        count += 1
                        continue
                    ctx.report.streamline_notes[node.name] = (
                        f"Add of branches scaled {float(da[1]):.6g} and {float(db[1]):.6g}: not both powers of two, and "
                        f"{why}: the sum stays float (fixed/dfp activation formats make it an integer op)")
                continue
            if da[1] < db[1]:
                da, db = db, da
            (ca, sa), (cb, sb) = da, db
            factor = float(sa) / float(sb)  # a power of two >= 1
            y = node.outputs[0]
            a_in = ca
            if factor != 1:
                a_in = self.b.var(f"{ca.name}_aligned", ca)
                self.b.node("Mul", [ca, self.b.const(factor, name=f"{node.name}_align")], [a_in])
            acc = self.b.var(f"{y.name}_acc", y)
            node.inputs[0] = a_in
            node.inputs[1] = cb
            node.outputs[0] = acc
            self.b.node("Mul", [acc, self.b.const(sb, name=f"{node.name}_scale")], [y])
            count += 1
        return count


class IntegerPool(_IntPass):
    name = "integer_pool"

    def rewrite(self, graph, ctx):
        count = 0
        for node in list(graph.nodes):
            if node.op not in ("GlobalAveragePool", "AveragePool") or not node.outputs:
                continue
            d = dequant_of(node.inputs[0])
            x = node.inputs[0]
            if d is None or x.shape is None or len(x.shape) != 4:
                continue
            if not is_pow2(d[1]):
                why = "only a global average is checked"
                if node.op == "GlobalAveragePool" and all(isinstance(v, int) for v in x.shape[2:]):
                    from qpass.passes.exact_add import average_is_exact

                    ok, why = average_is_exact(graph, node, d[0], float(d[1]), int(x.shape[2] * x.shape[3]))
                    if ok:
                        ctx.report.streamline_notes.pop(node.name, None)
                if why != "exact":
                    ctx.report.streamline_notes[node.name] = (
                        f"average of values scaled {float(d[1]):.6g}: not a power of two, and {why}")
                    continue
            c, s = d
            y = node.outputs[0]
            if node.op == "GlobalAveragePool":
                if not all(isinstance(v, int) for v in x.shape[2:]):
                    continue
                n = int(x.shape[2] * x.shape[3])
                summed = self.b.var(f"{y.name}_sum", y)
                self.b.node("ReduceSum", [c, self.b.const([2, 3], np.int64, name=f"{node.name}_axes")], [summed],
                          attrs={"keepdims": 1})
            else:
                if any(int(p) for p in node.attrs.get("pads", [])) or int(node.attrs.get("ceil_mode", 0)):
                    continue
                k = [int(v) for v in node.attrs["kernel_shape"]]
                n, channels = int(np.prod(k)), x.shape[1]
                if not isinstance(channels, int):
                    continue
                summed = self.b.var(f"{y.name}_sum", y)
                # the window sum as a depthwise Conv with a kernel of ones: exact on integers
                attrs = {"group": channels, "kernel_shape": k}
                if "strides" in node.attrs:
                    attrs["strides"] = list(node.attrs["strides"])
                self.b.node("Conv", [c, self.b.const(np.ones([channels, 1] + k), name=f"{node.name}_ones")], [summed],
                          attrs=attrs)
            scaled = self.b.var(f"{y.name}_scaled", y)
            self.b.node("Mul", [summed, self.b.const(s, name=f"{node.name}_s")], [scaled])
            self.b.node("Div", [scaled, self.b.const(float(n), name=f"{node.name}_n")], [y])
            node.inputs.clear()
            node.outputs.clear()
            count += 1
        return count
