"""The `vitexport` command line: parse, call one library function, format, map errors.

Library errors become one-line messages here and only here; exit codes follow
DESIGN.md: 0 success, 1 the work failed, 2 usage or environment.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import click

from vitexport import __version__
from vitexport.errors import VitexportError

SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$")


class CliError(click.ClickException):
    """A one-line error with the exit code of the library error behind it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class VitexportGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VitexportError as exc:
            if ctx.params.get("debug"):
                raise
            raise CliError(str(exc), exc.exit_code) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except MemoryError as exc:
            raise CliError("out of memory; use smaller inputs or batch sizes", 1) from exc
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            text = " ".join(str(exc).split())[:300]
            raise CliError(
                f"unexpected {type(exc).__name__}: {text}; rerun with --debug for the traceback and report it", 1
            ) from exc


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


@click.group(cls=VitexportGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="vitexport")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Show informational logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Export dynamic-pad Vision Transformers to ONNX/TorchScript, verify and serve them."""
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


def _checkpoint_info(path: str, config: str | None, use_ema: bool, sizes: tuple[tuple[int, int], ...]) -> dict:
    from vitexport.checkpoint import check_state_dict, describe_checkpoint, read_checkpoint
    from vitexport.model import VisionTransformer, count_parameters, infer_grid

    ckpt = read_checkpoint(path, config=config, use_ema=use_ema)
    model = VisionTransformer(ckpt.config)
    check_state_dict(model, ckpt.state_dict, repr(str(ckpt.path)))
    cfg = ckpt.config
    info = describe_checkpoint(ckpt)
    info.update(
        kind="checkpoint",
        config=cfg.to_dict(),
        parameters=count_parameters(model),
        patch_size=list(cfg.patch_hw),
        native_grid=list(cfg.grid_size),
        prefix_tokens={"class": int(cfg.class_token), "registers": cfg.reg_tokens, "total": cfg.num_prefix_tokens},
        pos_embed_rows=int(ckpt.state_dict["pos_embed"].shape[1]),
        sizes=[infer_grid(model, h, w) for h, w in sizes],
    )
    return info


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
    for s in info["sizes"]:
        click.echo(
            f"size {_fmt_hw(s['input_size'])}: padded {_fmt_hw(s['padded_size'])}, grid {_fmt_hw(s['grid'])}, "
            f"{s['num_patches']} patches, sequence length {s['seq_len']} "
            f"(pos-embed resampled {_fmt_hw(s['resampled_from'])} -> {_fmt_hw(s['grid'])})"
        )


def _artifact_info(path: str) -> dict | None:
    """Info on an exported .onnx or TorchScript file; None when ``path`` is neither."""
    from vitexport.export import is_torchscript, read_torchscript_metadata

    p = Path(path)
    if p.suffix == ".onnx":
        from vitexport.graph import inspect_graph, load_onnx

        report = inspect_graph(load_onnx(p), str(p))
        return {
            "kind": "onnx",
            "path": str(p),
            "bytes": p.stat().st_size + sum((p.parent / f).stat().st_size for f in report.external_data),
            "opset": report.opset,
            "inputs": report.inputs,
            "outputs": report.outputs,
            "external_data": report.external_data,
            "op_counts": dict(sorted(report.op_counts.items(), key=lambda kv: -kv[1])),
            "resize": report.resize,
            "metadata": report.metadata,
        }
    if p.is_file() and is_torchscript(p):
        return {"kind": "torchscript", "path": str(p), "bytes": p.stat().st_size,
                "metadata": read_torchscript_metadata(p)}
    return None


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
    click.echo(f"patch / grid   patch {_fmt_hw(meta['patch_size'])}, native grid {_fmt_hw(meta['native_grid'])}, "
               f"prefix tokens {meta['num_prefix_tokens']}")
    if meta.get("preprocess"):
        p = meta["preprocess"]
        click.echo(f"preprocess     scale {p.get('scale')}, mean {p.get('mean')}, std {p.get('std')}")
    if meta.get("labels"):
        click.echo(f"labels         {len(meta['labels'])}: {', '.join(meta['labels'][:10])}")
    click.echo(f"source sha256  {meta.get('source_sha256')}")
    click.echo("config         " + json.dumps(meta.get("config")))


@cli.command()
@click.argument("model_path", metavar="CHECKPOINT|MODEL", type=click.Path(dir_okay=True, path_type=str))
@click.option("--config", "config", type=str, help="JSON file of timm keyword arguments (or a timm config.json).")
@click.option("--ema", "use_ema", is_flag=True, help="Use the EMA weights of a timm training checkpoint.")
@click.option("--size", "sizes", type=SIZE, multiple=True, help="Show padding, grid and sequence length for HxW.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(model_path: str, config: str | None, use_ema: bool, sizes: tuple, as_json: bool) -> None:
    """Describe a checkpoint, or an exported .onnx / TorchScript model."""
    data = _artifact_info(model_path)
    if data is None:
        data = _checkpoint_info(model_path, config, use_ema, sizes)
        printer = _print_checkpoint_info
    else:
        printer = _print_artifact_info
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        printer(data)


def _load_for_export(checkpoint: str, config: str | None, use_ema: bool, img_size: tuple[int, int] | None):
    from vitexport.checkpoint import load_model

    model = load_model(checkpoint, config=config, use_ema=use_ema)
    if img_size is not None:
        model.set_input_size(img_size)
    return model


def _default_output(checkpoint: str, suffix: str) -> Path:
    p = Path(checkpoint)
    stem = p.name.split(".")[0] if p.is_file() else p.name  # a hub folder exports beside itself
    return p.parent / f"{stem}{suffix}"


def _print_export(result) -> None:
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
@click.option("--config", "config", type=str, help="JSON file of timm keyword arguments (or a timm config.json).")
@click.option("--ema", "use_ema", is_flag=True, help="Use the EMA weights of a timm training checkpoint.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 18: Resize runs on ORT's CUDA provider).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--batch-size", type=BatchType(), default="dynamic", show_default=True)
@click.option("--static", "static_size", type=SIZE, help="Export a fixed HxW graph instead of dynamic height/width.")
@click.option("--img-size", type=SIZE, help="Make HxW the model's native size first (set_input_size).")
@click.option("--attention", type=click.Choice(["sdpa", "mha", "onnx"]), default=None,
              help="sdpa: standard ops (default); mha: ONNX Runtime's fused MultiHeadAttention, opset 18 "
                   "(default with --optimize cpu, measured faster there); onnx: the Attention op, opset 23.")
@click.option("--optimize", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Write ONNX Runtime's offline-optimized graph for this provider (faster startup).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def onnx_cmd(checkpoint, output, config, use_ema, opset, dtype, batch_size, static_size, img_size, attention,
             optimize, force) -> None:
    """Export a checkpoint to ONNX with dynamic batch, height and width."""
    import tempfile

    from vitexport.attention import ATTENTION_MIN_OPSET
    from vitexport.export import export_onnx
    from vitexport.spec import DEFAULT_OPSET

    out = Path(output) if output else _default_output(checkpoint, ".onnx")
    if out.exists() and not force:  # refuse before the (slow) load and export
        raise CliError(f"output {str(out)!r} exists; pass --force to replace it", 2)
    attention = attention or ("mha" if optimize == "cpu" else "sdpa")
    model = _load_for_export(checkpoint, config, use_ema, img_size)
    kwargs = dict(opset=opset or max(DEFAULT_OPSET, ATTENTION_MIN_OPSET[attention]), dtype=dtype,
                  batch_size=batch_size, static_size=static_size, attention=attention)
    if optimize is None:
        _print_export(export_onnx(model, out, force=force, **kwargs))
        return
    from vitexport.optimize import optimize_onnx, session_startup_seconds

    with tempfile.TemporaryDirectory() as folder:
        plain = Path(folder) / "plain.onnx"
        result = export_onnx(model, plain, **kwargs)
        opt = optimize_onnx(plain, out, provider=optimize, force=force)
        before, after = session_startup_seconds(plain, optimize), session_startup_seconds(out, optimize)
    result.path, result.bytes = out, opt.bytes
    result.checks.append(
        f"ONNX Runtime {optimize} optimization (extended): {opt.details['nodes_before']} -> "
        f"{opt.details['nodes_after']} nodes, session start {before * 1e3:.0f} -> {after * 1e3:.0f} ms"
    )
    _print_export(result)
    click.echo(f"attention      {attention}; verify this file with --checkpoint (weights were folded)")


@cli.command("quantize")
@click.argument("model_path", metavar="MODEL", type=str)
@click.option("-o", "--output", type=str, help="Output path (default: MODEL with .int8.onnx).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def quantize_cmd(model_path, output, force) -> None:
    """Dynamic int8 quantization of the MatMul weights for CPU inference (resampling stays float)."""
    from vitexport.optimize import quantize_onnx

    out = Path(output) if output else Path(model_path).with_suffix(".int8.onnx")
    if out.exists() and not force:
        raise CliError(f"output {str(out)!r} exists; pass --force to replace it", 2)
    result = quantize_onnx(model_path, out, force=force)
    d = result.details
    source_mb = Path(model_path).stat().st_size / 1e6
    click.echo(f"wrote          {out} ({result.bytes / 1e6:.2f} MB, from {source_mb:.2f} MB)")
    click.echo(f"scheme         {d['scheme']}")
    click.echo(f"quantized      {d['matmuls_quantized']} MatMul (weights int8)")
    click.echo(f"kept float     {d['matmuls_left_float']} MatMul without constant weights (attention scores); "
               f"{', '.join(d['kept_float'])}")
    click.echo("verify         vitexport verify OUT --checkpoint CHECKPOINT (int8 tolerance 0.1 + 0.05*|ref|)")


@cli.command("torchscript")
@click.argument("checkpoint", type=str)
@click.option("-o", "--output", type=str, help="Output .ts path (default: beside the checkpoint).")
@click.option("--config", "config", type=str, help="JSON file of timm keyword arguments (or a timm config.json).")
@click.option("--ema", "use_ema", is_flag=True, help="Use the EMA weights of a timm training checkpoint.")
@click.option("--img-size", type=SIZE, help="Make HxW the model's native size first (set_input_size).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def torchscript_cmd(checkpoint, output, config, use_ema, img_size, force) -> None:
    """Export a checkpoint to TorchScript (torch.jit.script: shapes stay dynamic)."""
    from vitexport.export import export_torchscript

    out = Path(output) if output else _default_output(checkpoint, ".ts")
    if out.exists() and not force:
        raise CliError(f"output {str(out)!r} exists; pass --force to replace it", 2)
    model = _load_for_export(checkpoint, config, use_ema, img_size)
    _print_export(export_torchscript(model, out, force=force))


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
    line = (f"{status} {c.provider:6s} {c.height:>4d}x{c.width:<4d} b{c.batch:<2d} {c.input_kind[:5]:5s} "
            f"pad {_fmt_hw(c.padded_size):>9s} grid {_fmt_hw(c.grid):>6s} seq {c.seq_len:>5d}  "
            f"max|d| {_fmt_err(c.max_abs)}  rel {_fmt_err(c.max_rel)}  cos {cos:.6f}"
            f"  top1 {top1}  ort {rt} ms  torch {pt} ms")
    if c.nonfinite:
        line += "  NaN/Inf"
    if c.error:
        line += f"  error: {c.error}"
    return line


@cli.command("verify")
@click.argument("model_path", metavar="MODEL", type=str)
@click.option("--checkpoint", type=str, help="Reference from the original checkpoint (also catches changed weights).")
@click.option("--config", "config", type=str, help="JSON config for --checkpoint.")
@click.option("--provider", type=click.Choice(["auto", "cuda", "cpu", "tensorrt", "all"]), default="auto",
              show_default=True)
@click.option("--sizes", callback=_parse_sizes, help="Comma-separated HxW list (default: a sweep from the model).")
@click.option("--batch-sizes", default="1,3", show_default=True, callback=_parse_batches)
@click.option("--atol", type=float, help="Absolute tolerance (default by dtype: fp32 2e-5, fp16 5e-3).")
@click.option("--rtol", type=float, help="Relative tolerance (default by dtype: fp32 1e-4, fp16 1e-2).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=str, help="Write the report as JSON (schema: docs/verify-report.md).")
@click.option("--plot", "plot_path", type=str, help="Write a heatmap PNG of max error over heights x widths.")
@click.option("--force", is_flag=True, help="Replace existing --json/--plot files.")
@click.pass_context
def verify_cmd(ctx, model_path, checkpoint, config, provider, sizes, batch_sizes, atol, rtol, seed, json_path,
               plot_path, force) -> None:
    """Prove ONNX Runtime (or TorchScript) matches PyTorch at many resolutions; exit 1 on any mismatch."""
    from vitexport.verify import verify

    for target in (json_path, plot_path):
        if target and Path(target).exists() and not force:
            raise CliError(f"output {target!r} exists; pass --force to replace it", 2)
    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib; pip install 'vitexport[plot]'", 2) from None

    def progress(case, done: int, total: int) -> None:
        click.echo(f"[{done:>3d}/{total}] {_case_line(case)}")

    report = verify(model_path, checkpoint=checkpoint, config=config, provider=provider, sizes=sizes,
                    batch_sizes=batch_sizes, atol=atol, rtol=rtol, seed=seed, progress=progress,
                    debug=ctx.obj.get("debug", False))
    click.echo("")
    click.echo(f"model          {report.model} ({report.format}, {report.dtype}); reference: {report.reference}")
    for s in report.sessions:
        click.echo(f"session        {s['name']}: requested {s['requested']}, running on {', '.join(s['providers'])}"
                   + (f"; placement {s['placement']}" if s.get("placement") else ""))
        for w in s.get("warnings", []):
            click.echo(f"warning        {w}")
    for skipped in report.skipped_providers:
        click.echo(f"skipped        {skipped}")
    for note in report.static_notes:
        click.echo(f"note           {note}")
    for problem in report.static_problems:
        click.echo(f"static check   FAIL {problem}")
    if not report.static_problems:
        click.echo("static checks  ok (dynamic axes, Resize attributes, Pad)" if report.format == "onnx"
                   else "static checks  n/a for TorchScript")
    if report.weight_diff:
        worst = sorted(report.weight_diff.items(), key=lambda kv: -kv[1])[:5]
        click.echo("weights        differ from the checkpoint: " + ", ".join(f"{k} {v:.3g}" for k, v in worst))
    for x in report.cross_provider:
        if not x["passed"]:
            click.echo(f"cross-provider FAIL {x['height']}x{x['width']} b{x['batch']} {x['providers']}: "
                       f"max|d| {x['max_abs']:.2e}")
    fails = report.failures
    worst = max((c.max_abs or 0 for c in report.cases if c.max_abs is not None), default=0.0)
    click.echo(f"tolerance      |d| <= {report.atol:g} + {report.rtol:g}*|ref|; worst max|d| {worst:.2e}")
    if json_path:
        from vitexport.checkpoint import atomic_output

        with atomic_output(json_path, force=True) as tmp:
            tmp.write_text(json.dumps(report.to_json(), indent=2, default=str))
        click.echo(f"report         {json_path}")
    if plot_path:
        from vitexport.config import ViTConfig
        from vitexport.plot import heatmap_sizes, render_heatmap

        cfg = ViTConfig.from_dict(report.config)
        heights, widths = heatmap_sizes(cfg.img_hw, cfg.patch_hw)
        click.echo(f"plot           sweeping {len(heights)}x{len(widths)} sizes for the heatmap ...")
        grid_report = verify(model_path, checkpoint=checkpoint, config=config, provider=report.sessions[0]["name"]
                             if report.format == "onnx" and report.sessions else provider,
                             sizes=[(h, w) for h in heights for w in widths], batch_sizes=(1,), atol=report.atol,
                             rtol=report.rtol, seed=seed)
        render_heatmap(grid_report, plot_path, heights, widths)
        click.echo(f"plot           {plot_path}")
    verdict = "PASSED" if report.passed else "FAILED"
    passed = len(report.cases) - len(fails)
    click.echo(f"{verdict}         {passed}/{len(report.cases)} cases in {report.seconds:.1f} s")
    if not report.passed:
        where = ", ".join(dict.fromkeys(f"{c.height}x{c.width}" for c in fails))
        where = where if len(where) < 120 else where[:117] + "..."
        reason = "static checks failed" if report.static_problems and not fails else f"mismatch at {where}"
        raise CliError(f"verification failed: {reason}; see the table above", 1)


def _read_image(path: str):
    from PIL import Image, UnidentifiedImageError

    from vitexport.errors import InputError

    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise InputError(f"image {path!r} does not exist; check the path") from None
    except IsADirectoryError:
        raise InputError(f"image {path!r} is a directory; pass image files") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(
            f"cannot read image {path!r} ({type(exc).__name__}); pass a PNG, JPEG or other Pillow format"
        ) from exc


@cli.command("predict")
@click.argument("model_path", metavar="MODEL", type=str)
@click.argument("images", nargs=-1, required=True, type=str)
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--provider", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Refuse images with more patches than this (attention memory grows with its square).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array, one object per image.")
def predict_cmd(model_path, images, top_k, provider, max_tokens, as_json) -> None:
    """Classify images of any size with an exported ONNX model."""
    from vitexport.runtime import Predictor

    decoded = [_read_image(p) for p in images]  # unreadable files fail before any model work
    predictor = Predictor(model_path, provider=provider, top_k=top_k, max_tokens=max_tokens)
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
@click.option("--provider", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads for ONNX Runtime (and torch).")
@click.option("--compare-torch", is_flag=True, help="Also time PyTorch eager, interleaved, and print the ratio.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_cmd(model_path, sizes, batch_sizes, provider, warmup, iters, threads, compare_torch, as_json) -> None:
    """Median and p90 latency and images/s per size and batch with ONNX Runtime."""
    from vitexport.bench import bench
    from vitexport.runtime import Predictor

    if sizes is None:
        meta = Predictor(model_path, provider="cpu").metadata
        if meta.get("static_size"):
            sizes = [tuple(meta["static_size"])]
        else:
            cfg = meta["config"]
            img = cfg["img_size"] if isinstance(cfg["img_size"], list) else [cfg["img_size"]] * 2
            ph = meta["patch_size"][0]
            sizes = [(img[0], img[1]), (img[0] + ph // 2 + 1, 2 * img[1] - 3), (max(1, img[0] // 2) + 1, img[1] + 7)]

    def progress(text: str) -> None:
        if not as_json and sys.stderr.isatty():
            click.echo(f"\r{text:40s}", nl=False, err=True)

    report = bench(model_path, sizes, batch_sizes, provider=provider, warmup=warmup, iters=iters,
                   compare_torch=compare_torch, threads=threads, progress=progress)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    if sys.stderr.isatty():
        click.echo("\r" + " " * 40 + "\r", nl=False, err=True)
    click.echo(f"model {report.model} on {', '.join(report.providers)}; {warmup} warm-up + {iters} timed runs per case")
    head = f"{'size':>9s} {'batch':>5s} {'ORT median ms':>14s} {'p90 ms':>8s} {'images/s':>9s}"
    if compare_torch:
        head += f" {'torch median ms':>16s} {'p90 ms':>8s} {'images/s':>9s} {'ORT speed-up':>13s}"
    click.echo(head)
    for c in report.cases:
        line = (f"{_fmt_hw((c.height, c.width)):>9s} {c.batch:>5d} {c.runtime_median_ms:>14.2f} "
                f"{c.runtime_p90_ms:>8.2f} {c.runtime_images_per_s:>9.1f}")
        if c.torch_median_ms is not None:
            line += (f" {c.torch_median_ms:>16.2f} {c.torch_p90_ms:>8.2f} {c.torch_images_per_s:>9.1f} "
                     f"{c.speedup_vs_torch:>12.2f}x")
        click.echo(line)


def main() -> None:
    cli(prog_name="vitexport")


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["cli", "main", "parse_size"]
