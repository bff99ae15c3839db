"""The optional compiled kernels (numba, the ``fast`` extra): one switch for all of them."""
from __future__ import annotations

import importlib
import os
import sys


def compiled(module: str, needs: tuple[str, ...] = ()):
    """``qpass.reference.<module>`` when it and ``needs`` import and the environment does not set QPASS_NO_JIT=1,
    else None (the caller takes its numpy path: the same numbers)."""
    if os.environ.get("QPASS_NO_JIT") == "1":
        return None
    name = f"qpass.reference.{module}"
    if name in sys.modules and all(n in sys.modules for n in needs):  # imported before: no import machinery
        return sys.modules[name]
    try:
        for dep in needs:
            importlib.import_module(dep)
        return importlib.import_module(name)
    except ImportError:
        return None
