"""FINN's ``folding_config.json`` for a whole design (all dataflow partitions).

The file maps layer names to attributes: ``{"conv1": {"PE": 32, "SIMD": 32, "ram_style": "block", "resType": "lut"},
"Defaults": {...}}``. A name is a qpass layer name (as in report.txt) or FINN's ``<OpType>_<i>`` (the i-th layer of
that kind in the design, e.g. ``MVAU_hls_0`` / ``MatrixVectorActivation_0``, ``ConvolutionInputGenerator_2``).
Attributes qpass uses: ``PE``, ``SIMD``, ``ram_style``, ``ram_style_thresholds``, ``resType`` (or ``res_type``),
``mem_mode`` (FINN's const / internal_embedded: constant ROMs; decoupled / internal_decoupled, or qpass' runtime:
runtime-writable RAMs, ``qpass.hw.weight_memory``) and ``runtime_writeable_weights`` (1: runtime); FINN-only ones
(FIFO depths, ...) are accepted and listed as unused.
``Defaults`` (``{attr: [value, [op types]]}`` as FINN, or ``{attr: value}``) applies to every layer of those kinds
that the file does not name. ``effective_config`` writes the folding a design ended with in the same format.
"""
from __future__ import annotations

import json
import os
import re

from qpass.errors import QpassError
from qpass.hw.layers import RAM_STYLES, RES_TYPES, Layer
from qpass.hw.weight_memory import FINN_MEM_MODES

#: FINN op types (with and without the _hls/_rtl/_Batch suffixes) -> qpass cost-model kind
FINN_KINDS = {"MatrixVectorActivation": "MVTU", "MVAU": "MVTU", "StreamingFCLayer": "MVTU",
              "VectorVectorActivation": "VVAU", "VVAU": "VVAU", "ConvolutionInputGenerator": "SlidingWindow",
              "Thresholding": "Thresholding", "StreamingMaxPool": "Pool", "Pool": "Pool", "GlobalAccPool": "Pool",
              "AddStreams": "AddStreams", "ChannelwiseOp": "ChannelwiseOp", "StreamingConcat": "Concat"}
USED = ("PE", "SIMD", "ram_style", "ram_style_thresholds", "resType", "res_type", "mem_mode",
        "runtime_writeable_weights")
_FINN_NAME = re.compile(r"^([A-Za-z]+?)(?:_Batch|_hls|_rtl)?(?:_(\d+))$")


