"""prelu_lut: ``DequantizeLinear -> PRelu -> QuantizeLinear`` on uint8 codes becomes one per-channel table lookup.

onnxruntime has no integer PRelu, so after quantize_qdq a PRelu between two 8-bit grids runs in float, and once its
layout transformer has moved the convolutions to NHWC the per-channel slope broadcasts along the short last axis:
mtcnn-pnet's three PRelus took 203 of 448 us of its int8 graph (1 thread, avx2 avx512f avx512_vnni, onnxruntime
1.32), 57 us in the float model, where they broadcast along H x W. The map from the input code q (256 values) to the
output code is, per channel c, a table T[q, c]: the pass writes it as the float ops DequantizeLinear, PRelu and
QuantizeLinear are defined by, applied to the 256 codes (``_table_nodes``: onnxruntime folds them into a constant
when it loads the model; the file keeps grids and slopes, not tables) and reads it with ``Transpose (channels last) ->
Reshape [-1, C] -> Cast int32 -> GatherElements(T, axis 0) -> Reshape -> Transpose`` on the codes; onnxruntime
cancels the Transposes against its NHWC convolutions. The model's outputs are unchanged bit for bit.

Rule (read from the graph, no timing): uint8 per-tensor grids on both sides, a constant slope that varies along one
axis (per channel), the PRelu read only by that QuantizeLinear, and one sample's tensor at least ``min_elements``
large or of symbolic size (below, the lookup's extra nodes cost more than they save).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qpass.ir.graph import NameAllocator, consumers, producers, shapes
from qpass.pipeline.pass_base import Pass, PassResult


@dataclass
class PreluLutOptions:
    #: tables with more channels than this are not written (256 bytes each)
    max_channels: int = 4096
    #: rewrite only where one sample's tensor has at least this many elements (or a symbolic size): below it the
    #: lookup chain's extra nodes cost more than the float PRelu (1 thread, avx2 avx512f avx512_vnni, onnxruntime
    #: 1.32: every PRelu of mtcnn-rnet, 22 x 22 x 28 and 9 x 9 x 48, made it 1.06x slower; mtcnn-onet's
    #: 46 x 46 x 32 and 21 x 21 x 64 0.84x; pnet's, symbolic, 0.79x)
    min_elements: int = 16384


def _scalar_grid(inits: dict, node: onnx.NodeProto):
    """(scale, zero point) of a per-tensor uint8 QuantizeLinear / DequantizeLinear, or None."""
    if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
        return None
    s, z = inits[node.input[1]], inits[node.input[2]]
    if z.data_type != TensorProto.UINT8 or s.data_type != TensorProto.FLOAT:
        return None
    s, z = numpy_helper.to_array(s), numpy_helper.to_array(z)
    return (s, z) if s.size == 1 and z.size == 1 and float(s.reshape(())) > 0 else None


def channel_axis(slope: np.ndarray) -> int | None:
    """The axis (counted from the end, -1 = last) along which a PRelu slope varies, if it varies along one only."""
    big = [i for i, d in enumerate(slope.shape) if d > 1]
    return big[0] - slope.ndim if len(big) == 1 else None


def worth_a_table(shape: list, min_elements: int) -> bool:
    """The size rule: one sample's tensor (dim 0 is the batch) has >= ``min_elements`` elements or a symbolic
    size (spatial dims of a fully convolutional net: an image of any size)."""
    rest = shape[1:]
    return any(d is None for d in rest) or int(np.prod(rest, dtype=np.int64)) >= min_elements


def _match(graph, inits: dict, prods: dict, cons: dict, prelu):
    """(dq, q, slope, axis from the end) of a PRelu the pass rewrites, or None."""
    dq, slope_t = prods.get(prelu.input[0]), inits.get(prelu.input[1])
    users = cons.get(prelu.output[0], [])
    if dq is None or dq.op_type != "DequantizeLinear" or slope_t is None or len(users) != 1 \
            or users[0].op_type != "QuantizeLinear" or any(o.name == prelu.output[0] for o in graph.output):
        return None
    if _scalar_grid(inits, dq) is None or _scalar_grid(inits, users[0]) is None:
        return None
    slope = numpy_helper.to_array(slope_t)
    axis = channel_axis(slope)
    return None if axis is None else (dq, users[0], slope, axis)


def rewrite_prelus(model: onnx.ModelProto, max_channels: int = 4096, min_elements: int = 16384) -> int:
    """Rewrite every matching PRelu of ``model``'s main graph in place; how many were rewritten."""
    g = model.graph
    dims = shapes(onnx.shape_inference.infer_shapes(model))
    inits, names = {i.name: i for i in g.initializer}, NameAllocator.for_model(model)
    prods, cons = producers(g), consumers(g)
    done = 0
    for prelu in [n for n in g.node if n.op_type == "PRelu" and n.domain in ("", "ai.onnx")]:
        m = _match(g, inits, prods, cons, prelu)
        shape = dims.get(prelu.input[0]) if m else None
        shape = None if shape is None else [d if isinstance(d, int) else None for d in shape]  # None: symbolic
        if shape is None or -m[3] > len(shape) or m[2].size > max_channels or not worth_a_table(shape, min_elements):
            continue
        dq, q, slope, axis = m
        grids = tuple((n.input[1], _scalar_grid(inits, n)[1]) for n in (dq, q))  # (scale name, zero point)
        table = _table_nodes(g, names, grids, slope.ravel(), f"lut{done}")
        _write_lookup(g, names, (dq.input[0], q.output[0]), table, len(shape) + axis, shape, f"lut{done}")
        g.node.remove(prelu)
        if not any(prelu.input[1] in n.input for n in g.node):
            g.initializer.remove(inits[prelu.input[1]])
        g.node.remove(q)
        gone = [prelu.output[0]]
        if len(cons.get(dq.output[0], [])) == 1 and dq.output[0] not in {o.name for o in g.output}:
            g.node.remove(dq)
            gone.append(dq.output[0])
        for v in [v for v in g.value_info if v.name in gone]:  # no stale shapes of removed tensors
            g.value_info.remove(v)
        done += 1
    return done


