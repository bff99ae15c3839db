"""`qpass zoo` killed halfway (SIGINT and SIGKILL) resumes without redoing finished models and ends with the same
outputs as an uninterrupted run; the zoo report renders in headless Chromium with its plots drawn.

The zoo: models/structural, the digits MLP, and the small packaged models (mtcnn-pnet, mtcnn-rnet) when they are
in the cache (~/.cache/qpass-zoo; their inputs come from models/packaged/inputs.py)."""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS, ROOT
from test_report import CHROMIUM, RECTS, chromium

PACKAGED = ("mtcnn-pnet", "mtcnn-rnet")


def add_packaged(dst: Path) -> list[str]:
    """Packaged models present in the cache, with calibration / evaluation samples written beside them."""
    sys.path.insert(0, str(ROOT / "models" / "packaged"))
    try:
        import fetch
        import inputs
    except ImportError:
        return []
    cache = Path(os.environ.get("QPASS_ZOO_CACHE", Path.home() / ".cache" / "qpass-zoo"))
    found = []
    for name in PACKAGED:
        if not fetch.is_present(name, cache):
            continue
        src = fetch.model_path(name, cache)
        try:
            calib, ev = inputs.build(name, src)
        except Exception:  # noqa: BLE001 - an input that cannot be built here leaves the model out
            continue
        (dst / "packaged").mkdir(exist_ok=True)
        shutil.copy(src, dst / "packaged" / f"{name}.onnx")
        np.savez(dst / "packaged" / f"{name}.calib.npz", **{k: v for k, v in calib.items() if k != "labels"})
        np.savez(dst / "packaged" / f"{name}.eval.npz", **ev)
        found.append(name)
    return found


@pytest.fixture(scope="module")
def zoo_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("zoo")
    shutil.copytree(MODELS / "structural", src / "structural", ignore=shutil.ignore_patterns("*.py"))
    for suffix in (".onnx", ".calib.npz", ".eval.npz"):
        shutil.copy(MODELS / f"digits_mlp{suffix}", src / f"digits_mlp{suffix}")
    add_packaged(src)
    return src


def cli(src, out):
    return [sys.executable, "-m", "qpass.cli", "zoo", str(src), "-o", str(out), "-q", "--no-latency", "--jobs", "2"]


@pytest.fixture(scope="module")
def uninterrupted(zoo_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "out"
    r = subprocess.run(cli(zoo_src, out), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def strip_times(path: Path, out: Path):
    """A file's content without its wall-time parts (the model reports' pass durations, the zoo's seconds) and
    with the output folder's name (in the recorded commands) as OUT."""
    if path.suffix == ".json" and path.name != "zoo.json":
        data = json.loads(path.read_text())
        for t in data.get("timeline", []):
            t["seconds"] = 0
        return data
    if path.name == "zoo.json":
        data = json.loads(path.read_text().replace(str(out), "OUT"))
        for r in data["models"]:
            r["seconds"] = 0
        return data
    if path.name == "zoo.csv":
        return [{**r, "seconds": ""} for r in csv.DictReader(path.read_text().replace(str(out), "OUT").splitlines())]
    if path.suffix == ".html":
        return re.sub(r"<(td|div)[^>]*data-timing[^>]*>[^<]*<", "<t><", path.read_text())
    return path.read_bytes()


def outputs(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()
            and "zoo-records" not in p.parts and p.name != ".zoo.lock"}


def records(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "zoo-records").rglob("*.json")}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_zoo_resumes_and_ends_like_an_uninterrupted_run(zoo_src, uninterrupted, tmp_path, sig):
    total = len(records(uninterrupted))
    out = tmp_path / "out"
    # the run (and its workers, which inherit it) at the lowest priority, so this poller is scheduled promptly and
    # signals it halfway even on a loaded machine (it once finished between two polls)
    proc = subprocess.Popen(cli(zoo_src, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.nice(19))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "zoo-records").is_dir() and len(records(out)) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    done = records(out)
    assert 3 <= len(done) < total, (len(done), total)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and stderr.strip().startswith("qpass: error: interrupted:"), stderr
        assert "Traceback" not in stderr
        assert json.loads((out / "zoo.json").read_text())["counts"].get("pending", 0) >= 1
    else:
        assert proc.returncode == -signal.SIGKILL
    stamps = {name: (out / name).stat().st_mtime_ns for name in outputs(out) if name.endswith(".onnx")}
    r = subprocess.run(cli(zoo_src, out), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    # finished models were not redone: their records are byte-identical and their outputs untouched
    assert {k: v for k, v in records(out).items() if k in done} == done
    finished = {k[len("zoo-records/"):-len(".json")] for k in done}
    assert all((out / rel).stat().st_mtime_ns == stamps[rel] for rel in finished if rel in stamps)
    assert f"({total - len(done)} in this run)" in r.stdout, r.stdout
    # the same outputs as an uninterrupted run (no stray temporary file either)
    a, b = outputs(uninterrupted), outputs(out)
    assert sorted(a) == sorted(b)
    for name in a:
        assert strip_times(a[name], uninterrupted) == strip_times(b[name], out), name


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_zoo_report_renders_with_plots_in_headless_chromium(uninterrupted, tmp_path):
    """The screenshot is not blank: each plot's area holds its blue bars / points, the table its rows."""
    from PIL import Image

    html = (uninterrupted / "zoo.html").read_text()
    n_models = json.loads((uninterrupted / "zoo.json").read_text())["models"]
    page = uninterrupted / "measured.html"
    page.write_text(html.replace("</body>", RECTS))
    try:
        size = "--window-size=1280,2400"
        dom = chromium(tmp_path, size, "--dump-dom", page.as_uri()).stdout
        assert "<title>qpass zoo report: rendered 2 of 2 plots</title>" in dom
        assert dom.count('<tr><td><a href="') == len(n_models)
        rects = json.loads(re.search(r'data-rects="([^"]*)"', dom).group(1).replace("&quot;", '"'))
        assert len(rects) == 2 and all(w > 200 and h > 100 for _, _, w, h in rects)
        chromium(tmp_path, size, f"--screenshot={tmp_path / 'shot.png'}", page.as_uri())
    finally:
        page.unlink()
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"), np.int32)
    assert shot.std() > 10, "blank screenshot"
    for x, y, w, h in rects:
        px = shot[int(y):int(y + h), int(x):int(x + w)]
        r, g, b = px[..., 0], px[..., 1], px[..., 2]
        blue = int(np.count_nonzero((b > 150) & (r < 110) & (g < 140)))
        dark = int(np.count_nonzero((r < 90) & (g < 90) & (b < 90)))
        assert blue > 300 and dark > 50, (x, y, blue, dark)  # bars or points drawn, axis labels
