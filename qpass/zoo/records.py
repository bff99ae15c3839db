"""Per-model records of ``qpass zoo``: what was converted from what, so a re-run redoes only what changed.

``OUT_DIR/zoo-records/<model path>.json`` holds one model's last result: status and reason, metrics, the files
written (with sha256), the exact ``qpass optimize`` command that reproduces it, the qpass version, the settings
and the inputs' sha256 (model, calibration and evaluation samples, pipeline file). A model is up to date when its
record says ``ok`` or ``skipped``, was made by this qpass version with the same settings from inputs with the same
hashes, and every file it lists is still there with its hash. Hashes are cached by (size, mtime): a file whose
size and modification time match the record is not read again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

from qpass.ir.atomic import write_text

RECORDS = "zoo-records"
DONE = ("ok", "skipped")


def record_path(out_dir: Path, rel: str) -> Path:
    return out_dir / RECORDS / (rel + ".json")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: Path | None, known: dict | None = None) -> dict | None:
    """``{"path", "size", "mtime_ns", "sha256"}`` of a file (None when there is none); the hash is taken from
    ``known`` when size and mtime match it."""
    if path is None or not path.is_file():
        return None
    st = path.stat()
    fp = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns and known.get("sha256"):
        fp["sha256"] = known["sha256"]
    else:
        fp["sha256"] = sha256(path)
    return fp


def load_record(out_dir: Path, rel: str) -> dict | None:
    """The model's record, or None when there is none or it cannot be read (then the model is redone)."""
    try:
        rec = json.loads(record_path(out_dir, rel).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def save_record(out_dir: Path, rec: dict) -> None:
    write_text(record_path(out_dir, rec["model"]), json.dumps(rec, indent=1, sort_keys=True) + "\n")


def _hashes(fps: dict) -> dict:
    return {k: (v or {}).get("sha256") for k, v in fps.items()}


def up_to_date(rec: dict | None, inputs: dict, settings: dict, version: str, out_dir: Path) -> bool:
    """True when ``rec`` (see the module doc) needs no re-run."""
    if not rec or rec.get("status") not in DONE or rec.get("qpass_version") != version:
        return False
    if rec.get("settings") != settings or _hashes(rec.get("inputs", {})) != _hashes(inputs):
        return False
    for name, fp in rec.get("outputs", {}).items():
        now = fingerprint(out_dir / name, fp)
        if now is None or now["sha256"] != fp.get("sha256"):
            return False
    return True


def command(source: Path, out_dir: Path, rel: str, calib: Path | None, ev: Path | None, pipeline: str,
            report: str) -> str:
    """The ``qpass optimize`` command line that converts this model the way the zoo does."""
    samples = [] if calib is None else ["--calib", str(calib)]
    if ev or calib:
        samples += ["--eval", str(ev or calib)]
    argv = ["qpass", "optimize", str(source), "-o", str(out_dir / rel), *samples, "--pipeline", pipeline,
            "--report", str(out_dir / report), "-q"]
    return shlex.join(argv)


def remove_outputs(out_dir: Path, rec: dict | None) -> None:
    """Delete the files an earlier record lists (its model is being redone or failed now)."""
    for name in (rec or {}).get("outputs", {}):
        try:
            (out_dir / name).unlink()
        except FileNotFoundError:
            pass


def remove_stale_temporaries(folder: Path, names) -> None:
    """Temporary files ``qpass.ir.atomic`` left beside ``names`` when a run was killed mid-write."""
    for name in names:
        target = folder / name
        if not target.parent.is_dir():
            continue
        for p in target.parent.glob(f".{target.name[:200]}.*.tmp"):
            try:
                os.unlink(p)
            except OSError:
                pass
