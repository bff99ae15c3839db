"""Conformance of the reference interpreter with the ONNX project's own node tests, side by side with onnxruntime.

The cases come from the installed ``onnx`` package's ``onnx.backend.test.case`` generators (nothing is
downloaded), generated once per onnx version into ``$XDG_CACHE_HOME/qpass/onnx-node-tests/<version>/`` (default
``~/.cache/qpass/...``; ``cases``). A case runs when every node of its model is a default-domain op the reference
registers. Outputs are compared as onnx's backend test runner does (``compare``).

    python -m qpass.reference.conformance                           # print the page
    python -m qpass.reference.conformance --write docs/conformance.md

Outcomes (``run``): ``pass``; ``wrong`` (values, shape or dtype differ); ``refused`` (UnsupportedOpError at
construction; for onnxruntime, no session could be created); ``error`` (an exception anywhere else: for the
reference a bug, since it promises to refuse unsupported cases up front); ``timeout``. The reference's known
failures, each with its reason, are listed in ``known``.
"""
from .cases import NodeCase, cache_dir, generate, load_cases, registered_ops, runnable
from .compare import compare
from .known import KNOWN_FAILURES
from .report import RUNNERS, Report, conformance, main, markdown, summary_lines
from .run import DEFAULT_TIMEOUT, OUTCOMES, CaseTimeout, Result, run_all, run_case
from .sessions import SESSIONS, SessionFactory

__all__ = ["NodeCase", "cache_dir", "generate", "load_cases", "registered_ops", "runnable", "compare",
           "KNOWN_FAILURES", "RUNNERS", "Report", "conformance", "main", "markdown", "summary_lines",
           "DEFAULT_TIMEOUT", "OUTCOMES", "CaseTimeout", "Result", "run_all", "run_case", "SESSIONS",
           "SessionFactory"]