def load(path: str | os.PathLike) -> dict:
    """Read and check a folding file; QpassError (one line) on anything malformed."""
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as exc:
        raise QpassError(f"--folding {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QpassError(f"--folding {path}: not JSON ({exc})") from None
    if not isinstance(cfg, dict) or not all(isinstance(v, dict) for v in cfg.values()):
        raise QpassError(f"--folding {path}: expected {{layer name: {{attribute: value}}}} (FINN folding_config.json)")
    for name, attrs in cfg.items():
        for k in ("PE", "SIMD"):
            if k in attrs and (isinstance(attrs[k], bool) or not isinstance(attrs[k], int) or attrs[k] < 1):
                raise QpassError(f"--folding {path}: {name}.{k} must be a positive integer, got {attrs[k]!r}")
    return cfg


def _kind_index(layers: list[Layer]) -> dict[tuple[str, int], str]:
    seen: dict[str, int] = {}
    out = {}
    for l in layers:
        i = seen.get(l.kind, 0)
        out[(l.kind, i)] = l.name
        seen[l.kind] = i + 1
    return out


def resolve(cfg: dict, layers: list[Layer]) -> tuple[dict[str, dict], list[str]]:
    """({layer name: attributes}, notes) for the design's layers; QpassError for a name that matches no layer."""
    names = {l.name for l in layers}
    by_kind = _kind_index(layers)
    out: dict[str, dict] = {}
    notes = []
    for key, attrs in cfg.items():
        if key == "Defaults":
            continue
        if key in names:
            target = key
        else:
            m = _FINN_NAME.match(key)
            kind = FINN_KINDS.get(m.group(1)) if m else None
            target = by_kind.get((kind, int(m.group(2)))) if kind else None
            if target is None:
                raise QpassError(f"--folding: {key!r} names no layer of this design (layers: "
                                 f"{', '.join(sorted(names))})")
            notes.append(f"folding: {key} is layer {target}")
        out.setdefault(target, {}).update(attrs)
    for attr, spec in cfg.get("Defaults", {}).items():
        value, kinds = (spec[0], spec[1]) if isinstance(spec, list) and len(spec) == 2 else (spec, None)
        wanted = None if kinds is None else {FINN_KINDS.get(_FINN_NAME.match(f"{k}_0").group(1), k) for k in kinds}
        for l in layers:
            if wanted is None or l.kind in wanted:
                out.setdefault(l.name, {}).setdefault(attr, value)
    unused = sorted({k for a in out.values() for k in a if k not in USED})
    if unused:
        notes.append(f"folding: attributes not used by qpass: {', '.join(unused)}")
    return out, notes


def apply(layer: Layer, attrs: dict) -> Layer:
    """The layer refolded and restyled by one entry of a folding file (QpassError when illegal)."""
    pe, simd = int(attrs.get("PE", layer.fold[0])), int(attrs.get("SIMD", layer.fold[1]))
    if (pe, simd) not in layer.fold_options():
        raise QpassError(f"--folding: {layer.name}: PE={pe}, SIMD={simd} is not a legal folding ({layer.kind}: PE in "
                         f"{layer.legal_pe()}, SIMD in {layer.legal_simd()})")
    out = layer.folded(pe, simd)
    styles = {}
    for key, field, choices in (("ram_style", "ram_style", RAM_STYLES),
                                ("ram_style_thresholds", "ram_style_thresholds", RAM_STYLES),
                                ("resType", "res_type", RES_TYPES), ("res_type", "res_type", RES_TYPES)):
        if key in attrs and hasattr(layer, field):
            if attrs[key] not in choices:
                raise QpassError(f"--folding: {layer.name}: {key}={attrs[key]!r} is not one of {', '.join(choices)}")
            styles[field] = attrs[key]
    if hasattr(layer, "mem_mode"):
        mode = _mem_mode(layer.name, attrs)
        if mode is not None:
            styles["mem_mode"] = mode
    return out.restyled(**styles) if styles else out


def _mem_mode(name: str, attrs: dict) -> str | None:
    """qpass' mem_mode from FINN's ``mem_mode`` / ``runtime_writeable_weights`` (None: not given)."""
    mode = None
    if "mem_mode" in attrs:
        mode = FINN_MEM_MODES.get(attrs["mem_mode"])
        if mode is None:
            raise QpassError(f"--folding: {name}: mem_mode={attrs['mem_mode']!r} is not one of "
                             f"{', '.join(FINN_MEM_MODES)} (external weight streams are not supported)")
    if int(attrs.get("runtime_writeable_weights", 0) or 0):
        mode = "runtime"
    return mode


def effective_config(layers: list[Layer]) -> dict:
    """The folding file of a finished design: every layer's PE/SIMD and concrete ram_style / resType."""
    cfg: dict[str, dict] = {"Defaults": {}}
    for l in layers:
        e = {"PE": l.fold[0], "SIMD": l.fold[1]}
        for field, key in (("ram_style", "ram_style"), ("ram_style_thresholds", "ram_style_thresholds"),
                           ("res_type", "resType")):
            if hasattr(l, field):
                e[key] = getattr(l, field)
        if hasattr(l, "mem_mode"):
            runtime = l.mem_mode == "runtime"
            e["mem_mode"] = "internal_decoupled" if runtime else "internal_embedded"
            e["runtime_writeable_weights"] = int(runtime)
        cfg[l.name] = e
    return cfg


def dumps(cfg: dict) -> str:
    return json.dumps(cfg, indent=2) + "\n"
