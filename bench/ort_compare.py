"""Shared pieces of the onnxruntime benches: float vs qpass vs quantize_static on one model, measured alike.

One model is a ``Case`` (digits model from ``models/`` or a packaged model from the zoo cache) with calibration
and evaluation arrays in the qpass npz convention and a scorer. ``bench_case`` quantizes it with both tools and
returns one row per tool (``float``, ``qpass``, ``quantize_static`` and, when the pre-processed path failed,
``quantize_static_nopre``): quantize wall time, file size, output SQNR and task metric, the integer-kernel census
of the model after onnxruntime's own graph optimizer, and int8/float latency at each thread count. A tool that
fails gives a row with a one-line ``error``; nothing raises out of ``bench_case``.

The instrument has its own op lists (not qpass's) so that it measures qpass rather than agreeing with it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "models" / "packaged")]  # measure this checkout's qpass
import fetch  # noqa: E402
import tasks  # noqa: E402

DIGITS = ("digits_mlp", "digits_cnn", "digits_rescnn")
PER_CHANNEL_OPSET = 13  # DequantizeLinear's axis (per-channel) needs opset 13

# float matrix ops of the source model: the denominator of the integer share
MATRIX_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN"})
# what they become on onnxruntime's integer kernels after its optimizer (any domain)
INTEGER_KERNELS = frozenset({"QLinearConv", "QLinearConvTranspose", "QLinearMatMul", "QGemm", "MatMulInteger",
                             "ConvInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
                             "QAttention", "QOrderedMatMul", "QOrderedAttention"})
# float matrix kernels onnxruntime may leave after its fusions (Conv also covers the NCHWc Conv)
FLOAT_KERNELS = frozenset({"Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "FusedGemm",
                           "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention", "Einsum"})

# import name -> pip name; the first group is needed always, the second for the packaged zoo's inputs
NEEDED = {"onnx": "onnx", "onnxruntime": "onnxruntime", "sympy": "sympy"}
NEEDED_PACKAGED = {"skimage": "scikit-image", "PIL": "Pillow", "scipy": "scipy"}


class StageError(Exception):
    """A tool failed at a named stage; the message is the row's one-line reason."""


