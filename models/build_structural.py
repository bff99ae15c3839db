#!/usr/bin/env python
"""Build the small structural test graphs of the qpass model zoo.

    python models/build_structural.py

Only onnx, onnxruntime and numpy are needed (no torch).  Weights and
calibration data are random but seeded: rerunning produces byte-identical
files.  For every graph NAME this writes ``models/structural/NAME.onnx`` and
``models/structural/NAME.calib.npz`` (32 samples; one key per graph input;
each array has a leading sample axis and every sample has exactly the shape
of one inference call, e.g. (32, 1, 3, 16, 16).  An entry whose rank equals
the input's own rank (no sample axis), like the 0-d int64 "k" of
two_inputs, is shared by all samples).

Every graph is checked with onnx.checker (full_check) and run in onnxruntime
on each of its calibration samples.
"""

from __future__ import annotations

import io
import os
import sys
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "structural")
N_CALIB = 32
PRODUCER = "qpass-models/build_structural.py"

# IR version that goes with each opset (kept explicit so that files do not
# change with the installed onnx version and old runtimes can load them).
IR_FOR_OPSET = {9: 4, 11: 6, 13: 7, 17: 8}

FLOAT = TensorProto.FLOAT


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def save_npz(path: str, **arrays: np.ndarray) -> None:
    """np.savez_compressed, but byte-identical across reruns (fixed zip dates)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[key], order="C"),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


class G:
    """Tiny graph builder: seeded weights, auto-named nodes."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def weight(self, name: str, shape, fan_in: int | None = None) -> str:
        if fan_in is None:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        w = self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        self.inits.append(numpy_helper.from_array(w.astype(np.float32), name))
        return name

    def bias(self, name: str, n: int) -> str:
        b = self.rng.uniform(-0.1, 0.1, size=(n,))
        self.inits.append(numpy_helper.from_array(b.astype(np.float32), name))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs, outputs=None, **attrs) -> str:
        self._n += 1
        name = f"{op_type.lower()}_{self._n}"
        if outputs is None:
            outputs = [name + "_out"]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs),
                                           name=name, **attrs))
        return outputs[0]

    def model(self, name: str, inputs, outputs, opset: int,
              inits_as_inputs: bool = False,
              ir_version: int | None = None) -> onnx.ModelProto:
        graph_inputs = list(inputs)
        if inits_as_inputs:
            graph_inputs += [
                helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                for t in self.inits
            ]
        graph = helper.make_graph(self.nodes, name, graph_inputs, outputs,
                                  initializer=self.inits)
        m = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", opset)],
            producer_name=PRODUCER,
            ir_version=ir_version if ir_version is not None else IR_FOR_OPSET[opset],
        )
        return m


