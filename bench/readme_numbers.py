"""The figures README.md quotes, measured on this machine: run the README's commands through the real CLI and read
what they print, size what the test suite downloads, and (``--suite``) time the whole suite and sample its memory.

    python bench/readme_numbers.py [--suite] [--json OUT]

Each README figure names this script beside it. Prints the machine's CPU flags first (numbers change with them).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
M = ROOT / "models"

COMMANDS = {  # name -> the README's command line (arguments of `qpass`)
    "int8_cnn": ["optimize", M / "digits_cnn.onnx", "--eval", M / "digits_cnn.eval.npz"],
    "bits_auto_target": ["optimize", M / "digits_cnn.onnx", "--bits", "auto", "--target", "relative_accuracy>=0.99",
                         "--eval", M / "digits_cnn.eval.npz"],
    "bits_auto_budget": ["optimize", M / "digits_cnn.onnx", "--bits", "auto", "--avg-bits", "4", "--eval",
                         M / "digits_cnn.eval.npz"],
}


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = sorted(set(re.findall(r"\b(avx2|avx512_vnni|avx_vnni)\b", text)))
    return " ".join(flags) or "none of avx2 / avx512_vnni / avx_vnni"


def run_command(name: str, args: list, tmp: Path) -> dict:
    """Run one README command (output and a JSON report into ``tmp``) and read its figures."""
    out, report = tmp / f"{name}.onnx", tmp / f"{name}.json"
    cmd = [sys.executable, "-m", "qpass.cli", *map(str, args), "-o", str(out), "--report", str(report)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": r.stderr.strip()}
    acc = re.search(r"accuracy: float ([\d.]+)%\s+quantized ([\d.]+)%", r.stdout)
    agree = re.search(r"top-1 agreement with float: ([\d.]+)%", r.stdout)
    row = {"float_accuracy_pct": float(acc.group(1)), "quantized_accuracy_pct": float(acc.group(2)),
           "agreement_pct": float(agree.group(1)), "wall_s": round(wall, 1)}
    bw = json.loads(report.read_text()).get("bitwidth")
    if bw and bw.get("compression"):
        c = bw["compression"]
        row.update(avg_weight_bits=round(c["avg_weight_bits"], 2), smaller_than_float32=round(c["float32"], 1))
    return row


def zoo_download_mb() -> float | None:
    """Megabytes of package archives the packaged-model tests download (what is in the zoo cache's _dist)."""
    cache = Path(os.environ.get("QPASS_ZOO_CACHE", Path.home() / ".cache" / "qpass-zoo")) / "_dist"
    if not cache.is_dir():
        return None
    return round(sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 1e6, 1)


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants now."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d.name))
            rss[int(d.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run_suite() -> dict:
    """The README's test command (without the install): wall time and the peak memory of its process tree."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "-p", "no:cacheprovider", "-rfE"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.5)
    lines = proc.stdout.read().strip().splitlines()
    return {"exit": proc.returncode, "wall_min": round((time.perf_counter() - t0) / 60, 1),
            "peak_memory_gb": round(peak / 1e9, 2), "failed": [x for x in lines if x.startswith(("FAILED", "ERROR"))]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", action="store_true", help="also run the whole test suite (minutes)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    figures = {"cpu_flags": cpu_flags(), "cpus": os.cpu_count(), "zoo_download_mb": zoo_download_mb()}
    print(f"CPU flags: {figures['cpu_flags']}; {figures['cpus']} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in COMMANDS.items():
            figures[name] = run_command(name, cmd, Path(tmp))
            print(f"{name}: {figures[name]}", flush=True)
    print(f"packaged-model tests download: {figures['zoo_download_mb']} MB")
    if args.suite:
        figures["suite"] = run_suite()
        print(f"test suite: {figures['suite']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
