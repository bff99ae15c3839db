"""``qpass optimize``: settings into a ``QuantConfig``, outputs planned and checked before the run, the pipeline
run, then every check (evaluation, report data) before anything is written, so an output exists only when the
command succeeded."""
from __future__ import annotations

import fnmatch
from pathlib import Path

import click
from click.core import ParameterSource

from qpass.errors import QpassError
from qpass.pipeline.config import QuantConfig
from qpass.pipeline.files import builtin_pipelines
from .clickext import GroupedCommand, PositiveFloat, user_errors, worker_count
from .outputs import output_kind, plan_outputs

SECTIONS = {
    "Input": ["calib", "eval_path", "pipeline_name", "threads", "requantize"],
    "Formats (any of them selects the fakequant pipeline)": [
        "weights", "activations", "bias", "accumulator", "placement", "rounding", "granularity", "calibrator", "seed"],
    "Default int8 pipeline": ["activation_dtype", "per_tensor", "exclude", "target_cpu", "mode"],
    "Search": ["bits", "target", "cost", "avg_bits", "engine", "address"],
    "Hardware (--backend hls / rtl)": ["backend", "device", "clock_ns", "target_fps", "csim", "hls_control", "folding",
                                       "allow_over_budget", "rtlsim", "synth", "pnr", "weights_mode"],
    "Output": ["output", "report_path", "dump_dir", "qonnx", "no_verify", "quiet", "fmt"],
}
HW_FLAGS = {"device": "--device", "clock_ns": "--clock-ns", "target_fps": "--target-fps",
            "weights_mode": "--weights-mode", "folding": "--folding"}
HLS_ONLY = {"csim": "--csim", "hls_control": "--hls-control", "allow_over_budget": "--allow-over-budget"}
RTL_ONLY = {"rtlsim": "--rtlsim", "synth": "--synth", "pnr": "--pnr"}


