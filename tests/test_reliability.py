"""Outputs and inputs at the file-system edge: permissions follow the umask, special and unwritable paths are
one-line errors that replace nothing, hostile data files are refused before they are read."""
import io
import os
import stat
import zipfile

import numpy as np
import onnx
import pytest

import qpass
from qpass.errors import CalibrationDataError, ModelLoadError, QpassError
from qpass.ir.atomic import atomic_dir, current_umask
from qpass.ir.samples import load_npz, load_samples

from conftest import MODELS


@pytest.fixture
def mlp():
    return qpass.load(MODELS / "digits_mlp.onnx")


@pytest.fixture
def umask():
    def set_mask(mask):
        old = os.umask(mask)
        restore.append(old)
    restore = []
    yield set_mask
    for old in restore[:1]:
        os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_saved_files_follow_the_umask(mlp, tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    out = qpass.save(mlp, tmp_path / "m.onnx")
    assert stat.S_IMODE(out.stat().st_mode) == mode


def test_output_folders_follow_the_umask(tmp_path, umask):
    umask(0o022)
    with atomic_dir(tmp_path / "proj") as d:
        (d / "a.txt").write_text("x")
    assert stat.S_IMODE((tmp_path / "proj").stat().st_mode) == 0o755
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"


def test_a_device_node_is_never_replaced(mlp, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a private /dev/null
    with pytest.raises(QpassError, match="not a regular file"):
        qpass.save(mlp, dev)
    assert stat.S_ISCHR(dev.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_a_fifo_is_never_replaced(mlp, tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    with pytest.raises(QpassError, match="not a regular file"):
        qpass.save(mlp, fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.parametrize("case", ["directory", "through_file", "long_name", "proc"])
def test_unwritable_outputs_are_one_line_errors(mlp, tmp_path, case):
    target = {"directory": tmp_path,
              "through_file": tmp_path / "file.onnx" / "out.onnx",
              "long_name": tmp_path / ("x" * 300 + ".onnx"),
              "proc": "/proc/qpass_test_out.onnx"}[case]
    if case == "through_file":
        (tmp_path / "file.onnx").write_bytes(b"keep")
    with pytest.raises(QpassError) as exc:
        qpass.save(mlp, target)
    msg = str(exc.value)
    assert "\n" not in msg and str(target)[:40] in msg
    if case == "through_file":
        assert (tmp_path / "file.onnx").read_bytes() == b"keep"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_special_files_as_data_are_named_for_what_they_are(mlp, tmp_path):
    fifo = tmp_path / "calib.npz"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero", tmp_path):
        with pytest.raises(CalibrationDataError, match="not a regular file"):
            load_samples(path, mlp)
    with pytest.raises(CalibrationDataError, match="does not exist"):
        load_samples(tmp_path / "missing.npz", mlp)


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def test_a_corrupted_compressed_member_is_a_one_line_error(tmp_path):
    data = bytearray(_npz_bytes(x=np.arange(4096, dtype=np.float32)))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.infolist()[0]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 40
    data[start:start + 64] = bytes(64)  # deflate stream damaged, headers intact
    p = tmp_path / "bad.npz"
    p.write_bytes(bytes(data))
    with pytest.raises(CalibrationDataError, match="not a valid .npz") as exc:
        load_npz(p)
    assert "\n" not in str(exc.value)


def test_an_archive_that_inflates_too_far_is_refused_before_reading(tmp_path, monkeypatch):
    p = tmp_path / "bomb.npz"
    p.write_bytes(_npz_bytes(x=np.zeros((64, 1024, 1024), np.uint8)))  # 64 MiB of zeros in ~64 KB
    assert p.stat().st_size < 1_000_000
    monkeypatch.setenv("QPASS_MAX_DATA_BYTES", str(16 * 2**20))
    with pytest.raises(CalibrationDataError, match="inflates to more than .*QPASS_MAX_DATA_BYTES"):
        load_npz(p)
    monkeypatch.setenv("QPASS_MAX_DATA_BYTES", str(128 * 2**20))
    assert load_npz(p)["x"].shape == (64, 1024, 1024)


def test_pickled_objects_in_an_npz_are_refused(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(CalibrationDataError, match="Python objects"):
        load_npz(p)


def test_initializer_bytes_must_match_their_dims(mlp, tmp_path):
    m = onnx.ModelProto()
    m.CopyFrom(mlp)
    init = m.graph.initializer[0]
    init.raw_data = init.raw_data[:-4]  # one float32 short
    p = tmp_path / "short.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ModelLoadError, match=f"initializer {init.name!r} holds .* bytes but its dims"):
        qpass.load(p)


def test_a_graph_without_outputs_is_refused(mlp, tmp_path):
    from hostile_inputs import without_outputs

    onnx.save(without_outputs(mlp), tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="the graph has no outputs"):
        qpass.load(tmp_path / "m.onnx")


def test_subgraphs_nested_past_protobufs_limit_are_named_as_such(tmp_path):
    from hostile_inputs import nested_if_model

    (tmp_path / "ok.onnx").write_bytes(nested_if_model(10))
    assert sum(n.op_type == "If" for n in qpass.load(tmp_path / "ok.onnx").graph.node) == 1
    (tmp_path / "deep.onnx").write_bytes(nested_if_model(200))
    with pytest.raises(ModelLoadError, match="nested deeper than protobuf reads"):
        qpass.load(tmp_path / "deep.onnx")


def test_string_initializers_must_be_utf8(mlp, tmp_path):
    from hostile_inputs import with_non_utf8_string

    onnx.save(with_non_utf8_string(mlp), tmp_path / "s.onnx")
    with pytest.raises(ModelLoadError, match="not UTF-8"):
        qpass.load(tmp_path / "s.onnx")


def test_labels_must_be_integers(mlp):
    from qpass.ir.samples import bind_samples

    x = np.zeros((3, 1, 64), np.float32)
    assert bind_samples({"input": x, "labels": np.arange(3)}, mlp).labels.tolist() == [0, 1, 2]
    with pytest.raises(CalibrationDataError, match="'labels' must be integer class indices, not float64"):
        bind_samples({"input": x, "labels": np.arange(3.0)}, mlp)


@pytest.mark.parametrize("threads", [0, -1, 10**9, 1.5, True])
def test_thread_counts_are_bounded_in_the_api_too(threads):
    from qpass.pipeline.config import QuantConfig

    with pytest.raises(QpassError, match="--threads takes a whole number from 1 to"):
        QuantConfig(threads=threads).resolve()


def test_zoo_jobs_are_bounded_in_the_api_too(tmp_path):
    from qpass.zoo import run_zoo

    with pytest.raises(QpassError, match="jobs takes a whole number"):
        run_zoo(MODELS / "structural", tmp_path / "z", jobs=100000)
    assert not (tmp_path / "z").exists()


@pytest.mark.parametrize("kind,message", [("laughs", "expands to more than"), ("deep", "nests deeper than"),
                                          ("big", "larger than"), ("binary", "not UTF-8")])
def test_hostile_pipeline_files_are_refused_quickly(tmp_path, kind, message):
    import time

    from hostile_inputs import billion_laughs_yaml, deep_repeat_yaml
    from qpass.errors import PipelineError
    from qpass.pipeline.files import load_pipeline

    p = tmp_path / "p.yaml"
    if kind == "binary":
        p.write_bytes(b"passes: [\xff\xfe]\n")
    else:
        p.write_text({"laughs": billion_laughs_yaml(12, 12), "deep": deep_repeat_yaml(5000),
                      "big": "passes: [normalize]\n" + "#" * (2 << 20)}[kind])
    t0 = time.monotonic()
    with pytest.raises(PipelineError, match=message) as exc:
        load_pipeline(p)
    assert time.monotonic() - t0 < 5 and len(str(exc.value)) < 300


def test_a_pipeline_with_aliases_within_bounds_still_loads(tmp_path):
    from qpass.pipeline.files import load_pipeline

    p = tmp_path / "p.yaml"
    p.write_text("cal: &cal {method: minmax}\npasses: [normalize, {calibrate: *cal}, quantize_qdq]\n")
    assert [s.name for s in load_pipeline(p).steps] == ["normalize", "calibrate", "quantize_qdq"]


def test_a_scalar_input_given_per_sample_runs_in_onnxruntime():
    """A rank-0 model input given one value per sample (shape (N,)) reaches onnxruntime as a 0-d array, not a numpy
    scalar (which onnxruntime refuses: 'Unable to handle numpy.int64')."""
    from onnx import TensorProto, helper

    from qpass.ir.ort_session import run_samples
    from qpass.ir.samples import bind_samples

    g = helper.make_graph([helper.make_node("Cast", ["sr"], ["c"], to=TensorProto.FLOAT),
                           helper.make_node("Mul", ["x", "c"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                           helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    s = bind_samples({"x": np.ones((3, 1, 4), np.float32), "sr": np.array([1, 2, 3], np.int64)}, m)
    y = run_samples(m, s)["y"]
    assert y.shape == (3, 1, 4) and np.array_equal(y[:, 0, 0], [1, 2, 3])
