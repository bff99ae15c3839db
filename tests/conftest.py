import hashlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
DIGITS = ["digits_mlp", "digits_cnn", "digits_rescnn"]
STRUCTURAL = sorted(p.stem for p in (MODELS / "structural").glob("*.onnx"))


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
