"""Calibrate qpass' RTL resource formulas (``qpass.hw.calibration``) against Yosys ``synth_xilinx``: synthesize every
library module over a small grid of parameters (PE, SIMD, weight / input bits, threshold steps, depths) with random
weights and thresholds, cache the cell counts in ``bench/results/yosys_grid.json``, fit the per-kind formulas by
non-negative least squares on relative error, and write the coefficients to ``qpass/hw/calibration_yosys.json`` with
the Yosys version and this command.

    python bench/calibrate_yosys.py [--kinds mvtu swg ...] [--fit-only] [--max-points N]

Slow (one Yosys run per grid point, seconds to minutes each): never run by the tests. Runs nice'd one point at a
time; interrupted runs resume from the cache.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qpass.backends.rtl.exporter import HDL, LIBRARY
from qpass.backends.rtl.instances import Instance
from qpass.backends.rtl.memfiles import hex_words, search_images
from qpass.errors import QpassError
from qpass.backends.rtl.hdl_revision import hdl_hash, library_modules, module_hash
from qpass.backends.rtl.synth import SynthCache, key_base, key_is_current, synth_instance, yosys_command
from qpass.hw import calibration as cal

ROOT = Path(__file__).resolve().parents[1]
GRID_CACHE = ROOT / "bench" / "results" / "yosys_grid.json"
COMMAND = "python bench/calibrate_yosys.py"


def _rand(rng, shape, bits, signed=True):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return rng.integers(lo, hi + 1, size=shape)


def _thresholds(rng, rows, nt, tb):
    lo, hi = -(1 << (tb - 1)), (1 << (tb - 1)) - 1
    return np.sort(rng.integers(lo, hi + 1, size=(rows, nt)), axis=1)


def mvtu_point(p: dict, rng):
    """Instance, input bits, output bits of one qp_mvtu grid point (p: MW MH PE SIMD WB IB NT XNOR DSP)."""
    mw, mh, pe, simd, wb, ib, nt = (p[k] for k in ("MW", "MH", "PE", "SIMD", "WB", "IB", "NT"))
    xnor, dsp = p.get("XNOR", 0), p.get("DSP", 0)
    nf, sf = mh // pe, mw // simd
    wbits = 1 if xnor else wb
    w = rng.integers(0, 2, size=(mh, mw)) if xnor else _rand(rng, (mh, mw), wb)
    ab = int(np.ceil(np.log2(mw))) + (1 if xnor else wbits + ib - 1)
    tiles = w.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
    ob = max(1, int(np.ceil(np.log2(nt + 1)))) if nt else ab
    tb = ab
    params = [("MW", mw), ("MH", mh), ("SIMD", simd), ("PE", pe), ("IB", ib), ("I_SIGNED", 1), ("WB", wbits),
              ("W_SIGNED", 1), ("AB", ab + 1), ("OB", ob), ("XNOR", xnor), ("USE_DSP", dsp), ("WFILE", '"w.mem"')]
    inst = Instance("qp_mvtu", params, mems={"w.mem": hex_words(tiles, wbits)})
    if nt:
        t = _thresholds(rng, mh, nt, tb)
        inst.mems["t.mem"] = hex_words(t.reshape(nf, pe * nt), tb)
        inst.params += [("OUT_SCALE", 1), ("OUT_BIAS", 0)]
    inst.params += [("NT", nt), ("TB", tb), ("TFILE", '"t.mem"')] + ([("BS", 1)] if p.get("BS") else [])
    if nt and p.get("BS"):  # every stage reads its ROM, stage 0 too (one word with one row fold)
        inst.mems.update(search_images(t, pe, tb, "t.mem"))
    return inst, [simd * ib], pe * ob


def swg_point(p: dict, rng):
    c, simd, iw, eb = (p[k] for k in ("C", "SIMD", "IW", "EB"))
    k = p.get("K", 3)
    inst = Instance("qp_swg", [("C", c), ("SIMD", simd), ("IH", iw), ("IW", iw), ("KH", k), ("KW", k), ("SH", 1),
                               ("SW", 1), ("PAD", p.get("PAD", 1)), ("DEPTHWISE", 0), ("EB", eb), ("PADV", 0)])
    return inst, [simd * eb], simd * eb


def threshold_point(p: dict, rng):
    c, pe, ib, nt = (p[k] for k in ("C", "PE", "IB", "NT"))
    tb = ib + 1
    ob = max(1, int(np.ceil(np.log2(nt + 1))))
    t = _thresholds(rng, c, nt, tb)
    inst = Instance("qp_threshold", [("C", c), ("PE", pe), ("NPIX", 64), ("IB", ib), ("I_SIGNED", 1), ("OB", ob),
                                     ("NT", nt), ("TB", tb), ("OUT_SCALE", 1), ("OUT_BIAS", 0),
                                     ("TFILE", '"t.mem"')] + ([("BS", 1)] if p.get("BS") else []),
                    mems={"t.mem": hex_words(t.reshape(c // pe, pe * nt), tb)})
    if p.get("BS"):  # every stage reads its ROM, stage 0 too (one word with one row fold)
        inst.mems.update(search_images(t, pe, tb, "t.mem"))
    return inst, [pe * ib], pe * ob


def maxpool_point(p: dict, rng):
    c, pe, iw, eb = (p[k] for k in ("C", "PE", "IW", "EB"))
    inst = Instance("qp_maxpool", [("C", c), ("PE", pe), ("IH", iw), ("IW", iw), ("KH", 2), ("KW", 2), ("EB", eb),
                                   ("SIGNED", 1)])
    return inst, [pe * eb], pe * eb


def add_point(p: dict, rng):
    pe, ab, ka, kb = (p[k] for k in ("PE", "AB", "KA", "KB"))
    ob = ab + 1 + int(np.ceil(np.log2(max(ka, kb) + 1)))
    inst = Instance("qp_add", [("PE", pe), ("AB_", ab), ("A_SIGNED", 1), ("BB", ab), ("B_SIGNED", 1), ("OB", ob),
                               ("KA", ka), ("KB", kb)], ports=["a", "b"])
    return inst, [pe * ab, pe * ab], pe * ob


def global_sum_point(p: dict, rng):
    c, pe, ib, npix = (p[k] for k in ("C", "PE", "IB", "NPIX"))
    ob = ib + int(np.ceil(np.log2(npix))) + 1
    inst = Instance("qp_global_sum", [("C", c), ("PE", pe), ("NPIX", npix), ("IB", ib), ("I_SIGNED", 1),
                                      ("OB", ob)])
    return inst, [pe * ib], pe * ob


def grid(kind: str) -> list[dict]:
    """The parameter grid of one module kind (small modules: each point synthesizes in seconds to a minute; the
    formulas are linear in PE and SIMD, so larger layers extrapolate)."""
    if kind == "mvtu":
        g = []
        for wb, ib, xnor, dsp, nts in [(2, 2, 0, 0, (0, 3)), (4, 4, 0, 0, (0, 15)), (1, 2, 1, 0, (0, 1)),
                                       (8, 8, 0, 1, (0,)), (2, 4, 0, 0, (3,))]:
            for mw, mh, pe, simd in [(64, 16, 1, 8), (32, 8, 2, 8), (16, 4, 4, 16)]:
                g += [dict(MW=mw, MH=mh, PE=pe, SIMD=simd, WB=wb, IB=ib, NT=nt, XNOR=xnor, DSP=dsp) for nt in nts]
        g.append(dict(MW=64, MH=16, PE=4, SIMD=16, WB=2, IB=2, NT=0, XNOR=0, DSP=0))
        # binary-search thresholds (BS): constant (NF == 1) and read per row fold (NF > 1)
        return g + [dict(MW=16, MH=4, PE=4, SIMD=16, WB=8, IB=8, NT=255, XNOR=0, DSP=1, BS=1),
                    dict(MW=16, MH=8, PE=1, SIMD=16, WB=8, IB=8, NT=255, XNOR=0, DSP=1, BS=1),
                    dict(MW=32, MH=4, PE=2, SIMD=32, WB=4, IB=4, NT=63, XNOR=0, DSP=0, BS=1)] + [
            # XNOR lanes with 8..64 row folds: the input multiplexer's select merged into each lane's XNOR (LUT7 /
            # LUT8 at 16 / 32 row folds, ``calibration.xnor_wide_luts``; session 12; appended: a point's random
            # weights are seeded by its index)
            dict(MW=512, MH=mh, PE=pe, SIMD=32, WB=1, IB=2, NT=0, XNOR=1, DSP=0)
            for mh, pe in [(8, 1), (16, 1), (32, 1), (64, 1), (64, 2)]] + [
            # small multi-bit LUT-multiplier units with and without row folds (the input multiplexer in front of
            # every lane, ``mvtu_structure.xmux_luts``) and with one or two lanes per PE (a product merged into the
            # accumulator's adder, ``mvtu_structure.merged_product``); session 13, appended like the XNOR points
            dict(MW=mw, MH=mh, PE=pe, SIMD=simd, WB=b, IB=b, NT=nt, XNOR=0, DSP=0)
            for mw, mh, pe, simd, b, nt in [(16, 1, 1, 1, 4, 0), (16, 10, 1, 1, 4, 0), (16, 1, 1, 1, 4, 15),
                                            (64, 1, 1, 8, 4, 0), (64, 16, 4, 8, 4, 0), (64, 1, 1, 32, 4, 0),
                                            (64, 16, 1, 32, 4, 0), (64, 10, 1, 2, 4, 0), (64, 10, 1, 2, 2, 0)]] + [
            # XNOR with one lane per PE: the addend 2 * pop - 1 is +-1 (``calibration._mvtu``'s pop1)
            dict(MW=mw, MH=mh, PE=pe, SIMD=simd, WB=1, IB=2, NT=0, XNOR=1, DSP=0)
            for mw, mh, pe, simd in [(512, 10, 5, 1), (64, 8, 2, 1), (512, 10, 5, 2)]]
    rows = {
        "swg": ("C SIMD IW EB", [(1, 1, 8, 2), (1, 1, 16, 8), (16, 16, 8, 2), (16, 16, 8, 4), (16, 4, 8, 8),
                                 (16, 1, 8, 8), (16, 16, 16, 2), (64, 16, 8, 4), (64, 64, 8, 2), (16, 1, 16, 4)]),
        "threshold": ("C PE IB NT BS", [(16, 1, 4, 1, 0), (16, 2, 4, 3, 0), (16, 2, 8, 15, 0), (64, 8, 4, 3, 0),
                                        (16, 1, 8, 15, 0), (4, 1, 8, 255, 0), (64, 2, 8, 15, 0), (16, 16, 4, 3, 0),
                                        (16, 16, 6, 15, 0), (8, 1, 10, 63, 0), (1, 1, 19, 255, 1)]),
        # (no more binary-search points with random thresholds: their stage ROMs do not minimise as the designs'
        # structured ones do, 1658 LUT for C 16, PE 2, IB 17, NT 255 where the residual CNN's add takes 313, and
        # fitted together they put qp_threshold's held-out LUT range at 0.91..5.43 instead of 0.91..1.25; session 11)
        "maxpool": ("C PE IW EB", [(16, 1, 8, 2), (16, 4, 8, 4), (32, 8, 8, 2), (64, 4, 16, 8), (16, 16, 8, 8),
                                   (32, 1, 8, 8)]),
        "add": ("PE AB KA KB", [(1, 2, 1, 1), (2, 4, 1, 4), (1, 8, 5, 18), (1, 8, 313, 574), (8, 4, 1, 1),
                                (2, 2, 4, 7)]),
        "global_sum": ("C PE IB NPIX", [(16, 1, 2, 16), (16, 1, 8, 16), (64, 4, 4, 64), (16, 16, 4, 16),
                                        (16, 4, 8, 64)]),
    }[kind]
    return [dict(zip(rows[0].split(), r)) for r in rows[1]]


POINTS = {"mvtu": mvtu_point, "swg": swg_point, "threshold": threshold_point, "maxpool": maxpool_point,
          "add": add_point, "global_sum": global_sum_point}


def run_grid(kinds, cache: SynthCache, max_points: int | None) -> None:
    with tempfile.TemporaryDirectory() as td:
        rtl = Path(td)
        for f in LIBRARY:
            (rtl / f).write_text((HDL / f).read_text())
        for kind in kinds:
            pts = grid(kind)[:max_points]
            for i, p in enumerate(pts):
                rng = np.random.default_rng(i)
                inst, ins, out = POINTS[kind](p, rng)
                for m in rtl.glob("*.mem*"):
                    m.unlink()
                for name, text in inst.mems.items():
                    (rtl / name).write_text(text)
                nodsp = not p.get("DSP", 0)
                t0 = time.perf_counter()
                try:
                    n = synth_instance(rtl, f"g_{kind}", inst, ins, out, "xc7", nodsp, cache)
                except QpassError as exc:  # --refresh: a point never synthesized
                    if not cache.offline:
                        raise
                    print(f"{kind} {i + 1}/{len(pts)} {p}: {exc}")
                    continue
                dt = time.perf_counter() - t0
                print(f"{kind} {i + 1}/{len(pts)} {p}: LUT {n.lut} FF {n.ff} BRAM18 {n.bram18} DSP {n.dsp}"
                      f"{'' if dt < 0.5 else f' ({dt:.0f} s)'}", flush=True)



def _git(*args: str) -> str:
    run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return run.stdout if run.returncode == 0 else ""


def _numbers(v: dict) -> tuple:
    return tuple(v.get(k) for k in ("lut", "ff", "bram18", "dsp", "seconds"))


def restamp(path: Path) -> tuple[int, int]:
    """Key the entries of a cache written before keys carried the HDL revision: an entry whose numbers first appear
    (git history of the file, date order) at a commit whose library HDL of its module is today's gets today's key;
    the others keep their old keys and count as stale (never fitted; re-synthesized, replacing the stale entry, when
    their instance comes up again). Returns (restamped, stale)."""
    rel = str(path.resolve().relative_to(ROOT))
    first: dict = {}
    for commit in _git("log", "--date-order", "--reverse", "--format=%H", "--", rel).split():
        for key, v in json.loads(_git("show", f"{commit}:{rel}") or "{}").items():
            first.setdefault((key_base(key), _numbers(v)), commit)
    libs: dict[str, dict] = {}
    out, done, stale = {}, 0, 0
    for key, v in json.loads(path.read_text()).items():
        module, commit = v["params"]["module"], first.get((key_base(key), _numbers(v)))
        if commit is not None and not key_is_current(key):
            if commit not in libs:
                libs[commit] = library_modules({f: _git("show", f"{commit}:qpass/backends/rtl/hdl/{f}")
                                                for f in LIBRARY})
            if module_hash(module, libs[commit]) == hdl_hash(module):
                key, done = f"{key_base(key)}:hdl-{hdl_hash(module)}", done + 1
        stale += not key_is_current(key)
        out[key] = v
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return done, stale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=list(POINTS))
    ap.add_argument("--fit-only", action="store_true", help="fit from the cached grid without running Yosys")
    ap.add_argument("--refresh", action="store_true",
                    help="rebuild the grid's instances to refresh the cached parameters (ROM column counts) without "
                         "running Yosys (a point missing from the cache is an error)")
    ap.add_argument("--max-points", type=int, default=None)
    ap.add_argument("--cache", default=str(GRID_CACHE))
    ap.add_argument("--out", default=str(cal.DATA))
    ap.add_argument("--with", dest="extra", nargs="*", default=[],
                    help="more cached Yosys numbers to fit on (e.g. bench/results/yosys_layers.json)")
    ap.add_argument("--holdout", default=None, help="cached Yosys numbers to check the fit on, not fitted")
    ap.add_argument("--cv", type=int, default=0,
                    help="K-fold cross-validation over the --with entries (the grid always fitted): each design "
                         "layer predicted by a fit that did not see it")
    ap.add_argument("--restamp", action="store_true",
                    help="once, for caches written before keys carried the HDL revision: give today's key to the "
                         "entries whose numbers git history dates to today's HDL of their module (``restamp``)")
    a = ap.parse_args()
    if a.restamp:
        for path in [Path(a.cache)] + [Path(x) for x in a.extra]:
            print(f"{path}: %d entries restamped, %d stale" % restamp(path))
    cache = SynthCache(Path(a.cache), offline=a.refresh)
    version = subprocess.run(yosys_command() + ["-V"], capture_output=True, text=True).stdout.strip()
    if not a.fit_only or a.refresh:
        run_grid(a.kinds, cache, a.max_points)
    grid, n_grid = current(cache.data)
    extra, n_extra = current({k: v for x in a.extra for k, v in SynthCache(Path(x)).data.items()})
    entries = {**grid, **extra}
    samples = [(v["params"]["module"], v["params"], v) for v in entries.values()]
    command = " ".join([COMMAND] + sys.argv[1:]).replace(f"{ROOT}/", "")
    data = cal.fit_all(samples, version=version, command=command)
    # which cached instances the fit saw: the bench marks the layers whose estimate is in-sample
    data["fitted"] = sorted(k for k, v in entries.items() if v["params"]["module"] in data["modules"])
    data["entries"] = {"grid": len(grid), "with": len(extra), "stale_skipped": n_grid + n_extra}
    Path(a.out).write_text(cal.dumps(data))
    print(cal.fit_summary(data))
    print(f"fitted on {len(entries)} distinct cached entries of today's library HDL ({len(grid)} grid points, "
          f"{len(extra)} --with entries); skipped {n_grid + n_extra} stale entries synthesized from older HDL "
          f"({n_grid} grid, {n_extra} --with)")
    print(f"wrote {a.out}")
    if a.holdout:
        print(holdout_report(current(SynthCache(Path(a.holdout)).data)[0], data))
    if a.cv:
        print(cross_validation(grid, extra, a.cv, version))


def current(data: dict) -> tuple[dict, int]:
    """The cache entries keyed by today's library HDL of their module (``synth.key_is_current``) and how many
    others (stale: synthesized from older HDL) were left out."""
    keep = {k: v for k, v in data.items() if key_is_current(k)}
    return keep, len(data) - len(keep)


def holdout_report(entries: dict, calib: dict | None, preds: dict | None = None,
                   title: str = "held out (estimate/yosys)") -> str:
    """Estimate/yosys ratios of LUT and FF per module over cached numbers the fit did not see (``preds``: key ->
    (module, estimate, yosys entry) already predicted, else ``calib``'s formulas)."""
    by: dict = {}
    for key, v in entries.items():
        m = v["params"]["module"]
        if preds is not None:
            e = preds[key][1]
        elif m in calib["modules"]:
            e = cal.module_estimate(m, v["params"], calib)
        else:
            continue
        for metric in ("lut", "ff"):
            y = v[metric]
            by.setdefault((m, metric), []).append((getattr(e, metric), y))
    lines = [f"{title}: module metric: n, within +-15% (or +-10 under 100), min..max ratio"]
    tot: dict = {}
    for (m, metric), pairs in sorted(by.items()):
        ok = sum(abs(a - y) <= max(0.15 * y, 10 if y < 100 else 0) for a, y in pairs)
        t = tot.setdefault(metric, [0, 0])
        t[0], t[1] = t[0] + ok, t[1] + len(pairs)
        ratios = [a / y for a, y in pairs if y]
        lines.append(f"  {m} {metric}: {len(pairs)}, {ok} within, "
                     f"{min(ratios, default=0):.2f}..{max(ratios, default=0):.2f}")
    lines += [f"  all modules {metric}: {ok}/{n} within" for metric, (ok, n) in sorted(tot.items())]
    return "\n".join(lines)


def cross_validation(grid: dict, layers: dict, k: int, version: str) -> str:
    """K folds of the design layers (by sorted cache key, round robin): fit on the grid plus the other folds, predict
    the held-out fold; every layer's out-of-sample estimate/yosys counted like the bench (+-15%, or +-10 under 100)."""
    keys = sorted(layers)
    preds: dict = {}
    for fold in range(k):
        held = {key for i, key in enumerate(keys) if i % k == fold}
        train = list(grid.values()) + [v for key, v in layers.items() if key not in held]
        calib = cal.fit_all([(v["params"]["module"], v["params"], v) for v in train], version=version, command="cv")
        for key in held:
            v = layers[key]
            m = v["params"]["module"]
            if m in calib["modules"]:
                preds[key] = (m, cal.module_estimate(m, v["params"], calib), v)
    return holdout_report({key: v for key, (_, _, v) in preds.items()}, None, preds,
                          title=f"{k}-fold cross-validation over {len(keys)} design layers (grid always fitted)")


if __name__ == "__main__":
    main()
