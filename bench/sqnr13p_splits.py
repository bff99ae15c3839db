"""Eval SQNR of qpass pipelines and quantize_static on mtcnn-rnet / onet over several calibration / eval splits,
side by side in one run: the bench's 24 eval crops are few (two crops that leave the calibration range carry 40% of
rnet's error on them), so each split is also scored on every other crop the inputs module builds (about 208).

    python bench/sqnr13p_splits.py mtcnn-rnet [PIPELINE ...]     # PIPELINE: a name or a pipeline file

Splits (of the 64 crops inputs.py draws, faces and non-faces alternating): A = the bench's (calibration the even
pairs, eval the odd), B = A swapped, C = groups of four instead of pairs. "big": every LFW face / non-face and photo
crop that is not in the split's calibration set.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "models" / "packaged"), str(ROOT / "bench")]
import inputs  # noqa: E402
import tasks  # noqa: E402

SIZES = {"mtcnn-rnet": (24, 21, "input_2"), "mtcnn-onet": (48, 31, "input_3")}


def splits(name: str) -> dict:
    """{tag: (calib, small eval, big eval)} as npz-convention dicts."""
    size, seed, key = SIZES[name]
    xs = inputs._mtcnn_crops(size, seed)[0]
    a = inputs._split(xs, 24, 24, group=2)
    quad = ([x for i, x in enumerate(xs) if (i // 4) % 2 == 0], [x for i, x in enumerate(xs) if (i // 4) % 2 == 1])
    rng = np.random.default_rng(inputs.SEED + seed)
    every = [inputs.mtcnn_input(x) for x in inputs._face_crops(size, rng) + inputs._nonface_crops(size, rng, 1000)]
    out = {}
    for tag, (c, e) in zip("ABC", (a, (a[1], a[0]), (quad[0][:24], quad[1][:24]))):
        rest = [x for x in every if not any(np.array_equal(x, y) for y in c)]
        out[tag] = tuple({key: np.stack(v)} for v in (c, e, rest))
    return out


def score(src: Path, model, evals: list, outs: list) -> list[float]:
    return [tasks.sqnr_db(tasks._flat(tasks.run(str(src), ev), outs), tasks._flat(tasks.run(model, ev), outs))
            for ev in evals]


def quantize_static(src: Path, calib: dict) -> str:
    import ort_compare as oc
    out = Path(tempfile.mkdtemp()) / "qs.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        oc.ort_quantize(src, calib, out, True, "u8", 13)
    return str(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=sorted(SIZES))
    ap.add_argument("pipelines", nargs="*", default=["default"])
    ap.add_argument("--cache", default=os.environ.get("QPASS_ZOO_CACHE", str(Path.home() / ".cache/qpass-zoo")))
    opts = ap.parse_args(argv)
    import qpass
    src = Path(opts.cache) / opts.model / f"{opts.model}.onnx"
    outs = list(tasks.TASKS[opts.model].sqnr_outputs)
    print(f"{opts.model}; {platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}; "
          f"eval SQNR dB (24 crops / ~208 crops), quantize CPU s (this process, mean over the splits, after a warm-up)")
    data = splits(opts.model)
    print(f"{'tool':34s}" + "".join(f"{t + ' 24':>9}{t + ' big':>9}" for t in data) + f"{'cpu s':>8}")
    rows = [("quantize_static op13", None)] + [(p, p) for p in opts.pipelines]
    warm = data["A"][0]  # imports and first calls of both tools, untimed
    quantize_static(src, warm), qpass.optimize(qpass.load(src), calib=warm)
    for label, pipe in rows:
        cells, cpu = [], 0.0
        for tag, (cal, small, big) in data.items():
            t0 = time.process_time()
            model = quantize_static(src, cal) if pipe is None else \
                qpass.optimize(qpass.load(src), calib=cal, pipeline=pipe).model
            cpu += time.process_time() - t0
            cells += score(src, model, [small, big], outs)
        print(f"{label[:34]:34s}" + "".join(f"{v:9.2f}" for v in cells) + f"{cpu / len(data):8.2f}", flush=True)
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
