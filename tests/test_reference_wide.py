"""Integer exactness of the reference interpreter at 12 and 16 bits, against the HLS C simulation.

The C simulation accumulates exactly (ap_int); the partition models declare their accumulators as float32
tensors, so the reference's value of a partition output is the exact accumulator rounded once to float32
(past 2^24 the two differ by that rounding only). End to end, after the host nodes, both agree bit for bit.
"""
import numpy as np
import pytest

import qpass
from qpass.api import qonnx_model
from qpass.backends import hls
from qpass.backends.hls.exporter import partition_io
from qpass.ir.samples import load_samples

from conftest import MODELS

pytestmark = pytest.mark.usefixtures("ap_types")  # needs g++ and ap_int.h (skips cleanly without them)


@pytest.mark.parametrize("bits", [12, 16])
def test_wide_accumulators_equal_the_c_simulation(tmp_path, bits):
    name = "digits_mlp"
    p = qpass.load_pipeline("streamline", {"fakequant": {"weights": f"sym:{bits}", "activations": f"dfp:{bits}"}})
    model = qonnx_model(qpass.optimize(MODELS / f"{name}.onnx", calib=MODELS / f"{name}.calib.npz", pipeline=p))
    res = hls.export(model, tmp_path / f"{name}_{bits}")
    parent = res.partitioned.parent
    s = load_samples(MODELS / f"{name}.eval.npz", parent)
    io = partition_io(parent, s, batch_size=len(s), partitions=res.partitioned.store)
    wide = 0
    for e in res.partitions:
        got = hls.csim(e.project_dir, {t.tensor: io[t.tensor] for t in e.project.inputs})
        for t in e.project.outputs:
            exact = got[t.tensor].reshape(-1, t.elems).astype(np.int64)
            want = np.asarray(io[t.tensor]).reshape(-1, t.elems)
            assert np.array_equal(exact.astype(np.float32), want), (bits, t.tensor)  # f32(exact accumulator)
            wide += int(np.count_nonzero(np.abs(exact) >= 2 ** 24))
    assert wide > 0  # the test reaches accumulators float32 cannot hold
    cmp = hls.compare_with_golden(res, s)
    assert cmp.end_to_end == {"logits": 0}, cmp.summary()
    assert cmp.mismatches == 0, cmp  # partition outputs compared as the float32 the model declares
