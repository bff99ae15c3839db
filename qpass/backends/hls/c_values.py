"""C spellings of qpass' values: element types, integer literals, packed constant tables."""
from __future__ import annotations

import numpy as np

from qpass.backends.hls.binary import Bipolar
from qpass.hw.inttype import IntType


def cpp_type(t: IntType | Bipolar) -> str:
    """The C++ type of an element type: ap_int / ap_uint, or qpass::bipolar (one bit, -1/+1)."""
    if isinstance(t, Bipolar):
        return "qpass::bipolar"
    return f"ap_int<{t.bits}>" if t.signed else f"ap_uint<{t.bits}>"


def c_int_type(lo: int, hi: int) -> str:
    for bits in (8, 16, 32, 64):
        if -(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1:
            return f"int{bits}_t"
    raise ValueError(f"values {lo}..{hi} do not fit 64 bits")


def limb_layout(n: int, eb: int) -> tuple[str, int, int, int]:
    """(C type, limb bits, elements per limb, limbs) for n elements of eb bits (no element straddles limbs)."""
    if eb > 64:
        raise ValueError(f"{eb}-bit elements cannot be stored in 64-bit limbs")
    total = n * eb
    for lb, ct in ((8, "uint8_t"), (16, "uint16_t"), (32, "uint32_t"), (64, "uint64_t")):
        if total <= lb or lb == 64:
            if eb <= lb:
                epl = lb // eb
                return ct, lb, epl, -(-n // epl)
    raise AssertionError


def pack_limbs(values: np.ndarray, eb: int) -> tuple[np.ndarray, str, int, int]:
    """values (..., N) integers -> (limbs (..., NL) as uint64, C type, EPL, NL), two's complement fields."""
    v = np.asarray(values, np.int64)
    n = v.shape[-1]
    ct, lb, epl, nl = limb_layout(n, eb)
    mask = np.uint64((1 << eb) - 1) if eb < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    codes = v.astype(np.uint64) & mask
    pad = nl * epl - n
    if pad:
        codes = np.concatenate([codes, np.zeros(v.shape[:-1] + (pad,), np.uint64)], axis=-1)
    codes = codes.reshape(v.shape[:-1] + (nl, epl))
    limbs = np.zeros(v.shape[:-1] + (nl,), np.uint64)
    for e in range(epl):
        limbs |= codes[..., e] << np.uint64(e * eb)
    return limbs, ct, epl, nl


def c_array(arr: np.ndarray, fmt=str, per_line: int = 16) -> str:
    """Nested brace initialiser of an n-d array."""
    a = np.asarray(arr)
    if a.ndim == 1:
        items = [fmt(x) for x in a.tolist()]
        lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
        return "{" + ",\n ".join(lines) + "}"
    return "{" + ",\n".join(c_array(x, fmt, per_line) for x in a) + "}"


def hex_u(x: int) -> str:
    return f"0x{int(x):x}u"


def hex_ull(x: int) -> str:
    return f"0x{int(x):x}ull"


def int_literal(ct: str):
    """A formatter of integers as C literals of type ``ct`` (the most negative value spelled portably)."""
    if ct == "int64_t":
        return lambda x: f"{int(x)}ll" if int(x) != -(1 << 63) else "(-9223372036854775807ll - 1)"
    if ct == "int32_t":
        return lambda x: str(int(x)) if int(x) != -(1 << 31) else "(-2147483647 - 1)"
    return lambda x: str(int(x))


def acc_cpp(t: IntType) -> str:
    """Accumulators are signed (a signed view compares by value against signed thresholds)."""
    return f"ap_int<{t.bits + (0 if t.signed else 1)}>"