def _shared_const(g, names, name: str, value: np.ndarray) -> str:
    if name not in {i.name for i in g.initializer}:
        names.taken.add(name)
        g.initializer.append(numpy_helper.from_array(value, name))
    return name


def _table_nodes(g, names, grids: tuple, slope: np.ndarray, base: str) -> tuple[list, str, int]:
    """(nodes, name, channels) of the table T[q, c] = QuantizeLinear(PRelu(DequantizeLinear(q), slope_c)) over
    every uint8 code q, written with the float ops those two are defined by (x = (q - z1) * s1; T = saturate(
    round_half_even(PRelu(x) / s2) + z2)) on constants only, so that onnxruntime folds the table into a constant
    when it loads the model (it keeps DequantizeLinear / QuantizeLinear nodes unfolded) and the file holds the
    grids and slopes, not the table (stored, the tables would double mtcnn-pnet's 18 KB file)."""
    (s1, z1), (s2, z2) = grids  # scale initializers (names), zero points (arrays)
    codes = _shared_const(g, names, "prelu_lut_codes", np.arange(256, dtype=np.uint8).reshape(256, 1))
    lo = _shared_const(g, names, "prelu_lut_lo", np.array(0, np.float32))
    hi = _shared_const(g, names, "prelu_lut_hi", np.array(255, np.float32))
    a, wide, zi, zo = (names(f"{base}_{k}") for k in ("a", "ts", "z1", "z2"))
    g.initializer.extend([numpy_helper.from_array(slope.astype(np.float32), a),
                          numpy_helper.from_array(np.array([256, slope.size], np.int64), wide),
                          numpy_helper.from_array(np.array(float(z1.reshape(())), np.float32), zi),
                          numpy_helper.from_array(np.array(float(z2.reshape(())), np.float32), zo)])
    steps = [("Expand", [codes, wide], {}), ("Cast", [], {"to": TensorProto.FLOAT}), ("Sub", [zi], {}),
             ("Mul", [s1], {}), ("PRelu", [a], {}), ("Div", [s2], {}), ("Round", [], {}), ("Add", [zo], {}),
             ("Clip", [lo, hi], {}), ("Cast", [], {"to": TensorProto.UINT8})]
    nodes, prev = [], None
    for k, (op, extra, attrs) in enumerate(steps):
        out = names(f"{base}_t{k}")
        nodes.append(helper.make_node(op, ([prev] if prev else []) + extra, [out], name=out, **attrs))
        prev = out
    return nodes, prev, slope.size


def _write_lookup(g, names, io: tuple, table: tuple, axis: int, shape: list, base: str) -> None:
    """``io[1]`` = table[codes, channel] along ``axis`` of the uint8 tensor ``io[0]`` of ``shape``, written right
    after the node that produces ``io[1]`` today (the graph stays topologically sorted)."""
    codes, out = io
    rank = len(shape)
    perm = [i for i in range(rank) if i != axis] + [axis]
    last = [shape[p] for p in perm]
    nodes, lut, c = table
    nodes, t = list(nodes), codes
    if perm != list(range(rank)):
        t = names(f"{base}_c")
        nodes.append(helper.make_node("Transpose", [codes], [t], name=t, perm=perm))
    rows = t
    if rank != 2:
        rows, to_rows = names(f"{base}_r"), names(f"{base}_rs")
        g.initializer.append(numpy_helper.from_array(np.array([-1, c], np.int64), to_rows))
        nodes.append(helper.make_node("Reshape", [t, to_rows], [rows], name=rows))
    i, v = names(f"{base}_i"), names(f"{base}_v")
    nodes += [helper.make_node("Cast", [rows], [i], name=i, to=TensorProto.INT32),
              helper.make_node("GatherElements", [lut, i], [v], name=v, axis=0)]
    if rank != 2:
        back = names(f"{base}_s")
        if perm[0] == 0 and all(d is not None for d in last[1:]):  # static but for the batch: a constant shape
            g.initializer.append(numpy_helper.from_array(np.array([-1] + last[1:], np.int64), back))
        else:
            nodes.append(helper.make_node("Shape", [t], [back], name=back))
        u = names(f"{base}_u")
        nodes.append(helper.make_node("Reshape", [v, back], [u], name=u))
        v = u
    if t != codes:
        nodes.append(helper.make_node("Transpose", [v], [out], name=names(f"{base}_o"),
                                      perm=[int(k) for k in np.argsort(perm)]))
    else:
        nodes.append(helper.make_node("Identity", [v], [out], name=names(f"{base}_o")))
    pos = next(k for k, n in enumerate(g.node) if out in n.output)
    for k, n in enumerate(nodes):
        g.node.insert(pos + 1 + k, n)


class PreluLut(Pass):
    name = "prelu_lut"
    Options = PreluLutOptions

    def run(self, model, ctx):
        n = rewrite_prelus(model, self.opts.max_channels, self.opts.min_elements)
        if not n:
            return PassResult(model, False, ["no DequantizeLinear -> PRelu -> QuantizeLinear to rewrite"])
        return PassResult(model, True, [f"{n} PRelu(s) on uint8 codes as per-channel table lookups "
                                        "(onnxruntime folds the tables at load)"])