def _options(fn):
    """The optimize command's options (grouped in ``--help`` by SECTIONS)."""
    opts = [
        click.option("-o", "--output", type=click.Path(), help="Output file; a folder (existing, or ending in /) gets "
                     "MODEL.<what>.onnx inside. Default: MODEL.<what>.onnx beside the model, <what> = int8 "
                     "(default pipeline), bits-auto, bits-avgB, bits-N, or the pipeline name; MODEL.hls/ for "
                     "--backend hls."),
        click.option("--calib", type=click.Path(dir_okay=False), help="Calibration samples (.npz keyed by input "
                     "name; default: MODEL.calib.npz beside the model)."),
        click.option("--pipeline", "pipeline_name", default="default", show_default=True,
                     help=f"Built-in pipeline ({', '.join(builtin_pipelines())}) or a pipeline YAML file."),
        click.option("--dump-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Write the model after every pass into this folder."),
        click.option("--eval", "eval_path", type=click.Path(dir_okay=False), help="Evaluation samples (.npz, "
                     "optional integer 'labels'): print float vs quantized accuracy and SQNR."),
        click.option("--threads", default=1, show_default=True, type=worker_count(),
                     help="onnxruntime threads for calibration and eval."),
        click.option("--report", "report_path", type=click.Path(dir_okay=False),
                     help="Write an HTML report (and a .json twin): per-quantiser format, range, saturation, SQNR, "
                          "histograms, pass timeline."),
        click.option("--activation-dtype", type=click.Choice(["int8", "uint8"]), help="Activation integer type."),
        click.option("--per-tensor", is_flag=True, help="Per-tensor instead of per-channel weight scales."),
        click.option("--exclude", multiple=True, help="Node-name glob pattern to leave in float (repeatable; a "
                     "pattern matching no node is an error)."),
        click.option("--target-cpu", type=click.Choice(["auto", "avx2", "vnni", "arm", "any"]),
                     help="CPUs the int8 model must compute exactly on (default auto: this machine's kind): avx2 and "
                          "any keep int16 pair sums of x86 CPUs without VNNI from saturating; vnni and arm use plain "
                          "int8 weights everywhere."),
        click.option("--weights", help="Weight format, e.g. sym:8, fixed:8,6, dfp:8, ternary, binary, bfp:4,16, "
                     "pow2:-8,0."),
        click.option("--activations", help="Activation format, e.g. uint8, int8, fixed:8,4, dfp:8, uint4."),
        click.option("--bias", help="Bias format: auto (int32 at s_in*s_w), float, or a format spec."),
        click.option("--accumulator", help="Accumulator format for --placement intrinsic, e.g. int16, fixed:24,0."),
        click.option("--placement", type=click.Choice(["extrinsic", "intrinsic"]),
                     help="Where activations are quantised."),
        click.option("--rounding", help="Weight rounding: ROUND, HALF_UP, HALF_DOWN, FLOOR, CEIL, UP, DOWN, "
                     "STOCHASTIC."),
        click.option("--granularity", help="Weight scale granularity: tensor, channel (row), group:G."),
        click.option("--calibrator", help="Activation range calibrator: minmax, percentile, entropy, mse, dfp."),
        click.option("--seed", type=int, help="Seed for stochastic rounding."),
        click.option("--bits", help="auto: search a width per layer (pipeline 'bitwidth'); N: uniform sym:N weights "
                     "and uintN activations."),
        click.option("--target", help="Accuracy target, e.g. relative_accuracy>=0.99 or sqnr>=30: of --bits auto, or "
                     "without --bits of the default int8 pipeline (activation quantizers to float until it holds on "
                     "held-out samples)."),
        click.option("--cost", type=click.Choice(["memory", "bops", "resources", "latency"]),
                     help="What --bits auto minimises: memory (weight bits as the file stores them), bops, resources "
                          "(qpass.hw's FPGA dataflow estimate, % of the device) or latency (onnxruntime's measured time)."),
        click.option("--avg-bits", type=PositiveFloat(), help="--bits auto under a budget: average weight bits <= "
                     "this."),
        click.option("--qonnx", is_flag=True, help="Keep QONNX quantisation ops (skip lowering to standard ONNX)."),
        click.option("--no-verify", is_flag=True, help="Skip the checker and shape inference between passes."),
        click.option("-q", "--quiet", is_flag=True, help="Print only errors (and --eval results); no progress bars."),
        click.option("--mode", type=click.Choice(["static", "dynamic"]), help="static (default): calibrated int8 "
                     "QDQ; dynamic: MatMul/Gemm on DynamicQuantizeLinear + MatMulInteger, ranges measured at run "
                     "time (no calibration data needed)."),
        click.option("--engine", type=click.Choice(["local", "process", "ray"]), default="local", show_default=True,
                     help="Where the bitwidth search runs its per-layer sensitivity evaluations: this process, "
                          "worker processes, or Ray tasks (pip install 'qpass[cluster]'); the result is the same."),
        click.option("--address", help="--engine ray: the Ray cluster (HOST:PORT, or auto); default: RAY_ADDRESS, "
                                        "else a new local Ray instance."),
        click.option("--requantize", is_flag=True, help="An already-quantized MODEL (QONNX, QCDQ, QDQ, QOperator): drop "
                     "its quantization and quantize it again from calibration data. Without it, the trained "
                     "quantization is kept."),
        click.option("--format", "fmt", type=click.Choice(["qonnx", "qcdq", "qdq"]), help="Output dialect: qonnx "
                     "(QONNX Quant ops, like --qonnx), qcdq (QuantizeLinear -> Clip -> DequantizeLinear) or qdq "
                     "(stored integer weights + DequantizeLinear, onnxruntime's layout); see docs/dialects.md."),
    ] + _hardware_options()
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _hardware_options() -> list:
    """The options of the hardware backends (section 'Hardware')."""
    return [
        click.option("--backend", type=click.Choice(["ort", "hls", "rtl"]), default="ort", show_default=True,
                     help="ort: an ONNX file onnxruntime runs; hls: a folder of HLS C++ dataflow projects, pipeline "
                          "'dataflow' (4-bit weights, dfp:4 activations unless set); rtl: the same as "
                          "SystemVerilog projects with cocotb testbenches."),
        click.option("--device", default="xc7z020", show_default=True, help="FPGA part."),
        click.option("--clock-ns", type=PositiveFloat(), help="Clock period in ns (default: the device's)."),
        click.option("--target-fps", type=PositiveFloat(), help="Frame rate to fold for; default: fastest that fits."),
        click.option("--csim", is_flag=True, help="Compile and run the C simulation (g++) and compare it with the "
                     "golden simulator on the --eval (or calibration) samples."),
        click.option("--hls-control", type=click.Choice(["ap_ctrl_hs", "ap_ctrl_none", "frame-loop"]),
                     default="ap_ctrl_hs", show_default=True,
                     help="Top-level control of the HLS projects: ap_ctrl_hs (one frame per call), ap_ctrl_none "
                          "(free-running) or frame-loop (an AXI-Lite frame count per call)."),
        click.option("--folding", type=click.Path(dir_okay=False, exists=True), help="FINN folding_config.json: PE, "
                     "SIMD, ram_style, resType per layer (qpass layer names or FINN's <OpType>_<i>); the folding used "
                     "is written back to OUT/folding_config.json."),
        click.option("--allow-over-budget", is_flag=True, help="Export a design whose layers, FIFOs and width "
                     "converters (all partitions together) exceed --device instead of refusing it."),
        click.option("--rtlsim", is_flag=True, help="--backend rtl: simulate every partition with Verilator (cocotb "
                     "testbench) on the --eval (or calibration) samples: bit-exact check, cycles/frame, latency."),
        click.option("--synth", is_flag=True, help="--backend rtl: synthesize every layer and partition with yosys "
                     "synth_xilinx and report estimate vs yosys LUT/FF/BRAM/DSP."),
        click.option("--pnr", is_flag=True, help="--backend rtl: place and route every partition on a Lattice ECP5 "
                     "(LFE5U-85F) with yosys + nextpnr-ecp5 and report its Fmax."),
        click.option("--weights-mode", type=click.Choice(["const", "runtime"]), default="const", show_default=True,
                     help="Weights and thresholds of the matrix layers: constant ROMs, or RAMs the host writes at run "
                          "time (BNN-PYNQ's design, FINN's decoupled runtime-writeable weights; written with "
                          "memories.txt). Per layer: mem_mode in --folding."),
    ]


