"""The end of ``qpass optimize --backend rtl``: export the SystemVerilog projects into a temporary folder, simulate
(``--rtlsim``) and synthesize (``--synth``) them there, and give the folder its name only when everything worked."""
from __future__ import annotations

from pathlib import Path

import click

from qpass.ir.atomic import atomic_dir


def export_rtl(result, out_dir: Path, pipeline, given: set[str], samples, *, quiet: bool, device: str, clock_ns,
               target_fps, rtlsim: bool, synth: bool, pnr: bool = False, folding=None,
               weights_mode: str = "const") -> None:
    from qpass.backends import rtl
    from qpass.report.summary import format_line

    lines = []
    with atomic_dir(out_dir) as tmp:
        if rtlsim:
            rtl.check_tools()  # before the export: a missing tool is a one-line error, not a half run
        res = rtl.export(result.model, tmp, device=device, clock_ns=clock_ns, target_fps=target_fps,
                         samples=samples, folding=folding, weights_mode=weights_mode)
        if rtlsim and samples is not None:
            sims = [rtl.simulate(p) for p in res.partitions]
            lines += ["", "RTL simulation (Verilator, cocotb):"] + [f"  {s.summary()}" for s in sims]
            bad = [s for s in sims if not s.ok]
            if bad:
                raise rtl.SimFailed("RTL simulation failed, nothing written: " + "; ".join(s.summary() for s in bad)
                                    + (f" (e.g. {bad[0].examples[:2]})" if bad[0].examples else ""))
            rtl.append_report(res, "\n".join(lines))
        if synth:
            text = rtl.synthesize_export(res)
            lines += ["", text]
            rtl.append_report(res, text)
        if pnr:
            text = "\n".join(f"partition {p.name}: {rtl.place_and_route(p).summary()}" for p in res.partitions)
            lines += ["", text]
            rtl.append_report(res, text)
    if not quiet:
        fmt = format_line(pipeline, given)
        if fmt:
            click.echo(fmt)
        click.echo(res.report.replace(str(tmp), str(out_dir)))
        for line in lines:
            click.echo(line)
        click.echo(f"wrote {out_dir}")
    elif rtlsim:
        for line in lines:
            click.echo(line)
