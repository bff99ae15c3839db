"""The ``qpass`` command line: optimize, inspect, run, zoo.

``clickext`` holds what the commands share (one-line errors, grouped help, value types), ``optimize`` and
``outputs`` / ``finish`` the main command, ``commands`` the others.
"""
from __future__ import annotations

import click

from qpass import __version__
from .clickext import QpassGroup, user_errors
from .commands import inspect, run, zoo
from .optimize import optimize

__all__ = ["main", "user_errors"]


@click.group(cls=QpassGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qpass")
def main():
    """qpass: quantize ONNX models with a pipeline of graph-rewriting passes."""


for _command in (optimize, inspect, run, zoo):
    main.add_command(_command)