def first_line(exc: BaseException) -> str:
    """The exception's first line, without onnxruntime's boilerplate (error code, file path, node signature)."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", lines[0])
    text = re.sub(r"Load model from \S+ failed:\s*(This is an invalid model\.\s*)?", "", text)
    node = re.search(r'In Node, \("([^"]*)".*?, Error (.*)$', text)
    if node:
        text = f"node {node.group(1)}: {node.group(2)}"
    return f"{type(exc).__name__}: {text[:160]}"


def missing_packages(packaged: bool) -> list[str]:
    """pip names of the imports this bench needs that are not installed."""
    need = dict(NEEDED, **(NEEDED_PACKAGED if packaged else {}))
    return [pip for mod, pip in need.items() if importlib.util.find_spec(mod) is None]


# ------------------------------------------------------------------------------------------------------------
# machine
# ------------------------------------------------------------------------------------------------------------

def machine_info() -> dict:
    import onnxruntime as ort
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = sorted(set(re.findall(r"\b(avx2|avx512_vnni|avx_vnni|avx512f|asimd)\b", text)))
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"cpu": model.group(1).strip() if model else platform.processor() or platform.machine(),
            "cpu_flags": flags, "cores": os.cpu_count(), "load_avg": list(os.getloadavg()),
            "onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "qpass_commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


# ------------------------------------------------------------------------------------------------------------
# models and scoring
# ------------------------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    src: Path
    calib: dict                    # input name -> stacked samples (no labels)
    eval: dict                     # input name -> stacked samples (+ "labels" where labelled)
    score: Callable                # (ref outputs, got outputs) -> {"sqnr_db", "metric", "value", ...}
    float_value: Callable | None = None  # ref outputs -> the float model's own metric value (digits accuracy)


def _npz(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def digits_case(name: str) -> Case:
    src = ROOT / "models" / f"{name}.onnx"
    calib = _npz(src.with_suffix(".calib.npz"))
    ev = _npz(src.with_suffix(".eval.npz"))
    out = onnx.load(src, load_external_data=False).graph.output[0].name
    labels = ev["labels"]

    def acc(outs):
        return float(np.mean(outs[out].reshape(len(labels), -1).argmax(1) == labels))

    def score(ref, got):
        return {"metric": "top-1 accuracy", "sqnr_db": tasks.sqnr_db(ref[out], got[out]), "value": acc(got),
                "accuracy_float": acc(ref), "accuracy_int8": acc(got)}
    calib.pop("labels", None)
    return Case(name, src, calib, ev, score, acc)


def packaged_case(name: str, cache: Path) -> Case:
    import inputs  # scikit-image & co. are only needed here
    src = fetch.model_path(name, cache)
    calib, ev = inputs.build(name, src)
    calib = {k: v for k, v in calib.items() if k != "labels"}
    return Case(name, src, calib, ev, lambda ref, got: tasks.score(name, ref, got, ev, src.parent))


def packaged_names(cache: Path) -> list[str]:
    """Every float model of the zoo that has a task (already-int8 models have none) and is in the cache."""
    return [n for n in tasks.TASKS if fetch.is_present(n, cache)]


def make_case(name: str, cache: Path) -> Case:
    return digits_case(name) if name in DIGITS else packaged_case(name, cache)


# ------------------------------------------------------------------------------------------------------------
# the two quantizers
# ------------------------------------------------------------------------------------------------------------

def qpass_quantize(src: Path, calib: dict, out: Path) -> float:
    """qpass's default pipeline (load, optimize, save); seconds."""
    import qpass
    t0 = time.perf_counter()
    qpass.save(qpass.optimize(qpass.load(src), calib=calib).model, out)
    return time.perf_counter() - t0


def default_opset(path: Path) -> int:
    m = onnx.load(path, load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade_opset(src: Path, out: Path, opset: int = PER_CHANNEL_OPSET) -> Path:
    from onnx import version_converter
    try:
        onnx.save(version_converter.convert_version(onnx.load(src), opset), out)
    except Exception as exc:
        raise StageError(f"onnx.version_converter to opset {opset}: {first_line(exc)}") from None
    return out


def ort_quantize(src: Path, calib: dict, out: Path, pre_process: bool = True, activations: str = "u8",
                 opset: int | None = None) -> float:
    """quantize_static: QDQ, per-channel, u8 (or s8) activations, s8 weights, after quant_pre_process (and after
    converting the model to OPSET if given); seconds, conversion and pre-processing included."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = [i.name for i in onnx.load(src, load_external_data=False).graph.input]
    n = len(next(iter(calib.values())))
    feeds = [{k: (calib[k][i] if calib[k].ndim else calib[k]) for k in names if k in calib} for i in range(n)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    act = QuantType.QUInt8 if activations == "u8" else QuantType.QInt8
    t0 = time.perf_counter()
    if opset is not None:
        src = upgrade_opset(src, out.with_suffix(f".opset{opset}.onnx"), opset)
    pre = out.with_suffix(".pre.onnx") if pre_process else src
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if pre_process:
            try:
                quant_pre_process(str(src), str(pre))
            except Exception as exc:
                raise StageError(f"quant_pre_process: {first_line(exc)}") from None
        try:
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=act, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise StageError(f"quantize_static: {first_line(exc)}") from None
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------------------
# what onnxruntime runs: integer-kernel census of the optimized graph
# ------------------------------------------------------------------------------------------------------------

def walk(graph: onnx.GraphProto):
    """Every node, subgraphs (If/Loop/Scan bodies) included."""
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from walk(a.g)
            for g in a.graphs:
                yield from walk(g)


def matrix_ops(path: Path) -> int:
    return sum(n.op_type in MATRIX_OPS for n in walk(onnx.load(path).graph))


def census(path: Path, optimized: Path, n_float: int) -> dict:
    """Counts in the graph onnxruntime runs (ORT_ENABLE_ALL, saved by optimized_model_filepath)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(optimized)
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in walk(onnx.load(optimized).graph))
    ints = {k: v for k, v in sorted(ops.items()) if k in INTEGER_KERNELS}
    k = sum(ints.values())
    return {"matrix_ops_float": n_float, "integer_kernels": k, "integer_share": k / n_float if n_float else None,
            "integer_kernel_types": ints, "float_matrix_left": sum(v for o, v in ops.items() if o in FLOAT_KERNELS),
            "q_nodes": ops.get("QuantizeLinear", 0), "dq_nodes": ops.get("DequantizeLinear", 0),
            "dynamic_q_nodes": ops.get("DynamicQuantizeLinear", 0)}


