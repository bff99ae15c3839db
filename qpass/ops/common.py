"""Facts shared by every op class and by the passes: the op domains and their aliases, QONNX's rounding modes,
the linear ops, the MultiThreshold channel axis, attribute access, and which ops mark a model as quantised.

The ops themselves are one class each in this package (``qpass.ops.OPS``): QONNX's Quant / IntQuant,
BipolarQuant, Trunc and MultiThreshold (domain ``qonnx.custom_op.general``, aliases below, also answered in the
``qpass`` domain), ONNX's QuantizeLinear / DequantizeLinear and qpass's StreamingDataflowPartition.
"""
from __future__ import annotations

from qpass.formats.rounding import ROUNDING_MODES as _FORMAT_ROUNDING, int_bounds

ONNX_DOMAIN = ""
QONNX_DOMAIN = "qonnx.custom_op.general"
QPASS_DOMAIN = "qpass"
#: other spellings of the same op sets (qonnx's older and Brevitas' domains, ONNX's explicit name)
DOMAIN_ALIASES = {"ai.onnx": ONNX_DOMAIN, "finn.custom_op.general": QONNX_DOMAIN,
                  "qonnx.custom_op.general.quant": QONNX_DOMAIN, "onnx.brevitas": QONNX_DOMAIN}
QONNX_DOMAINS = (QONNX_DOMAIN,) + tuple(d for d, c in DOMAIN_ALIASES.items() if c == QONNX_DOMAIN)
#: QONNX's rounding modes (the formats' modes without STOCHASTIC, which needs run-time randomness)
ROUNDING_MODES = tuple(m for m in _FORMAT_ROUNDING if m != "STOCHASTIC")
#: layers with a weight operand (input 1) whose output channels scale independently
LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: ops that only move or select values: integer codes stay integer codes of the same grid through them
ORDER_ONLY_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout")

__all__ = ["int_bounds"]  # re-exported: ops and passes take the integer grid from here or qpass.formats


def canonical_domain(domain: str | None) -> str:
    domain = domain or ""
    return DOMAIN_ALIASES.get(domain, domain)


def mt_channel_axis(layout: str | None, ndim: int) -> int:
    """Channel axis of a MultiThreshold input: from ``data_layout`` when it names every axis, else qonnx's guess
    from the rank (2: NC, 3: NWC, 4 and more: channels first)."""
    layout = (layout or "").upper()
    if len(layout) == ndim and "C" in layout:
        return layout.index("C")
    return 2 if ndim == 3 else min(1, max(ndim - 1, 0))


QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                 "QLinearConv", "QLinearMatMul")


def quantized_op_types(model) -> list[str]:
    """Op types showing that a model is already quantised (ONNX QDQ / integer ops, com.microsoft quant ops, QONNX)."""
    found = set()
    for n in model.graph.node:
        if n.op_type in QUANTIZED_OPS and n.domain in ("", "ai.onnx"):
            found.add(n.op_type)
        elif n.domain == "com.microsoft" and ("Quant" in n.op_type or n.op_type.startswith("QLinear")
                                              or n.op_type in ("QGemm", "QAttention", "MatMulIntegerToFloat")):
            found.add(f"com.microsoft::{n.op_type}")
        elif n.domain in QONNX_DOMAINS and n.op_type in ("Quant", "IntQuant", "BipolarQuant", "FloatQuant", "MultiThreshold", "Trunc"):
            found.add(f"qonnx::{n.op_type}")
    return sorted(found)


def refuse_if_quantized(model, pass_name: str) -> None:
    from qpass.errors import PipelineError

    ops = quantized_op_types(model)
    if ops:
        raise PipelineError(f"the model is already quantized ({', '.join(ops[:4])}{' ...' if len(ops) > 4 else ''}); "
                            f"{pass_name} quantizes float models, so there is nothing to do")


def is_qonnx(node, op_type: str | None = None) -> bool:
    return node.domain in QONNX_DOMAINS and (op_type is None or node.op_type == op_type)


def attr(node, name: str, default=None):
    """Attribute value of an onnx NodeProto (or graphsurgeon Node), with a default."""
    attrs = getattr(node, "attrs", None)
    if attrs is not None:
        v = attrs.get(name, default)
        return v.decode() if isinstance(v, bytes) else v
    import onnx

    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default
