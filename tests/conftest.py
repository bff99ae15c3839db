import hashlib
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
DIGITS = ["digits_mlp", "digits_cnn", "digits_rescnn"]
STRUCTURAL = sorted(p.stem for p in (MODELS / "structural").glob("*.onnx"))

# the `python -m qpass.cli` subprocesses some tests start (from temporary directories) import this checkout, whatever
# an editable install elsewhere on the machine points at (one re-pointed between sessions failed 38 tests with "No
# module named 'qpass'")
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                          if p and Path(p).resolve() != ROOT])


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS


@pytest.fixture(scope="session")
def quantized_digits():
    """Default-pipeline int8 QDQ result for each digits model (computed once per session)."""
    import qpass

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = qpass.optimize(MODELS / f"{name}.onnx", calib=MODELS / f"{name}.calib.npz")
        return cache[name]

    return get


@pytest.fixture(scope="session")
def ap_types() -> Path:
    """hls4ml's Apache-2.0 ap_int.h headers for the g++ C simulation, found or fetched once (3.3 MB wheel) the way
    ``qpass optimize --backend hls`` does; skips the test without them or without g++ (``QPASS_FETCH_AP_TYPES=0``:
    never fetch)."""
    from qpass.backends.hls import aptypes
    from qpass.errors import QpassError

    found = aptypes.find_ap_types()
    if found is None and os.environ.get("QPASS_FETCH_AP_TYPES", "1") != "0":
        try:
            found = aptypes.fetch_ap_types()
        except QpassError:
            found = None
    if found is None or shutil.which("g++") is None:
        pytest.skip("needs g++ and ap_int.h (pip install hls4ml, or qpass.backends.hls.aptypes.fetch_ap_types())")
    return found
