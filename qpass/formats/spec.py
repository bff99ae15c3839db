"""Format specs: one string per format, parsed by ``parse_format``. The grammar is in the package docstring;
every format's ``name`` parses back to an equal format."""
from __future__ import annotations

import re

from ..errors import QpassError
from .affine import Affine
from .base import Format
from .bfp import BlockFloat
from .binary import Binary, Ternary
from .fixed import DynamicFixedPoint, FixedPoint
from .granularity import parse_granularity
from .minifloat import PRESETS, SPECIALS, MiniFloat
from .pow2 import PowerOfTwo

ALIASES = {"e4m3": "fp8_e4m3", "fp8_e4m3fn": "fp8_e4m3", "float8_e4m3fn": "fp8_e4m3", "e5m2": "fp8_e5m2",
           "float8_e5m2": "fp8_e5m2", "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "e2m1": "fp4_e2m1",
           "fp4": "fp4_e2m1"}

_SPEC = re.compile(r"^(?P<head>[a-z][a-z0-9_]*)(?::(?P<colon>[^@<>]*)|<(?P<angle>[^@<>]*)>)?(?:@(?P<gran>.*))?$")
_INT = re.compile(r"^(?P<u>u?)int(?P<w>\d+)(?P<flags>(?:_sym|_narrow)*)$")

# head -> (parameter names in positional order, number required, builder(args dict) -> Format)
_FORMS = {
    "fixed": (("w", "f"), 2, lambda a: FixedPoint(_int(a, "w"), _int(a, "f"), True)),
    "ufixed": (("w", "f"), 2, lambda a: FixedPoint(_int(a, "w"), _int(a, "f"), False)),
    "dfp": (("w", "rate", "fmin", "fmax"), 1, lambda a: _dfp(a, True)),
    "udfp": (("w", "rate", "fmin", "fmax"), 1, lambda a: _dfp(a, False)),
    "affine": (("w",), 1, lambda a: Affine(_int(a, "w"), True)),
    "uaffine": (("w",), 1, lambda a: Affine(_int(a, "w"), False)),
    "sym": (("w",), 1, lambda a: Affine(_int(a, "w"), True, symmetric=True)),
    "binary": ((), 0, lambda a: Binary()),
    "ternary": (("factor", "threshold"), 0, lambda a: Ternary(_num(a, "factor", 0.7), _num(a, "threshold", None))),
    "bfp": (("m", "block", "axis"), 2, lambda a: BlockFloat(_int(a, "m"), _int(a, "block"), _int(a, "axis", -1))),
    "pow2": (("emin", "emax"), 2, lambda a: PowerOfTwo(_int(a, "emin"), _int(a, "emax"), True)),
    "upow2": (("emin", "emax"), 2, lambda a: PowerOfTwo(_int(a, "emin"), _int(a, "emax"), False)),
    "minifloat": (("e", "m", "bias", "specials"), 2, lambda a: _minifloat(a)),
}
_EXAMPLES = {"fixed": "fixed:8,6", "ufixed": "ufixed:8,8", "dfp": "dfp:8", "udfp": "udfp:8", "affine": "affine:6",
             "uaffine": "uaffine:6", "sym": "sym:8", "ternary": "ternary:0.7", "bfp": "bfp:4,16", "pow2": "pow2:-8,0",
             "upow2": "upow2:-8,0", "minifloat": "minifloat:4,3", "binary": "binary"}


class _BadArg(Exception):
    pass


def _int(a: dict, key: str, default=...):
    if key not in a:
        if default is ...:
            raise _BadArg(f"missing {key}")
        return default
    try:
        return int(a[key])
    except ValueError:
        raise _BadArg(f"{key}={a[key]!r} is not an integer") from None


def _num(a: dict, key: str, default):
    if key not in a:
        return default
    try:
        return float(a[key])
    except ValueError:
        raise _BadArg(f"{key}={a[key]!r} is not a number") from None


def _dfp(a: dict, signed: bool) -> DynamicFixedPoint:
    return DynamicFixedPoint(_int(a, "w"), signed, _num(a, "rate", 0.0), min_fraction=_int(a, "fmin", -100),
                             max_fraction=_int(a, "fmax", 100))


def _minifloat(a: dict) -> MiniFloat:
    specials = a.get("specials", "ieee")
    if specials not in SPECIALS:
        raise _BadArg(f"specials={specials!r} is not one of {', '.join(SPECIALS)}")
    return MiniFloat(_int(a, "e"), _int(a, "m"), _int(a, "bias", None), specials)


def _args(text: str, names: tuple[str, ...]) -> dict:
    out: dict[str, str] = {}
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    keyword = False
    for i, p in enumerate(parts):
        key, eq, val = p.partition("=")
        keyword = keyword or bool(eq)
        if not eq:
            if i >= len(names) or keyword:
                raise _BadArg(f"unexpected argument {p!r}")
            key, val = names[i], p
        key, val = key.strip(), val.strip()
        if key == "e" and ".." in val and "emin" in names:  # pow2<e=-8..0>
            out["emin"], _, out["emax"] = val.partition("..")
            continue
        if key not in names:
            raise _BadArg(f"unknown argument {key!r} (arguments: {', '.join(names) or 'none'})")
        if key in out or not val:
            raise _BadArg(f"argument {key!r} given twice or empty")
        out[key] = val
    return out


def parse_format(spec: str) -> Format:
    """A format object from a spec such as 'fixed:8,6', 'int8@channel:0', 'bfp:4,16', 'fp8_e4m3'."""
    if isinstance(spec, Format):
        return spec
    if not isinstance(spec, str):
        raise QpassError(f"a format spec must be a string, not {type(spec).__name__}")
    text = "".join(spec.split()).lower()
    mt = _SPEC.match(text)
    if not mt:
        raise QpassError(f"bad format spec {spec!r} (expected name[:args][@granularity], e.g. fixed:8,6)")
    head, args, gran = mt["head"], mt["colon"] if mt["colon"] is not None else mt["angle"], mt["gran"]
    head = ALIASES.get(head, head)
    try:
        if head in PRESETS:
            if args is not None:
                raise _BadArg("a preset takes no arguments")
            fmt: Format = PRESETS[head]
        elif _INT.match(head):
            mi = _INT.match(head)
            if args is not None:
                raise _BadArg(f"{head} takes no arguments")
            flags = mi["flags"]
            fmt = Affine(int(mi["w"]), not mi["u"], narrow="_narrow" in flags, symmetric="_sym" in flags)
        elif head in _FORMS:
            names, required, build = _FORMS[head]
            a = _args(args or "", names)
            if len(a) < required:
                raise _BadArg(f"{head} needs {', '.join(names[:required])}")
            fmt = build(a)
        else:
            known = sorted(set(_FORMS) | set(PRESETS) | {"intN", "uintN"})
            raise QpassError(f"unknown format {mt['head']!r} in spec {spec!r} (known: {', '.join(known)})")
    except _BadArg as exc:
        example = _EXAMPLES.get(head, "")
        raise QpassError(f"bad format spec {spec!r}: {exc}" + (f" (e.g. {example})" if example else "")) from None
    if gran is not None:
        if not fmt.granular:
            raise QpassError(f"bad format spec {spec!r}: {fmt.name} takes no granularity")
        fmt = fmt.with_granularity(parse_granularity(gran))
    return fmt
