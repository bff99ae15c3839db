"""Print a sha256 for every output `qpass optimize` writes for the models in models/.

A refactoring check: run it before and after a change and diff the two listings (they must be identical).
Pipelines: default, fakequant, streamline (ONNX files) and --backend hls (every file of the exported folder).
Usage: python bench/output_hashes.py [-o hashes.txt] [--keep DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "default": [],
    "fakequant": ["--pipeline", "fakequant"],
    "streamline": ["--pipeline", "streamline"],
    "hls": ["--backend", "hls"],
}


def _content(f: Path) -> bytes:
    data = f.read_bytes()
    if f.suffix in (".txt", ".md"):  # reports carry wall times ("... (18 ms)"): not part of the output's identity
        data = re.sub(rb"[0-9.]+ ms\b", b"T ms", data)
    return data


def _digest(path: Path) -> str:
    if path.is_file():
        return hashlib.sha256(_content(path)).hexdigest()[:16]
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + _content(f))
    return h.hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path)
    ap.add_argument("--keep", type=Path, help="keep the outputs in this folder")
    ap.add_argument("--runs", nargs="*", choices=sorted(RUNS), default=sorted(RUNS), help="which pipelines")
    args = ap.parse_args()
    models = sorted(p for p in (ROOT / "models").rglob("*.onnx") if "packaged" not in p.parts)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        out_root = args.keep or Path(tmp)
        for model in models:
            for run, flags in RUNS.items():
                if run not in args.runs:
                    continue
                rel = model.relative_to(ROOT / "models")
                out = out_root / run / (str(rel).replace("/", "__") + (".hls" if run == "hls" else ".onnx"))
                out.parent.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "-m", "qpass.cli", "optimize", str(model), "-o", str(out), "-q", *flags]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode == 0 and out.exists():
                    result = _digest(out)
                else:
                    result = f"exit {proc.returncode}: " + (proc.stderr.strip().splitlines() or [""])[-1][:120]
                lines.append(f"{run:<11} {rel}  {result}")
                print(lines[-1], flush=True)
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
