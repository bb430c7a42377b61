"""The `vitexport` command line: parse, call one library function, format, map errors.

Library errors become one-line messages here and only here; exit codes (docs/design.md):
0 success, 1 the work failed, 2 usage or environment.

Startup is part of the interface: importing this module loads click and vitexport's light modules
only; each command imports its library modules (numpy, onnxruntime, torch, ...) inside its function,
so `--help`, `info` on an exported model and `predict` never import torch
(`benchmarks/startup_bench.py`, `tests/test_install.py`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from vitexport import __version__
from vitexport.engines import PROVIDER_CHOICES
from vitexport.errors import VitexportError, one_line
from vitexport.limits import DEFAULT_MAX_TOKENS
from vitexport.spec import DEFAULT_RESAMPLE, RESAMPLE_FORMS

ONE_ENGINE = [p for p in PROVIDER_CHOICES if p != "all"]  # predict and serve run one engine
SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$")


class CliError(click.ClickException):
    """A one-line error with the exit code of the library error behind it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class VitexportGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        from vitexport.interrupt import signals_as_exit

        try:
            with signals_as_exit():  # Ctrl-C, SIGTERM, SIGHUP: staging folders removed, one line, exit 128 + N
                return super().invoke(ctx)
        except VitexportError as exc:
            if ctx.params.get("debug"):
                raise
            raise CliError(str(exc), exc.exit_code) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ImportError as exc:  # a module of an extra the base install lacks: name the install command
            from vitexport.extras import missing_extra

            problem = None if ctx.params.get("debug") else missing_extra(exc, f"`vitexport {ctx.invoked_subcommand}`")
            if problem is None:
                raise
            raise CliError(str(problem), problem.exit_code) from exc
        except BrokenPipeError:  # whoever read stdout stopped (`vitexport info m.onnx | head -1`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
            raise SystemExit(141) from None  # 128 + SIGPIPE, as a shell tool killed by the pipe
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise CliError(*_map_unexpected(exc)) from exc


def _map_unexpected(exc: Exception) -> tuple[str, int]:
    """(message, exit code) for an exception no library function turned into a VitexportError."""
    from vitexport.files import DISK_FULL_ERRNOS

    if isinstance(exc, MemoryError):
        return "out of memory; use smaller inputs or batch sizes (see --max-memory-gb)", 1
    if isinstance(exc, RecursionError):
        return "an input is nested too deeply to process (RecursionError); check the files given", 1
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return f"{seen.strerror or 'no space left on device'}; free some space and run again", 1
        seen = seen.__cause__ or seen.__context__
    return f"unexpected {one_line(exc, kind=True)}; rerun with --debug for the traceback and report it", 1


