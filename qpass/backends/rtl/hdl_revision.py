"""Which library HDL a synthesized module instance is built from: a hash of the source text of its module and of
every library module it instantiates (transitively), comments and whitespace left out. The Yosys cache
(``synth.instance_key``) keys on it, so an entry synthesized from older HDL stops matching instead of being used
silently; an edit of one module (a FIFO, say) leaves the other modules' entries valid."""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

from .exporter import HDL, LIBRARY

_MODULE = re.compile(r"^module\s+(\w+)\b.*?^endmodule\b", re.M | re.S)
_INSTANCE = re.compile(r"\b(qp_\w+)\s*(?:#\s*\(|\w+\s*\()")


def _normalized(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return " ".join(text.split())


def library_modules(texts: dict[str, str]) -> dict[str, str]:
    """Module name -> its normalized source text, over the given file texts (name -> text)."""
    out: dict[str, str] = {}
    for text in texts.values():
        for m in _MODULE.finditer(text):
            out[m.group(1)] = _normalized(m.group(0))
    return out


def module_hash(module: str, modules: dict[str, str]) -> str:
    """12 hex digits over the normalized text of ``module`` and of the library modules it instantiates."""
    if module not in modules:
        return "none"
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        todo += [n for n in _INSTANCE.findall(modules[name]) if n != name]
    h = hashlib.sha1()
    for name in sorted(seen):
        h.update(f"{name}\n{modules[name]}\n".encode())
    return h.hexdigest()[:12]


def _read(hdl_dir: Path) -> dict[str, str]:
    return library_modules({f: (Path(hdl_dir) / f).read_text() for f in LIBRARY})


@lru_cache(maxsize=None)
def _shipped() -> dict[str, str]:
    return _read(HDL)


def hdl_hash(module: str, hdl_dir: Path | None = None) -> str:
    """The revision of ``module`` in the library files of ``hdl_dir`` (an export's rtl folder, whose copies are the
    ones synthesized), else in the shipped library (``qpass/backends/rtl/hdl``, read once per process)."""
    return module_hash(module, _shipped() if hdl_dir is None else _read(hdl_dir))
