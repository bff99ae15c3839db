"""Integer codes of the reference interpreter against onnxruntime's on the packaged zoo (helper of
tests/test_packaged_codes.py, also a script printing the table):

    python tests/packaged_codes.py [NAME...]     # one line per model

For a model: quantize it with the default pipeline (calibrated on a few samples), expose every QuantizeLinear
output as an extra graph output on a copy, run the copy in the reference interpreter and in onnxruntime (1
thread, default optimizations) on a few evaluation samples, and count the codes that differ; the final float
outputs are compared in float32 ulps. The float model is run too (reference against onnxruntime, loose).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "models" / "packaged"
if str(PKG) not in sys.path:
    sys.path.insert(0, str(PKG))

CALIB_SAMPLES = 2
EVAL_SAMPLES = 1


@dataclass
class CodeCheck:
    name: str
    quantizers: int = 0  # QuantizeLinear outputs compared
    codes: int = 0  # codes compared
    mismatched: dict[str, int] = field(default_factory=dict)  # QuantizeLinear output -> codes differing
    max_step: int = 0  # largest code difference
    out_ulps: dict[str, float] = field(default_factory=dict)  # final output -> max |diff| in float32 ulps
    float_rel: float = 0.0  # float model: max |ref - ort| / max |ort| over the outputs
    seconds: float = 0.0

    @property
    def differing(self) -> int:
        return sum(self.mismatched.values())

    def line(self) -> str:
        worst = ", ".join(f"{k}: {v}" for k, v in sorted(self.mismatched.items(), key=lambda kv: -kv[1])[:3])
        ulps = max(self.out_ulps.values(), default=0.0)
        return (f"| {self.name} | {self.quantizers} | {self.codes} | {self.differing} | {self.max_step} | "
                f"{ulps:g} | {self.float_rel:.1e} | {worst or '-'} |")


def _take(arrays: dict, n: int) -> dict:
    return {k: v[:n] for k, v in arrays.items() if k != "labels"}


def _samples(name: str, src: Path) -> tuple[dict, dict]:
    import inputs

    calib_p, eval_p = inputs.npz_paths(name, src.parent.parent)
    if calib_p.exists() and eval_p.exists():
        calib, ev = dict(np.load(calib_p)), dict(np.load(eval_p))
    else:
        calib, ev = inputs.build(name, src)
    return _take(calib, CALIB_SAMPLES), _take(ev, EVAL_SAMPLES)


def with_quantizer_outputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose graph also outputs every QuantizeLinear output (of the main graph)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    names = [n.output[0] for n in m.graph.node if n.op_type == "QuantizeLinear" and n.output[0] not in have]
    for name in names:
        m.graph.output.append(onnx.ValueInfoProto(name=name))
    return m, names


def _ort_run(model: onnx.ModelProto, feeds: list[dict], names: list[str]) -> list[dict]:
    import tasks

    sess = tasks.session(model)
    return [dict(zip(names, sess.run(names, f))) for f in feeds]


def _ref_run(model: onnx.ModelProto, feeds: list[dict], names: list[str]) -> list[dict]:
    from qpass.reference import GoldenExecutor

    ex = GoldenExecutor(model)
    return [ex.run(f, names) for f in feeds]


def _feeds(model: onnx.ModelProto, ev: dict) -> list[dict]:
    inits = {i.name for i in model.graph.initializer}
    keys = [i.name for i in model.graph.input if i.name not in inits]
    n = len(ev[keys[0]])
    return [{k: ev[k][i] for k in keys} for i in range(n)]


def _ulps(got: np.ndarray, want: np.ndarray) -> float:
    g, w = np.asarray(got, np.float32), np.asarray(want, np.float32)
    if g.dtype.kind != "f" or g.size == 0:
        return float(np.count_nonzero(g != w))
    spacing = np.spacing(np.maximum(np.abs(w), np.finfo(np.float32).tiny)).astype(np.float64)
    return float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)) / spacing))


def quantize(name: str, src: Path, calib: dict) -> onnx.ModelProto:
    """The default int8 output (kept in $QPASS_CODES_KEEP/NAME.int8.onnx when that is set, and read from there)."""
    import os

    import qpass

    keep = os.environ.get("QPASS_CODES_KEEP")
    path = Path(keep) / f"{name}.int8.onnx" if keep else None
    if path is not None and path.exists():
        return onnx.load(str(path))
    model = qpass.optimize(src, calib=calib, verify=False).model  # verify: checks only, same model
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
    return model


def check(name: str, src: Path, qmodel: onnx.ModelProto | None = None) -> CodeCheck:
    """Compare the reference's and onnxruntime's QuantizeLinear codes on the default int8 output of ``src``."""
    t0 = time.perf_counter()
    calib, ev = _samples(name, src)
    fmodel = onnx.load(str(src))
    feeds = _feeds(fmodel, ev)
    res = CodeCheck(name)
    outs = [o.name for o in fmodel.graph.output]
    for got, want in zip(_ref_run(fmodel, feeds, outs), _ort_run(fmodel, feeds, outs)):
        for k in outs:
            w = np.asarray(want[k], np.float64)
            scale = max(float(np.max(np.abs(w))) if w.size else 0.0, 1e-30)
            res.float_rel = max(res.float_rel, float(np.max(np.abs(np.asarray(got[k], np.float64) - w), initial=0))
                                / scale)
    qmodel = qmodel if qmodel is not None else quantize(name, src, calib)
    exposed, qnames = with_quantizer_outputs(qmodel)
    finals = [o.name for o in qmodel.graph.output]
    names = finals + qnames
    res.quantizers = len(qnames)
    for got, want in zip(_ref_run(exposed, feeds, names), _ort_run(exposed, feeds, names)):
        for k in qnames:
            g, w = np.asarray(got[k]).astype(np.int64), np.asarray(want[k]).astype(np.int64)
            res.codes += w.size
            if g.shape != w.shape:
                res.mismatched[k] = res.mismatched.get(k, 0) + w.size
                continue
            bad = int(np.count_nonzero(g != w))
            if bad:
                res.mismatched[k] = res.mismatched.get(k, 0) + bad
                res.max_step = max(res.max_step, int(np.max(np.abs(g - w))))
        for k in finals:
            res.out_ulps[k] = max(res.out_ulps.get(k, 0.0), _ulps(got[k], want[k]))
    res.seconds = time.perf_counter() - t0
    return res


HEADER = ("| model | QuantizeLinear outputs | codes compared | codes differing | max step | final output max "
          "ulps | float model rel. diff | worst quantizers |\n|---|---:|---:|---:|---:|---:|---:|---|")


def main(argv: list[str]) -> int:
    import fetch

    from test_packaged_models import BOUNDS

    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # as onnxruntime (1 thread); see tests/test_packaged_codes.py
    cache = fetch.default_cache()
    names = argv or [n for n in BOUNDS if fetch.is_present(n, cache)]
    print(HEADER, flush=True)
    for n in names:
        try:
            r = check(n, fetch.model_path(n, cache))
            print(r.line() + f" <!-- {r.seconds:.0f} s -->", flush=True)
        except Exception as exc:  # noqa: BLE001 - a table row
            print(f"| {n} | error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main(sys.argv[1:]))