# ------------------------------------------------------------------------------------------------------------
# latency
# ------------------------------------------------------------------------------------------------------------

def latency(paths: dict[str, Path], feed: dict, threads: int, repeats: int, budget: float) -> tuple[dict, int]:
    """Seconds per call of each model at THREADS intra-op threads (an array per model), runs interleaved
    (machine noise hits all alike), after a warm-up; as many rounds as REPEATS allows within BUDGET seconds
    (at least 5)."""
    from qpass.ir.ort_session import interleaved_times

    sessions = {k: tasks.session(p, threads=threads) for k, p in paths.items()}
    times = interleaved_times(sessions, feed, warmup=5, budget_s=budget, min_rounds=5, max_rounds=repeats)
    rounds = len(next(iter(times.values())))
    return {k: np.asarray(v) for k, v in times.items()}, rounds


# ------------------------------------------------------------------------------------------------------------
# one model, every tool
# ------------------------------------------------------------------------------------------------------------

@dataclass
class Options:
    threads: tuple = (1, 2)
    repeats: int = 500
    budget: float = 10.0           # seconds of latency runs per model, shared by the thread counts
    ort_activations: str = "u8"
    #: (rows, paths, case, opts) -> None filling the latency columns; None: ``_latency_rows``
    latency_rows: Callable | None = None
    #: each tool's quantize time: the least of this many runs, the tools taking turns (the first run's file is kept)
    quant_repeats: int = 1


def _ort_attempt(case: Case, out: Path, opts: Options, pre: bool, opset: int | None) -> tuple:
    try:
        secs = ort_quantize(case.src, case.calib, out, pre, opts.ort_activations, opset)
        try:
            tasks.run(out, {k: v[:1] if v.ndim else v for k, v in case.eval.items()})  # does it run at all?
        except Exception as exc:
            raise StageError(f"result does not run in onnxruntime: {first_line(exc)}") from None
        return out, secs, None
    except Exception as exc:
        return None, None, str(exc) if isinstance(exc, StageError) else first_line(exc)


def _quantize_all(case: Case, tmp: Path, opts: Options) -> dict[str, tuple]:
    """tool -> (path or None, seconds, error or None)."""
    results = {"float": (case.src, None, None)}
    out = tmp / f"{case.name}.qpass.onnx"
    t0 = time.perf_counter()
    try:
        results["qpass"] = (out, qpass_quantize(case.src, case.calib, out), None)
    except Exception as exc:  # report, never stop the table
        results["qpass"] = (None, time.perf_counter() - t0, first_line(exc))
    # each fallback runs only when every earlier quantize_static attempt failed
    attempts = [("quantize_static", True, None), ("quantize_static_nopre", False, None)]
    if default_opset(case.src) < PER_CHANNEL_OPSET:
        attempts.append(("quantize_static_opset13", True, PER_CHANNEL_OPSET))
    for tool, pre, opset in attempts:
        results[tool] = _ort_attempt(case, tmp / f"{case.name}.{tool}.onnx", opts, pre, opset)
        if results[tool][2] is None:
            _retime(results, case, tmp, opts, tool, pre, opset)
            break
    return results


