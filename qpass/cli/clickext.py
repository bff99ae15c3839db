"""What the ``qpass`` commands share on top of click: one-line errors, grouped ``--help`` sections and value types
that refuse what would do harm (a thread count of a billion, a clock period of NaN).

Every failure is one ``qpass: error: ...`` line on stderr: usage errors (exit 2) through ``QpassGroup``, bad input
(exit 2) and bugs (exit 1) through ``user_errors``.
"""
from __future__ import annotations

import functools
import math
import os
import sys

import click

from qpass.errors import QpassError
from qpass.pipeline.config import MAX_WORKERS


MAX_MESSAGE = 2000  # characters of one error line


def fail(message: str, code: int = 2):
    text = " ".join(str(message).split())
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE - 5] + " ..."
    click.echo(f"qpass: error: {text}", err=True)
    sys.exit(code)


def warn(message: str) -> None:
    click.echo(f"qpass: warning: {' '.join(str(message).split())}", err=True)


def user_errors(fn):
    """Turn every failure into one line on stderr and a non-zero exit code (2 for bad input)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except QpassError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:  # e.g. piped into `head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except MemoryError:
            fail("out of memory", 1)
        except RecursionError:
            fail("input nested too deeply to process", 2)
        except Exception as exc:  # a bug: still one line; QPASS_DEBUG=1 re-raises for the traceback
            if os.environ.get("QPASS_DEBUG"):
                raise
            text = (str(exc).strip().splitlines() or [""])[0][:300]
            fail(f"internal error: {type(exc).__name__}: {text} (set QPASS_DEBUG=1 for a traceback)", 1)

    return wrapper


class QpassGroup(click.Group):
    """A click group whose usage errors are one line (``qpass: error: ... (see 'qpass optimize --help')``, exit 2)
    instead of click's Usage / Try / Error block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name or "qpass", complete_var, standalone_mode=False, **extra)
        except getattr(click.exceptions, "NoArgsIsHelpError", ()) as exc:  # bare `qpass`: the help
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        except click.exceptions.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx is not None else "qpass"
            fail(f"{exc.format_message()} (see '{path} --help')", 2)
        except click.exceptions.ClickException as exc:
            fail(exc.format_message(), 2)
        except click.exceptions.Abort:
            fail("interrupted", 130)
        sys.exit(rv if isinstance(rv, int) else 0)


class GroupedCommand(click.Command):
    """A command whose ``--help`` lists its options in titled sections (``sections``: title -> option names, in
    order); options in no section come last under "Other options"."""

    def __init__(self, *args, sections: dict[str, list[str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sections = sections or {}

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        placed: set[str] = set()
        for title, names in self.sections.items():
            rows = [records[n] for n in names if records.get(n)]
            placed.update(names)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        rest = [rec for name, rec in records.items() if rec and name not in placed]
        if rest:
            with formatter.section("Other options"):
                formatter.write_dl(rest)


class PositiveFloat(click.ParamType):
    """A finite number greater than zero (``nan``, ``inf``, 0 and negatives are usage errors)."""

    name = "number"

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value) and value > 0:
            return value
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v) or v <= 0:
            self.fail(f"{value!r} is not a finite number greater than 0", param, ctx)
        return v


def worker_count() -> click.IntRange:
    """Threads or processes: 1 to four per CPU."""
    return click.IntRange(1, MAX_WORKERS)
