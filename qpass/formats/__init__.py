"""Number formats for quantisation: fixed point, dynamic fixed point, affine integers, binary / ternary, block
floating point, powers of two and small floats -- numpy only, vectorised.

Every format is a small frozen dataclass with ``quantize(x, rounding="ROUND", overflow="saturate", rng=None)``
returning a ``QuantResult`` (values, codes, scale, saturated[, zero_point]) and a stable ``name`` that
``parse_format`` reads back. A format also answers what a quantisation pass asks of it (``base.Format``):
``quant_params(lo, hi)`` (an activation quantiser's ``IntGrid`` for a calibrated range), ``weight_grid`` (the
grid of a quantised weight, or None for float storage annotated with ``datatype``), ``for_weight`` /
``with_granularity``. Rounding modes (QONNX names + STOCHASTIC) are in ``rounding.py``; per-tensor / per-channel /
per-group parameters in ``granularity.py``; the integer grid (QONNX Quant / BipolarQuant) in ``grid.py``.

Spec grammar (case-insensitive, spaces ignored)::

    spec        := body [ "@" granularity ]
    body        := preset | intfmt | head [ ":" args | "<" args ">" ]
    args        := arg { "," arg }            positional first, then key=value
    granularity := "tensor" | "row" | "channel" [ ":" axis ] | "group:" [ axis "," ] size

    head        positional args              format
    ----------  ---------------------------  ---------------------------------------------------------------
    fixed       W,F                          FixedPoint(W, F), step 2^-F      (name fixed<W,F>)
    ufixed      W,F                          unsigned FixedPoint              (ufixed<W,F>)
    dfp / udfp  W[,rate[,fmin,fmax]]         DynamicFixedPoint(W), F from the data   (dfp<W>, dfp<W,rate=r>)
    intN/uintN  -- (suffixes _sym, _narrow)  Affine(N, signed), N in 2..16  (int8, uint8, int8_sym, int4_narrow)
    affine      W                            Affine(W) signed asymmetric      (intW)
    uaffine     W                            Affine(W, signed=False)          (uintW)
    sym         W                            Affine(W, symmetric=True)        (intW_sym)
    binary      --                           Binary                           (binary)
    ternary     [factor] | threshold=t       Ternary(factor=0.7 | threshold)  (ternary, ternary<0.5>)
    bfp         M,block[,axis]               BlockFloat(M, block, axis=-1)    (bfp<m=M,block=B>)
    pow2/upow2  emin,emax  (or e=emin..emax) PowerOfTwo(emin, emax)           (pow2<e=-8..0>)
    minifloat   E,M[,bias[,specials]]        MiniFloat(E, M, bias, specials)  (minifloat<e=4,m=3>)
    presets     fp8_e4m3 (e4m3, fp8_e4m3fn), fp8_e5m2 (e5m2), bf16 (bfloat16), fp16 (float16, half),
                fp6_e2m3, fp6_e3m2, fp4_e2m1 (e2m1, fp4)

Granularity applies to dfp, affine / intN, binary and ternary: ``int8@channel:0``, ``binary@row``,
``ternary@group:1,16``, ``dfp:8@channel:1``; group without an axis means the last axis.
"""
from .affine import Affine
from .base import Format, QuantResult
from .bfp import BlockFloat
from .binary import Binary, Ternary
from .fixed import DynamicFixedPoint, FixedPoint, fraction_limits
from .granularity import Granularity, as_granularity, parse_granularity
from .grid import IntGrid
from .minifloat import PRESETS, MiniFloat
from .pow2 import PowerOfTwo
from .rounding import OVERFLOW_MODES, ROUNDING_MODES, apply_overflow, int_bounds, make_rng, quantize_int, round_values
from .spec import parse_format

__all__ = ["Format", "QuantResult", "FixedPoint", "DynamicFixedPoint", "Affine", "Binary", "Ternary", "BlockFloat",
           "PowerOfTwo", "MiniFloat", "PRESETS", "Granularity", "as_granularity", "parse_granularity", "IntGrid",
           "parse_format", "round_values", "apply_overflow", "quantize_int", "make_rng", "ROUNDING_MODES",
           "OVERFLOW_MODES", "fraction_limits", "int_bounds"]
