"""QuantConfig: resolve() derives the pipeline and per-pass overrides exactly as `qpass optimize` did from its flags,
and qpass.optimize(config=...) runs what the CLI runs."""
import pytest

import qpass
from qpass.errors import QpassError
from qpass.pipeline.config import QuantConfig
from qpass.pipeline.files import load_pipeline

from conftest import MODELS

# (settings, pipeline the CLI chose, overrides the CLI built) -- from cli.optimize before QuantConfig existed
CASES = [
    ({}, "default", {}),
    ({"per_tensor": True, "activation_dtype": "uint8", "exclude": ("*fc*",)}, "default",
     {"quantize_qdq": {"activation_dtype": "uint8", "per_channel": False, "exclude": ["*fc*"]}}),
    ({"weights": "sym:4"}, "fakequant", {"fakequant": {"weights": "sym:4"}}),
    ({"granularity": "tensor", "seed": 3}, "fakequant", {"fakequant": {"weight_granularity": "tensor", "seed": 3}}),
    ({"calibrator": "percentile"}, "fakequant",
     {"fakequant": {"calibrator": "percentile"}, "calibrate": {"method": "percentile"}}),
    ({"bits": "4"}, "fakequant", {"fakequant": {"weights": "sym:4", "activations": "uint4"}}),
    ({"bits": 1, "activations": "uint2"}, "fakequant", {"fakequant": {"weights": "binary", "activations": "uint2"}}),
    ({"bits": "auto"}, "bitwidth", {"bitwidth": {}}),
    ({"bits": "auto", "avg_bits": 4.0, "cost": "bops"}, "bitwidth",
     {"bitwidth": {"cost": "bops", "avg_bits": 4.0, "target": None}}),
    ({"bits": "auto", "weights": "sym:8"}, "bitwidth", {"bitwidth": {}, "fakequant": {"weights": "sym:8"}}),
    ({"backend": "hls"}, "dataflow", {}),
    ({"backend": "hls", "weights": "sym:3"}, "dataflow", {"fakequant": {"weights": "sym:3"}}),
    ({"pipeline": "streamline", "threads": 2, "activations": "dfp:6"}, "streamline",
     {"fakequant": {"activations": "dfp:6"}, "calibrate": {"threads": 2}}),
]


@pytest.mark.parametrize("settings,pipeline,overrides", CASES)
def test_resolve_matches_what_the_cli_did(settings, pipeline, overrides):
    plan = QuantConfig(**settings).resolve()
    assert plan.pipeline_name == pipeline
    assert plan.overrides == overrides
    assert plan.pipeline.describe() == load_pipeline(pipeline, overrides).describe()


@pytest.mark.parametrize("settings,disabled", [({}, set()), ({"qonnx": True}, {"lower_ort"}),
                                               ({"backend": "hls"}, {"lower_ort"})])
def test_resolve_disables_lowering_for_qonnx_and_hls(settings, disabled):
    assert QuantConfig(**settings).resolve().disabled == disabled


@pytest.mark.parametrize("settings,message", [
    ({"bits": "17"}, "--bits takes 'auto' or a width from 1 to 16, not '17'"),
    ({"bits": "4", "target": "sqnr>=30"}, "--target, --cost and --avg-bits go with --bits auto"),
    ({"avg_bits": 4.0}, "--target, --cost and --avg-bits go with --bits auto"),
    ({"pipeline": "default", "bits": "auto", "weights": "sym:4"}, None),
    ({"pipeline": "streamline", "bits": "auto"},
     "--bits auto needs a pipeline with the 'bitwidth' pass (streamline has none)"),
])
def test_resolve_refuses_contradictions_with_the_cli_messages(settings, message):
    if message is None:
        QuantConfig(**settings).resolve()
        return
    with pytest.raises(QpassError) as err:
        QuantConfig(**settings).resolve()
    assert str(err.value) == message


def test_format_options_need_fakequant(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("passes: [normalize, calibrate, quantize_qdq]\n")
    with pytest.raises(QpassError, match=r"format options need a pipeline with the 'fakequant' pass \(.*p.yaml"):
        QuantConfig(pipeline=str(f), weights="sym:4").resolve()


def test_needs_calibration(tmp_path):
    assert QuantConfig().resolve().needs_calibration
    f = tmp_path / "p.yaml"
    f.write_text("passes: [normalize, fold_batchnorm]\n")
    assert not QuantConfig(pipeline=str(f)).resolve().needs_calibration


def test_from_dict_names_unknown_settings():
    assert QuantConfig.from_dict({"weights": "sym:4"}) == QuantConfig(weights="sym:4")
    with pytest.raises(QpassError, match="unknown setting colour"):
        QuantConfig.from_dict({"colour": "blue"})


def test_optimize_with_a_config_runs_what_the_overrides_run():
    m = qpass.load(MODELS / "digits_mlp.onnx")
    calib = MODELS / "digits_mlp.calib.npz"
    cfg = QuantConfig(weights="sym:4", activations="uint4", qonnx=True)
    a = qpass.optimize(m, calib=calib, config=cfg)
    b = qpass.optimize(m, calib=calib, pipeline=load_pipeline(
        "fakequant", {"fakequant": {"weights": "sym:4", "activations": "uint4"}}), disabled={"lower_ort"})
    assert a.model.SerializeToString() == b.model.SerializeToString()
    assert [r.name for r in a.records] == ["normalize", "fold_batchnorm", "equalize", "adaround(max_work=200000000000.0)",
                                           "bias_correction", "calibrate",
                                           "fakequant(weights=sym:4, activations=uint4)"]
    c = qpass.optimize(m, calib=calib, config={"weights": "sym:4", "activations": "uint4", "qonnx": True})
    assert c.model.SerializeToString() == a.model.SerializeToString()
    with pytest.raises(QpassError, match="not both"):
        qpass.optimize(m, calib=calib, pipeline="fakequant", config=cfg)
