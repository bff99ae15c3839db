"""ONNX control flow: the iteration rules of If, Loop and Scan, with the body given as a callable.

A body is ``body(values) -> outputs`` (formal inputs to formal outputs, in graph order); whoever calls these
functions decides how a body runs: the reference interpreter runs it in a nested executor (``ops_control``),
calibration in an onnxruntime session of the body (``qpass.analysis.body_values``). The rules:

- If: ``cond`` (one element) picks ``then_branch`` or ``else_branch``; the branches take no inputs and may give
  outputs of different shapes.
- Loop: body inputs ``(iteration_num, condition, carried...)``, outputs ``(condition, carried..., scans...)``;
  runs while the condition holds and fewer than ``M`` iterations ran (either may be absent); scan outputs are
  stacked on a new leading axis.
- Scan (opset >= 9): body inputs ``(states..., scan slices...)``, outputs ``(states..., scan slices...)``; scan
  inputs are sliced along ``scan_input_axes`` forwards or backwards (``scan_input_directions``), scan outputs
  stacked along ``scan_output_axes`` (``scan_output_directions`` 1: the last iteration first). Opset 8 has a
  batch axis 0 before the scan axis and an optional ``sequence_lens``; outputs past a shorter sequence are zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

Body = Callable[[list], list]


def condition(value) -> bool:
    """The truth of a one-element condition tensor."""
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"a condition must have one element, not shape {arr.shape}")
    return bool(arr.reshape(-1)[0])


def run_if(cond, then_branch: Body, else_branch: Body) -> list:
    return list((then_branch if condition(cond) else else_branch)([]))


def run_loop(body: Body, m, cond, carried: Sequence, n_scan: int,
             empty_scan: Callable[[int], np.ndarray]) -> list:
    """Loop's final carried values, then its ``n_scan`` stacked scan outputs (``empty_scan(k)`` when no iteration
    ran)."""
    trip = None if m is None else int(np.asarray(m).reshape(-1)[0])
    go = True if cond is None else condition(cond)
    it_type = np.int64 if m is None else np.asarray(m).dtype
    carried = list(carried)
    scans: list[list] = [[] for _ in range(n_scan)]
    i = 0
    while go and (trip is None or i < trip):
        outs = body([np.array(i, it_type), np.array(go), *carried])
        go = condition(outs[0])
        carried = list(outs[1:1 + len(carried)])
        for k in range(n_scan):
            scans[k].append(np.asarray(outs[1 + len(carried) + k]))
        i += 1
    return carried + [np.stack(s) if s else empty_scan(k) for k, s in enumerate(scans)]


@dataclass(frozen=True)
class ScanSpec:
    """Scan's attributes with their defaults: one direction and axis per scan input and per scan output."""

    num_scan_inputs: int
    input_directions: tuple[int, ...]
    input_axes: tuple[int, ...]
    output_directions: tuple[int, ...]
    output_axes: tuple[int, ...]
    batched: bool = False  # opset 8: axis 0 is a batch axis, the scan axis is 1, sequence_lens comes first

    @classmethod
    def from_attrs(cls, attr: Callable, opset: int, num_scan_outputs: int) -> "ScanSpec":
        """``attr(name, default)`` reads the node's attributes."""
        m = int(attr("num_scan_inputs", 0))
        batched = opset < 9
        in_dirs = attr("directions" if batched else "scan_input_directions", None)
        in_axes = None if batched else attr("scan_input_axes", None)
        out_dirs = None if batched else attr("scan_output_directions", None)
        out_axes = None if batched else attr("scan_output_axes", None)
        return cls(m, tuple(in_dirs or [0] * m), tuple(in_axes or [0] * m),
                   tuple(out_dirs or [0] * num_scan_outputs), tuple(out_axes or [0] * num_scan_outputs), batched)

    def problem(self, n_inputs: int, n_body_inputs: int, n_outputs: int, n_body_outputs: int) -> str | None:
        """Why a Scan node with these counts cannot run (checked at construction), or None."""
        n_state = n_inputs - (1 if self.batched else 0) - self.num_scan_inputs
        n_scan_out = n_outputs - n_state
        if self.num_scan_inputs < 1 or n_state < 0:
            return f"num_scan_inputs={self.num_scan_inputs} does not fit {n_inputs} inputs"
        if n_body_inputs != n_state + self.num_scan_inputs or n_body_outputs != n_outputs or n_scan_out < 0:
            return (f"the body takes {n_body_inputs} inputs and gives {n_body_outputs} outputs, the node has "
                    f"{n_state} states, {self.num_scan_inputs} scan inputs and {n_outputs} outputs")
        if len(self.input_directions) != self.num_scan_inputs or len(self.input_axes) != self.num_scan_inputs:
            return "one scan input direction and axis per scan input"
        if len(self.output_directions) != n_scan_out or len(self.output_axes) != n_scan_out:
            return "one scan output direction and axis per scan output"
        if any(d not in (0, 1) for d in self.input_directions + self.output_directions):
            return "scan directions must be 0 (forward) or 1 (reverse)"
        return None


