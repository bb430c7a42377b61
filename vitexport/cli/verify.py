"""`vitexport verify`: prove a runtime matches PyTorch at many resolutions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vitexport.cli.app import CliError, cli, echo
from vitexport.cli.options import (
    check_source,
    fmt_hw,
    limit_options,
    model_source,
    preset_options,
    sweep_options,
    tolerance_text,
)
from vitexport.engines import DEFAULT_PROVIDER, PROVIDER_CHOICES
from vitexport.export.defaults import TOLERANCES
from vitexport.verify.defaults import DEFAULT_BATCH_SIZES, DEFAULT_SEED

if TYPE_CHECKING:
    from vitexport.verify.report import CaseResult, VerifyReport


def _tolerance_help(what: str, index: int) -> str:
    """'Absolute tolerance (default by dtype: fp32 2e-5, fp16 5e-3).' from `TOLERANCES`."""
    return (f"{what} tolerance (default by dtype: fp32 {tolerance_text(TOLERANCES['float32'][index])}, "
            f"fp16 {tolerance_text(TOLERANCES['float16'][index])}).")


def _fmt_err(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def _case_line(c: CaseResult) -> str:
    status = "ok  " if c.passed else "FAIL"
    top1 = "-" if c.top1_agreement is None else f"{c.top1_agreement:.2f}"
    rt = "-" if c.runtime_ms is None else f"{c.runtime_ms:.1f}"
    pt = "-" if c.torch_ms is None else f"{c.torch_ms:.1f}"
    cos = 0.0 if c.cosine is None else c.cosine
    line = (f"{status} {c.provider:9s} {c.height:>4d}x{c.width:<4d} b{c.batch:<2d} {c.input_kind[:5]:5s} "
            f"pad {fmt_hw(c.padded_size):>9s} grid {fmt_hw(c.grid):>6s} seq {c.seq_len:>5d}  "
            f"max|d| {_fmt_err(c.max_abs)}  rel {_fmt_err(c.rel_to_scale)}  cos {cos:.6f}"
            f"  top1 {top1}  run {rt} ms  torch {pt} ms")
    if c.fresh_compile:
        line += "  fresh compile"
    if c.nonfinite:
        line += "  NaN/Inf"
    if c.error:
        line += f"  error: {c.error}"
    return line


@cli.command("verify")
@click.argument("model_path", metavar="MODEL", type=str, required=False)
@preset_options
@click.option("--checkpoint", type=str, help="Reference from the original checkpoint (also catches changed weights).")
@click.option("--config", "config", type=str,
              help="JSON config for --checkpoint (a file, or the JSON object itself); with --preset, overrides of its "
                   "options, e.g. '{\"depth\": 2}'.")
@click.option("--provider", type=click.Choice(PROVIDER_CHOICES), default=DEFAULT_PROVIDER, show_default=True,
              help="Engine: ONNX Runtime (auto: CUDA when usable, else cpu; cuda; tensorrt), openvino (CPU, f32), "
                   "reference (ONNX's reference evaluator, a reduced sweep), or all of them, compared.")
@sweep_options(DEFAULT_BATCH_SIZES, "a sweep from the model")
@click.option("--atol", type=float, help=_tolerance_help("Absolute", 0))
@click.option("--rtol", type=float, help=_tolerance_help("Relative", 1))
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option("--json", "json_path", type=str, help="Write the report as JSON (schema: docs/verify-report.md).")
@click.option("--plot", "plot_path", type=str, help="Write a heatmap PNG of max error over heights x widths.")
@click.option("--force", is_flag=True, help="Replace existing --json/--plot files.")
@limit_options
@click.pass_context
def verify_cmd(ctx, model_path, preset, random_weights, checkpoint, config, provider, sizes, batch_sizes, atol, rtol,
               seed, json_path, plot_path, force, max_tokens, max_memory_gb) -> None:
    """Prove a runtime (or TorchScript) matches PyTorch at many resolutions; exit 1 on any mismatch. With --preset
    NAME --random-weights: does that architecture export and run here (exported to a temporary ONNX file)."""
    from vitexport._util.files import check_output
    from vitexport.verify.sweep import verify

    check_source(model_path, preset, random_weights, "MODEL", checkpoint=checkpoint)
    if json_path and plot_path and Path(json_path).resolve() == Path(plot_path).resolve():
        raise click.BadParameter("--json and --plot name the same file; give each its own path", ctx=ctx)
    for target in (json_path, plot_path):
        if target:
            check_output(target, force, inputs=(model_path, checkpoint, config))  # before the sweep, not after
    if plot_path:
        from vitexport.verify.heatmap import require_matplotlib

        require_matplotlib()
    source = model_source(model_path, preset, random_weights, config, max_tokens=max_tokens,
                          max_memory_gb=max_memory_gb)
    if preset is not None:  # --config: the preset's overrides, taken by its export
        config = None

    def progress(case, done: int, total: int) -> None:
        echo(f"[{done:>3d}/{total}] {_case_line(case)}")

    with source as model_path:
        report = verify(model_path, checkpoint=checkpoint, config=config, provider=provider, sizes=sizes,
                        batch_sizes=batch_sizes, atol=atol, rtol=rtol, seed=seed, progress=progress,
                        debug=ctx.obj.get("debug", False), max_tokens=max_tokens, max_memory_gb=max_memory_gb,
                        outputs=(json_path, plot_path))
        _print_verify_summary(report)
        if json_path:
            report.write_json(json_path, force=True)
            echo(f"report         {json_path}")
        if plot_path:
            from vitexport.verify.heatmap import render_heatmap
            from vitexport.verify.sweep import heatmap_sweep

            echo("plot           sweeping heights x widths for the heatmap ...")
            grid = heatmap_sweep(model_path, report, checkpoint=checkpoint, config=config, max_tokens=max_tokens,
                                 max_memory_gb=max_memory_gb)
            render_heatmap(grid.report, plot_path, grid.heights, grid.widths, force=True)
            echo(f"plot           {plot_path} ({len(grid.heights)}x{len(grid.widths)} sizes)")
    _print_verdict(report)


def _print_verify_summary(report: VerifyReport) -> None:
    echo("")
    echo(f"model          {report.model} ({report.format}, {report.dtype}, output {report.output}); "
               f"reference: {report.reference}")
    for s in report.sessions:
        version = f" ({s['version']})" if s.get("version") else ""
        echo(f"session        {s['name']}: requested {s['requested']}, running on {', '.join(s['providers'])}"
                   + version + (f"; placement {s['placement']}" if s.get("placement") else ""))
        for note in s.get("notes", []):
            echo(f"note           {s['name']}: {note}")
        for w in s.get("warnings", []):
            echo(f"warning        {w}")
    for skipped in report.skipped_providers + report.skipped_cases:
        echo(f"skipped        {skipped}")
    for note in report.static_notes:
        echo(f"note           {note}")
    for problem in report.static_problems:
        echo(f"static check   FAIL {problem}")
    if not report.static_problems:
        echo(f"static checks  ok ({'; '.join(['dynamic axes', *report.static_checks])})"
                   if report.format == "onnx" else "static checks  n/a for TorchScript")
    if report.weight_diff:
        worst = sorted(report.weight_diff.items(), key=lambda kv: -kv[1])[:5]
        echo("weights        differ from the checkpoint: " + ", ".join(f"{k} {v:.3g}" for k, v in worst))
    for x in report.cross_provider:
        if not x.passed:
            echo(f"cross-provider FAIL {x.height}x{x.width} b{x.batch} {x.providers}: max|d| {x.max_abs:.2e}")
    for diagnosis in report.diagnoses:
        echo(f"diagnosis      {diagnosis}")
    echo(f"tolerance      |d| <= {report.atol:g} + {report.rtol:g}*|ref|; worst max|d| "
               f"{report.worst_max_abs:.2e} (rel: max|d| / max|ref|, the output's scale)")


def _print_verdict(report: VerifyReport) -> None:
    fails = report.failures
    verdict, passed = "PASSED" if report.passed else "FAILED", len(report.cases) - len(fails)
    echo(f"{verdict}         {passed}/{len(report.cases)} cases in {report.seconds:.1f} s")
    if not report.passed:
        where = ", ".join(dict.fromkeys(f"{c.height}x{c.width}" for c in fails))
        where = where if len(where) < 120 else where[:117] + "..."
        reason = "static checks failed" if report.static_problems and not fails else f"mismatch at {where}"
        cause = "".join(f"; likely cause on {d}" for d in report.diagnoses)
        raise CliError(f"verification failed: {reason}{cause}; see the table above", 1)