@click.command(cls=GroupedCommand, sections=SECTIONS)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@_options
@user_errors
def optimize(model, output, calib, pipeline_name, dump_dir, eval_path, report_path, backend, device, clock_ns,
             target_fps, csim, no_verify, quiet, engine, address, fmt, requantize, rtlsim=False, synth=False,
             pnr=False, **settings):
    """Quantize MODEL with a pipeline of passes and write the result atomically.

    A format flag (see Formats) turns the default pipeline into 'fakequant': any number format, lowered to standard
    ONNX unless --qonnx. The formats a pipeline picks by itself are printed in its summary."""
    from qpass.api import load, optimize as run_pipeline
    from qpass.pipeline.engines import make_engine
    from .dialect import dialect_plan, runnable_source
    from .finish import export_hls, finish_onnx

    hw = _hw_options(settings)
    _check_format(fmt, settings, backend)
    src = load(model)
    cfg = QuantConfig(pipeline=pipeline_name, backend=backend, verify=not no_verify, **settings)
    plan = dialect_plan(src, cfg.resolve(), fmt, requantize, quiet)
    _check_mode_flags(click.get_current_context(), backend, report_path)
    searched = any(p.name == "bitwidth" for p in plan.pipeline.flat_passes())
    if engine != "local" and not searched:
        raise QpassError(f"--engine {engine} only applies to the bitwidth search (--bits auto, or a pipeline with a "
                         "bitwidth pass); this pipeline runs in this process")
    calib_path = resolve_calib(model, calib, plan.needs_calibration)
    inputs = [model] + [Path(p) for p in (calib_path, eval_path, pipeline_name) if p and Path(p).is_file()]
    outputs = plan_outputs(model, output, report_path, output_kind(cfg, plan, fmt), backend, inputs,
                           pareto=searched)
    samples, eval_samples = _load_samples(src, calib_path, eval_path)
    with make_engine(engine, address=address) as runner:
        result = run_pipeline(src, calib=samples, pipeline=plan.pipeline, dump_dir=dump_dir, progress=not quiet,
                              verify=plan.verify, disabled=plan.disabled, eval=eval_samples,
                              engine=None if engine == "local" else runner)
    _check_exclude(cfg.exclude, src, result)
    given = {f for f in ("weights", "activations") if getattr(cfg, f) or (cfg.bits and str(cfg.bits) != "auto")}
    if backend == "rtl":
        from .finish_rtl import export_rtl

        export_rtl(result, outputs.model, plan.pipeline, given, eval_samples or samples, quiet=quiet, device=device,
                   clock_ns=clock_ns, target_fps=target_fps, rtlsim=rtlsim, synth=synth, pnr=pnr,
                   folding=hw["folding"], weights_mode=hw["weights_mode"])
    elif backend == "hls":
        export_hls(result, outputs.model, plan.pipeline, given, eval_samples or samples, quiet=quiet, csim=csim,
                   device=device, clock_ns=clock_ns, target_fps=target_fps, **hw)
    else:
        finish_onnx(runnable_source(src) if eval_samples is not None else src, model, result, outputs,
                    plan.pipeline, given, samples, eval_samples, cfg.threads, quiet)


