"""Where the arbitrary-precision headers (``ap_int.h`` and its companions) come from.

qpass uses only Xilinx's ``ap_int.h`` / ``ap_fixed.h`` and the headers they include, which carry the Apache-2.0
license ("Copyright 2011-2019 Xilinx, Inc. -- Licensed under the Apache License, Version 2.0"), as shipped in
the hls4ml wheel (``hls4ml/templates/vivado/ap_types/``). The ``hls_stream.h`` and ``ap_shift_reg.h`` in that
same folder carry a proprietary notice and are never used or copied: the exported projects bring their own
``hls::stream`` (``templates/hls_stream.h``) on a separate include path.

Lookup order (``find_ap_types``):
1. ``$QPASS_AP_TYPES`` (a folder with ``ap_int.h``);
2. an installed hls4ml package (located with importlib, without importing it);
3. the cache ``$XDG_CACHE_HOME/qpass/ap_types`` (default ``~/.cache/qpass/ap_types``), filled by
   ``fetch_ap_types()``: ``pip download hls4ml --no-deps`` (one 3.3 MB wheel, no dependencies) and extraction
   of only the Apache-2.0 headers plus the wheel's LICENSE file -- a lighter route than ``pip install hls4ml``
   (which pulls h5py, quantizers and pydigitalwavetools).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ...errors import QpassError

ENV = "QPASS_AP_TYPES"
WHEEL_DIR = "hls4ml/templates/vivado/ap_types/"
# everything ap_int.h / ap_fixed.h include, all Apache-2.0 (checked: g++ -H on ap_int.h lists exactly these)
HEADERS = ("ap_common.h", "ap_decl.h", "ap_fixed.h", "ap_fixed_base.h", "ap_fixed_ref.h", "ap_fixed_special.h",
           "ap_int.h", "ap_int_base.h", "ap_int_ref.h", "ap_int_special.h", "etc/ap_private.h")
NEVER = ("hls_stream.h", "ap_shift_reg.h")  # proprietary notices


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qpass" / "ap_types"


def _ok(d: Path | None) -> bool:
    return d is not None and (d / "ap_int.h").is_file() and (d / "etc" / "ap_private.h").is_file()


def hls4ml_ap_types() -> Path | None:
    """The ap_types folder of an installed hls4ml, found without importing hls4ml."""
    try:
        spec = importlib.util.find_spec("hls4ml")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for loc in spec.submodule_search_locations or []:
        d = Path(loc) / "templates" / "vivado" / "ap_types"
        if _ok(d):
            return d
    return None


def find_ap_types() -> Path | None:
    """A folder with ap_int.h, or None (see the module docstring for the order)."""
    env = os.environ.get(ENV)
    if env:
        return Path(env) if _ok(Path(env)) else None
    d = hls4ml_ap_types()
    if d is not None:
        return d
    c = cache_dir()
    return c if _ok(c) else None


def require_ap_types(path: str | os.PathLike | None = None) -> Path:
    d = Path(path) if path is not None else find_ap_types()
    if not _ok(d):
        raise QpassError("ap_int.h not found: pip install hls4ml (its templates/vivado/ap_types are Apache-2.0), or "
                         f"run qpass.backends.hls.aptypes.fetch_ap_types(), or set {ENV} to a folder with ap_int.h")
    return d


def extract_from_wheel(wheel: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy only the Apache-2.0 ap_types headers (and the wheel's LICENSE) out of an hls4ml wheel."""
    dest = Path(dest)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        missing = [h for h in HEADERS if WHEEL_DIR + h not in names]
        if missing:
            raise QpassError(f"{wheel}: no {', '.join(missing)} under {WHEEL_DIR}")
        tmp = Path(tempfile.mkdtemp(prefix=".ap_types_", dir=dest.parent if dest.parent.exists() else None))
        for h in HEADERS:
            data = z.read(WHEEL_DIR + h)
            if b"Apache License" not in data[:3000]:
                raise QpassError(f"{h} in {wheel} does not carry the Apache-2.0 notice; not extracted")
            out = tmp / h
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
        lic = next((n for n in names if n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")),
                   None)
        if lic:
            (tmp / "LICENSE").write_bytes(z.read(lic))
        (tmp / "SOURCE").write_text(f"extracted by qpass from {Path(wheel).name}: {WHEEL_DIR} (Apache-2.0 files only)\n")
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def fetch_ap_types(dest: str | os.PathLike | None = None, version: str | None = None) -> Path:
    """``pip download hls4ml --no-deps`` into a temporary folder and extract the Apache-2.0 headers into ``dest``
    (default: the cache folder). Returns the folder."""
    dest = Path(dest) if dest is not None else cache_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    spec = f"hls4ml=={version}" if version else "hls4ml"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", spec, "--no-deps", "--only-binary", ":all:", "-d", tmp, "-q"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("hls4ml-*.whl"))
        if r.returncode != 0 or not wheels:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise QpassError(f"pip download hls4ml failed: {msg[-1] if msg else r.returncode}")
        return extract_from_wheel(wheels[0], dest)