def _retime(results: dict, case: Case, tmp: Path, opts: Options, tool: str, pre: bool, opset: int | None) -> None:
    """``opts.quant_repeats - 1`` more runs of qpass and of the quantize_static attempt that worked, taking turns;
    each keeps its least time (quantize_static takes 0.06-0.15 s on the small nets: one run's scheduling noise moved
    the qpass / quantize_static ratio by 15-25%)."""
    if results["qpass"][2] is not None:
        return
    for _ in range(opts.quant_repeats - 1):
        secs = qpass_quantize(case.src, case.calib, tmp / f"{case.name}.qpass.again.onnx")
        results["qpass"] = (results["qpass"][0], min(results["qpass"][1], secs), None)
        again = _ort_attempt(case, tmp / f"{case.name}.{tool}.again.onnx", opts, pre, opset)
        if again[2] is None:
            results[tool] = (results[tool][0], min(results[tool][1], again[1]), None)


def _score_row(case: Case, row: dict, path: Path, ref: dict, tmp: Path, n_float: int) -> None:
    if row["tool"] == "float":  # the metric's name, and the float model's accuracy where there are labels
        sc = case.score(ref, ref)
        row.update({"metric": sc["metric"], "sqnr_db": None, "accuracy_float": sc.get("accuracy_float"),
                    "value": case.float_value(ref) if case.float_value else None})
    else:
        row.update(case.score(ref, tasks.run(path, case.eval)))
    row["size_bytes"] = path.stat().st_size
    row["size_ratio"] = row["size_bytes"] / case.src.stat().st_size
    row.update(census(path, tmp / f"{case.name}.{row['tool']}.opt.onnx", n_float))


def _latency_rows(rows: list[dict], paths: dict, case: Case, opts: Options) -> None:
    feed = {k: (v[0] if v.ndim else v) for k, v in case.eval.items() if k != "labels"}
    share = opts.budget / max(len(opts.threads), 1)
    for r in rows:  # medians; min and quartiles show how noisy the machine was
        for key in ("latency_ms", "latency_ratio", "latency_spread_ms", "latency_rounds"):
            r.setdefault(key, {})
    for t in opts.threads:
        try:
            times, rounds = latency(paths, feed, t, opts.repeats, share)
        except Exception as exc:
            print(f"{case.name}: latency at {t} threads failed: {first_line(exc)}", file=sys.stderr)
            continue
        med = {k: float(np.median(v)) for k, v in times.items()}
        for r in rows:
            if r["tool"] in med:
                v = times[r["tool"]]
                r["latency_ms"][str(t)] = 1e3 * med[r["tool"]]
                r["latency_ratio"][str(t)] = med[r["tool"]] / med["float"]
                r["latency_spread_ms"][str(t)] = [1e3 * float(x) for x in (v.min(), *np.percentile(v, [25, 75]))]
                r["latency_rounds"][str(t)] = rounds


def bench_case(case: Case, tmp: Path, opts: Options) -> list[dict]:
    """One row per tool; a failing tool gives a row with its one-line reason."""
    results = _quantize_all(case, tmp, opts)
    ref = tasks.run(case.src, case.eval)
    n_float = matrix_ops(case.src)
    rows, paths = [], {}
    for tool, (path, secs, err) in results.items():
        row = {"model": case.name, "tool": tool, "error": err, "quant_seconds": secs}
        if err is None:
            try:
                _score_row(case, row, path, ref, tmp, n_float)
                paths[tool] = path
            except Exception as exc:
                row["error"] = f"result does not run or cannot be scored: {first_line(exc)}"
        rows.append(row)
    if "float" in paths:
        (opts.latency_rows or _latency_rows)(rows, paths, case, opts)
    return rows