def vi(name: str, shape, elem=FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def image_calib(seed: int, shape=(1, 3, 16, 16)) -> np.ndarray:
    # 8-bit-like pixel values k/255 in [0, 1] (compress well in the npz)
    rng = np.random.default_rng(seed)
    pix = rng.integers(0, 256, size=(N_CALIB,) + tuple(shape))
    return (pix / 255.0).astype(np.float32)


def normal_calib(seed: int, shape) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(size=(N_CALIB,) + tuple(shape)).astype(np.float32)


# --------------------------------------------------------------------------
# graphs: each returns (model, calib dict)
# --------------------------------------------------------------------------
def conv_relu(opset: int):
    g = G(seed=100 + opset)
    x = g.op("Conv", ["input", g.weight("conv.weight", (8, 3, 3, 3)), g.bias("conv.bias", 8)],
             kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    x = g.op("Relu", [x])
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Flatten", [x], axis=1)
    g.op("Gemm", [x, g.weight("fc.weight", (10, 512)), g.bias("fc.bias", 10)],
         ["output"], transB=1)
    m = g.model(f"conv_relu_op{opset}", [vi("input", [1, 3, 16, 16])],
                [vi("output", [1, 10])], opset)
    return m, {"input": image_calib(1)}


def dynamic_batch():
    g = G(seed=200)
    x = g.op("Conv", ["input", g.weight("conv.weight", (8, 3, 3, 3)), g.bias("conv.bias", 8)],
             kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = g.op("Relu", [x])
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    g.op("Gemm", [x, g.weight("fc.weight", (10, 8)), g.bias("fc.bias", 10)],
         ["output"], transB=1)
    m = g.model("dynamic_batch", [vi("input", ["batch", 3, 16, 16])],
                [vi("output", ["batch", 10])], 17)
    return m, {"input": image_calib(2)}


def gemm_transb():
    g = G(seed=300)
    x = g.op("Gemm", ["input", g.weight("fc1.weight", (16, 32)), g.bias("fc1.bias", 16)],
             transB=1)
    x = g.op("Relu", [x])
    g.op("Gemm", [x, g.weight("fc2.weight", (16, 10), fan_in=16), g.bias("fc2.bias", 10)],
         ["output"], transB=0)
    m = g.model("gemm_transb", [vi("input", [1, 32])], [vi("output", [1, 10])], 17)
    return m, {"input": normal_calib(3, (1, 32))}


def matmul_broadcast():
    g = G(seed=400)
    x = g.op("MatMul", ["input", g.weight("proj.weight", (16, 24), fan_in=16)])
    x = g.op("Add", [x, g.bias("proj.bias", 24)])
    x = g.op("Relu", [x])
    xt = g.op("Transpose", [x], perm=[0, 1, 3, 2])
    g.op("MatMul", [x, xt], ["output"])  # activation @ activation
    m = g.model("matmul_broadcast", [vi("input", [1, 4, 8, 16])],
                [vi("output", [1, 4, 8, 8])], 17)
    return m, {"input": normal_calib(4, (1, 4, 8, 16))}


def concat():
    g = G(seed=500)
    a = g.op("Conv", ["input", g.weight("branch_a.weight", (4, 3, 3, 3)),
                      g.bias("branch_a.bias", 4)],
             kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    a = g.op("Relu", [a])
    b = g.op("Conv", ["input", g.weight("branch_b.weight", (6, 3, 1, 1)),
                      g.bias("branch_b.bias", 6)],
             kernel_shape=[1, 1])
    b = g.op("Relu", [b])
    x = g.op("Concat", [a, b], axis=1)
    g.op("Conv", [x, g.weight("head.weight", (8, 10, 3, 3)), g.bias("head.bias", 8)],
         ["output"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    m = g.model("concat", [vi("input", [1, 3, 16, 16])],
                [vi("output", [1, 8, 16, 16])], 17)
    return m, {"input": image_calib(5)}


def resize():
    g = G(seed=600)
    x = g.op("Conv", ["input", g.weight("conv1.weight", (8, 3, 3, 3)), g.bias("conv1.bias", 8)],
             kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = g.op("Relu", [x])
    scales = g.const("resize.scales", np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32))
    x = g.op("Resize", [x, "", scales], mode="nearest",
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    g.op("Conv", [x, g.weight("conv2.weight", (4, 8, 3, 3)), g.bias("conv2.bias", 4)],
         ["output"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    m = g.model("resize", [vi("input", [1, 3, 8, 8])], [vi("output", [1, 4, 16, 16])], 13)
    return m, {"input": image_calib(6, (1, 3, 8, 8))}


def opset9_gemm():
    g = G(seed=700)
    x = g.op("Gemm", ["input", g.weight("fc1.weight", (32, 16)), g.bias("fc1.bias", 32)],
             transB=1)
    x = g.op("Relu", [x])
    g.op("Gemm", [x, g.weight("fc2.weight", (10, 32)), g.bias("fc2.bias", 10)],
         ["output"], transB=1)
    # Old style: every initializer is also a graph input (IR version 3).
    m = g.model("opset9_gemm", [vi("input", [1, 16])], [vi("output", [1, 10])], 9,
                inits_as_inputs=True, ir_version=3)
    return m, {"input": normal_calib(7, (1, 16))}


def two_inputs():
    g = G(seed=800)
    a = g.op("Gemm", ["a", g.weight("fc_a.weight", (16, 8)), g.bias("fc_a.bias", 16)],
             transB=1)
    b = g.op("Gemm", ["b", g.weight("fc_b.weight", (16, 8)), g.bias("fc_b.bias", 16)],
             transB=1)
    s = g.op("Add", [a, b])
    k = g.op("Cast", ["k"], to=FLOAT)
    g.op("Mul", [s, k], ["output"])
    m = g.model("two_inputs",
                [vi("a", [1, 8]), vi("b", [1, 8]), vi("k", [], TensorProto.INT64)],
                [vi("output", [1, 16])], 17)
    calib = {
        "a": normal_calib(8, (1, 8)),
        "b": normal_calib(9, (1, 8)),
        "k": np.array(3, dtype=np.int64),  # 0-d: shared by all samples
    }
    return m, calib


BUILDERS = {
    "conv_relu_op11": lambda: conv_relu(11),
    "conv_relu_op17": lambda: conv_relu(17),
    "dynamic_batch": dynamic_batch,
    "gemm_transb": gemm_transb,
    "matmul_broadcast": matmul_broadcast,
    "concat": concat,
    "resize": resize,
    "opset9_gemm": opset9_gemm,
    "two_inputs": two_inputs,
}


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------
def _input_rank(vinfo: onnx.ValueInfoProto) -> int:
    return len(vinfo.type.tensor_type.shape.dim)


def samples(model: onnx.ModelProto, calib: dict[str, np.ndarray]):
    """Yield feed dicts, one per calibration sample (npz convention)."""
    init_names = {t.name for t in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in init_names]
    assert sorted(calib) == sorted(i.name for i in real_inputs), (calib.keys(), real_inputs)
    for i in range(N_CALIB):
        feed = {}
        for inp in real_inputs:
            arr = calib[inp.name]
            x = arr if arr.ndim == _input_rank(inp) else arr[i]
            dims = inp.type.tensor_type.shape.dim
            want = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
            assert len(x.shape) == len(want) and all(
                w is None or w == s for w, s in zip(want, x.shape)), (inp.name, x.shape, want)
            feed[inp.name] = x
        yield feed


def check(path: str, calib_path: str) -> str:
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    calib = dict(np.load(calib_path))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = []
    for feed in samples(model, calib):
        out = sess.run(None, feed)
        for o in out:
            if not np.all(np.isfinite(o)):
                raise SystemExit(f"{path}: non-finite output")
        outs.append(out[0])
    if model.graph.name == "dynamic_batch":  # also one batched call
        batched = sess.run(None, {"input": calib["input"][:, 0]})[0]
        if not np.allclose(batched, np.concatenate(outs), atol=1e-5):
            raise SystemExit(f"{path}: batched != per-sample outputs")
    shapes = {k: v.shape for k, v in calib.items()}
    return (f"opset {model.opset_import[0].version}, ir {model.ir_version}, "
            f"{len(model.graph.node)} nodes, calib {shapes}, out {outs[0].shape}")


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    for name, build in BUILDERS.items():
        model, calib = build()
        path = os.path.join(OUT, name + ".onnx")
        calib_path = os.path.join(OUT, name + ".calib.npz")
        onnx.save(model, path)
        save_npz(calib_path, **calib)
        print(f"{name:18s} {check(path, calib_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
