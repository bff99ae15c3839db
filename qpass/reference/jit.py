"""The optional compiled kernels (numba, the ``fast`` extra): one switch for all of them."""
from __future__ import annotations

import importlib
import os


def compiled(module: str, needs: tuple[str, ...] = ()):
    """``qpass.reference.<module>`` when it and ``needs`` import and the environment does not set QPASS_NO_JIT=1,
    else None (the caller takes its numpy path: the same numbers)."""
    if os.environ.get("QPASS_NO_JIT") == "1":
        return None
    try:
        for name in needs:
            importlib.import_module(name)
        return importlib.import_module(f"qpass.reference.{module}")
    except ImportError:
        return None
