#!/usr/bin/env python
"""Train three quantized digits CNNs with Brevitas and export each as QONNX and as QCDQ.

Rebuild with::

    pip install -e ".[train]"        # torch==2.13.0 (CPU) + brevitas + scikit-learn + qonnx
    python models/train_brevitas.py  # ~1 min on 2 CPU cores

torch and brevitas are only needed to (re)build these files; the committed ``*.onnx`` and ``*.npz`` files are all
that qpass and its tests use (``tests/test_brevitas_models.py`` needs no torch).

The data is the one of ``build_digits.py`` (scikit-learn's 8x8 digits, pixels / 16, stratified 80/20 split with
``random_state=0``). For every model NAME in ``MODELS`` this writes into ``models/brevitas/``:

* ``NAME.qonnx.onnx``  ``brevitas.export.export_qonnx``: QONNX ``Quant`` / ``BipolarQuant`` nodes (domain
                       ``qonnx.custom_op.general``) around float Conv / MatMul / BatchNormalization.
* ``NAME.qcdq.onnx``   ``brevitas.export.export_onnx_qcdq``: standard QuantizeLinear -> Clip -> DequantizeLinear
                       (not for the binary net: Brevitas' QCDQ export refuses binary quantisers).
* ``NAME.eval.npz``    key "input": the 360 held-out images (360, 1, 1, 8, 8), key "labels": int64 (360,).
* ``NAME.calib.npz``   key "input": the first 200 training images (200, 1, 1, 8, 8).

Input "input" (batch, 1, 8, 8) with dynamic first dim "batch", output "logits" (batch, 10).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn

import brevitas.nn as qnn
from brevitas.export import export_onnx_qcdq, export_qonnx
from brevitas.quant import Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
from brevitas.quant.binary import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_digits import load_data, save_npz  # noqa: E402  (same data, same byte-stable npz writer)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "brevitas")  # a folder of its own: not seeds of the float-model tests (tests/test_fuzz.py)
SEED = 0
EPOCHS = 40
BATCH = 64
LR = 5e-3
N_CALIB = 200
SAMPLE_SHAPE = (1, 8, 8)
IN_BITS = 8  # the first layer reads 8-bit unsigned pixels in every model (as FINN's BNNs do)


class DigitsQuantCNN(nn.Module):
    """QuantIdentity(uint8) -> [QuantConv3x3 1->16, BN, act] -> MaxPool2 -> [QuantConv3x3 16->32, BN, act] ->
    MaxPool2 -> Flatten -> QuantLinear 128->10 (-> BN for the binary net).  ``act`` is QuantReLU(a bits), or a
    sign (BipolarQuant) when ``bits == 1``."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        binary = bits == 1
        self.inp = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=IN_BITS, return_quant_tensor=True)
        if binary:
            wq = dict(weight_quant=SignedBinaryWeightPerTensorConst)
        else:
            wq = dict(weight_quant=Int8WeightPerTensorFloat, weight_bit_width=bits)

        def act():
            if binary:
                return qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True)
            return qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=bits, return_quant_tensor=True)

        self.conv1 = qnn.QuantConv2d(1, 16, 3, padding=1, bias=False, **wq)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = act()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = qnn.QuantConv2d(16, 32, 3, padding=1, bias=False, **wq)
        self.bn2 = nn.BatchNorm2d(32)
        self.act2 = act()
        self.pool2 = nn.MaxPool2d(2)
        self.fc = qnn.QuantLinear(32 * 2 * 2, 10, bias=not binary, **wq)
        # binary weights with a constant scale of 1 give integer logits up to +-128: a BN rescales them
        self.out_bn = nn.BatchNorm1d(10) if binary else nn.Identity()

    def forward(self, x):
        x = self.inp(x)
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))
        x = torch.flatten(x, 1)
        return self.out_bn(self.fc(x))


