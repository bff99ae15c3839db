"""Fuzzing: mutated models and calibration data never make qpass crash, hang, leak files or read outside.

Every case starts from a valid model of the zoo (models/*.onnx, models/structural/*.onnx) and its calibration
data, applies one seeded mutation (a truncated or bit-flipped file, wrong dtypes, negative or huge dims, a
cycle, a dangling or duplicated name, external data pointing outside the model's folder, a missing graph,
garbage attributes or ops, bad opsets, NaN weights; or bad calibration data: wrong shapes, NaN/Inf, wrong
dtypes, missing keys, empty arrays, files that are not .npz) and runs qpass on it in a worker process, in its
own folder, with a time limit:

- through the Python API (`qpass.load` + `qpass.optimize`), N_API cases: the call either succeeds (and the
  result passes the ONNX checker) or raises `qpass.errors.QpassError` with a one-line message. An audit hook
  (`sys.addaudithook`, 'open' events) checks that nothing outside the case folder and the Python installation
  is opened (a sentinel file sits just outside the folder) and nothing is written;
- through the real CLI (`python -m qpass.cli optimize`), N_CLI cases: exit 0 with an output file, or exit 2
  with one `qpass: error:` line on stderr, no output file and no temporary file left; the input is never
  modified; the same audit hook runs inside the CLI process.

Hostile-input families (issue 20; FAMILIES below, QPASS_FUZZ_FAMILY_CASES seeded cases each): output paths,
permissions and the umask, special files as data (FIFO, /dev/zero, a directory), object arrays in an .npz, hostile
pipeline YAML, subgraphs nested past protobuf's depth, and bad flags, each a real CLI run: exit 0 with exactly the
expected outputs, or one error line with exit 2 and nothing written.

Known qpass findings (see KNOWN below) are tolerated in the fuzz run and each has its own minimal reproducer
test marked xfail(strict=False); anything else fails the test. `QPASS_FUZZ_CASES=N` changes the API case count.
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import traceback
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
SEED = 20261122
DEFAULT_API_CASES, DEFAULT_CLI_CASES = 2400, 160
N_API = int(os.environ.get("QPASS_FUZZ_CASES", DEFAULT_API_CASES))
N_CLI = int(os.environ.get("QPASS_FUZZ_CLI_CASES", DEFAULT_CLI_CASES))
CASE_TIMEOUT = 30.0         # seconds per case (cases take milliseconds; the CLI ~1 s)
WORKERS = 2
MEMORY_LIMIT = 6 << 30      # address-space limit in workers, so a huge allocation fails fast
CALIB_SAMPLES = 4

MODEL_KINDS = ["truncate", "flip", "dtype_input", "dtype_init", "dims_input", "dims_init", "cycle", "dangling",
               "external", "duplicate", "no_graph", "attr_garbage", "op_garbage", "opset", "weights",
               "reorder", "names"]
CALIB_KINDS = ["calib_shape", "calib_values", "calib_dtype", "calib_keys", "calib_empty", "calib_file"]
KINDS = MODEL_KINDS + CALIB_KINDS

# Known qpass findings: (kind regex, signature regex, reason). A failure matching one is tolerated here; each
# has a minimal reproducer below marked xfail(strict=False).
KNOWN: list[tuple[str, str, str]] = []  # F1-F5 (huge .npy headers, unknown elem types, non-.npy members,
# plain .npy files, onnxruntime's own log line) are fixed; their reproducers below keep them fixed


# ----------------------------------------------------------------------------------------------------------
# seeds and mutations (deterministic per case index)
# ----------------------------------------------------------------------------------------------------------

def seed_paths() -> list[Path]:
    return sorted(MODELS.glob("*.onnx")) + sorted((MODELS / "structural").glob("*.onnx"))


def load_seeds():
    seeds = []
    for p in seed_paths():
        calib_file = p.with_name(p.name[:-5] + ".calib.npz")
        with np.load(calib_file) as z:
            calib = {k: (z[k][:CALIB_SAMPLES] if z[k].ndim else z[k]) for k in z.files}
        seeds.append((p.stem, onnx.load(p), calib))
    return seeds


VALID_TYPES = [t for t in range(1, 24) if t not in (8,)]  # every TensorProto type but STRING
ODD_TYPES = [0, 8, 24, 99, 1000, -1]


def _copy(m: onnx.ModelProto) -> onnx.ModelProto:
    c = onnx.ModelProto()
    c.CopyFrom(m)
    return c


def _real_inputs(m):
    inits = {i.name for i in m.graph.initializer}
    return [vi for vi in m.graph.input if vi.name not in inits]


def _pick(rng, seq):
    seq = list(seq)
    return seq[int(rng.integers(0, len(seq)))] if seq else None


def _all_tensor_names(m):
    names = [vi.name for vi in m.graph.input] + [i.name for i in m.graph.initializer]
    for n in m.graph.node:
        names += [o for o in n.output if o]
    return names


HUGE_DIMS = [-1, -7, 0, 2 ** 31, 2 ** 40, 2 ** 62, 2 ** 63 - 1]


def mutate_model(m: onnx.ModelProto, kind: str, rng, case_dir: Path, sentinel: Path):
    """Return (file bytes, description) of a mutated model (extra files may be written into case_dir)."""
    m = _copy(m)
    g = m.graph
    desc = kind
    if kind == "truncate":
        data = m.SerializeToString()
        off = int(rng.integers(0, len(data)))
        tail = rng.bytes(int(rng.integers(0, 8))) if rng.random() < 0.3 else b""
        return data[:off] + tail, f"truncate at {off}/{len(data)} (+{len(tail)} garbage bytes)"
    if kind == "flip":
        data = bytearray(m.SerializeToString())
        k = int(rng.integers(1, 17))
        where = sorted(int(x) for x in rng.integers(0, len(data), size=k))
        for pos in where:
            data[pos] ^= int(rng.integers(1, 256))
        return bytes(data), f"flip {k} bytes at {where[:6]}{'...' if k > 6 else ''}"
    if kind == "dtype_input":
        vi = _pick(rng, list(g.input) + list(g.output))
        t = int(_pick(rng, VALID_TYPES + ODD_TYPES))
        vi.type.tensor_type.elem_type = t
        desc = f"elem_type of {vi.name!r} -> {t}"
    elif kind == "dtype_init":
        init = _pick(rng, g.initializer)
        if init is None:
            return mutate_model(m, "dtype_input", rng, case_dir, sentinel)
        t = int(_pick(rng, VALID_TYPES + ODD_TYPES))
        init.data_type = t
        desc = f"data_type of initializer {init.name!r} -> {t}"
    elif kind == "dims_input":
        vi = _pick(rng, _real_inputs(m) or list(g.input))
        shape = vi.type.tensor_type.shape
        r = rng.random()
        if r < 0.6 and len(shape.dim):
            d = shape.dim[int(rng.integers(0, len(shape.dim)))]
            v = int(_pick(rng, HUGE_DIMS))
            d.dim_value = v
            desc = f"dim of input {vi.name!r} -> {v}"
        elif r < 0.75:
            for _ in range(int(rng.integers(1, 4))):
                shape.dim.add().dim_value = int(_pick(rng, [1, 3, 2 ** 40]))
            desc = f"extra dims on input {vi.name!r}"
        elif r < 0.9:
            vi.type.tensor_type.ClearField("shape")
            desc = f"shape of input {vi.name!r} removed"
        else:
            del shape.dim[:]
            desc = f"input {vi.name!r} made rank 0"
    elif kind == "dims_init":
        init = _pick(rng, [i for i in g.initializer if len(i.dims)])
        if init is None:
            return mutate_model(m, "dims_input", rng, case_dir, sentinel)
        i = int(rng.integers(0, len(init.dims)))
        v = int(_pick(rng, HUGE_DIMS + [init.dims[i] + 1, max(1, init.dims[i] - 1)]))
        init.dims[i] = v
        desc = f"dims[{i}] of initializer {init.name!r} -> {v}"
    elif kind == "cycle":
        nodes = list(g.node)
        i = int(rng.integers(0, len(nodes)))
        j = int(rng.integers(i, len(nodes)))
        src = _pick(rng, [o for o in nodes[j].output if o])
        if not nodes[i].input:
            nodes[i].input.append(src)
        else:
            k = int(rng.integers(0, len(nodes[i].input)))
            nodes[i].input[k] = src
        desc = f"node {i} ({nodes[i].op_type}) input rewired to output {src!r} of node {j}"
    elif kind == "dangling":
        r = rng.random()
        if r < 0.5:
            n = _pick(rng, [n for n in g.node if n.input])
            k = int(rng.integers(0, len(n.input)))
            n.input[k] = "ghost_tensor"
            desc = f"{n.op_type} input {k} -> 'ghost_tensor' (nobody produces it)"
        elif r < 0.7:
            g.output[0].name = "ghost_output"
            desc = "graph output renamed to 'ghost_output'"
        elif r < 0.9 and len(g.initializer):
            init = g.initializer[int(rng.integers(0, len(g.initializer)))]
            desc = f"initializer {init.name!r} removed"
            g.initializer.remove(init)
        else:
            n = g.node[int(rng.integers(0, len(g.node)))]
            desc = f"node {n.op_type} {n.name!r} removed"
            g.node.remove(n)
    elif kind == "external":
        return _mutate_external(m, rng, case_dir, sentinel)
    elif kind == "duplicate":
        r = rng.random()
        if r < 0.3:
            n = _pick(rng, g.node)
            g.node.append(_copy_node(n))
            desc = f"node {n.op_type} duplicated (two producers of {list(n.output)})"
        elif r < 0.5 and len(g.node) >= 2:
            a, b = rng.choice(len(g.node), 2, replace=False)
            g.node[int(a)].output[0] = g.node[int(b)].output[0]
            desc = f"node {a} output renamed to node {b}'s output {g.node[int(b)].output[0]!r}"
        elif r < 0.65 and len(g.initializer):
            init = _pick(rng, g.initializer)
            dup = g.initializer.add()
            dup.CopyFrom(init)
            desc = f"initializer {init.name!r} duplicated"
        elif r < 0.8:
            dup = g.input.add()
            dup.CopyFrom(g.input[0])
            desc = f"graph input {g.input[0].name!r} duplicated"
        elif r < 0.9 and len(g.initializer):
            init = _pick(rng, g.initializer)
            init.name = g.input[0].name
            desc = f"initializer {init.name!r} renamed to the graph input's name"
        else:
            dup = g.output.add()
            dup.CopyFrom(g.output[0])
            desc = f"graph output {g.output[0].name!r} listed twice"
    elif kind == "no_graph":
        r = rng.random()
        if r < 0.3:
            m.ClearField("graph")
            desc = "graph removed"
        elif r < 0.5:
            del g.node[:]
            desc = "every node removed"
        elif r < 0.65:
            del g.output[:]
            desc = "every graph output removed"
        elif r < 0.8:
            del g.input[:]
            desc = "every graph input removed"
        elif r < 0.9:
            return b"", "empty file"
        else:
            return rng.bytes(int(rng.integers(1, 4096))), "random bytes"
    elif kind == "attr_garbage":
        desc = _mutate_attributes(g, rng)
    elif kind == "op_garbage":
        n = _pick(rng, g.node)
        r = rng.random()
        if r < 0.4:
            new = str(_pick(rng, ["Relu", "Conv", "MatMul", "Gemm", "Softmax", "Add", "Concat", "Reshape",
                                  "QuantizeLinear", "DequantizeLinear", "Loop", "If", "NoSuchOp", "Identity",
                                  "BatchNormalization", "MaxPool", "Resize", "Cast"]))
            desc = f"{n.op_type} {n.name!r} -> op {new}"
            n.op_type = new
        elif r < 0.6:
            n.domain = str(_pick(rng, ["com.evil", "ai.onnx.ml", "com.microsoft", "qonnx.custom_op.general"]))
            desc = f"{n.op_type} domain -> {n.domain}"
        elif r < 0.8 and len(n.input):
            del n.input[int(rng.integers(0, len(n.input))):]
            desc = f"{n.op_type} inputs truncated to {len(n.input)}"
        else:
            n.input.extend(["" if rng.random() < 0.5 else g.input[0].name] * int(rng.integers(1, 4)))
            desc = f"{n.op_type} extra inputs {list(n.input)}"
    elif kind == "opset":
        r = rng.random()
        if r < 0.4:
            v = int(_pick(rng, [0, 1, 5, 6, 8, 30, 10 ** 6, -3]))
            for o in m.opset_import:
                if o.domain in ("", "ai.onnx"):
                    o.version = v
            desc = f"default opset -> {v}"
        elif r < 0.55:
            del m.opset_import[:]
            desc = "opset_import removed"
        elif r < 0.7:
            o = m.opset_import.add()
            o.domain, o.version = "", int(_pick(rng, [7, 13, 19]))
            desc = "default domain imported twice"
        else:
            v = int(_pick(rng, [0, 1, 2, 3, 50, -1]))
            m.ir_version = v
            desc = f"ir_version -> {v}"
    elif kind == "weights":
        init = _pick(rng, [i for i in g.initializer if i.data_type == TensorProto.FLOAT])
        if init is None:
            return mutate_model(m, "attr_garbage", rng, case_dir, sentinel)
        w = numpy_helper.to_array(init).copy()
        what = str(_pick(rng, ["nan", "inf", "huge", "zeros", "denormal", "one_nan"]))
        if w.size:
            if what == "nan":
                w[...] = np.nan
            elif what == "inf":
                w.flat[int(rng.integers(0, w.size))] = np.inf
            elif what == "huge":
                w *= np.float32(1e37)
            elif what == "zeros":
                w[...] = 0
            elif what == "denormal":
                w[...] = np.float32(1e-42)
            else:
                w.flat[int(rng.integers(0, w.size))] = np.nan
        init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
        desc = f"initializer {init.name!r} values -> {what}"
    elif kind == "names":
        desc = _mutate_names(m, rng)
    elif kind == "reorder":
        nodes = [_copy_node(n) for n in g.node]
        order = rng.permutation(len(nodes))
        del g.node[:]
        g.node.extend([nodes[int(i)] for i in order])
        desc = "nodes shuffled"
    return m.SerializeToString(), desc


QPASS_SUFFIXES = ["_scale", "_zero_point", "_quantized", "_dequantized", "_float", "_QuantizeLinear",
                  "_DequantizeLinear", "_q", "_dq", "_folded", "_bn"]


def _rename_tensor(g, old: str, new: str) -> None:
    for n in g.node:
        for i, x in enumerate(n.input):
            if x == old:
                n.input[i] = new
        for i, x in enumerate(n.output):
            if x == old:
                n.output[i] = new
    for coll in (g.input, g.output, g.initializer, g.value_info):
        for v in coll:
            if v.name == old:
                v.name = new


def _mutate_names(m, rng) -> str:
    """Valid but awkward names: collisions with the names qpass generates, unicode, very long, empty."""
    g = m.graph
    inner = [o for n in g.node for o in n.output if o and o not in {x.name for x in g.output}]
    r = rng.random()
    if r < 0.45 and inner:
        t = _pick(rng, inner)
        other = _pick(rng, [vi.name for vi in g.input] + [i.name for i in g.initializer] + inner)
        new = other + str(_pick(rng, QPASS_SUFFIXES))
        if new in set(_all_tensor_names(m)):
            return "names: collision target already taken (unchanged)"
        _rename_tensor(g, t, new)
        return f"tensor {t!r} renamed to {new!r} (a name qpass may generate)"
    if r < 0.65:
        keep = {vi.name for vi in g.input}  # the calibration data is keyed by the input names
        for k, t in enumerate(list(_all_tensor_names(m))):
            if t not in keep:
                _rename_tensor(g, t, str(_pick(rng, ["ü/ß:", "名前", "a b", "x.y:0", "../", "%s", "\\"])) + str(k))
        return "every tensor but the inputs renamed to unicode / path-like names"
    if r < 0.8 and inner:
        t = _pick(rng, inner)
        _rename_tensor(g, t, "L" * 20000)
        return f"tensor {t!r} renamed to a 20000-character name"
    for n in g.node:
        n.name = "" if rng.random() < 0.5 else "same"
    return "node names emptied or all the same"


def _copy_node(n):
    c = onnx.NodeProto()
    c.CopyFrom(n)
    return c


def _mutate_attributes(g, rng) -> str:
    n = _pick(rng, g.node)
    r = rng.random()
    if r < 0.35 or not n.attribute:
        name = str(_pick(rng, ["kernel_shape", "strides", "pads", "dilations", "group", "axis", "transB", "alpha",
                               "to", "mode", "perm", "junk_attr", "epsilon", "keepdims", "allowzero"]))
        val = _pick(rng, [-1, 0, 2 ** 40, [0, 0], [-3, 5], [2 ** 33], 1.5, float("nan"), "garbage", b"\xff\xfe",
                          [], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
        for i, a in enumerate(list(n.attribute)):
            if a.name == name:
                del n.attribute[i]
                break
        try:
            n.attribute.append(helper.make_attribute(name, val))
        except (ValueError, TypeError):
            n.attribute.append(helper.make_attribute(name, -1))
        return f"{n.op_type}.{name} = {val!r}"
    a = n.attribute[int(rng.integers(0, len(n.attribute)))]
    if r < 0.6:
        a.type = int(_pick(rng, [0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 13, 14]))
        return f"{n.op_type}.{a.name} attribute type -> {a.type}"
    if r < 0.8:
        if a.ints:
            a.ints[int(rng.integers(0, len(a.ints)))] = int(_pick(rng, HUGE_DIMS))
        elif a.type == onnx.AttributeProto.INT:
            a.i = int(_pick(rng, HUGE_DIMS))
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = float(_pick(rng, [float("nan"), float("inf"), -1e30, 0.0]))
        else:
            a.s = b"\x00garbage"
        return f"{n.op_type}.{a.name} value garbled"
    n.attribute.append(_copy_attr(a))
    return f"{n.op_type}.{a.name} attribute given twice"


def _copy_attr(a):
    c = onnx.AttributeProto()
    c.CopyFrom(a)
    return c


def _mutate_external(m, rng, case_dir: Path, sentinel: Path):
    g = m.graph
    init = _pick(rng, g.initializer)
    if init is None:
        return m.SerializeToString(), "external: no initializer (unchanged)"
    arr = numpy_helper.to_array(init)
    raw = arr.tobytes()
    choice = str(_pick(rng, ["../sentinel.bin", "../../etc/passwd", "/etc/passwd", "abs_sentinel", "missing.bin",
                             "sub/../../sentinel.bin", "link.bin", "dirlink/sentinel.bin", "bad_offset",
                             "huge_length", "non_numeric", "", ".", "valid", "valid_offset"]))
    location, offset, length = choice, None, len(raw)
    if choice == "abs_sentinel":
        location = str(sentinel)
    elif choice == "link.bin":
        os.symlink(sentinel, case_dir / "link.bin")
    elif choice == "dirlink/sentinel.bin":
        os.symlink(sentinel.parent, case_dir / "dirlink")
    elif choice in ("bad_offset", "huge_length", "non_numeric", "valid", "valid_offset"):
        location = "weights.bin"
        pad = 16 if choice == "valid_offset" else 0
        (case_dir / "weights.bin").write_bytes(b"\0" * pad + raw)
        offset = {"bad_offset": -5, "huge_length": 0, "non_numeric": "abc", "valid": 0, "valid_offset": 16}[choice]
        if choice == "huge_length":
            length = 2 ** 40
    init.ClearField("raw_data")
    for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        init.ClearField(f)
    init.data_location = TensorProto.EXTERNAL
    del init.external_data[:]
    entries = {"location": location, "length": str(length)}
    if offset is not None:
        entries["offset"] = str(offset)
    for k, v in entries.items():
        e = init.external_data.add()
        e.key, e.value = k, v
    return m.SerializeToString(), f"external data of {init.name!r} at {choice!r}"


def mutate_calib(calib: dict, model: onnx.ModelProto, kind: str, rng, case_dir: Path):
    """Return (path of a calibration file in case_dir, description)."""
    path = case_dir / "calib.npz"
    c = {k: v.copy() for k, v in calib.items()}
    keys = [k for k in c if c[k].ndim]
    key = _pick(rng, keys) if keys else _pick(rng, list(c))
    desc = kind
    if kind == "calib_shape":
        a = c[key]
        r = rng.random()
        if r < 0.3:
            c[key] = a.reshape(a.shape[0], -1)
            desc = f"{key!r} flattened to {c[key].shape}"
        elif r < 0.5:
            c[key] = a[0]
            desc = f"{key!r} without the sample axis {c[key].shape}"
        elif r < 0.7:
            c[key] = a[..., None]
            desc = f"{key!r} extra trailing axis {c[key].shape}"
        elif r < 0.85 and a.ndim >= 2:
            c[key] = np.concatenate([a, a], axis=-1)
            desc = f"{key!r} last axis doubled {c[key].shape}"
        else:
            c[key] = a[:max(1, len(a) - 1)]
            if len(c) > 1 and len(keys) > 1:
                desc = f"{key!r} has fewer samples than the other inputs"
            else:
                desc = f"{key!r} has {len(c[key])} samples"
    elif kind == "calib_values":
        a = c[key]
        what = str(_pick(rng, ["nan", "inf", "-inf", "huge", "zeros", "constant", "tiny"]))
        if a.dtype.kind == "f":
            if what in ("nan", "inf", "-inf"):
                a.flat[int(rng.integers(0, a.size))] = float(what)
            elif what == "huge":
                c[key] = (a * 1e30).astype(a.dtype)
            elif what == "zeros":
                c[key] = np.zeros_like(a)
            elif what == "constant":
                c[key] = np.full_like(a, 3.0)
            else:
                c[key] = (a * 1e-30).astype(a.dtype)
        else:
            c[key] = np.full_like(a, np.iinfo(a.dtype).max if what == "huge" else 0)
        desc = f"{key!r} values {what}"
    elif kind == "calib_dtype":
        t = str(_pick(rng, ["int64", "int8", "uint8", "bool", "complex64", "float16", "float64", "U5",
                            "datetime64[s]", "V4", "structured"]))
        a = c[key]
        if t == "U5":
            c[key] = a.astype(str).astype("U5")
        elif t == "datetime64[s]":
            c[key] = a.astype(np.int64).astype("datetime64[s]")
        elif t == "V4":
            c[key] = np.zeros(a.shape, "V4")
        elif t == "structured":
            c[key] = np.zeros(a.shape, [("a", "f4"), ("b", "i4")])
        else:
            with np.errstate(all="ignore"):
                c[key] = a.astype(t)
        desc = f"{key!r} dtype -> {t}"
    elif kind == "calib_keys":
        r = rng.random()
        if r < 0.35:
            del c[key]
            desc = f"{key!r} missing"
        elif r < 0.55:
            c[str(key) + "_x"] = c.pop(key)
            desc = f"{key!r} renamed"
        elif r < 0.7:
            c["unknown_input"] = c[key]
            desc = "extra unknown key"
        elif r < 0.85:
            c["labels"] = np.arange(int(rng.integers(0, 9)))
            desc = f"labels with {len(c['labels'])} entries"
        else:
            c = {"labels": np.zeros(4, np.int64)}
            desc = "only labels"
    elif kind == "calib_empty":
        a = c[key]
        r = rng.random()
        if r < 0.4:
            c = {k: (v[:0] if v.ndim else v) for k, v in c.items()}
            desc = "zero samples"
        elif r < 0.6:
            c[key] = np.zeros((a.shape[0], 0) + a.shape[2:], a.dtype) if a.ndim >= 2 else np.zeros(0, a.dtype)
            desc = f"{key!r} zero-size sample axis"
        elif r < 0.8:
            c[key] = np.array(1.0, a.dtype)
            desc = f"{key!r} 0-d"
        else:
            c = {}
            desc = "no arrays at all"
    elif kind == "calib_file":
        r = str(_pick(rng, ["random", "truncated", "npy", "empty", "directory", "zip_text", "pickle",
                            "huge_header", "text", "missing", "bad_member_crc"]))
        buf = io.BytesIO()
        np.savez(buf, **c)
        data = buf.getvalue()
        if r == "random":
            path.write_bytes(rng.bytes(int(rng.integers(1, 5000))))
        elif r == "truncated":
            path.write_bytes(data[:int(rng.integers(1, len(data)))])
        elif r == "npy":
            with open(path, "wb") as f:
                np.save(f, c[key])
        elif r == "empty":
            path.write_bytes(b"")
        elif r == "directory":
            path.mkdir()
        elif r == "zip_text":
            with zipfile.ZipFile(path, "w") as z:
                z.writestr(f"{key}.npy", b"not an npy file")
        elif r == "pickle":
            np.savez(path, **{key: np.array([{"a": 1}] * 4, dtype=object)})
        elif r == "huge_header":
            hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1, 8), }"
            hdr = hdr + " " * (117 - len(hdr)) + "\n"
            member = b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode() + b"\0" * 64
            with zipfile.ZipFile(path, "w") as z:
                z.writestr(f"{key}.npy", member)
        elif r == "text":
            path.write_text("input,1,2,3\n")
        elif r == "missing":
            pass
        else:
            b = bytearray(data)
            i = data.find(b"NUMPY")
            b[i + 200: i + 204] = b"\xff\xff\xff\xff"
            path.write_bytes(bytes(b))
        return path, f"calibration file: {r}"
    np.savez(path, **c)
    return path, desc


def case_choice(idx: int, n_seeds: int):
    """(generator, seed index, kind) of case idx: the first draws of its generator, which the mutation continues."""
    rng = np.random.default_rng([SEED, idx])
    seed = int(rng.integers(0, n_seeds))
    kind = KINDS[int(rng.integers(0, len(KINDS)))] if rng.random() < 0.3 else MODEL_KINDS[
        int(rng.integers(0, len(MODEL_KINDS)))]
    return rng, seed, kind


def planned_kinds(n_api: int, n_cli: int) -> Counter:
    """How many cases of each kind a run of n_api API and n_cli CLI cases (indices 0 .. n_api + n_cli - 1) draws."""
    n_seeds = len(seed_paths())
    return Counter(case_choice(i, n_seeds)[2] for i in range(n_api + n_cli))


def make_case(idx: int, seeds, base: Path):
    """Build case idx in base/c<idx>: (kind, seed name, model path, calib path, description)."""
    rng, seed, kind = case_choice(idx, len(seeds))
    name, model, calib = seeds[seed]
    case_dir = base / f"c{idx}"
    case_dir.mkdir()
    sentinel = base / "sentinel.bin"
    model_path = case_dir / f"{name}.onnx"
    if kind in MODEL_KINDS:
        data, desc = mutate_model(model, kind, rng, case_dir, sentinel)
        model_path.write_bytes(data)
        calib_path = case_dir / "calib.npz"
        np.savez(calib_path, **calib)
    else:
        model_path.write_bytes(model.SerializeToString())
        calib_path, desc = mutate_calib(calib, model, kind, rng, case_dir)
    return kind, name, model_path, calib_path, desc


# ----------------------------------------------------------------------------------------------------------
# audit hook: what a case opens
# ----------------------------------------------------------------------------------------------------------

AUDIT_SRC = r'''
import os, sys, sysconfig, site
_state = {"on": False, "case": None, "log": []}
def _roots():
    r = set()
    for k in ("stdlib", "platstdlib", "purelib", "platlib", "include", "platinclude", "data"):
        p = sysconfig.get_paths().get(k)
        if p: r.add(os.path.realpath(p))
    for p in list(site.getsitepackages()) + [site.getusersitepackages(), sys.prefix, sys.base_prefix]:
        r.add(os.path.realpath(p))
    for p in sys.path:
        if p and os.path.isdir(p) and not os.path.realpath(p).startswith(os.path.realpath(_state.get("base") or "/nonexistent")):
            r.add(os.path.realpath(p))
    import importlib.util
    spec = importlib.util.find_spec("qpass")
    if spec is not None and spec.origin:
        r.add(os.path.realpath(os.path.dirname(spec.origin)))
    # system files that imports read (onnxruntime's import reads /etc/os-release)
    r.update({"/dev", "/proc", "/sys", "/usr/share/zoneinfo", "/etc/localtime", "/etc/os-release",
              "/usr/lib/os-release"})
    return tuple(sorted(r))
_ROOTS = None
def _inside(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")
def _hook(event, args):
    if not _state["on"] or event != "open":
        return
    path, mode, flags = (list(args) + [None, None, None])[:3]
    if isinstance(path, int) or path is None:
        return
    try:
        path = os.fsdecode(path)
        full = os.path.realpath(os.path.join(os.getcwd(), path)) if not os.path.isabs(path) else os.path.realpath(path)
        lexical = os.path.abspath(path)
    except Exception:
        return
    write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    case = _state["case"]
    inside_case = case and (_inside(full, case) and _inside(lexical, case))
    if write and not inside_case and not _inside(full, "/dev"):
        _state["log"].append(("write", path))
    elif not inside_case and not any(_inside(full, r) for r in _ROOTS):
        _state["log"].append(("read", path))
def install(base):
    global _ROOTS
    _state["base"] = base
    _ROOTS = _roots()
    sys.addaudithook(_hook)
    return _state
'''


def _audit_module():
    import types
    mod = types.ModuleType("qpass_fuzz_audit")
    exec(compile(AUDIT_SRC, "qpass_fuzz_audit", "exec"), mod.__dict__)
    return mod


# ----------------------------------------------------------------------------------------------------------
# running one case
# ----------------------------------------------------------------------------------------------------------

def _innermost(tb) -> str:
    frames = traceback.extract_tb(tb)
    mine = [f for f in frames if "/qpass/" in f.filename.replace("\\", "/")]
    f = (mine or frames or [None])[-1]
    if f is None:
        return "?"
    return f"{Path(f.filename).name}:{f.name}"


def _snapshot(d: Path):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def run_api_case(idx, seeds, base, audit_state):
    import qpass
    from qpass.errors import QpassError
    kind, name, model_path, calib_path, desc = make_case(idx, seeds, base)
    case_dir = model_path.parent
    before = _snapshot(case_dir)
    model_digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    audit_state["case"] = os.path.realpath(case_dir)
    audit_state["log"] = []
    audit_state["on"] = True
    outcome, detail = "ok", ""
    try:
        m = qpass.load(model_path)
        r = qpass.optimize(m, calib=calib_path)
        audit_state["on"] = False
        onnx.checker.check_model(r.model)
    except QpassError as exc:
        msg = str(exc)
        outcome, detail = ("clean", msg) if msg.strip() and "\n" not in msg else (
            "multiline", f"QpassError message of {len(msg.splitlines())} lines: {msg.splitlines()[0][:200]}")
    except onnx.checker.ValidationError as exc:
        outcome, detail = "bad_result", f"result fails the ONNX checker: {str(exc).splitlines()[0][:200]}"
    except BaseException as exc:  # noqa: B902 - everything else is a finding
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        outcome, detail = "crash", f"{type(exc).__name__}: {first} @ {_innermost(exc.__traceback__)}"
    finally:
        audit_state["on"] = False
    extra = []
    outside = [p for a, p in audit_state["log"] if a == "read"]
    writes = [p for a, p in audit_state["log"] if a == "write"]
    if outside:
        extra.append(("outside_read", f"opened {sorted(set(outside))[:3]}"))
    if writes:
        extra.append(("stray_write", f"wrote {sorted(set(writes))[:3]}"))
    after = _snapshot(case_dir)
    if after != before:
        extra.append(("stray_write", f"new files {sorted(set(after) - set(before))[:3]}"))
    if hashlib.sha256(model_path.read_bytes()).hexdigest() != model_digest:
        extra.append(("input_modified", "the model file changed"))
    shutil.rmtree(case_dir, ignore_errors=True)
    return {"idx": idx, "mode": "api", "kind": kind, "seed": name, "desc": desc, "outcome": outcome,
            "detail": detail, "extra": extra}


CLI_DRIVER = r'''
import os, sys, runpy
sys.path.insert(0, os.environ["QPASS_FUZZ_AUDIT_DIR"])
import qpass_fuzz_audit_file as a
st = a.install(os.environ["QPASS_FUZZ_BASE"])
st["case"] = os.path.realpath(os.environ["QPASS_FUZZ_CASE"])
st["on"] = True
import atexit, json
def _dump():
    st["on"] = False
    with open(os.environ["QPASS_FUZZ_AUDIT_LOG"], "w") as f:
        json.dump(st["log"], f)
atexit.register(_dump)
sys.argv = ["qpass"] + sys.argv[1:]
runpy.run_module("qpass.cli", run_name="__main__")
'''


def _limit_memory():
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass


def run_cli_case(idx, seeds, base):
    kind, name, model_path, calib_path, desc = make_case(idx, seeds, base)
    case_dir = model_path.parent
    out_dir = case_dir / "out"
    out_dir.mkdir()
    out = out_dir / "result.onnx"
    log = base / f"audit{idx}.json"
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    env = dict(os.environ, QPASS_FUZZ_AUDIT_DIR=str(base), QPASS_FUZZ_BASE=str(base),
               QPASS_FUZZ_CASE=str(case_dir), QPASS_FUZZ_AUDIT_LOG=str(log))
    env.pop("QPASS_DEBUG", None)
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-c", CLI_DRIVER, "optimize", str(model_path), "-o", str(out),
                            "--calib", str(calib_path), "-q"], capture_output=True, text=True, env=env,
                           timeout=CASE_TIMEOUT - 2, preexec_fn=_limit_memory, cwd=str(case_dir))
    except subprocess.TimeoutExpired:
        return {"idx": idx, "mode": "cli", "kind": kind, "seed": name, "desc": desc, "outcome": "hang",
                "detail": f"CLI still running after {CASE_TIMEOUT - 2:.0f} s", "extra": []}
    dt = time.perf_counter() - t0
    err = r.stderr.strip().splitlines()
    extra = []
    if r.returncode == 0:
        outcome, detail = "ok", ""
        if not out.is_file():
            outcome, detail = "crash", "exit 0 but no output file"
    elif r.returncode == 2:
        if len(err) == 1 and err[0].startswith("qpass: error:") and "Traceback" not in r.stderr:
            outcome, detail = "clean", err[0]
        else:
            outcome, detail = "multiline", f"{len(err)} stderr lines, first: {(err or [''])[0][:200]}"
        if out.exists():
            extra.append(("stray_write", "output file written although the run failed"))
    else:
        line = next((ln for ln in err if ln.startswith("qpass: error:")), err[-1] if err else "")
        outcome, detail = "crash", f"exit {r.returncode}: {line[:250]}"
        if len(err) != 1:
            extra.append(("multiline", f"{len(err)} stderr lines"))
    leftovers = [p.name for p in out_dir.iterdir() if p.name != "result.onnx"]
    if leftovers:
        extra.append(("stray_write", f"left {leftovers[:3]} in the output folder"))
    if hashlib.sha256(model_path.read_bytes()).hexdigest() != digest:
        extra.append(("input_modified", "the model file changed"))
    try:
        logged = json.loads(log.read_text())
        log.unlink()
    except (OSError, ValueError):
        logged = []
    outside = sorted({p for a, p in logged if a == "read"})
    writes = sorted({p for a, p in logged if a == "write"})
    if outside:
        extra.append(("outside_read", f"opened {outside[:3]}"))
    if writes:
        extra.append(("stray_write", f"wrote {writes[:3]}"))
    shutil.rmtree(case_dir, ignore_errors=True)
    return {"idx": idx, "mode": "cli", "kind": kind, "seed": name, "desc": desc, "outcome": outcome,
            "detail": detail, "extra": extra, "seconds": dt}


def worker_main(conn, base: str):
    """Worker process: builds and runs the cases it is sent, one at a time."""
    os.environ.pop("QPASS_DEBUG", None)
    _limit_memory()
    import logging
    import warnings
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")  # numpy RuntimeWarnings on degenerate weights: not what is checked here
    import qpass  # noqa: F401 - import before the audit hook is on
    import qpass.ir.ort_session  # noqa: F401
    import onnxruntime  # noqa: F401
    base = Path(base)
    seeds = load_seeds()
    audit = _audit_module()
    state = audit.install(str(base))
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        idx, mode = msg
        try:
            res = run_api_case(idx, seeds, base, state) if mode == "api" else run_cli_case(idx, seeds, base)
        except Exception as exc:  # a bug in the fuzzer itself: report it as such
            res = {"idx": idx, "mode": mode, "kind": "?", "seed": "?", "desc": "fuzzer error", "outcome": "fuzzer",
                   "detail": f"{type(exc).__name__}: {exc} @ {_innermost(exc.__traceback__)}", "extra": []}
        conn.send(res)


class Pool:
    """Worker processes with a per-case time limit; a worker that overruns is killed and replaced."""

    def __init__(self, base: Path, n: int):
        self.base = base
        self.ctx = mp.get_context("spawn")
        self.workers = [self._start() for _ in range(n)]

    def _start(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=worker_main, args=(child, str(self.base)), daemon=True)
        p.start()
        child.close()
        if not parent.poll(120) or parent.recv() != "ready":
            p.kill()
            raise RuntimeError("fuzz worker did not start")
        return [p, parent, None, 0.0]  # process, conn, current job, start time

    def run(self, jobs):
        jobs = list(jobs)
        results = []
        pending = list(reversed(jobs))
        while pending or any(w[2] is not None for w in self.workers):
            for w in self.workers:
                if w[2] is None and pending:
                    w[2] = pending.pop()
                    w[3] = time.monotonic()
                    w[1].send(w[2])
            busy = [w for w in self.workers if w[2] is not None]
            ready = wait([w[1] for w in busy], timeout=1.0)
            now = time.monotonic()
            for i, w in enumerate(self.workers):
                if w[2] is None:
                    continue
                if w[1] in ready:
                    try:
                        results.append(w[1].recv())
                        w[2] = None
                        continue
                    except (EOFError, OSError):
                        outcome, detail = "worker_died", f"worker exit code {w[0].exitcode}"
                elif not w[0].is_alive():
                    outcome, detail = "worker_died", f"worker exit code {w[0].exitcode}"
                elif now - w[3] > CASE_TIMEOUT:
                    outcome, detail = "hang", f"no answer after {CASE_TIMEOUT:.0f} s"
                else:
                    continue
                idx, mode = w[2]
                results.append({"idx": idx, "mode": mode, "kind": "?", "seed": "?", "desc": "(see reproducer)",
                                "outcome": outcome, "detail": detail, "extra": []})
                w[0].kill()
                w[0].join(5)
                shutil.rmtree(self.base / f"c{idx}", ignore_errors=True)
                self.workers[i] = self._start()
        return results

    def close(self):
        for w in self.workers:
            try:
                w[1].send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self.workers:
            w[0].join(10)
            if w[0].is_alive():
                w[0].kill()


# ----------------------------------------------------------------------------------------------------------
# the tests
# ----------------------------------------------------------------------------------------------------------

BAD = {"multiline", "crash", "hang", "worker_died", "bad_result", "fuzzer"}


def findings(res) -> list[tuple[str, str]]:
    """(class, detail) of everything wrong with one result."""
    out = [(res["outcome"], res["detail"])] if res["outcome"] in BAD else []
    return out + list(res["extra"])


def signature(cls: str, detail: str) -> str:
    d = re.sub(r"\d+", "N", detail)
    d = re.sub(r"'[^']*'", "'X'", d)
    d = re.sub(r"/[^\s'\"]+", "PATH", d)
    return f"{cls}: {d[:160]}"


def is_known(kind: str, sig: str) -> str | None:
    for kre, sre, reason in KNOWN:
        if re.search(kre, kind) and re.search(sre, sig):
            return reason
    return None


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    (base / "sentinel.bin").write_bytes(b"SENTINEL: qpass must never read this file\n" * 64)
    (base / "qpass_fuzz_audit_file.py").write_text(AUDIT_SRC)
    t0 = time.perf_counter()
    pool = Pool(base, WORKERS)
    try:
        jobs = [(i, "api") for i in range(N_API)] + [(N_API + i, "cli") for i in range(N_CLI)]
        # interleave the slow CLI cases so both workers share them
        step = max(1, N_API // max(1, N_CLI))
        order = []
        api, cli = jobs[:N_API], jobs[N_API:]
        for i, j in enumerate(api):
            order.append(j)
            if i % step == 0 and cli:
                order.append(cli.pop(0))
        order += cli
        results = pool.run(order)
    finally:
        pool.close()
    elapsed = time.perf_counter() - t0
    by_kind = defaultdict(list)
    for r in results:
        by_kind[r["kind"]].append(r)
    _print_summary(results, elapsed)
    return {"results": results, "by_kind": by_kind, "elapsed": elapsed}


def _print_summary(results, elapsed):
    outcomes = Counter((r["mode"], r["outcome"]) for r in results)
    print(f"\nfuzz: {len(results)} cases in {elapsed:.1f} s: " +
          ", ".join(f"{m}/{o} {n}" for (m, o), n in sorted(outcomes.items())))
    sigs = defaultdict(list)
    for r in results:
        for cls, detail in findings(r):
            sigs[signature(cls, detail)].append(r)
    for sig, rs in sorted(sigs.items(), key=lambda kv: -len(kv[1])):
        r = rs[0]
        print(f"  {len(rs):4d} x {sig}\n         first: case {r['idx']} ({r['mode']}) seed {r['seed']}: {r['desc']}")


@pytest.fixture(scope="module")
def planned():
    """The kind counts the configured case numbers (N_API, N_CLI) draw: what every run must report."""
    return planned_kinds(N_API, N_CLI)


def test_default_configuration_covers_every_kind():
    """The default run draws every mutation kind, and mostly model mutations (more than 2000 of them)."""
    kinds = planned_kinds(DEFAULT_API_CASES, DEFAULT_CLI_CASES)
    assert sorted(kinds) == sorted(KINDS), set(KINDS) - set(kinds)
    assert min(kinds.values()) >= 10, kinds
    assert sum(kinds[k] for k in MODEL_KINDS) >= 2000, kinds


def test_fuzz_ran_enough_cases(fuzz_results, planned):
    res = fuzz_results["results"]
    assert Counter(r["mode"] for r in res) == Counter(api=N_API, cli=N_CLI)
    # every case reported back with the kind it drew: none lost, hung or died
    assert Counter(r["kind"] for r in res) == planned
    assert sum(r["kind"] in MODEL_KINDS for r in res) == sum(planned[k] for k in MODEL_KINDS)
    assert not [r for r in res if r["outcome"] == "fuzzer"], [r for r in res if r["outcome"] == "fuzzer"][:3]
    # the mutations are not all rejected at load: a fair share reaches the passes and succeeds
    ok = sum(r["outcome"] == "ok" for r in res)
    assert ok >= 0.1 * len(res), f"only {ok} of {len(res)} mutated cases converted"


@pytest.mark.parametrize("kind", KINDS + ["?"])
def test_fuzz_kind(fuzz_results, planned, kind):
    res = fuzz_results["by_kind"].get(kind, [])  # '?' collects cases whose worker hung or died: planned 0
    unknown, known = [], Counter()
    for r in res:
        for cls, detail in findings(r):
            sig = signature(cls, detail)
            reason = is_known(r["kind"], sig)
            if reason:
                known[reason] += 1
            else:
                unknown.append(f"case {r['idx']} ({r['mode']}, seed {r['seed']}, {r['desc']}): {cls}: {detail}")
    assert not unknown, f"{len(unknown)} new findings for {kind}:\n" + "\n".join(unknown[:15])
    assert len(res) == planned[kind], f"{len(res)} {kind} cases ran, {planned[kind]} planned"
    if known:
        pytest.xfail("; ".join(f"{n} x {reason}" for reason, n in known.items()))


# ----------------------------------------------------------------------------------------------------------
# minimal reproducers of earlier findings (regression tests)
# ----------------------------------------------------------------------------------------------------------

def _expect_clean_api_failure(model_path, calib):
    import qpass
    from qpass.errors import QpassError
    with pytest.raises(QpassError) as info:
        qpass.optimize(qpass.load(model_path), calib=calib)
    assert "\n" not in str(info.value)


def _npz_with_member(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
    return path


def test_finding_huge_npy_header_in_calibration(tmp_path):
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1, 64), }"
    hdr = hdr + " " * (117 - len(hdr)) + "\n"
    member = b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode() + b"\0" * 64
    calib = _npz_with_member(tmp_path / "calib.npz", "input.npy", member)
    _expect_clean_api_failure(MODELS / "digits_mlp.onnx", calib)


@pytest.mark.parametrize("elem_type", [99, -1])
def test_finding_unknown_input_elem_type(tmp_path, elem_type):
    m = onnx.load(MODELS / "digits_mlp.onnx")
    m.graph.input[0].type.tensor_type.elem_type = elem_type
    src = tmp_path / "m.onnx"
    src.write_bytes(m.SerializeToString())
    _expect_clean_api_failure(src, MODELS / "digits_mlp.calib.npz")


def test_finding_npz_member_not_npy(tmp_path):
    calib = _npz_with_member(tmp_path / "calib.npz", "input.npy", b"not an npy file")
    _expect_clean_api_failure(MODELS / "digits_mlp.onnx", calib)


def test_finding_plain_npy_as_calibration(tmp_path):
    calib = tmp_path / "calib.npz"
    with open(calib, "wb") as f:
        np.save(f, np.zeros((4, 1, 64), np.float32))
    _expect_clean_api_failure(MODELS / "digits_mlp.onnx", calib)


def test_finding_onnxruntime_log_line_on_stderr(tmp_path):
    m = onnx.load(MODELS / "structural" / "resize.onnx")
    node = next(n for n in m.graph.node if n.op_type == "Resize")
    next(a for a in node.attribute if a.name == "nearest_mode").s = b"garbage"  # ORT refuses it at load
    src = tmp_path / "resize.onnx"
    src.write_bytes(m.SerializeToString())
    out = tmp_path / "out.onnx"
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(src), "-o", str(out), "--calib",
                        str(MODELS / "structural" / "resize.calib.npz"), "-q"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------------
# hostile-input families (issue 20): seeded command lines, a few per family, each run by the real CLI
# ----------------------------------------------------------------------------------------------------------

FAMILIES = ["output_paths", "permissions", "special_files", "pickle_npz", "hostile_yaml", "deep_recursion",
            "bad_flags"]
FAMILY_CASES = int(os.environ.get("QPASS_FUZZ_FAMILY_CASES", 5))  # per family
FAMILY_TIMEOUT = 60.0


@dataclass
class HostileCase:
    """One command line. ``succeed``: True (must exit 0), False (must fail with one line), None (either);
    ``outputs``: what it writes on success (nothing else may appear in the case folder); ``words``: in the error."""

    argv: list
    desc: str
    succeed: bool | None = False
    outputs: list = field(default_factory=list)
    words: str = ""
    umask: int | None = None
    modes: dict = field(default_factory=dict)  # output -> permission bits it must have on success


def _mlp_into(case_dir: Path) -> tuple[Path, Path]:
    model, calib = case_dir / "m.onnx", case_dir / "m.calib.npz"
    shutil.copy(MODELS / "digits_mlp.onnx", model)
    shutil.copy(MODELS / "digits_mlp.calib.npz", calib)
    return model, calib


def _family_output_paths(rng, d: Path, model: Path, calib: Path) -> HostileCase:
    kind = str(_pick(rng, ["existing_dir", "trailing_slash", "proc", "long_name", "through_file", "report_is_model",
                           "report_is_output", "json_twin", "report_is_calib", "output_is_calib", "link_to_model",
                           "fifo", "device", "deep_new_dirs"]))
    if kind == "existing_dir":
        (d / "out").mkdir()
        return HostileCase(["optimize", model, "-o", d / "out"], kind, True, [d / "out" / "m.int8.onnx"])
    if kind == "trailing_slash":
        return HostileCase(["optimize", model, "-o", f"{d / 'new'}/"], kind, True, [d / "new" / "m.int8.onnx"])
    if kind == "deep_new_dirs":
        out = d.joinpath(*[f"n{int(rng.integers(0, 99))}" for _ in range(int(rng.integers(2, 6)))], "o.onnx")
        return HostileCase(["optimize", model, "-o", out], kind, True, [out])
    if kind == "proc":
        return HostileCase(["optimize", model, "-o", "/proc/qpass_fuzz.onnx"], kind, words="/proc")
    if kind == "long_name":
        return HostileCase(["optimize", model, "-o", d / ("x" * int(rng.integers(256, 400)) + ".onnx")], kind,
                           words="longer than")
    if kind == "through_file":
        (d / "f.onnx").write_text("keep")
        return HostileCase(["optimize", model, "-o", d / "f.onnx" / "o.onnx"], kind, words="not a folder")
    if kind == "fifo":
        os.mkfifo(d / "p.onnx")
        return HostileCase(["optimize", model, "-o", d / "p.onnx"], kind, words="not a regular file")
    if kind == "device":
        if os.geteuid() != 0:
            return HostileCase(["optimize", model, "-o", d], kind, True, [d / "m.int8.onnx"])
        os.mknod(d / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        return HostileCase(["optimize", model, "-o", d / "null"], kind, words="not a regular file")
    if kind == "link_to_model":
        (d / "link.onnx").symlink_to(model)
        return HostileCase(["optimize", model, "-o", d / "link.onnx"], kind, words="would overwrite the input")
    args = {"report_is_model": ["--report", model], "report_is_calib": ["--report", calib],
            "report_is_output": ["-o", d / "o.onnx", "--report", d / "o.onnx"],
            "json_twin": ["-o", d / "o.json", "--report", d / "o.html"], "output_is_calib": ["-o", calib]}[kind]
    return HostileCase(["optimize", model, *args], kind)


def _family_permissions(rng, d: Path, model: Path, calib: Path) -> HostileCase:
    mask = int(_pick(rng, [0o022, 0o027, 0o077, 0o002, 0o007]))
    if rng.random() < 0.25:
        ro = d / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode:
            return HostileCase(["optimize", model, "-o", d / "o.onnx"], "umask only", True, [d / "o.onnx"], umask=mask,
                               modes={d / "o.onnx": 0o666 & ~mask})
        return HostileCase(["optimize", model, "-o", ro / "o.onnx"], "read-only folder", words="cannot write")
    out, rep = d / "sub" / "o.onnx", d / "sub" / "r.html"
    modes = {p: 0o666 & ~mask for p in (out, rep, rep.with_suffix(".json"))}
    modes[d / "sub"] = 0o777 & ~mask
    return HostileCase(["optimize", model, "-o", out, "--report", rep], f"umask {mask:03o}", True,
                       [d / "sub", out, rep, rep.with_suffix(".json")], umask=mask, modes=modes)


def _family_special_files(rng, d: Path, model: Path, calib: Path) -> HostileCase:
    flag = str(_pick(rng, ["--calib", "--eval"]))
    kind = str(_pick(rng, ["fifo", "dev_zero", "dev_null", "directory", "link_to_dev_zero", "model_fifo"]))
    if kind == "fifo":
        os.mkfifo(d / "c.npz")
        target = d / "c.npz"
    elif kind == "link_to_dev_zero":
        (d / "z.npz").symlink_to("/dev/zero")
        target = d / "z.npz"
    elif kind == "model_fifo":
        os.mkfifo(d / "fifo.onnx")
        return HostileCase(["optimize", d / "fifo.onnx", "--calib", calib, "-o", d / "o.onnx"], kind,
                           words="not a regular file")
    else:
        target = {"dev_zero": "/dev/zero", "dev_null": "/dev/null", "directory": d}[kind]
    words = "directory" if kind == "directory" else "not a regular file"
    return HostileCase(["optimize", model, "-o", d / "o.onnx", flag, target], f"{kind} as {flag}", words=words)


def _family_pickle_npz(rng, d: Path, model: Path, calib: Path) -> HostileCase:
    payload = _pick(rng, [{"a": 1}, [1, 2, 3], "text", None, object, (1, "x")])
    with np.load(calib) as z:
        arrays = {k: z[k] for k in z.files}
    key = str(_pick(rng, list(arrays) + ["labels", "extra"]))
    obj = np.empty(int(rng.integers(1, 5)), dtype=object)
    obj[:] = [payload] * len(obj)
    arrays[key] = obj
    np.savez(d / "p.npz", **arrays)
    flag = str(_pick(rng, ["--calib", "--eval"]))
    return HostileCase(["optimize", model, "-o", d / "o.onnx", flag, d / "p.npz"], f"{flag} object array in {key!r}",
                       words="Python objects")


def _family_hostile_yaml(rng, d: Path, model: Path, calib: Path) -> HostileCase:
    from hostile_inputs import billion_laughs_yaml, deep_repeat_yaml

    kind = str(_pick(rng, ["laughs", "deep_repeat", "deep_lists", "deep_maps", "huge", "binary", "python_tag",
                           "laughs_in_options"]))
    p = d / "p.yaml"
    if kind == "laughs":
        p.write_text(billion_laughs_yaml(int(rng.integers(5, 12)), int(rng.integers(6, 12))))
    elif kind == "laughs_in_options":
        p.write_text("o0: &o0 {per_channel: true}\n" + "".join(
            f"o{i}: &o{i} [{', '.join([f'*o{i - 1}'] * 10)}]\n" for i in range(1, 8))
                     + "passes: [normalize, calibrate, {quantize_qdq: {exclude: *o7}}]\n")
    elif kind == "deep_repeat":
        p.write_text(deep_repeat_yaml(int(rng.integers(60, 3000))))
    elif kind in ("deep_lists", "deep_maps"):
        n = int(rng.integers(60, 5000))
        p.write_text("passes: " + ("[" * n + "]" * n if kind == "deep_lists" else "{a: " * n + "1" + "}" * n) + "\n")
    elif kind == "huge":
        p.write_text("# " + "x" * (2 << 20) + "\npasses: [normalize]\n")
    elif kind == "binary":
        p.write_bytes(rng.bytes(int(rng.integers(1, 4096))))
    else:
        p.write_text("passes: [!!python/object/apply:os.system ['touch pwned']]\n")
    return HostileCase(["optimize", model, "-o", d / "o.onnx", "--pipeline", p], kind)


def _family_deep_recursion(rng, d: Path, model: Path, calib: Path) -> HostileCase:
    from hostile_inputs import nested_if_model

    depth = int(_pick(rng, [int(rng.integers(2, 20)), int(rng.integers(35, 400)), 2000]))
    (d / "deep.onnx").write_bytes(nested_if_model(depth))
    cmd = str(_pick(rng, ["inspect", "optimize"]))
    argv = [cmd, d / "deep.onnx"] + (["-o", d / "o.onnx", "--calib", calib] if cmd == "optimize" else [])
    if depth >= 35:
        return HostileCase(argv, f"{cmd}, If nested {depth} deep", words="nested deeper than protobuf reads")
    return HostileCase(argv, f"{cmd}, If nested {depth} deep", None, [d / "o.onnx"] if cmd == "optimize" else [])


def _family_bad_flags(rng, d: Path, model: Path, calib: Path) -> HostileCase:
    n = str(int(rng.integers(-5, 1)) if rng.random() < 0.5 else int(rng.integers(10 ** 4, 10 ** 10)))
    x = str(_pick(rng, ["nan", "inf", "-inf", "-5", "0", "abc", "1e999"]))
    options = [["--threads", n], ["--backend", "hls", "--clock-ns", x], ["--backend", "hls", "--target-fps", x],
               ["--bits", "auto", "--avg-bits", x], ["--csim"], ["--device", "xcvu9p"], ["--target-fps", "10"],
               ["--clock-ns", "3"], ["--bits", str(_pick(rng, ["0", "17", "x", "-1", "auto4"]))],
               ["--exclude", f"nomatch_{int(rng.integers(0, 999))}*"], ["--backend", "hls", "--report", d / "r.html"],
               ["--weights", "sym:4", "--per-tensor"], ["--target", "sqnr>=3"], ["--no-such-flag"],
               ["--placement", "sideways"], ["zoo_jobs", n]]
    opt = options[int(rng.integers(0, len(options)))]
    if opt[0] == "zoo_jobs":
        return HostileCase(["zoo", d, "-o", d / "z", "--jobs", n], f"zoo --jobs {n}")
    return HostileCase(["optimize", model, "-o", d / "o", *opt], " ".join(map(str, opt)))


FAMILY_BUILDERS = {name: globals()[f"_family_{name}"] for name in FAMILIES}


def make_family_case(family: str, idx: int, base: Path) -> tuple[HostileCase, Path]:
    d = base / f"{family}_{idx}"
    d.mkdir()
    rng = np.random.default_rng([SEED, 20, FAMILIES.index(family), idx])
    model, calib = _mlp_into(d)
    return FAMILY_BUILDERS[family](rng, d, model, calib), d


def _tree(d: Path) -> dict[str, str]:
    """Every entry under d: a digest for regular files, the kind otherwise (never opens a FIFO or device)."""
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        if stat.S_ISREG(st.st_mode):
            out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(d))] = stat.S_IFMT(st.st_mode)
    return out


def _check_family_result(case: HostileCase, d: Path, before: dict, r) -> list[str]:
    problems = []
    err = r.stderr.strip().splitlines()
    if "Traceback" in r.stderr:
        problems.append(f"traceback: {err[-1][:200] if err else ''}")
    if r.returncode == 0:
        if case.succeed is False:
            problems.append("exit 0 where an error was expected")
        for p, mode in case.modes.items():
            if stat.S_IMODE(p.stat().st_mode) != mode:
                problems.append(f"{p.name} mode {stat.S_IMODE(p.stat().st_mode):o}, umask wants {mode:o}")
    elif r.returncode == 2:
        if len(err) != 1 or not err[0].startswith("qpass: error: "):
            problems.append(f"{len(err)} stderr lines: {(err or [''])[0][:200]}")
        elif case.words and case.words not in err[0]:
            problems.append(f"message without {case.words!r}: {err[0][:200]}")
        if case.succeed is True:
            problems.append(f"failed: {err[0][:200] if err else ''}")
    else:
        problems.append(f"exit {r.returncode}: {(err or [''])[-1][:200]}")
    after = _tree(d)
    made = [p for out in case.outputs for p in [out, *out.parents] if d in p.parents] if r.returncode == 0 else []
    allowed = {str(p.relative_to(d)) for p in made}
    allowed |= {a for a in after for p in allowed if a.startswith(p + "/")}
    if {k: v for k, v in before.items()} != {k: after.get(k) for k in before}:
        problems.append("an input or existing file changed")
    stray = sorted(set(after) - set(before) - allowed)
    if stray:
        problems.append(f"stray files: {stray[:3]}")
    return problems


def run_family_case(family: str, idx: int, base: Path) -> dict:
    case, d = make_family_case(family, idx, base)
    before = _tree(d)
    preexec = (lambda: os.umask(case.umask)) if case.umask is not None else None
    env = {k: v for k, v in os.environ.items() if k != "QPASS_DEBUG"}
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "qpass.cli", *map(str, case.argv)], capture_output=True, text=True,
                           timeout=FAMILY_TIMEOUT, preexec_fn=preexec, env=env, cwd=d)
        problems = _check_family_result(case, d, before, r)
    except subprocess.TimeoutExpired:
        problems = [f"hang: no exit after {FAMILY_TIMEOUT:.0f} s"]
    finally:
        subprocess.run(["chattr", "-R", "-i", str(d)], capture_output=True)
        for p in [d, *d.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
    return {"family": family, "idx": idx, "desc": case.desc, "problems": problems,
            "seconds": time.perf_counter() - t0}


@pytest.fixture(scope="module")
def family_results(tmp_path_factory):
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("families")
    jobs = [(f, i) for f in FAMILIES for i in range(FAMILY_CASES)]
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda job: run_family_case(job[0], job[1], base), jobs))
    return {f: [r for r in results if r["family"] == f] for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_hostile_input_family(family_results, family):
    """Every case of the family: exit 0 with exactly its outputs, or one `qpass: error:` line with exit 2 and
    nothing written; no traceback, hang, stray or modified file."""
    res = family_results[family]
    assert len(res) == FAMILY_CASES
    bad = [f"case {r['idx']} ({r['desc']}): {'; '.join(r['problems'])}" for r in res if r["problems"]]
    assert not bad, "\n".join(bad)


def test_hostile_families_draw_many_kinds():
    """The seeded families are not one case repeated: the default run draws several distinct kinds per family."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for family in ("output_paths", "special_files", "hostile_yaml", "bad_flags"):
            descs = {make_family_case(family, i, Path(tmp))[0].desc.split(" ")[0] for i in range(FAMILY_CASES)}
            assert len(descs) >= 3, (family, descs)


def main(argv=None) -> int:
    """Rebuild one fuzz case and run it with a full traceback: python tests/test_fuzz.py CASE [--cli] [--keep]."""
    import argparse
    import tempfile
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("case", type=int)
    ap.add_argument("--cli", action="store_true", help="run the CLI (default: the Python API)")
    ap.add_argument("--keep", action="store_true", help="keep the case folder and print its path")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="qpass-fuzz-"))
    (base / "sentinel.bin").write_bytes(b"SENTINEL\n")
    kind, name, model_path, calib_path, desc = make_case(args.case, load_seeds(), base)
    print(f"case {args.case}: seed {name}, {kind}: {desc}\nmodel {model_path}\ncalib {calib_path}")
    if args.cli:
        r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(model_path), "-o",
                            str(base / "out.onnx"), "--calib", str(calib_path), "-q"], capture_output=True, text=True)
        print(f"exit {r.returncode}\nstdout: {r.stdout!r}\nstderr: {r.stderr!r}")
    else:
        import qpass
        try:
            res = qpass.optimize(qpass.load(model_path), calib=calib_path)
            onnx.checker.check_model(res.model)
            print("ok")
        except Exception:
            traceback.print_exc()
    if args.keep:
        print(f"kept {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
