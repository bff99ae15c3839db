"""Per-node values a kernel derives from its operands, kept on the executor (``ex.scratch``) for as long as the
same operand objects come back: a constant weight is packed, shifted or planned once, not on every call, and a
Loop's carried value once per change."""
from __future__ import annotations

from typing import Callable


def kept(scratch: dict, key, deps: tuple, make: Callable) -> tuple:
    """(``make()``, whether it was kept): the value stored under ``key`` while ``deps`` are the same objects
    (identity, not equality: a changed array is a new object), else made anew and stored."""
    hit = scratch.get(key)
    if hit is not None and len(hit[0]) == len(deps) and all(a is b for a, b in zip(hit[0], deps)):
        return hit[1], True
    value = make()
    scratch[key] = (deps, value)
    return value, False
