"""Convolutions that onnxruntime's integer kernels run slower than float on x86 (AVX2 / AVX512-VNNI), told apart
by their weight shape alone, so the output file never depends on a measurement (bench/layer_speed.py measures
every Conv of the packaged zoo both ways; bench/results/layer_speed_zoo_2026-11-27.json):

- one input and one output channel (group 1) and a window over ``MAX_DEPTHWISE_WINDOW`` taps: QLinearConv runs
  it on its depthwise kernel, written for 3x3 / 5x5 windows; basic-pitch's 1x256 filters ran 2.9-8.4x slower
  than float, and 0.48-0.55x float with a second, all-zero output channel (im2col + u8s8 GEMM). So the Conv gets
  that zero channel and a Slice of the first (``widen_single_channel``, before planning; the Slice runs on the
  codes): integer and exact (the golden interpreter reproduces QLinearConv), 3-8x faster.
- a "thin" Conv, fewer than ``MIN_INTEGER_DEPTH`` products per output (input channels per group x window) and not
  1x1: im2col plus a u8s8 GEMM with so short a reduction is 1.2-2.8x slower than float (first layers on 1-3
  channels, K = 9..90). Float only with ``float_thin_convs`` and where it is isolated (nothing quantized produces
  its input, through data movement, and nothing quantized reads its output), where the integer form would also add
  a QuantizeLinear before and a DequantizeLinear after it. Not in the default: it helps mtcnn-pnet (two thin convs
  between PRelus, 1.39 -> 0.94 of float) but hurts mtcnn-rnet / onet (1.0 -> 1.38, 0.92 -> 1.19: the float first
  conv leaves the uint8 MaxPool after it outside onnxruntime's NHWC layout), and it lowers the integer share.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

MAX_DEPTHWISE_WINDOW = 25
MIN_INTEGER_DEPTH = 128


def _dims(node: gs.Node):
    """(input channels per group, output channels per group, window taps) of a Conv with a constant weight."""
    if node.op != "Conv" or len(node.inputs) < 2 or not isinstance(node.inputs[1], gs.Constant):
        return None
    shape = np.shape(node.inputs[1].values)
    if len(shape) < 3:
        return None
    group = int(node.attrs.get("group", 1))
    return shape[1], shape[0] // max(group, 1), int(np.prod(shape[2:]))


def widen_single_channel(graph: gs.Graph, b, ranges: dict, quantizable) -> dict:
    """Rewrite each ``quantizable`` one-channel long-window Conv (module docstring) into a two-channel Conv whose
    second channel is zero, then Slice [:, 0:1] into the original output; the new tensors' ranges."""
    out = {}
    for node in list(graph.nodes):
        d = _dims(node)
        if d is None or d[:2] != (1, 1) or d[2] <= MAX_DEPTHWISE_WINDOW or int(node.attrs.get("group", 1)) != 1 \
                or node.outputs[0].name not in ranges or not quantizable(node):
            continue
        w = np.asarray(node.inputs[1].values)
        node.inputs[1] = b.const(np.concatenate([w, np.zeros_like(w)]), None, name=node.inputs[1].name + "_2ch")
        if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
            bias = np.asarray(node.inputs[2].values)
            node.inputs[2] = b.const(np.concatenate([bias, np.zeros_like(bias)]), None,
                                     name=node.inputs[2].name + "_2ch")
        last = node  # the Slice goes after a Relu / Clip that only the Conv feeds, which then stays fusable
        while len(last.outputs[0].outputs) == 1 and last.outputs[0] not in graph.outputs \
                and last.outputs[0].outputs[0].op in ("Relu", "Clip") and last.outputs[0].outputs[0].name \
                and last.outputs[0].outputs[0].outputs[0].name in ranges:
            last = last.outputs[0].outputs[0]
        y = last.outputs[0]
        wide = b.var(y.name + "_2ch", dtype=y.dtype)
        last.outputs[0] = wide
        one = [b.const([v], np.int64, name=f"{node.name}_slice_{k}") for k, v in (("start", 0), ("end", 1), ("axis", 1))]
        b.node("Slice", [wide] + one, [y], name=node.name + "_first_channel")
        for n in _chain(node, last):
            n.outputs[0].shape = None  # two channels now
            lo, hi = ranges[n.outputs[0].name if n is not last else y.name]
            out[n.outputs[0].name] = (min(lo, 0.0), max(hi, 0.0))
    return out


def _chain(first: gs.Node, last: gs.Node) -> list[gs.Node]:
    nodes = [first]
    while nodes[-1] is not last:
        nodes.append(nodes[-1].outputs[0].outputs[0])
    return nodes


def slow_if_isolated(node: gs.Node) -> str | None:
    d = _dims(node)
    if d is not None and d[2] > 1 and d[0] * d[2] < MIN_INTEGER_DEPTH:
        return (f"{d[0] * d[2]} products per output and no quantized neighbour: its integer kernel plus the "
                "QuantizeLinear / DequantizeLinear around it are slower than float (bench/layer_speed.py)")
    return None


def _float_source(t, planned: set, data_movement) -> bool:
    """Nothing planned for integers computes ``t`` (planned data movement is looked through)."""
    while len(t.inputs) == 1:
        prod = t.inputs[0]
        if prod.name not in planned:
            return True
        if not data_movement(prod):
            return False
        t = prod.inputs[0]
    return not t.inputs


def _float_readers(t, graph: gs.Graph, planned: set, activations) -> bool:
    """Nothing planned for integers reads ``t`` (a Relu / Clip after it is looked through)."""
    if t in graph.outputs:
        return True
    for r in t.outputs:
        if r.name in planned and activations(r):
            if not all(_float_readers(y, graph, planned, activations) for y in r.outputs):
                return False
        elif r.name in planned:
            return False
    return True


def slow_convs(graph: gs.Graph, planned: set, data_movement, activations) -> dict:
    """{node name: why it stays float} for the planned thin Convs that are isolated (module docstring)."""
    out = {}
    for node in graph.nodes:
        if node.name not in planned:
            continue
        why = slow_if_isolated(node)
        if why and _float_source(node.inputs[0], planned, data_movement) \
                and _float_readers(node.outputs[0], graph, planned, activations):
            out[node.name] = why
    return out