MODELS = {  # name: weight/activation bits (1 = binary weights and sign activations)
    "digits_w4a4": 4,
    "digits_w2a2": 2,
    "digits_w1a1": 1,
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(model: nn.Module, x_tr: torch.Tensor, y_tr: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    loss_fn = nn.CrossEntropyLoss()
    n = x_tr.shape[0]
    model.train()
    for _ in range(EPOCHS):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()


def tidy(path: str) -> onnx.ModelProto:
    """Stable producer fields and the input / output names of the zoo; checks the file."""
    m = onnx.load(path)
    m.producer_name = "qpass-models/train_brevitas.py"
    m.producer_version = ""
    onnx.save(m, path)
    return m


def export_both(model: nn.Module, name: str, binary: bool) -> dict[str, str]:
    dummy = torch.zeros((1,) + SAMPLE_SHAPE, dtype=torch.float32)
    kw = dict(dynamo=False, input_names=["input"], output_names=["logits"],
              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    os.makedirs(OUT, exist_ok=True)
    paths = {"qonnx": os.path.join(OUT, name + ".qonnx.onnx"), "qcdq": os.path.join(OUT, name + ".qcdq.onnx")}
    export_qonnx(model, args=dummy, export_path=paths["qonnx"], **kw)
    if binary:  # brevitas' QCDQ handler asserts "Binary quant not supported": QCDQ has no sign function
        del paths["qcdq"]
    else:
        export_onnx_qcdq(model, args=dummy, export_path=paths["qcdq"], opset_version=17, **kw)
    for p in paths.values():
        tidy(p)
    return paths


def qonnx_logits(path: str, x: np.ndarray) -> np.ndarray:
    """The qonnx package's own executor on the whole batch (an independent check of the export)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    m = onnx.load(path)
    for vi in (m.graph.input[0], m.graph.output[0]):  # its executor allocates tensors from the model's shapes
        vi.type.tensor_type.shape.dim[0].dim_value = len(x)
    del m.graph.value_info[:]  # inferred again
    mw = ModelWrapper(m).transform(InferShapes())
    return execute_onnx(mw, {"input": x})["logits"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state-dir", help="keep the trained weights here and reuse them (re-export without training)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    x_tr, x_te, y_tr, y_te = load_data()
    xt = torch.from_numpy(x_tr.reshape((-1,) + SAMPLE_SHAPE))
    xe = x_te.reshape((-1,) + SAMPLE_SHAPE).astype(np.float32)
    results = {}
    for name, bits in MODELS.items():
        seed_everything(SEED)
        model = DigitsQuantCNN(bits)
        state = os.path.join(args.state_dir, name + ".pt") if args.state_dir else None
        if state and os.path.exists(state):
            model.load_state_dict(torch.load(state))
            model.eval()
        else:
            train(model, xt, torch.from_numpy(y_tr))
            if state:
                os.makedirs(args.state_dir, exist_ok=True)
                torch.save(model.state_dict(), state)
        with torch.no_grad():
            ref = model(torch.from_numpy(xe)).detach().numpy()
        acc_t = float((ref.argmax(1) == y_te).mean())
        print(f"{name}: brevitas test accuracy {acc_t:.4f}", flush=True)
        paths = export_both(model, name, binary=bits == 1)
        for kind, p in paths.items():
            onnx.checker.check_model(onnx.load(p))
            got = qonnx_logits(p, xe)
            err = float(np.max(np.abs(got - ref)))
            agree = float((got.argmax(1) == ref.argmax(1)).mean())
            print(f"  {os.path.basename(p)}: qonnx-exec vs brevitas max|diff| {err:.2e}, argmax agreement {agree:.4f}")
            if agree < 0.99:
                raise SystemExit(f"{p}: the export disagrees with brevitas")
        save_npz(os.path.join(OUT, name + ".calib.npz"),
                 input=x_tr[:N_CALIB].reshape((N_CALIB, 1) + SAMPLE_SHAPE).astype(np.float32))
        save_npz(os.path.join(OUT, name + ".eval.npz"), input=xe.reshape((len(xe), 1) + SAMPLE_SHAPE),
                 labels=y_te.astype(np.int64))
        results[name] = acc_t
    print("\naccuracy on the 360 eval images (brevitas, torch):")
    for name, acc in results.items():
        print(f"  {name:12s} {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
