"""The reference interpreter on the ONNX project's own node tests (generated from the installed onnx package at
test time, cached per onnx version): every case of every registered op passes or is a listed known failure with
its reason (``qpass.reference.conformance_known``), and that list can only shrink."""
import re
import time
from pathlib import Path

import numpy as np
import pytest

from qpass.errors import UnsupportedOpError
from qpass.reference import conformance as C
from qpass.reference.conformance import KNOWN_FAILURES

DOC = Path(__file__).resolve().parents[1] / "docs" / "conformance.md"


@pytest.fixture(scope="module")
def cases():
    return C.runnable(C.load_cases())


@pytest.fixture(scope="module")
def results(cases):
    return C.run_all(cases, "reference")


# registered ops no node test uses, each exercised by a test of its own
TESTED_ELSEWHERE = {"ConcatFromSequence": "tests/test_reference_sequences.py",
                    "SequenceErase": "tests/test_reference_sequences.py"}
CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}


def _ops_in(graph, into: set) -> set:
    for n in graph.node:
        into.add(n.op_type)
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _ops_in(g, into)
    return into


def test_every_registered_op_is_exercised(cases):
    used = {op for c in cases for op in c.op_types}
    for c in cases:
        if CONTROL_FLOW & set(c.op_types):  # ops inside the bodies count too
            _ops_in(c.load()[0].graph, used)
    assert C.registered_ops() - used == set(TESTED_ELSEWHERE)


def test_every_case_passes_or_is_a_known_failure(results):
    unexpected = {n: f"{r.outcome}: {r.reason}" for n, r in results.items()
                  if r.outcome != "pass" and n not in KNOWN_FAILURES}
    assert unexpected == {}


def test_known_failures_fail_as_listed(results):
    changed = {n: f"listed as {want}, now {results[n].outcome}: {results[n].reason}"
               for n, (want, _) in KNOWN_FAILURES.items()
               if n in results and results[n].outcome not in ("pass", want)}
    assert changed == {}


def test_known_failure_list_only_shrinks(results):
    now_passing = sorted(n for n in KNOWN_FAILURES if n in results and results[n].outcome == "pass")
    assert now_passing == [], "these pass now: remove them from KNOWN_FAILURES"
    not_run = sorted(n for n in KNOWN_FAILURES if n not in results)
    assert not_run == [], "no such runnable case (renamed by onnx?)"


def test_known_failures_give_an_outcome_and_a_reason():
    bad = {n: v for n, v in KNOWN_FAILURES.items() if v[0] not in ("wrong", "refused", "error", "timeout") or
           len(v[1]) < 20}
    assert bad == {}


def test_the_conformance_page_lists_todays_reference_failures(results):
    """docs/conformance.md is regenerated when the set of failing reference cases changes."""
    text = DOC.read_text()
    section = text.split("## Failing cases: reference", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"`(test_\w+)`", section)) == {n for n, r in results.items() if r.outcome != "pass"}


def test_cases_are_cached_per_onnx_version():
    d = C.cache_dir("9.9.9")
    assert (d.parent.name, d.name) == ("onnx-node-tests", "9.9.9")


def test_compare_uses_onnx_tolerances_shapes_and_dtypes():
    want = [np.array([1.0, 2.0], np.float32)]
    assert C.compare(want, [np.array([1.0009, 2.0], np.float32)], 1e-3, 1e-7) is None
    assert "1 of 2 values differ" in C.compare(want, [np.array([1.01, 2.0], np.float32)], 1e-3, 1e-7)
    assert "dtype float64" in C.compare(want, [want[0].astype(np.float64)], 1e-3, 1e-7)
    assert "shape (1, 2)" in C.compare(want, [want[0].reshape(1, 2)], 1e-3, 1e-7)
    assert C.compare([[want[0]]], [[want[0]]], 1e-3, 1e-7) is None
    assert "expected list" in C.compare([[want[0]]], [want[0]], 1e-3, 1e-7)


def _session_that(construct=None, run=None):
    def factory(model):
        if construct:
            construct()
        return lambda feeds: run() if run else None
    return factory


def _raise(exc):
    def f():
        raise exc
    return f


@pytest.mark.parametrize("factory, outcome", [
    (_session_that(construct=_raise(UnsupportedOpError("no kernel for X"))), "refused"),
    (_session_that(run=_raise(ValueError("index out of range"))), "error"),
    (_session_that(run=lambda: time.sleep(5)), "timeout"),
    (_session_that(run=lambda: [np.zeros(1)]), "wrong"),
])
def test_outcomes_are_classified(cases, factory, outcome):
    case = next(c for c in cases if c.name == "test_abs")
    assert C.run_case(case, factory, timeout=0.5).outcome == outcome
