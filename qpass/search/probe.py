"""The probe: one parametric copy of the float model in which every site's quantiser is switched by feeds.

* a weight site's weight becomes an overridable input (initializer = the float weight; feed a quantised copy), and
  so does its bias (fakequant stores it as int32 at s_in * s_w once weight and input are both quantised);
* an activation site gets ``Where(en, (Clip(Round(x / s) + z, qmin, qmax) - z) * s, x)`` whose ``s, z, qmin,
  qmax, en`` are overridable inputs (default: disabled, i.e. float) -- QONNX ``Quant`` semantics;
* an accumulator (intrinsic placement) gets ``Where(en, Clip(Round(y / s), lo, hi) * s, y)`` with per-channel
  ``s = s_in * s_w`` on the linear layer's output: rounding to the integer grid (what fakequant's int32 bias
  does) and saturation to a narrow accumulator.

The float model runs **once** over the samples with every tensor a downstream sub-graph needs captured. For a site,
the sub-graph downstream of its quantiser is cut out (its other inputs are fed from the captured float values)
and one onnxruntime session is built for it once; each candidate width is then a run of that session with other
feeds. A whole assignment is one run of the full probe model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qpass.ir.ort_session import make_session
from qpass.ir.batching import batchable
from qpass.ir.samples import SampleSet
from ..errors import QpassError
from qpass.ir.graph import topo_sort_nodes
from .sites import Site


@dataclass
class State:
    """Captured tensors of one assignment (per batch) and its network output (samples, -1)."""

    batches: list[dict]
    output: np.ndarray


@dataclass
class SiteRuns:
    """One site's sub-graph with its float inputs per batch: ``outputs(feeds)`` is the network output under each
    feed dict, computed exactly as ``Probe.run_site`` does (picklable, so another process or node can run it)."""

    model: onnx.ModelProto
    boundary: list
    params: set
    produced: list
    output: str
    batches: list
    counts: list
    threads: int

    def outputs(self, feeds: list[dict]) -> list[np.ndarray]:
        sess = make_session(self.model, threads=self.threads)
        outs = []
        for params in feeds:
            fp = {k: v for k, v in params.items() if k in self.params}
            got = []
            for b in self.batches:
                f = dict(b)
                f.update(fp)
                got.append(dict(zip(self.produced, sess.run(self.produced, f)))[self.output])
            outs.append(np.concatenate([np.asarray(a, np.float32).reshape(c, -1) for a, c in zip(got, self.counts)]))
        return outs


class _Names:
    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.used = {i.name for i in g.initializer} | {i.name for i in g.input} | {o.name for o in g.output}
        for n in g.node:
            self.used.update(n.input)
            self.used.update(n.output)
            self.used.add(n.name)

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def _scalar_input(g, names, base, value, dtype=np.float32) -> str:
    name = names(base)
    arr = np.asarray(value, dtype)
    g.initializer.append(numpy_helper.from_array(arr, name))
    g.input.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape)))
    return name


class Probe:
    def __init__(self, model: onnx.ModelProto, sites: list[Site], data: SampleSet, acc_sites: list[Site] = (),
                 batch_size: int = 256, threads: int = 1):
        self.sites = {s.key: s for s in sites}
        self.threads = threads
        self.params: dict[str, dict] = {}
        self.model = self._build(model, sites, list(acc_sites))
        self.output = self.model.graph.output[0].name
        self._sub: dict[str, tuple] = {}
        self._prepare_subgraphs()
        self._capture(data, batch_size)

    # ------------------------------------------------------------------ model
    def _build(self, model: onnx.ModelProto, sites: list[Site], acc_sites: list[Site]) -> onnx.ModelProto:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        g = m.graph
        del g.value_info[:]
        names = _Names(m)
        by_name = {n.name: n for n in g.node}
        graph_inputs = {i.name for i in g.input}
        graph_outputs = {o.name for o in g.output}
        for s in sites:
            if s.kind != "weight":
                continue
            node = by_name[s.node]
            p = names(f"__bw_w_{s.node}")
            g.initializer.append(numpy_helper.from_array(s.value.astype(np.float32), p))
            g.input.append(helper.make_tensor_value_info(p, TensorProto.FLOAT, list(s.value.shape)))
            node.input[1] = p
            self.params[s.key] = {"kind": "weight", "w": p}
            if s.bias is not None and len(node.input) > 2 and node.input[2]:
                b = names(f"__bw_b_{s.node}")
                g.initializer.append(numpy_helper.from_array(s.bias.astype(np.float32), b))
                g.input.append(helper.make_tensor_value_info(b, TensorProto.FLOAT, list(s.bias.shape)))
                node.input[2] = b
                self.params[s.key]["b"] = b
        for s in sites:
            if s.kind != "activation":
                continue
            t = s.tensor
            ps = {k: _scalar_input(g, names, f"__bw_a_{t}_{k}", v)
                  for k, v in (("s", 1.0), ("z", 0.0), ("lo", -np.inf), ("hi", np.inf))}
            ps["en"] = _scalar_input(g, names, f"__bw_a_{t}_en", False, np.bool_)
            if s.graph_input or t in graph_inputs:
                src, dst = t, names(f"{t}__bwq")
                for n in g.node:
                    for i, x in enumerate(n.input):
                        if x == t:
                            n.input[i] = dst
            else:
                src, dst = names(f"{t}__bwf"), t
                for n in g.node:
                    for i, x in enumerate(n.output):
                        if x == t:
                            n.output[i] = src
            self._chain(g, names, f"__bw_a_{t}", src, dst, ps, zero_point=True)
            ps["kind"], ps["src"], ps["dst"] = "activation", src, dst
            self.params[s.key] = ps
        for s in acc_sites:
            node = by_name[s.node]
            y = node.output[0]
            if y in graph_outputs:
                continue
            rank = 4 if s.op in ("Conv", "ConvTranspose") else 2
            shape = [1] * rank
            shape[1 if s.op in ("Conv", "ConvTranspose") else rank - 1] = s.layer_shape["mh"]
            ps = {"s": _scalar_input(g, names, f"__bw_c_{s.node}_s", np.ones(shape, np.float32))}
            ps.update({k: _scalar_input(g, names, f"__bw_c_{s.node}_{k}", v) for k, v in (("lo", -np.inf),
                                                                                           ("hi", np.inf))})
            ps["en"] = _scalar_input(g, names, f"__bw_c_{s.node}_en", False, np.bool_)
            src = names(f"{y}__bwacc")
            node.output[0] = src
            self._chain(g, names, f"__bw_c_{s.node}", src, y, ps, zero_point=False)
            ps["kind"], ps["shape"] = "accumulator", shape
            self.params["c:" + s.node] = ps
        topo_sort_nodes(g)
        return m

    @staticmethod
    def _chain(g, names, base, src, dst, ps, zero_point: bool) -> None:
        def node(op, inputs, out=None):
            out = out or names(f"{base}_{op.lower()}")
            g.node.append(helper.make_node(op, inputs, [out], name=names(f"{base}_{op}")))
            return out

        y = node("Round", [node("Div", [src, ps["s"]])])
        if zero_point:
            y = node("Add", [y, ps["z"]])
        y = node("Clip", [y, ps["lo"], ps["hi"]])
        if zero_point:
            y = node("Sub", [y, ps["z"]])
        q = node("Mul", [y, ps["s"]])
        node("Where", [ps["en"], q, src], dst)

    # ------------------------------------------------------------------ sub-graphs
    def _param_names(self, key: str) -> set[str]:
        return {v for k, v in self.params[key].items() if k in ("w", "b", "s", "z", "lo", "hi", "en")}

    def _prepare_subgraphs(self) -> None:
        g = self.model.graph
        inits = {i.name for i in g.initializer}
        self._data_inputs = [i.name for i in g.input if i.name not in inits]
        self._needed: set[str] = {self.output} | set(self._data_inputs)
        self._plans: dict[str, tuple | None] = {}
        position = {n.name: i for i, n in enumerate(g.node)}
        for key in self.params:
            produced = set(self._param_names(key))
            nodes = []
            for n in g.node:
                if any(x in produced for x in n.input if x):
                    nodes.append(n)
                    produced.update(o for o in n.output if o)
            if self.output not in produced:
                self._plans[key] = None  # the site does not reach the network output
                continue
            outs = {o for n in nodes for o in n.output}
            boundary = sorted({x for n in nodes for x in n.input if x and x not in outs and x not in inits})
            self._needed.update(boundary)
            self._plans[key] = (nodes, boundary, position[nodes[0].name], {n.name for n in nodes})
        for key, plan in self._plans.items():  # what each sub-graph recomputes of the captured state
            if plan is not None:
                outs = {o for n in plan[0] for o in n.output}
                self._plans[key] = plan + (sorted(t for t in self._needed if t in outs),)

    def _sub_model(self, key: str) -> onnx.ModelProto:
        nodes, boundary, _, _, produced = self._plans[key]
        g = self.model.graph
        read = {x for n in nodes for x in n.input if x}
        inits = [i for i in g.initializer if i.name in read]
        init_names = {i.name for i in inits}
        first = self._float.batches[0]
        inputs = [helper.make_tensor_value_info(b, helper.np_dtype_to_tensor_dtype(first[b].dtype), None)
                  for b in boundary]
        params = [i for i in g.input if i.name in init_names]
        outputs = [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(first[t].dtype), None)
                   for t in produced]
        sub = helper.make_graph(list(nodes), f"bw_{key}", inputs + params, outputs, inits)
        return helper.make_model(sub, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version)

    def _sub_session(self, key: str):
        if key in self._sub:
            return self._sub[key]
        sm = self._sub_model(key)
        sess = make_session(sm, threads=self.threads)
        pnames = {i.name for i in sm.graph.input} - set(self._plans[key][1])
        self._sub[key] = (sess, self._plans[key][1], pnames, self._plans[key][4])
        return self._sub[key]

    def site_runs(self, key: str) -> "SiteRuns":
        """What running ``key``'s sub-graph from the float state needs, picklable (for another process)."""
        _, boundary, _, _, produced = self._plans[key]
        sm = self._sub_model(key)
        return SiteRuns(sm, boundary, {i.name for i in sm.graph.input} - set(boundary), produced, self.output,
                        [{k: b[k] for k in boundary} for b in self._float.batches], list(self._counts), self.threads)

    # ------------------------------------------------------------------ float run / captured states
    def _capture(self, data: SampleSet, batch_size: int) -> None:
        aug = onnx.ModelProto()
        aug.CopyFrom(self.model)
        try:
            inferred = onnx.shape_inference.infer_shapes(aug)
        except Exception:  # noqa: BLE001 - batching falls back to one sample per call
            inferred = aug
        self._captured = [t for t in sorted(self._needed) if t not in self._data_inputs]
        outs = {o.name for o in aug.graph.output}
        for t in self._captured:
            if t not in outs:
                aug.graph.output.append(onnx.ValueInfoProto(name=t))
        self._batched = len(data) > 1 and batchable(inferred, data, self._captured)
        self._aug = aug
        self._aug_sess = make_session(aug, threads=self.threads)
        step = batch_size if self._batched else 1
        feeds, self._counts = [], []
        n = len(data)
        for start in range(0, n, step):
            stop = min(n, start + step)
            if self._batched:
                feed = {k: np.concatenate(list(v[start:stop]), axis=0) for k, v in data.arrays.items()}
                feed.update(data.shared)
            else:
                feed = data.feed(start)
            feeds.append(feed)
            self._counts.append(stop - start)
        self._feeds = feeds
        self.samples = n
        self._float = self.capture({})
        self.reference = self._float.output

    def capture(self, params: dict) -> "State":
        """Run the whole probe under ``params`` (quantiser feeds) and capture every tensor sub-graphs read."""
        batches = []
        for start, feed in zip(np.cumsum([0] + self._counts[:-1]), self._feeds):
            f = dict(feed)
            f.update(params)
            try:
                res = self._aug_sess.run(self._captured, f)
            except Exception as exc:  # noqa: BLE001
                raise QpassError(f"bitwidth: the probe model failed on sample {int(start)}: "
                                 f"{str(exc).strip().splitlines()[0]}") from None
            b = dict(feed)
            b.update(zip(self._captured, res))
            batches.append(b)
        return State(batches, self._collect([b[self.output] for b in batches]))

    def _collect(self, arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(a, np.float32).reshape(c, -1) for a, c in zip(arrays, self._counts)])

    # ------------------------------------------------------------------ runs
    @property
    def float_state(self) -> "State":
        return self._float

    def reaches_output(self, key: str) -> bool:
        return self._plans.get(key) is not None

    def advance(self, state: "State", keys, params: dict) -> "State":
        """``state`` with the sub-graphs downstream of ``keys`` re-run under ``params`` (the complete quantiser
        feeds of the new assignment; sites not fed are float). A sub-graph contained in one already re-run is
        skipped."""
        plans = sorted((self._plans[k][2], k) for k in keys if self._plans.get(k) is not None)
        if not plans:
            return state
        batches = [dict(b) for b in state.batches]
        done: set[str] = set()
        for _, key in plans:
            nodes, _, _, names, _ = self._plans[key]
            if nodes[0].name in done:
                continue
            sess, boundary, pnames, produced = self._sub_session(key)
            fp = {k: v for k, v in params.items() if k in pnames}
            for b in batches:
                f = {k: b[k] for k in boundary}
                f.update(fp)
                b.update(zip(produced, sess.run(produced, f)))
            done |= names
        return State(batches, self._collect([b[self.output] for b in batches]))

    def run_site(self, key: str, feeds: dict) -> np.ndarray:
        """The network output with only ``key``'s quantiser enabled (``feeds`` from ``feeds_for``)."""
        return self.advance(self._float, [key], feeds).output

    def run_full(self, feeds: dict) -> np.ndarray:
        """The network output with every quantiser in ``feeds`` enabled (the others float)."""
        return self.capture(feeds).output

    # ------------------------------------------------------------------ feeds
    def weight_feed(self, key: str, values: np.ndarray) -> dict:
        return {self.params[key]["w"]: np.asarray(values, np.float32)}

    def bias_feed(self, key: str, values: np.ndarray) -> dict:
        p = self.params[key].get("b")
        return {} if p is None else {p: np.asarray(values, np.float32)}

    def activation_feed(self, key: str, scale: float, zp: int, qmin: int, qmax: int) -> dict:
        p = self.params[key]
        return {p["s"]: np.asarray(scale, np.float32), p["z"]: np.asarray(zp, np.float32),
                p["lo"]: np.asarray(qmin, np.float32), p["hi"]: np.asarray(qmax, np.float32),
                p["en"]: np.asarray(True)}

    def accumulator_feed(self, node: str, scale: np.ndarray, bits: int | None) -> dict:
        p = self.params.get("c:" + node)
        if p is None:
            return {}
        lo, hi = (-np.inf, np.inf) if bits is None else (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
        return {p["s"]: np.asarray(scale, np.float32).reshape(p["shape"]), p["lo"]: np.asarray(lo, np.float32),
                p["hi"]: np.asarray(hi, np.float32), p["en"]: np.asarray(True)}

    def has_accumulator(self, node: str) -> bool:
        return "c:" + node in self.params
