"""int8 latency of qpass pipelines against quantize_static (op13) on one packaged model, side by side in one run:
thread CPU time of 10 runs of the first eval sample per round, the rounds rotated over the models, median of the
per-round ratios to quantize_static's.

    python bench/sqnr13p_pipeline_latency.py mtcnn-rnet PIPELINE [PIPELINE ...]    # a name or a pipeline file
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def main(argv=None) -> int:
    import ort_compare as oc
    import qpass
    argv = sys.argv[1:] if argv is None else argv
    name, pipes = argv[0], argv[1:]
    d = Path(os.environ.get("QPASS_ZOO_CACHE", Path.home() / ".cache" / "qpass-zoo")) / name
    cal, ev = dict(np.load(d / f"{name}.calib.npz")), dict(np.load(d / f"{name}.eval.npz"))
    tmp = Path(tempfile.mkdtemp())
    paths = {"quantize_static op13": tmp / "qs.onnx"}
    with contextlib.redirect_stdout(io.StringIO()):
        oc.ort_quantize(d / f"{name}.onnx", cal, paths["quantize_static op13"], True, "u8", 13)
    for p in pipes:
        paths[p] = tmp / f"{len(paths)}.onnx"
        qpass.save(qpass.optimize(qpass.load(d / f"{name}.onnx"), calib=cal, pipeline=p).model, paths[p])
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = {k: ort.InferenceSession(str(v), so, providers=["CPUExecutionProvider"]) for k, v in paths.items()}
    key = next(iter(ev))
    feed = {key: ev[key][0]}
    for s in sess.values():
        for _ in range(50):
            s.run(None, feed)
    times = {k: [] for k in sess}
    for r in range(int(os.environ.get("ROUNDS", 300))):
        order = list(sess)[r % len(sess):] + list(sess)[:r % len(sess)]
        for k in order:
            t0 = time.thread_time()
            for _ in range(10):
                sess[k].run(None, feed)
            times[k].append(time.thread_time() - t0)
    base = np.array(times["quantize_static op13"])
    print(f"{name}; load {os.getloadavg()[0]:.2f}")
    for k, t in times.items():
        print(f"  {k[:40]:40s} {np.median(t) / 10 * 1e6:8.1f} us  x{np.median(np.array(t) / base):.3f} of quantize_static")
    return 0


if __name__ == "__main__":
    sys.exit(main())
