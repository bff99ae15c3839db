#!/usr/bin/env python
"""Train and export the three "digits" models of the qpass model zoo.

Rebuild with::

    pip install torch==2.13.0 onnxscript scikit-learn
    python models/build_digits.py

torch is only needed to (re)build these files; the committed ``*.onnx`` and
``*.npz`` files are all that qpass and its tests use at run time.

For every model NAME this writes into ``models/``:

* ``NAME.onnx``       opset 17, input "input" (dynamic dim "batch"), output
                      "logits" (batch, 10); BatchNormalization nodes are kept
                      (not folded into Conv) so that qpass' own BN folding
                      pass is exercised.
* ``NAME.calib.npz``  key "input": 200 training images, shape (200, *S) where
                      S is the shape of ONE inference call with batch 1,
                      i.e. (200,1,64) for the MLP and (200,1,1,8,8) for CNNs.
* ``NAME.eval.npz``   key "input": the held-out test images in the same
                      layout (N, *S), key "labels": int64 (N,).
"""

from __future__ import annotations

import io
import os
import random
import sys
import warnings
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
OPSET = 17
EPOCHS = 30
BATCH = 64
LR = 3e-3
N_CALIB = 200


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------
class DigitsMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 32)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(x + y)


class DigitsResCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(16)
        self.block1 = ResBlock(16)
        self.block2 = ResBlock(16)
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)  # exported as GlobalAveragePool
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = self.block2(self.block1(x))
        x = self.gap(self.pool(x))
        x = torch.flatten(x, 1)
        return self.fc(x)


MODELS = {
    # name: (constructor, per-sample input shape without batch)
    "digits_mlp": (DigitsMLP, (64,)),
    "digits_cnn": (DigitsCNN, (1, 8, 8)),
    "digits_rescnn": (DigitsResCNN, (1, 8, 8)),
}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def load_data():
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)  # (1797, 64) in [0, 1]
    y = d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)


def train(model: nn.Module, x_tr: torch.Tensor, y_tr: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
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
    model.eval()


def inline_identity_initializers(model: onnx.ModelProto) -> None:
    """The legacy exporter dedups equal parameters as Identity(initializer);
    replace those by plain initializers so graphs stay clean."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            g.initializer.append(t)
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)


def export(model: nn.Module, sample_shape, path: str) -> None:
    dummy = torch.zeros((1,) + tuple(sample_shape), dtype=torch.float32)
    # Legacy TorchScript exporter.  TrainingMode.PRESERVE (with the module in
    # eval()) skips the eval-mode peephole that fuses Conv+BatchNormalization,
    # and do_constant_folding=False keeps it from folding anything else; the
    # BN nodes are emitted with training_mode=0 (inference semantics).
    torch.onnx.export(
        model,
        (dummy,),
        path,
        dynamo=False,
        export_params=True,
        opset_version=OPSET,
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,
        keep_initializers_as_inputs=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    m = onnx.load(path)
    inline_identity_initializers(m)
    # Strip the exporter version so the file does not change with torch patch
    # releases more than necessary.
    m.producer_name = "qpass-models/build_digits.py"
    m.producer_version = ""
    onnx.save(m, path)


def verify(path: str, model: nn.Module, x_eval: np.ndarray, expect_bn: bool) -> None:
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    ops = [n.op_type for n in m.graph.node]
    n_bn = ops.count("BatchNormalization")
    if expect_bn and n_bn == 0:
        raise SystemExit(f"{path}: BatchNormalization was folded away")
    init_names = {t.name for t in m.graph.initializer}
    assert [i.name for i in m.graph.input] == ["input"], m.graph.input
    assert not init_names & {i.name for i in m.graph.input}
    assert [o.name for o in m.graph.output] == ["logits"]
    for vi in (m.graph.input[0], m.graph.output[0]):
        assert vi.type.tensor_type.shape.dim[0].dim_param == "batch", vi
    assert m.opset_import[0].version == OPSET
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(torch.from_numpy(x_eval)).numpy()
    got = sess.run(["logits"], {"input": x_eval})[0]
    err = float(np.max(np.abs(ref - got)))
    if err > 1e-5:
        raise SystemExit(f"{path}: ORT vs torch max abs diff {err:.3g} > 1e-5")
    print(f"  {os.path.basename(path)}: ops={len(ops)} BatchNormalization={n_bn} "
          f"ORT-vs-torch max|diff|={err:.2e}")


def main() -> int:
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    x_tr, x_te, y_tr, y_te = load_data()
    print(f"digits: train {len(x_tr)}, test {len(x_te)}")
    results = {}
    for name, (ctor, sshape) in MODELS.items():
        seed_everything(SEED)
        model = ctor()
        xt = torch.from_numpy(x_tr.reshape((-1,) + sshape))
        train(model, xt, torch.from_numpy(y_tr))
        xe = x_te.reshape((-1,) + sshape)
        with torch.no_grad():
            acc_t = float((model(torch.from_numpy(xe)).argmax(1).numpy() == y_te).mean())
        print(f"{name}: torch test accuracy {acc_t:.4f}")

        path = os.path.join(HERE, name + ".onnx")
        export(model, sshape, path)
        verify(path, model, xe, expect_bn=(name != "digits_mlp"))

        # one inference call = batch 1 -> leading sample axis + (1, *sshape)
        calib = x_tr[:N_CALIB].reshape((N_CALIB, 1) + sshape).astype(np.float32)
        evalx = x_te.reshape((len(x_te), 1) + sshape).astype(np.float32)
        save_npz(os.path.join(HERE, name + ".calib.npz"), input=calib)
        save_npz(os.path.join(HERE, name + ".eval.npz"), input=evalx,
                 labels=y_te.astype(np.int64))

        # float accuracy in ORT, one sample per call, exactly as the npz says
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        ev = np.load(os.path.join(HERE, name + ".eval.npz"))
        pred = np.array([sess.run(None, {"input": s})[0].argmax() for s in ev["input"]])
        results[name] = float((pred == ev["labels"]).mean())
        if results[name] < 0.95:
            print(f"WARNING: {name} accuracy {results[name]:.4f} < 0.95")

    print("\nfloat accuracy in onnxruntime on the eval set:")
    for name, acc in results.items():
        print(f"  {name:15s} {acc:.4f}")
    return 0 if all(a >= 0.95 for a in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
