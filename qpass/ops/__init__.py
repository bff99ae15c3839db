"""The ops qpass defines or treats specially, one class each (``qpass.ops.base.OpDef``), found through one table.

    from qpass.ops import get_op
    op = get_op(node.domain, node.op_type)        # None for an op qpass has no rules for
    y = op.execute(node, x, *params)              # numpy float32, the numbers' definition
    op.lower(builder, node, opset)                # the same numbers in standard ONNX

Domains are looked up canonically (``finn.custom_op.general`` reads as the qonnx domain, ``ai.onnx`` as ONNX).
Adding an op: write its class in a module of this package and add its rows to ``OPS``.
"""
from __future__ import annotations

from qpass.ops.base import OpDef
from qpass.ops.bipolar_quant import BipolarQuant
from qpass.ops.float_quant import FloatQuant
from qpass.ops.common import ONNX_DOMAIN, QONNX_DOMAIN, QPASS_DOMAIN, canonical_domain
from qpass.ops.multithreshold import MultiThreshold
from qpass.ops.partition import StreamingDataflowPartition
from qpass.ops.qdq import DequantizeLinear, QuantizeLinear
from qpass.ops.quant import Quant
from qpass.ops.trunc import Trunc

#: (canonical domain, op type) -> op class. QONNX's ops also answer in the qpass domain; IntQuant is Quant's
#: newer name in qonnx.
OPS: dict[tuple[str, str], type[OpDef]] = {
    (QONNX_DOMAIN, "Quant"): Quant,
    (QONNX_DOMAIN, "IntQuant"): Quant,
    (QONNX_DOMAIN, "BipolarQuant"): BipolarQuant,
    (QONNX_DOMAIN, "Trunc"): Trunc,
    (QONNX_DOMAIN, "MultiThreshold"): MultiThreshold,
    (QONNX_DOMAIN, "FloatQuant"): FloatQuant,
    (QPASS_DOMAIN, "Quant"): Quant,
    (QPASS_DOMAIN, "IntQuant"): Quant,
    (QPASS_DOMAIN, "BipolarQuant"): BipolarQuant,
    (QPASS_DOMAIN, "Trunc"): Trunc,
    (QPASS_DOMAIN, "MultiThreshold"): MultiThreshold,
    (QPASS_DOMAIN, "StreamingDataflowPartition"): StreamingDataflowPartition,
    (QPASS_DOMAIN, "FloatQuant"): FloatQuant,
    (ONNX_DOMAIN, "QuantizeLinear"): QuantizeLinear,
    (ONNX_DOMAIN, "DequantizeLinear"): DequantizeLinear,
}


def get_op(domain: str | None, op_type: str) -> type[OpDef] | None:
    """The class of ``op_type`` in ``domain`` (any alias of it), or None."""
    return OPS.get((canonical_domain(domain), op_type))


def op_of(node) -> type[OpDef] | None:
    """The class of an onnx NodeProto, graphsurgeon Node or reference NodeInfo."""
    return get_op(node.domain, getattr(node, "op_type", None) or node.op)


__all__ = ["OPS", "OpDef", "get_op", "op_of", "Quant", "BipolarQuant", "FloatQuant", "Trunc", "MultiThreshold",
           "StreamingDataflowPartition", "QuantizeLinear", "DequantizeLinear"]
