"""``$readmemh`` files: one hex word per line, a word packing N integer elements of EB bits (element i in bits
[i*EB, (i+1)*EB), two's complement)."""
from __future__ import annotations

import numpy as np

from qpass.hw.inttype import IntType


def hex_words(arr: np.ndarray, bits: int) -> str:
    """arr (WORDS, N) integers -> $readmemh text of WORDS words of N*bits bits."""
    a = np.asarray(arr, np.int64)
    words, n = a.shape
    mask = (1 << bits) - 1
    u = (a & mask).astype(np.uint64)
    # bits little-endian per element, elements in order: (WORDS, N*bits) with bit k of the word at column k
    b = ((u[:, :, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8).reshape(words, n * bits)
    nib = -(-n * bits // 4)
    b = np.pad(b, ((0, 0), (0, nib * 4 - n * bits)))
    vals = (b.reshape(words, nib, 4) * np.array([1, 2, 4, 8], np.uint8)).sum(axis=2)
    digits = np.array(list("0123456789abcdef"))[vals[:, ::-1]]
    return "\n".join("".join(row) for row in digits) + "\n"


def signed_width(lo: int, hi: int) -> int:
    """Bits of the narrowest two's complement type holding [lo, hi]."""
    t = IntType.of_range(min(int(lo), 0), max(int(hi), 0))
    return t.bits + (0 if t.signed else 1)


def pack_word(values, bits: int) -> int:
    """Integers -> one packed word (element i at bits [i*bits, (i+1)*bits))."""
    out, mask = 0, (1 << bits) - 1
    for i, v in enumerate(values):
        out |= (int(v) & mask) << (i * bits)
    return out


def search_images(thr: np.ndarray, pe: int, bits: int, tfile: str) -> dict[str, str]:
    """The per-stage ROMs of a binary-searched threshold table (``qp_activate`` BS = 1; with one row fold stage 0
    is a one-word ROM, a constant): thr (NF*PE channels, NT steps) -> files ``f"{tfile}{i}_{lane:03d}"`` for the
    N = clog2(NT + 1) stages and PE lanes, stage i's word nf*2^i + j holding the threshold T[nf*PE + lane][k - 1]
    (k = (2j + 1) * 2^(N-1-i), clipped to the last step) it compares with after result bits j."""
    t = np.asarray(thr, np.int64)
    nt = t.shape[1]
    nf = t.shape[0] // pe
    n = nt.bit_length()
    rows = t.reshape(nf, pe, nt)
    out = {}
    for i in range(n):
        b = n - 1 - i
        idx = np.minimum((np.arange(1 << i) << (b + 1)) + (1 << b) - 1, nt - 1)
        words = rows[:, :, idx].transpose(0, 2, 1).reshape(nf * (1 << i), pe)
        for q in range(pe):
            out[f"{tfile}{i}_{q:03d}"] = hex_words(words[:, q:q + 1], bits)
    return out
