"""Quantised-ONNX dialects: detection (``detect_dialect``) and exact conversions between QONNX, QCDQ, QDQ and
QOperator (the passes in ``passes``; docs/dialects.md says what converts exactly and what is refused)."""
from .detect import DialectInfo, detect_dialect

__all__ = ["DialectInfo", "detect_dialect"]
