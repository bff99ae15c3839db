"""Element types of hardware streams and parameters: the narrowest integer type holding an exact range."""
from __future__ import annotations

from dataclasses import dataclass

from qpass.analysis.intinfo import signed_bits


@dataclass(frozen=True)
class IntType:
    bits: int
    signed: bool

    @classmethod
    def of_range(cls, lo, hi) -> "IntType":
        b, s = signed_bits(lo, hi)
        return cls(int(b), bool(s))

    @property
    def name(self) -> str:
        return f"{'INT' if self.signed else 'UINT'}{self.bits}"

    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1
