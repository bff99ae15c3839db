"""C simulation of an exported HLS project from Python: build the testbench with g++ (once; rebuilt only when a
source is newer than the binary), stream integer codes through it, read the outputs back. A ``CsimCache`` passed in
(e.g. ``ExportResult.csim_cache``) keeps the last few runs, so feeding a project the same inputs again reuses the
run, and serialises concurrent builds of one project."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from ...errors import QpassError
from .aptypes import require_ap_types

SOURCES = ("tb.cpp", "params.h", "qpass_dataflow.h", "csim/hls_stream.h")
MEMO_SIZE = 8


class CsimCache:
    """The last ``size`` C simulation runs, keyed by (project, binary mtime, inputs digest), and one build lock per
    project. Thread-safe; share one between the runs that may repeat (a comparison's partition-by-partition and
    end-to-end passes)."""

    def __init__(self, size: int = MEMO_SIZE):
        self.size = size
        self._runs: dict[tuple, dict] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def build_lock(self, d: Path) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(str(d.resolve()), threading.Lock())

    def get(self, key: tuple) -> dict[str, np.ndarray] | None:
        with self._lock:
            hit = self._runs.get(key)
        return None if hit is None else {k: v.copy() for k, v in hit.items()}

    def put(self, key: tuple, outputs: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._runs[key] = {k: v.copy() for k, v in outputs.items()}
            while len(self._runs) > self.size:
                self._runs.pop(next(iter(self._runs)))


def meta(project_dir: str | os.PathLike) -> dict:
    p = Path(project_dir) / "partition.json"
    if not p.is_file():
        raise QpassError(f"{project_dir}: not an exported qpass HLS project (no partition.json)")
    return json.loads(p.read_text())


def _sources(d: Path, m: dict) -> list[Path]:
    return [d / s for s in SOURCES] + [d / f"{m['top']}.cpp", d / f"{m['top']}.h"]


def compile_command(project_dir: str | os.PathLike, ap_types: str | os.PathLike | None = None,
                    out: str = "csim_bin") -> list[str]:
    d = Path(project_dir)
    m = meta(d)
    cxx = os.environ.get("CXX") or shutil.which("g++") or "g++"
    flags = m.get("cxxflags", "-std=c++14 -O2 -w").split()
    return [cxx, *flags, "-DQPASS_SINGLE_TU", "-I.", "-Icsim", f"-I{require_ap_types(ap_types)}", "tb.cpp", "-o", out]


def build(project_dir: str | os.PathLike, ap_types: str | os.PathLike | None = None, force: bool = False,
          cache: CsimCache | None = None) -> Path:
    """Compile the C simulation binary ``csim_bin`` of a project (skipped when it is newer than every source).
    Concurrent builds of one project wait for each other when they share ``cache``; without one they may both
    compile (each into its own temporary file, renamed into place)."""
    d = Path(project_dir)
    m = meta(d)
    binary = d / "csim_bin"
    with (cache.build_lock(d) if cache is not None else contextlib.nullcontext()):
        if not force and binary.is_file():
            newest = max(p.stat().st_mtime for p in _sources(d, m) if p.exists())
            if binary.stat().st_mtime >= newest:
                return binary
        if shutil.which(os.environ.get("CXX") or "g++") is None:
            raise QpassError("g++ not found: the C simulation needs a C++14 compiler")
        tmp = f".csim_bin.{os.getpid()}.{threading.get_ident()}"
        cmd = compile_command(d, ap_types, tmp)
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            err = [line for line in r.stderr.splitlines() if "error" in line][:5] or r.stderr.splitlines()[-5:]
            raise QpassError(f"{d}: g++ failed: " + " | ".join(err))
        os.replace(d / tmp, binary)
        # the command as it builds csim_bin, and the compiler's messages: no wall time or temporary name, so two
        # exports of one model are byte-identical (the build time is in the comparison's timings)
        shown = [binary.name if c == tmp else c for c in cmd]
        (d / "csim_build.log").write_text(f"{' '.join(shown)}\n{r.stderr}")
    return binary


def _frames(arr: np.ndarray, elems: int, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.size % elems:
        raise QpassError(f"{name}: {a.size} values is not a whole number of frames of {elems} elements")
    return a.reshape(-1, elems)


def _to_port(ports: list[dict], inputs) -> dict[str, np.ndarray]:
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != len(ports):
            raise QpassError(f"expected {len(ports)} inputs, got {len(inputs)}")
        return {p["name"]: np.asarray(v) for p, v in zip(ports, inputs)}
    out = {}
    for p in ports:
        v = inputs.get(p["tensor"], inputs.get(p["name"]))
        if v is None:
            raise QpassError(f"no data for input {p['tensor']!r}")
        out[p["name"]] = np.asarray(v)
    return out


def csim(project_dir: str | os.PathLike, inputs, ap_types: str | os.PathLike | None = None,
         timeout: float | None = None, cache: CsimCache | None = None) -> dict[str, np.ndarray]:
    """Run the C simulation on ``inputs`` ({tensor name: array} or a list in port order): each array holds whole
    frames (any shape whose size is a multiple of the per-sample element count, e.g. (N, C, H, W) in ONNX
    layout). Returns {output tensor name: integer array (frames, *per-sample shape)} in ONNX layout. With
    ``cache``, a run on inputs it holds is reused."""
    d = Path(project_dir)
    m = meta(d)
    binary = build(d, ap_types, cache=cache)
    orders = np.load(d / "orders.npz")
    feeds = _to_port(m["inputs"], inputs)
    h = hashlib.sha256()
    for p in m["inputs"]:
        a = np.ascontiguousarray(feeds[p["name"]], dtype=np.float64).reshape(-1)
        h.update(f"{p['name']}:{a.size}".encode())
        h.update(a.tobytes())
    key = (str(d.resolve()), binary.stat().st_mtime_ns, h.hexdigest())
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        return hit
    frames = None
    with tempfile.TemporaryDirectory(prefix="qpass_csim_") as tmp:
        tmp = Path(tmp)
        args = []
        for p in m["inputs"]:
            a = _frames(feeds[p["name"]], p["elems"], p["tensor"])
            if frames is None:
                frames = a.shape[0]
            elif a.shape[0] != frames:
                raise QpassError(f"inputs hold different frame counts ({frames} and {a.shape[0]})")
            if not np.all(a == np.round(a)):
                raise QpassError(f"{p['tensor']}: the C simulation takes integer codes")
            s = a[:, orders[p["name"]]].astype(np.int64)
            f = tmp / f"{p['name']}.txt"
            np.savetxt(f, s.reshape(-1), fmt="%d")
            args.append(str(f))
        outs = [tmp / f"{p['name']}.txt" for p in m["outputs"]]
        args += [str(f) for f in outs]
        if m.get("memories"):
            args.append(str(d / m["memories"]))
        r = subprocess.run([str(binary), str(frames or 0), *args], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise QpassError(f"{d}: C simulation failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        result = {}
        for p, f in zip(m["outputs"], outs):
            vals = np.loadtxt(f, dtype=np.int64, ndmin=1) if frames else np.zeros(0, np.int64)
            vals = vals.reshape(frames, p["elems"])
            y = np.empty_like(vals)
            y[:, orders[p["name"]]] = vals
            result[p["tensor"]] = y.reshape((frames, *p["shape"]))
    if cache is not None:
        cache.put(key, result)
    return result
