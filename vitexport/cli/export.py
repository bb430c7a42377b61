"""`vitexport onnx`, `torchscript`, `quantize` and `presets`: make artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vitexport.cli.app import cli
from vitexport.cli.options import (
    SIZE,
    BatchType,
    check_source,
    command_line,
    fmt_hw,
    limit_options,
    preset_options,
)
from vitexport.export.attention import ATTENTION_CHOICES, ATTENTION_MIN_OPSET
from vitexport.export.defaults import (
    DEFAULT_DTYPE,
    DEFAULT_OPSET,
    EXPORT_DTYPES,
    OPTIMIZE_PROVIDERS,
    TOLERANCES,
)
from vitexport.model.names import DEFAULT_RESAMPLE, RESAMPLE_FORMS

if TYPE_CHECKING:
    from vitexport.export.artifact import ExportResult

INT8_ATOL, INT8_RTOL = TOLERANCES["int8-dynamic"]


def _print_export(result, verify_command: str) -> None:
    click.echo(f"wrote          {result.path} ({result.bytes / 1e6:.2f} MB)")
    if result.external_data:
        click.echo(f"external data  {result.external_data}")
    if result.opset:
        click.echo(f"opset          {result.opset}")
    axes = result.io.to_json()
    click.echo("dynamic axes   " + (json.dumps(axes) if any(axes.values()) else "none (fixed shapes)"))
    if result.static_size:
        click.echo(f"static size    {fmt_hw(result.static_size)}")
    click.echo(f"dtype          {result.dtype}")
    click.echo(f"parameters     {result.parameters:,}")
    click.echo(f"checks         {'; '.join(result.checks)}")
    click.echo(f"export time    {result.seconds:.1f} s")
    random = result.metadata.get("random_weights")
    if random:
        click.echo(f"weights        random (seed {random['seed']}, preset {random['architecture']}), recorded in "
                   "the metadata: the architecture runs, its outputs mean nothing")
    if result.optimized:
        click.echo(f"attention      {result.metadata.get('attention')}")
        click.echo(f"verify         {verify_command} (weights were folded)")



@cli.command("onnx")
@click.argument("checkpoint", type=str, required=False)
@preset_options
@click.option("-o", "--output", type=str, help="Output .onnx path (default: beside the checkpoint; NAME.onnx here).")
@click.option("--config", "config", type=str,
              help="JSON file of timm keyword arguments (or a timm config.json), or the JSON object itself; with "
                   "--preset, overrides of its options.")
@click.option("--ema", "use_ema", is_flag=True, help="Use the EMA weights of a timm training checkpoint.")
@click.option("--opset", type=int, default=None,
              help=f"ONNX opset (default {DEFAULT_OPSET}, where Resize runs on ORT's CUDA provider; "
                   f"{ATTENTION_MIN_OPSET['onnx']} with --attention onnx).")
@click.option("--dtype", type=click.Choice(EXPORT_DTYPES), default=DEFAULT_DTYPE, show_default=True)
@click.option("--batch-size", type=BatchType(), default="dynamic", show_default=True)
@click.option("--static", "static_size", type=SIZE, help="Export a fixed HxW graph instead of dynamic height/width.")
@click.option("--img-size", type=SIZE, help="Make HxW the model's native size first (set_input_size).")
@click.option("--attention", type=click.Choice(ATTENTION_CHOICES), default=None,
              help=f"sdpa: standard ops (default); mha: ONNX Runtime's fused MultiHeadAttention, opset "
                   f"{ATTENTION_MIN_OPSET['mha']} (default with --optimize cpu, measured faster there); onnx: the "
                   f"Attention op, opset {ATTENTION_MIN_OPSET['onnx']}.")
@click.option("--optimize", type=click.Choice(OPTIMIZE_PROVIDERS), default=None,
              help="Write ONNX Runtime's offline-optimized graph for this provider (faster startup).")
@click.option("--resample", type=click.Choice(RESAMPLE_FORMS), default=DEFAULT_RESAMPLE, show_default=True,
              help="Positional-embedding resampling: portable (elementary ops, right on every runtime) or resize "
                   "(one antialiased Resize: ONNX Runtime and the ONNX reference only).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@limit_options
def onnx_cmd(checkpoint, preset, random_weights, output, config, use_ema, opset, dtype, batch_size, static_size,
             img_size, attention, optimize, resample, force, max_tokens, max_memory_gb) -> None:
    """Export a checkpoint (or a preset with random weights) to ONNX with dynamic batch, height and width."""
    check_source(checkpoint, preset, random_weights, "CHECKPOINT", ema=use_ema)
    options = dict(to="onnx", config=config, img_size=img_size, force=force, opset=opset, dtype=dtype,
                   batch_size=batch_size, static_size=static_size, attention=attention, optimize=optimize,
                   resample=resample, max_tokens=max_tokens, max_memory_gb=max_memory_gb)
    result = _export(checkpoint, preset, random_weights, output, use_ema, options)
    _print_export(result, command_line("verify", result.path, "--checkpoint", checkpoint,
                                       *(("--config", config) if config else ())) if checkpoint else "")


def _export(checkpoint: str | None, preset: str | None, random_weights: bool, output: str | None, use_ema: bool,
            options: dict) -> ExportResult:
    """`export_checkpoint` of the file, or `export_preset` of the preset (`check_source` decided which)."""
    from vitexport.export.pipeline import export_checkpoint, export_preset

    if preset is not None:
        return export_preset(preset, output, random_weights=random_weights, **options)
    return export_checkpoint(checkpoint, output, use_ema=use_ema, **options)


@cli.command("quantize")
@click.argument("model_path", metavar="MODEL", type=str)
@click.option("-o", "--output", type=str, help="Output path (default: MODEL with .int8.onnx).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def quantize_cmd(model_path, output, force) -> None:
    """Dynamic int8 quantization of the MatMul weights for CPU inference (resampling stays float)."""
    from vitexport.export.optimize import quantize_onnx

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
    click.echo(f"verify         {command_line('verify', result.path, '--checkpoint', model_path)} "
               f"(against the float model's weights; int8 tolerance {INT8_ATOL:g} + {INT8_RTOL:g}*|ref|)")


@cli.command("torchscript")
@click.argument("checkpoint", type=str, required=False)
@preset_options
@click.option("-o", "--output", type=str, help="Output .ts path (default: beside the checkpoint; NAME.ts here).")
@click.option("--config", "config", type=str,
              help="JSON file of timm keyword arguments (or a timm config.json), or the JSON object itself; with "
                   "--preset, overrides of its options.")
@click.option("--ema", "use_ema", is_flag=True, help="Use the EMA weights of a timm training checkpoint.")
@click.option("--img-size", type=SIZE, help="Make HxW the model's native size first (set_input_size).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@limit_options
def torchscript_cmd(checkpoint, preset, random_weights, output, config, use_ema, img_size, force, max_tokens,
                    max_memory_gb) -> None:
    """Export a checkpoint (or a preset with random weights) to TorchScript (torch.jit.script: shapes stay
    dynamic)."""
    check_source(checkpoint, preset, random_weights, "CHECKPOINT", ema=use_ema)
    options = dict(to="torchscript", config=config, img_size=img_size, force=force, max_tokens=max_tokens,
                   max_memory_gb=max_memory_gb)
    _print_export(_export(checkpoint, preset, random_weights, output, use_ema, options), "")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the presets as JSON.")
def presets(as_json: bool) -> None:
    """List the named architectures a checkpoint's `arch` or a config's `architecture` may use."""
    from vitexport.model.families import family_of
    from vitexport.model.presets import PRESETS

    if as_json:
        click.echo(json.dumps(PRESETS, indent=2))
        return
    for name, args in PRESETS.items():
        img = args["img_size"]
        click.echo(
            f"{name:40s} {family_of(args):16s} img {img if isinstance(img, int) else fmt_hw(img)}  "
            f"patch {args['patch_size']}  "
            f"dim {args['embed_dim']}  depth {args['depth']}  heads {args['num_heads']}  "
            f"registers {args['reg_tokens']}  pool {args['global_pool'] or 'none'}"
        )
