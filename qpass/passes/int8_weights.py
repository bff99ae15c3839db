"""Signed weight storage for onnxruntime: uint8 weight codes (zero point 128) become int8 codes (zero point 0).

lower_ort stores a quantised 5-8-bit weight as uint8 codes + 128, which onnxruntime's x86 kernels compute exactly
everywhere but run on the slower u8u8 path (measured on the residual digits CNN, AMD EPYC avx2 avx512f avx512_vnni:
25.5 us against 22.4 us for the same layers with int8 weights). The same values as int8 codes with zero point 0
(``(u - 128) * s == i * s``) run on the u8s8 kernels the default int8 pipeline uses; they are exact on VNNI and ARM
CPUs, and on x86 without VNNI wherever no int16 pair sum can saturate (``quantize_qdq.u8s8``): the pass rewrites a
layer only where its ``target_cpu`` (default: this machine's kind) computes it exactly, else leaves it as it is.
Only weights read through a DequantizeLinear by input 1 of a Conv / Gemm / MatMul are touched; the dequantised
values, and so the model's outputs, are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.ops.common import LINEAR_OPS
from qpass.passes.quantize_qdq.target import AUTO, resolve_target
from qpass.passes.quantize_qdq.u8s8 import saturating_channels
from qpass.pipeline.analyses import PRESERVES_ALL
from qpass.pipeline.pass_base import Pass, PassResult

EXACT_TARGETS = ("vnni", "arm")


@dataclass
class Int8WeightsOptions:
    target_cpu: str = AUTO  # auto | avx2 | vnni | arm | any


class Int8Weights(Pass):
    name = "int8_weights"
    preserves = PRESERVES_ALL  # the same values in another encoding
    Options = Int8WeightsOptions

    def run(self, model, ctx):
        target = resolve_target(self.opts.target_cpu)
        out = onnx.ModelProto()
        out.CopyFrom(model)
        inits = {i.name: i for i in out.graph.initializer}
        readers: dict[str, list] = {}
        for n in out.graph.node:
            for i, x in enumerate(n.input):
                readers.setdefault(x, []).append((n, i))
        done, kept = [], []
        for dq in out.graph.node:
            if dq.op_type != "DequantizeLinear" or dq.domain not in ("", "ai.onnx") or len(dq.input) < 3:
                continue
            users = readers.get(dq.output[0], [])
            if not users or not all(u.op_type in LINEAR_OPS and i == 1 for u, i in users):
                continue
            codes, zp = inits.get(dq.input[0]), inits.get(dq.input[2])
            if codes is None or zp is None or codes.data_type != onnx.TensorProto.UINT8 \
                    or len(readers.get(dq.input[0], [])) != 1 or len(readers.get(dq.input[2], [])) != 1:
                continue
            u, z = numpy_helper.to_array(codes), numpy_helper.to_array(zp)
            if not np.all(z == 128):
                continue
            signed = (u.astype(np.int16) - 128).astype(np.int8)
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) if z.size > 1 else None
            if target not in EXACT_TARGETS and any(
                    saturating_channels(user.op_type, _attrs(user), signed, axis, 255).any() for user, _ in users):
                kept.append(dq.output[0])
                continue
            codes.CopyFrom(numpy_helper.from_array(signed, codes.name))
            zp.CopyFrom(numpy_helper.from_array(np.zeros(z.shape, np.int8), zp.name))
            done.append(dq.output[0])
        notes = [f"{len(done)} weights stored as int8 codes (zero point 0) instead of uint8 + 128: onnxruntime's "
                 f"u8s8 kernels, exact on target_cpu={target}"] if done else []
        if kept:
            notes.append(f"{len(kept)} weights kept as uint8 + 128 (their int16 pair sums could saturate on "
                         f"{target})")
        return PassResult(out if done else model, bool(done), notes)


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