def _hw_options(settings: dict) -> dict:
    """The HLS export's options, out of ``settings``: control mode, folding file (loaded), budget override."""
    hw = {"control": settings.pop("hls_control"), "allow_over_budget": settings.pop("allow_over_budget"),
          "folding": None, "weights_mode": settings.pop("weights_mode")}
    folding = settings.pop("folding")
    if folding:
        from qpass.hw.folding_config import load as load_folding

        hw["folding"] = load_folding(folding)
    return hw


def _check_format(fmt, settings: dict, backend: str) -> None:
    """--format against --qonnx and the backend; --qonnx is --format qonnx."""
    if fmt and settings.get("qonnx") and fmt != "qonnx":
        raise QpassError(f"--qonnx and --format {fmt} contradict each other (--qonnx is --format qonnx)")
    if fmt and backend in ("hls", "rtl"):
        raise QpassError(f"--format chooses the ONNX dialect of --backend ort; the {backend.upper()} export writes "
                         "source code")
    settings["qonnx"] = settings.get("qonnx") or fmt == "qonnx"


def _check_mode_flags(ctx: click.Context, backend: str, report_path) -> None:
    """Flags that would do nothing with this backend are errors that name them."""
    def given(flags):
        return [flag for name, flag in flags.items() if ctx.get_parameter_source(name) != ParameterSource.DEFAULT]

    if backend != "rtl" and given(RTL_ONLY):
        raise QpassError(f"{' and '.join(given(RTL_ONLY))} only apply to --backend rtl")
    if backend == "rtl" and given({"csim": "--csim"}):
        raise QpassError("--csim is the HLS C simulation; with --backend rtl use --rtlsim")
    if backend != "hls" and given(HLS_ONLY):
        raise QpassError(f"{' and '.join(given(HLS_ONLY))} only apply to --backend hls")
    if backend not in ("hls", "rtl"):
        if given(HW_FLAGS):
            raise QpassError(f"{' and '.join(given(HW_FLAGS))} only apply to --backend hls or rtl (this run writes an "
                             "ONNX model)")
    elif report_path:
        raise QpassError(f"--report is for --backend ort; the {backend.upper()} export writes its own report.txt into "
                         "the folder")


def resolve_calib(model_path: Path, calib: str | None, needed: bool) -> Path | None:
    from qpass.ir.samples import default_calib_path

    if calib:
        return Path(calib)
    beside = default_calib_path(model_path)
    if beside.is_file():
        return beside
    if needed:
        raise QpassError(f"no calibration data: pass --calib NPZ or put {beside.name} beside the model")
    return None


def _load_samples(src, calib_path: Path | None, eval_path: str | None):
    """(calibration samples or None, evaluation samples or None)."""
    from qpass.ir.samples import load_samples

    samples = load_samples(calib_path, src) if calib_path else None
    return samples, (load_samples(eval_path, src) if eval_path else None)


def _check_exclude(patterns, src, result) -> None:
    """An --exclude pattern that matches no node (of the model, or of its normalised form) is an error."""
    if not patterns:
        return
    from qpass.pipeline.run import float_model

    names = {n.name for n in src.graph.node}
    normalised = float_model(result)
    if normalised is not None:
        names |= {n.name for n in normalised.graph.node}
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise QpassError(f"--exclude {pattern!r} matches no node of the model (see the node names with "
                             "'qpass inspect MODEL')")