def parse_size(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '200x333' -> (200, 333)."""
    m = SIZE_RE.match(text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a size; write HxW, e.g. 224x224 or 200x333")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    if h < 1 or w < 1:
        raise click.BadParameter(f"{text!r}: height and width must be at least 1")
    return h, w


class SizeType(click.ParamType):
    name = "HxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_size(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


SIZE = SizeType()


def _limit_options(fn: Any) -> Any:
    """--max-tokens and --max-memory-gb (vitexport.limits), shared by every command that runs a model."""
    from vitexport.limits import DEFAULT_MAX_MEMORY_GB

    fn = click.option("--max-memory-gb", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_MAX_MEMORY_GB,
                      show_default=True, help="Refuse work whose estimated memory for one forward pass is larger.")(fn)
    return click.option("--max-tokens", type=click.IntRange(min=1), default=DEFAULT_MAX_TOKENS, show_default=True,
                        help="Refuse sizes with more tokens per image (attention memory grows with its square).")(fn)


@click.group(cls=VitexportGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="vitexport")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Show informational logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Export dynamic-pad Vision Transformers to ONNX/TorchScript, verify and serve them."""
    import logging

    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Library warnings (e.g. an assumed head count) reach the user; third-party chatter does not.
    logging.getLogger("vitexport").setLevel(level)
    ctx.obj = {"debug": debug}


# ---------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------
def _fmt_hw(hw: Any) -> str:
    return f"{hw[0]}x{hw[1]}"


def _print_checkpoint_info(info: dict) -> None:
    cfg = info["config"]
    prefix = info["prefix_tokens"]
    click.echo(f"checkpoint     {info['path']}")
    click.echo(f"format         {info['format']} (config from {info['config_source']})")
    click.echo(f"sha256         {info['sha256']}")
    if cfg.get("architecture"):
        click.echo(f"architecture   {cfg['architecture']}")
    click.echo(f"parameters     {info['parameters']:,}")
    img = cfg["img_size"] if isinstance(cfg["img_size"], list) else [cfg["img_size"]] * 2
    click.echo(
        f"native size    {_fmt_hw(img)}, patch {_fmt_hw(info['patch_size'])}, grid {_fmt_hw(info['native_grid'])}"
    )
    click.echo(
        f"prefix tokens  {prefix['total']} (class token: {'yes' if prefix['class'] else 'no'}, "
        f"registers: {prefix['registers']}); pos_embed rows: {info['pos_embed_rows']}"
    )
    click.echo(
        f"dynamic        img_size={cfg['dynamic_img_size']}, img_pad={cfg['dynamic_img_pad']}"
    )
    if info.get("preprocess"):
        p = info["preprocess"]
        click.echo(f"preprocess     scale {p.get('scale')}, mean {p.get('mean')}, std {p.get('std')}")
    if info.get("labels"):
        labels = info["labels"]
        shown = ", ".join(labels[:10]) + (f", ... ({len(labels)})" if len(labels) > 10 else "")
        click.echo(f"labels         {shown}")
    for note in info.get("notes", []):
        click.echo(f"note           {note}")
    click.echo("config         " + json.dumps({k: v for k, v in cfg.items() if k != "architecture"}))
    _print_sizes(info["sizes"])


def _print_sizes(sizes: list[dict]) -> None:
    for s in sizes:
        click.echo(
            f"size {_fmt_hw(s['input_size'])}: padded {_fmt_hw(s['padded_size'])}, grid {_fmt_hw(s['grid'])}, "
            f"{s['num_patches']} patches, sequence length {s['seq_len']} "
            f"(pos-embed resampled {_fmt_hw(s['resampled_from'])} -> {_fmt_hw(s['grid'])})"
        )


def _print_artifact_info(info: dict) -> None:
    meta = info["metadata"]
    click.echo(f"{info['kind']:14s} {info['path']} ({info['bytes'] / 1e6:.2f} MB)")
    if info["kind"] == "onnx":
        click.echo(f"opset          {info['opset']}")
        for name, dims in {**info["inputs"], **info["outputs"]}.items():
            click.echo(f"tensor         {name} [{', '.join(str(d) for d in dims)}]")
        if info["external_data"]:
            click.echo(f"external data  {', '.join(info['external_data'])}")
        ops = ", ".join(f"{k} {v}" for k, v in info["op_counts"].items())
        click.echo(f"ops            {sum(info['op_counts'].values())} nodes: {ops}")
    if not meta:
        click.echo("metadata       none (not exported by vitexport)")
        return
    click.echo(f"exported by    vitexport {meta.get('version')} (torch {meta.get('torch_version')}, "
               f"onnx {meta.get('onnx_version')}, onnxscript {meta.get('onnxscript_version')})")
    click.echo(f"dynamic axes   {json.dumps(meta.get('dynamic_axes'))}")
    if meta.get("static_size"):
        click.echo(f"static size    {_fmt_hw(meta['static_size'])}")
    click.echo(f"dtype          {meta.get('dtype')}")
    if info["kind"] == "onnx":  # exports before the portable form carry no "resample" key: they hold a Resize
        click.echo(f"resampling     {meta.get('resample', 'resize')}")
    click.echo(f"patch / grid   patch {_fmt_hw(meta['patch_size'])}, native grid {_fmt_hw(meta['native_grid'])}, "
               f"prefix tokens {meta['num_prefix_tokens']}")
    if meta.get("preprocess"):
        p = meta["preprocess"]
        click.echo(f"preprocess     scale {p.get('scale')}, mean {p.get('mean')}, std {p.get('std')}")
    if meta.get("labels"):
        click.echo(f"labels         {len(meta['labels'])}: {', '.join(meta['labels'][:10])}")
    click.echo(f"source sha256  {meta.get('source_sha256')}")
    click.echo("config         " + json.dumps(meta.get("config")))
    _print_sizes(info.get("sizes", []))


@cli.command()
@click.argument("model_path", metavar="CHECKPOINT|MODEL", type=click.Path(dir_okay=True, path_type=str))
@click.option("--config", "config", type=str,
              help="JSON file of timm keyword arguments (or a timm config.json), or the JSON object itself.")
@click.option("--ema", "use_ema", is_flag=True, help="Use the EMA weights of a timm training checkpoint.")
@click.option("--size", "sizes", type=SIZE, multiple=True, help="Show padding, grid and sequence length for HxW.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(model_path: str, config: str | None, use_ema: bool, sizes: tuple, as_json: bool) -> None:
    """Describe a checkpoint, or an exported .onnx / TorchScript model."""
    from vitexport.info import describe_file

    data = describe_file(model_path, config=config, use_ema=use_ema, sizes=sizes)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif data["kind"] == "checkpoint":
        _print_checkpoint_info(data)
    else:
        _print_artifact_info(data)


def _command(*args: Any) -> str:
    """A vitexport command line to print for the user to run, each argument quoted for the shell."""
    import shlex

    return " ".join(["vitexport", *(shlex.quote(str(a)) for a in args)])


def _print_export(result, verify_command: str) -> None:
    click.echo(f"wrote          {result.path} ({result.bytes / 1e6:.2f} MB)")
    if result.external_data:
        click.echo(f"external data  {result.external_data}")
    if result.opset:
        click.echo(f"opset          {result.opset}")
    axes = result.io.to_json()
    click.echo("dynamic axes   " + (json.dumps(axes) if any(axes.values()) else "none (fixed shapes)"))
    if result.static_size:
        click.echo(f"static size    {_fmt_hw(result.static_size)}")
    click.echo(f"dtype          {result.dtype}")
    click.echo(f"parameters     {result.parameters:,}")
    click.echo(f"checks         {'; '.join(result.checks)}")
    click.echo(f"export time    {result.seconds:.1f} s")
    if result.optimized:
        click.echo(f"attention      {result.metadata.get('attention')}")
        click.echo(f"verify         {verify_command} (weights were folded)")


class BatchType(click.ParamType):
    name = "dynamic|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or value == "dynamic":
            return None
        try:
            n = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not 'dynamic' or a positive integer", param, ctx)
        if n < 1:
            self.fail(f"{value!r}: the batch size must be at least 1", param, ctx)
        return n


@cli.command("onnx")
@click.argument("checkpoint", type=str)
@click.option("-o", "--output", type=str, help="Output .onnx path (default: beside the checkpoint).")
@click.option("--config", "config", type=str,
              help="JSON file of timm keyword arguments (or a timm config.json), or the JSON object itself.")
@click.option("--ema", "use_ema", is_flag=True, help="Use the EMA weights of a timm training checkpoint.")
@click.option("--opset", type=int, default=None,
              help="ONNX opset (default 18, where Resize runs on ORT's CUDA provider; 23 with --attention onnx).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--batch-size", type=BatchType(), default="dynamic", show_default=True)
@click.option("--static", "static_size", type=SIZE, help="Export a fixed HxW graph instead of dynamic height/width.")
@click.option("--img-size", type=SIZE, help="Make HxW the model's native size first (set_input_size).")
@click.option("--attention", type=click.Choice(["sdpa", "mha", "onnx"]), default=None,
              help="sdpa: standard ops (default); mha: ONNX Runtime's fused MultiHeadAttention, opset 18 "
                   "(default with --optimize cpu, measured faster there); onnx: the Attention op, opset 23.")
@click.option("--optimize", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Write ONNX Runtime's offline-optimized graph for this provider (faster startup).")
@click.option("--resample", type=click.Choice(RESAMPLE_FORMS), default=DEFAULT_RESAMPLE, show_default=True,
              help="Positional-embedding resampling: portable (elementary ops, right on every runtime) or resize "
                   "(one antialiased Resize: ONNX Runtime and the ONNX reference only).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@_limit_options
def onnx_cmd(checkpoint, output, config, use_ema, opset, dtype, batch_size, static_size, img_size, attention,
             optimize, resample, force, max_tokens, max_memory_gb) -> None:
    """Export a checkpoint to ONNX with dynamic batch, height and width."""
    from vitexport.export import export_checkpoint

    result = export_checkpoint(
        checkpoint, output, to="onnx", config=config, use_ema=use_ema, img_size=img_size, force=force,
        opset=opset, dtype=dtype, batch_size=batch_size, static_size=static_size, attention=attention,
        optimize=optimize, resample=resample, max_tokens=max_tokens, max_memory_gb=max_memory_gb,
    )
    _print_export(result, _command("verify", result.path, "--checkpoint", checkpoint,
                                   *(("--config", config) if config else ())))


@cli.command("quantize")
@click.argument("model_path", metavar="MODEL", type=str)
@click.option("-o", "--output", type=str, help="Output path (default: MODEL with .int8.onnx).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def quantize_cmd(model_path, output, force) -> None:
    """Dynamic int8 quantization of the MatMul weights for CPU inference (resampling stays float)."""
    from vitexport.optimize import quantize_onnx

    result = quantize_onnx(model_path, output, force=force)
    d = result.details
    source_mb = Path(model_path).stat().st_size / 1e6
    click.echo(f"wrote          {result.path} ({result.bytes / 1e6:.2f} MB, from {source_mb:.2f} MB)")
    if result.external_data:
        click.echo(f"external data  {result.external_data}")
    click.echo(f"scheme         {d['scheme']}")
    click.echo(f"quantized      {d['matmuls_quantized']} MatMul (weights int8)")
    click.echo(f"kept float     {d['matmuls_left_float']} MatMul without constant weights (attention scores, "
               "embedding resampling); "
               f"{', '.join(d['kept_float'])}")
    click.echo(f"verify         {_command('verify', result.path, '--checkpoint', model_path)} "
               "(against the float model's weights; int8 tolerance 0.1 + 0.05*|ref|)")


@cli.command("torchscript")
@click.argument("checkpoint", type=str)
@click.option("-o", "--output", type=str, help="Output .ts path (default: beside the checkpoint).")
@click.option("--config", "config", type=str,
              help="JSON file of timm keyword arguments (or a timm config.json), or the JSON object itself.")
@click.option("--ema", "use_ema", is_flag=True, help="Use the EMA weights of a timm training checkpoint.")
@click.option("--img-size", type=SIZE, help="Make HxW the model's native size first (set_input_size).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@_limit_options
def torchscript_cmd(checkpoint, output, config, use_ema, img_size, force, max_tokens, max_memory_gb) -> None:
    """Export a checkpoint to TorchScript (torch.jit.script: shapes stay dynamic)."""
    from vitexport.export import export_checkpoint

    _print_export(export_checkpoint(checkpoint, output, to="torchscript", config=config, use_ema=use_ema,
                                    img_size=img_size, force=force, max_tokens=max_tokens,
                                    max_memory_gb=max_memory_gb), "")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the presets as JSON.")
def presets(as_json: bool) -> None:
    """List the named architectures a checkpoint's `arch` or a config's `architecture` may use."""
    from vitexport.families import family_of
    from vitexport.presets import PRESETS

    if as_json:
        click.echo(json.dumps(PRESETS, indent=2))
        return
    for name, args in PRESETS.items():
        img = args["img_size"]
        click.echo(
            f"{name:40s} {family_of(args):16s} img {img if isinstance(img, int) else _fmt_hw(img)}  "
            f"patch {args['patch_size']}  "
            f"dim {args['embed_dim']}  depth {args['depth']}  heads {args['num_heads']}  "
            f"registers {args['reg_tokens']}  pool {args['global_pool'] or 'none'}"
        )


def _parse_sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> list[tuple[int, int]] | None:
    if value is None:
        return None
    try:
        return [parse_size(part) for part in value.split(",") if part.strip()]
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, ctx=ctx, param=param) from exc


def _parse_batches(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of integers, e.g. 1,3", ctx=ctx, param=param) from None
    if not batches or min(batches) < 1:
        raise click.BadParameter(f"{value!r}: batch sizes must be positive integers, e.g. 1,3", ctx=ctx, param=param)
    return batches


def _fmt_err(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def _case_line(c) -> str:
    status = "ok  " if c.passed else "FAIL"
    top1 = "-" if c.top1_agreement is None else f"{c.top1_agreement:.2f}"
    rt = "-" if c.runtime_ms is None else f"{c.runtime_ms:.1f}"
    pt = "-" if c.torch_ms is None else f"{c.torch_ms:.1f}"
    cos = 0.0 if c.cosine is None else c.cosine
    line = (f"{status} {c.provider:9s} {c.height:>4d}x{c.width:<4d} b{c.batch:<2d} {c.input_kind[:5]:5s} "
            f"pad {_fmt_hw(c.padded_size):>9s} grid {_fmt_hw(c.grid):>6s} seq {c.seq_len:>5d}  "
            f"max|d| {_fmt_err(c.max_abs)}  rel {_fmt_err(c.max_rel)}  cos {cos:.6f}"
            f"  top1 {top1}  run {rt} ms  torch {pt} ms")
    if c.nonfinite:
        line += "  NaN/Inf"
    if c.error:
        line += f"  error: {c.error}"
    return line


@cli.command("verify")
@click.argument("model_path", metavar="MODEL", type=str)
@click.option("--checkpoint", type=str, help="Reference from the original checkpoint (also catches changed weights).")
@click.option("--config", "config", type=str, help="JSON config for --checkpoint (a file, or the JSON object itself).")
@click.option("--provider", type=click.Choice(PROVIDER_CHOICES), default="auto", show_default=True,
              help="Engine: ONNX Runtime (auto: CUDA when usable, else cpu; cuda; tensorrt), openvino (CPU, f32), "
                   "reference (ONNX's reference evaluator, a reduced sweep), or all of them, compared.")
@click.option("--sizes", callback=_parse_sizes, help="Comma-separated HxW list (default: a sweep from the model).")
@click.option("--batch-sizes", default="1,3", show_default=True, callback=_parse_batches)
@click.option("--atol", type=float, help="Absolute tolerance (default by dtype: fp32 2e-5, fp16 5e-3).")
@click.option("--rtol", type=float, help="Relative tolerance (default by dtype: fp32 1e-4, fp16 1e-2).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=str, help="Write the report as JSON (schema: docs/verify-report.md).")
@click.option("--plot", "plot_path", type=str, help="Write a heatmap PNG of max error over heights x widths.")
@click.option("--force", is_flag=True, help="Replace existing --json/--plot files.")
@_limit_options
@click.pass_context
def verify_cmd(ctx, model_path, checkpoint, config, provider, sizes, batch_sizes, atol, rtol, seed, json_path,
               plot_path, force, max_tokens, max_memory_gb) -> None:
    """Prove a runtime (or TorchScript) matches PyTorch at many resolutions; exit 1 on any mismatch."""
    from vitexport.files import check_output
    from vitexport.verify import verify

    if json_path and plot_path and Path(json_path).resolve() == Path(plot_path).resolve():
        raise click.BadParameter("--json and --plot name the same file; give each its own path", ctx=ctx)
    for target in (json_path, plot_path):
        if target:
            check_output(target, force, inputs=(model_path, checkpoint, config))  # before the sweep, not after
    if plot_path:
        from vitexport.plot import require_matplotlib

        require_matplotlib()

    def progress(case, done: int, total: int) -> None:
        click.echo(f"[{done:>3d}/{total}] {_case_line(case)}")

    report = verify(model_path, checkpoint=checkpoint, config=config, provider=provider, sizes=sizes,
                    batch_sizes=batch_sizes, atol=atol, rtol=rtol, seed=seed, progress=progress,
                    debug=ctx.obj.get("debug", False), max_tokens=max_tokens, max_memory_gb=max_memory_gb,
                    outputs=(json_path, plot_path))
    _print_verify_summary(report)
    if json_path:
        report.write_json(json_path, force=True)
        click.echo(f"report         {json_path}")
    if plot_path:
        from vitexport.plot import render_heatmap
        from vitexport.verify import heatmap_sweep

        click.echo("plot           sweeping heights x widths for the heatmap ...")
        grid = heatmap_sweep(model_path, report, checkpoint=checkpoint, config=config, max_tokens=max_tokens,
                             max_memory_gb=max_memory_gb)
        render_heatmap(grid.report, plot_path, grid.heights, grid.widths, force=True)
        click.echo(f"plot           {plot_path} ({len(grid.heights)}x{len(grid.widths)} sizes)")
    _print_verdict(report)


def _print_verify_summary(report) -> None:
    click.echo("")
    click.echo(f"model          {report.model} ({report.format}, {report.dtype}); reference: {report.reference}")
    for s in report.sessions:
        version = f" ({s['version']})" if s.get("version") else ""
        click.echo(f"session        {s['name']}: requested {s['requested']}, running on {', '.join(s['providers'])}"
                   + version + (f"; placement {s['placement']}" if s.get("placement") else ""))
        for note in s.get("notes", []):
            click.echo(f"note           {s['name']}: {note}")
        for w in s.get("warnings", []):
            click.echo(f"warning        {w}")
    for skipped in report.skipped_providers + report.skipped_cases:
        click.echo(f"skipped        {skipped}")
    for note in report.static_notes:
        click.echo(f"note           {note}")
    for problem in report.static_problems:
        click.echo(f"static check   FAIL {problem}")
    if not report.static_problems:
        click.echo(f"static checks  ok ({'; '.join(['dynamic axes', *report.static_checks])})"
                   if report.format == "onnx" else "static checks  n/a for TorchScript")
    if report.weight_diff:
        worst = sorted(report.weight_diff.items(), key=lambda kv: -kv[1])[:5]
        click.echo("weights        differ from the checkpoint: " + ", ".join(f"{k} {v:.3g}" for k, v in worst))
    for x in report.cross_provider:
        if not x["passed"]:
            click.echo(f"cross-provider FAIL {x['height']}x{x['width']} b{x['batch']} {x['providers']}: "
                       f"max|d| {x['max_abs']:.2e}")
    for diagnosis in report.diagnoses:
        click.echo(f"diagnosis      {diagnosis}")
    worst = max((c.max_abs or 0 for c in report.cases if c.max_abs is not None), default=0.0)
    click.echo(f"tolerance      |d| <= {report.atol:g} + {report.rtol:g}*|ref|; worst max|d| {worst:.2e}")


def _print_verdict(report) -> None:
    fails = report.failures
    verdict, passed = "PASSED" if report.passed else "FAILED", len(report.cases) - len(fails)
    click.echo(f"{verdict}         {passed}/{len(report.cases)} cases in {report.seconds:.1f} s")
    if not report.passed:
        where = ", ".join(dict.fromkeys(f"{c.height}x{c.width}" for c in fails))
        where = where if len(where) < 120 else where[:117] + "..."
        reason = "static checks failed" if report.static_problems and not fails else f"mismatch at {where}"
        cause = "".join(f"; likely cause on {d}" for d in report.diagnoses)
        raise CliError(f"verification failed: {reason}{cause}; see the table above", 1)


@cli.command("predict")
@click.argument("model_path", metavar="MODEL", type=str)
@click.argument("images", nargs=-1, required=True, type=str)
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--provider", type=click.Choice(ONE_ENGINE), default="auto",
              show_default=True, help="Engine: auto (ONNX Runtime's CUDA when usable, else cpu), cpu, cuda, tensorrt, "
                                      "openvino (CPU, f32) or reference (ONNX's reference evaluator: slow).")
@_limit_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array, one object per image.")
def predict_cmd(model_path, images, top_k, provider, max_tokens, max_memory_gb, as_json) -> None:
    """Classify images of any size with an exported ONNX model, on any engine."""
    from vitexport.preprocess import image_size, read_image
    from vitexport.runtime import Predictor

    for path in images:  # unreadable files fail before any model work (headers only)
        image_size(path)
    predictor = Predictor(model_path, provider=provider, top_k=top_k, max_tokens=max_tokens,
                          max_memory_gb=max_memory_gb)
    decoded = [read_image(p, check=predictor.check_size) for p in images]  # sizes refused before decoding
    preds = predictor.predict(decoded)
    if predictor.provider_note:
        click.echo(f"note: {predictor.provider_note}", err=True)
    if as_json:
        click.echo(json.dumps([
            {"path": path, "size": list(p.size), "top_k": p.top_k} for path, p in zip(images, preds, strict=True)
        ]))
        return
    for path, p in zip(images, preds, strict=True):
        if not p.top_k:
            click.echo(f"{path}  {_fmt_hw(p.size)}  features {tuple(p.output.shape)}")
            continue
        best = ", ".join(f"{t['label'] if t['label'] is not None else t['index']} {t['score']:.3f}" for t in p.top_k)
        click.echo(f"{path}  {_fmt_hw(p.size)}  {best}")


@cli.command("bench")
@click.argument("model_path", metavar="MODEL", type=str)
@click.option("--sizes", callback=_parse_sizes, help="Comma-separated HxW list (default: native and two odd sizes).")
@click.option("--batch-sizes", default="1,8", show_default=True, callback=_parse_batches)
@click.option("--provider", type=click.Choice(PROVIDER_CHOICES), default="auto", show_default=True,
              help="Engine to time, or all: every usable serving engine (ONNX Runtime, OpenVINO) side by side, "
                   "interleaved.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--threads", type=click.IntRange(min=1, max=1024), help="Intra-op threads for the engines (and torch).")
@click.option("--compare-torch", is_flag=True, help="Also time PyTorch eager, interleaved, and print the ratio.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@_limit_options
def bench_cmd(model_path, sizes, batch_sizes, provider, warmup, iters, threads, compare_torch, as_json, max_tokens,
              max_memory_gb) -> None:
    """Median and p90 latency and images/s per size and batch, per engine."""
    from vitexport.bench import bench

    def progress(text: str) -> None:
        if not as_json and sys.stderr.isatty():
            click.echo(f"\r{text:40s}", nl=False, err=True)

    report = bench(model_path, sizes, batch_sizes, provider=provider, warmup=warmup, iters=iters,
                   compare_torch=compare_torch, threads=threads, progress=progress, max_tokens=max_tokens,
                   max_memory_gb=max_memory_gb)
    if sys.stderr.isatty() and not as_json:
        click.echo("\r" + " " * 40 + "\r", nl=False, err=True)
    if report.provider_note:
        click.echo(f"note: {report.provider_note}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    _print_bench(report, compare_torch)


def _print_bench(report, compare_torch: bool) -> None:
    """One row per (size, batch); per engine its median, p90, images/s and parity side by side; then PyTorch;
    then the recommendation."""
    names = [e["name"] for e in report.engines]
    checked = bool(report.parity_reference)
    click.echo(f"model {report.model}; {report.warmup} warm-up + {report.iters} timed runs per case"
               + (", engines interleaved" if len(names) > 1 or compare_torch else ""))
    for e in report.engines:
        click.echo(f"engine {e['name']}: {', '.join(e['providers'])} ({e['version']})"
                   + "".join(f"; {note}" for note in e["notes"]))
    for skipped in report.skipped:
        click.echo(f"skipped {skipped}")
    if checked:
        click.echo(f"parity: every engine's output against {report.parity_reference} (max |difference|)")
    head = f"{'size':>9s} {'batch':>5s}"
    for name in names:
        head += f" {name + ' median ms':>18s} {'p90 ms':>8s} {'images/s':>9s}"
        head += f" {'parity':>15s}" if checked else ""
    if compare_torch:
        head += f" {'torch median ms':>18s} {'p90 ms':>8s} {'images/s':>9s}"
        head += "".join(f" {name + ' speed-up':>16s}" for name in names)
    click.echo(head)
    rows: dict[tuple[int, int, int], dict[str, Any]] = {}
    for c in report.cases:
        rows.setdefault((c.height, c.width, c.batch), {})[c.engine] = c
    for (h, w, b), by_engine in rows.items():
        cases = [by_engine[name] for name in names]
        line = f"{_fmt_hw((h, w)):>9s} {b:>5d}"
        for c in cases:
            line += f" {c.runtime_median_ms:>18.2f} {c.runtime_p90_ms:>8.2f} {c.runtime_images_per_s:>9.1f}"
            if checked:
                line += f" {('ok ' if c.parity_ok else 'WRONG ') + f'{c.parity_max_abs:.1e}':>15s}"
        if compare_torch:
            c = cases[0]
            line += f" {c.torch_median_ms:>18.2f} {c.torch_p90_ms:>8.2f} {c.torch_images_per_s:>9.1f}"
            line += "".join(f" {c.speedup_vs_torch:>15.2f}x" for c in cases)
        click.echo(line)
    if len(names) > 1:
        click.echo(report.recommendation)


# ---------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _print_started(started, options) -> None:
    app, scaling = options.app, options.scaling
    replicas = (f"{scaling.autoscale[0]}-{scaling.autoscale[1]} replicas (autoscaling)" if scaling.autoscale
                else f"{scaling.replicas} replica{'s' if scaling.replicas > 1 else ''}")
    click.echo(f"serving   {started.name} ({started.model}) on {started.provider}, {replicas}, "
               f"batches of up to {app.max_batch} images within {app.batch_wait_ms:g} ms")
    if started.provider_note:
        click.echo(f"note      {started.provider_note}")
    for label, path in (("live", "/v2/health/live"), ("ready", "/v2/health/ready"),
                        ("metadata", f"/v2/models/{started.name}"), ("infer", f"/v2/models/{started.name}/infer")):
        click.echo(f"{label:9s} {started.url}{path}")
    click.echo(f"example   {started.curl_example()}")
    if started.local:
        click.echo("stop      Ctrl-C or SIGTERM")
    else:
        click.echo(f"deployed  to the Ray cluster at {options.address}; it keeps running there "
                   f"(remove it with: serve delete {started.name} --address http://HEAD:8265)")
    sys.stdout.flush()


@cli.command("serve")
@click.argument("model_path", metavar="MODEL", type=str)
@click.option("--name", help="Model name in the URLs (default: the file's stem).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the server to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--replicas", type=click.IntRange(min=1), help="Replicas of the model (default 1).")
@click.option("--autoscale", metavar="MIN:MAX", help="Autoscale between MIN and MAX replicas instead of --replicas.")
@click.option("--provider", type=click.Choice(ONE_ENGINE), default="auto",
              show_default=True, help="Engine of each replica, as for predict (auto: CUDA when usable, else cpu).")
@click.option("--threads", type=click.IntRange(min=1), help="Engine intra-op threads per replica.")
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most images of one size in one engine run, across concurrent requests.")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="How long a batch waits for more requests.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=DEFAULT_MAX_TOKENS, show_default=True,
              help="Refuse images with more patches than this (also caps the pixels of an encoded image).")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=64.0, show_default=True,
              help="Refuse request bodies (after gzip/deflate) over this size.")
@click.option("--token-file", help="Require 'Authorization: Bearer <token>' (the file's content) except on /v2/health.")
@click.option("--address", help="Deploy to this Ray cluster (e.g. 10.0.0.5:6379, auto) and leave it running there.")
@click.option("--print-config", is_flag=True, help="Print the Ray Serve config (serve deploy, KubeRay) and exit.")
def serve_cmd(model_path, name, host, port, replicas, autoscale, provider, threads, max_batch, batch_wait_ms,
              max_tokens, max_body_mb, token_file, address, print_config) -> None:
    """Serve a model over HTTP (Open Inference Protocol / KServe v2) on Ray Serve."""
    import logging

    from vitexport.serve.config import AppArgs, Scaling, ServeOptions, config_yaml, parse_autoscale, with_absolute_paths
    from vitexport.serve.launch import deploy_to_cluster, ray_modules, serve_local

    name = name or Path(model_path).name.split(".")[0]
    if not MODEL_NAME_RE.match(name):
        raise click.BadParameter(f"{name!r} cannot be a model name in URLs; use letters, digits, '.', '_', '-'",
                                 param_hint="--name")
    if replicas and autoscale:
        raise click.BadParameter("pass --replicas or --autoscale, not both", param_hint="--autoscale")
    try:
        bounds = parse_autoscale(autoscale) if autoscale else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--autoscale") from None
    ray_modules()  # exit 2 with the install command before anything else
    app = AppArgs(model_path, name, provider, threads, max_batch, batch_wait_ms, max_tokens, max_body_mb, token_file)
    options = ServeOptions(app, Scaling(replicas or 1, bounds), host, port, address)
    if print_config:
        click.echo(config_yaml(with_absolute_paths(options)[0]), nl=False)
        return
    if not logging.getLogger("vitexport").isEnabledFor(logging.INFO):
        for noisy in ("ray", "ray.serve"):  # Ray's progress lines are not for this terminal
            logging.getLogger(noisy).setLevel(logging.WARNING)
    run = deploy_to_cluster if address else serve_local
    run(options, lambda started: _print_started(started, options))


def main() -> None:
    cli(prog_name="vitexport")


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["cli", "main", "parse_size"]