def run_scan(body: Body, states: Sequence, scans: Sequence, spec: ScanSpec) -> list:
    """Scan's final states, then its stacked scan outputs (opset >= 9 semantics)."""
    if not scans:
        raise ValueError("Scan needs at least one scan input")
    axes = [a % np.ndim(x) for a, x in zip(spec.input_axes, scans)]
    lengths = {np.shape(x)[a] for a, x in zip(axes, scans)}
    if len(lengths) != 1:
        raise ValueError(f"scan inputs have different sequence lengths {sorted(lengths)}")
    steps = lengths.pop()
    states = list(states)
    n_out = len(spec.output_axes)
    outs: list[list] = [[] for _ in range(n_out)]
    for t in range(steps):
        slices = [np.take(x, steps - 1 - t if d else t, axis=a) for x, a, d in zip(scans, axes, spec.input_directions)]
        res = body(states + slices)
        states = list(res[:len(states)])
        for k in range(n_out):
            outs[k].append(np.asarray(res[len(states) + k]))
    if steps == 0 and n_out:
        raise ValueError("Scan over an empty sequence gives scan outputs of unknown shape")
    stacked = []
    for k, seq in enumerate(outs):
        if spec.output_directions[k]:
            seq = seq[::-1]
        stacked.append(np.stack(seq, axis=spec.output_axes[k] % (seq[0].ndim + 1)))
    return states + stacked


def run_scan_batched(body: Body, seq_lens, states: Sequence, scans: Sequence, spec: ScanSpec) -> list:
    """Scan-8: every batch row scanned on its own over its first ``seq_lens[b]`` steps (axis 1); scan outputs are
    zero past a shorter sequence."""
    batch = np.shape(scans[0])[0]
    full = np.shape(scans[0])[1]
    lens = [full] * batch if seq_lens is None else [int(v) for v in np.asarray(seq_lens).reshape(-1)]
    if len(lens) != batch or any(not 0 <= v <= full for v in lens):
        raise ValueError(f"sequence_lens {lens} does not fit batch {batch} and length {full}")
    row_spec = ScanSpec(spec.num_scan_inputs, spec.input_directions, (0,) * spec.num_scan_inputs,
                        spec.output_directions, (0,) * len(spec.output_directions))
    rows = [run_scan(body, [s[b] for s in states], [x[b, :lens[b]] for x in scans], row_spec) for b in range(batch)]
    n_state = len(states)
    out = [np.stack([r[i] for r in rows]) for i in range(n_state)]
    for k in range(len(spec.output_directions)):
        parts = [r[n_state + k] for r in rows]
        padded = np.zeros((batch, full) + parts[0].shape[1:], parts[0].dtype)
        for b, p in enumerate(parts):
            padded[b, :p.shape[0]] = p
        out.append(padded)
    return out
