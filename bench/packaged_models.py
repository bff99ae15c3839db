"""qpass vs onnxruntime's quantize_static on the packaged zoo only, at one thread: ``bench/ort_baseline.py``
restricted to the float models of ``models/packaged/`` that are in the cache (``python models/packaged/fetch.py``
fills it). Same rows and columns as ort_baseline (its docstring explains them).

    python bench/packaged_models.py [NAME...] [--budget SECONDS] [--cache DIR] [--json OUT]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ort_baseline  # noqa: E402
import ort_compare as oc  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="models or groups (default: every cached float model)")
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of latency measurement per model")
    ap.add_argument("--json", type=Path, metavar="OUT")
    args = ap.parse_args(argv)
    cache = args.cache.expanduser() if args.cache else oc.fetch.default_cache()
    names = args.names or oc.packaged_names(cache)
    if not names:
        print(f"packaged_models: no packaged model in {cache} (run models/packaged/fetch.py)", file=sys.stderr)
        return 2
    fwd = ["--models", *names, "--threads", "1", "--budget", str(args.budget), "--cache", str(cache)]
    return ort_baseline.main(fwd + (["--json", str(args.json)] if args.json else []))


if __name__ == "__main__":
    sys.exit(main())
