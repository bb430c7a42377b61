"""`vitexport onnx`, `torchscript`, `quantize` and `presets`: make artifacts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vitexport.cli.app import cli, echo
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
from vitexport.model.names import DEFAULT_RESAMPLE, OUTPUTS, RESAMPLE_FORMS

if TYPE_CHECKING:
    from vitexport.export.artifact import ExportResult

INT8_ATOL, INT8_RTOL = TOLERANCES["int8-dynamic"]


OUTPUT_HELP = ("What the model returns: logits (the default with a head), features (the pooled embedding before the "
               "head: timm's forward_head(x, pre_logits=True)) or tokens (every token after the final norm: "
               "forward_features). A model without a head returns features.")


def _print_export(result, verify_command: str) -> None:
    echo(f"wrote          {result.path} ({result.bytes / 1e6:.2f} MB)")
    echo(f"output         {result.metadata.get('output')} {result.metadata.get('output_shape')} "
               f"({result.metadata.get('model_class')})")
    if result.external_data:
        echo(f"external data  {result.external_data}")
    if result.opset:
        echo(f"opset          {result.opset}")
    axes = result.io.to_json()
    echo("dynamic axes   " + (json.dumps(axes) if any(axes.values()) else "none (fixed shapes)"))
    if result.static_size:
        echo(f"static size    {fmt_hw(result.static_size)}")
    echo(f"dtype          {result.dtype}")
    echo(f"parameters     {result.parameters:,}")
    echo(f"checks         {'; '.join(result.checks)}")
    echo(f"export time    {result.seconds:.1f} s")
    random = result.metadata.get("random_weights")
    if random:
        echo(f"weights        random (seed {random['seed']}, preset {random['architecture']}), recorded in "
                   "the metadata: the architecture runs, its outputs mean nothing")
    if result.optimized:
        echo(f"attention      {result.metadata.get('attention')}")
        echo(f"verify         {verify_command} (weights were folded)")


def source_options(suffix: str) -> Callable[[Any], Any]:
    """CHECKPOINT (or --preset), -o/--out, --output, --config and --ema: the source and output options every
    export command takes, in this order; ``suffix`` is the artifact's (``.onnx``, ``.ts``)."""
    options = (
        click.argument("checkpoint", type=str, required=False),
        preset_options,
        click.option("-o", "--out", "out", type=str,
                     help=f"Output {suffix} path (default: beside the checkpoint; NAME{suffix} here with --preset)."),
        click.option("--output", "model_output", type=click.Choice(OUTPUTS), default=None, help=OUTPUT_HELP),
        click.option("--config", "config", type=str,
                     help="JSON file of timm keyword arguments (or a timm config.json), or the JSON object itself; "
                          "with --preset, overrides of its options."),
        click.option("--ema", "use_ema", is_flag=True, help="Use the EMA weights of a timm training checkpoint."),
    )

    def apply(fn: Any) -> Any:
        for option in reversed(options):  # as if stacked as decorators: the first is outermost
            fn = option(fn)
        return fn

    return apply


@cli.command("onnx")
@source_options(".onnx")
@click.option("--opset", type=int, default=None,
              help=f"ONNX opset (default {DEFAULT_OPSET}, where Resize runs on ORT's CUDA provider; "
                   f"{ATTENTION_MIN_OPSET['onnx']} with --attention onnx).")
@click.option("--dtype", type=click.Choice(EXPORT_DTYPES), default=DEFAULT_DTYPE, show_default=True)
@click.option("--batch-size", type=BatchType(), default="dynamic", show_default=True)
@click.option("--static", "static_size", type=SIZE, help="Export a fixed HxW graph instead of dynamic height/width.")
@click.option("--img-size", type=SIZE, help="Make HxW the model's native size first (set_input_size).")
@click.option("--attention", type=click.Choice(ATTENTION_CHOICES), default=None,
              help="chunked: standard ops, one block of queries at a time (default; memory linear in the tokens "
                   "on every runtime); sdpa: standard ops, whole score matrices (quadratic memory on ONNX "
                   f"Runtime); mha: ONNX Runtime's fused MultiHeadAttention, opset {ATTENTION_MIN_OPSET['mha']} "
                   f"(default with --optimize cpu); onnx: the Attention op, opset {ATTENTION_MIN_OPSET['onnx']}.")
@click.option("--optimize", type=click.Choice(OPTIMIZE_PROVIDERS), default=None,
              help="Write ONNX Runtime's offline-optimized graph for this provider (faster startup).")
@click.option("--resample", type=click.Choice(RESAMPLE_FORMS), default=DEFAULT_RESAMPLE, show_default=True,
              help="Positional-embedding resampling: portable (elementary ops, right on every runtime) or resize "
                   "(one antialiased Resize: ONNX Runtime and the ONNX reference only).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@limit_options
def onnx_cmd(checkpoint, preset, random_weights, out, model_output, config, use_ema, opset, dtype, batch_size,
             static_size, img_size, attention, optimize, resample, force, max_tokens, max_memory_gb) -> None:
    """Export a checkpoint (or a preset with random weights) to ONNX with dynamic batch, height and width."""
    check_source(checkpoint, preset, random_weights, "CHECKPOINT", ema=use_ema)
    options = dict(to="onnx", config=config, img_size=img_size, force=force, opset=opset, dtype=dtype,
                   batch_size=batch_size, static_size=static_size, attention=attention, optimize=optimize,
                   resample=resample, max_tokens=max_tokens, max_memory_gb=max_memory_gb, output=model_output)
    result = _export(checkpoint, preset, random_weights, out, use_ema, options)
    _print_export(result, command_line("verify", result.path, "--checkpoint", checkpoint,
                                       *(("--config", config) if config else ())) if checkpoint else "")


def _export(checkpoint: str | None, preset: str | None, random_weights: bool, out: str | None, use_ema: bool,
            options: dict) -> ExportResult:
    """`export_checkpoint` of the file, or `export_preset` of the preset (`check_source` decided which)."""
    from vitexport.export.pipeline import export_checkpoint, export_preset

    if preset is not None:
        return export_preset(preset, out, random_weights=random_weights, **options)
    return export_checkpoint(checkpoint, out, use_ema=use_ema, **options)


@cli.command("quantize")
@click.argument("model_path", metavar="MODEL", type=str)
@click.option("-o", "--out", "--output", "output", type=str,
              help="Output path (default: MODEL with .int8.onnx).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def quantize_cmd(model_path, output, force) -> None:
    """Dynamic int8 quantization of the MatMul weights for CPU inference (resampling stays float)."""
    from vitexport.export.optimize import quantize_onnx

    result = quantize_onnx(model_path, output, force=force)
    d = result.details
    source_mb = Path(model_path).stat().st_size / 1e6
    echo(f"wrote          {result.path} ({result.bytes / 1e6:.2f} MB, from {source_mb:.2f} MB)")
    if result.external_data:
        echo(f"external data  {result.external_data}")
    echo(f"scheme         {d['scheme']}")
    echo(f"quantized      {d['matmuls_quantized']} MatMul (weights int8)")
    echo(f"kept float     {d['matmuls_left_float']} MatMul without constant weights (attention scores, "
               "embedding resampling); "
               f"{', '.join(d['kept_float'])}")
    echo(f"verify         {command_line('verify', result.path, '--checkpoint', model_path)} "
               f"(against the float model's weights; int8 tolerance {INT8_ATOL:g} + {INT8_RTOL:g}*|ref|)")


@cli.command("torchscript")
@source_options(".ts")
@click.option("--img-size", type=SIZE, help="Make HxW the model's native size first (set_input_size).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@limit_options
def torchscript_cmd(checkpoint, preset, random_weights, out, model_output, config, use_ema, img_size, force,
                    max_tokens, max_memory_gb) -> None:
    """Export a checkpoint (or a preset with random weights) to TorchScript (torch.jit.script: shapes stay
    dynamic)."""
    check_source(checkpoint, preset, random_weights, "CHECKPOINT", ema=use_ema)
    options = dict(to="torchscript", config=config, img_size=img_size, force=force, max_tokens=max_tokens,
                   max_memory_gb=max_memory_gb, output=model_output)
    _print_export(_export(checkpoint, preset, random_weights, out, use_ema, options), "")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the presets as JSON (each a config: timm keyword "
                                                       "arguments, with model_class for the other classes).")
def presets(as_json: bool) -> None:
    """List the named architectures a checkpoint's `arch` or a config's `architecture` may use: timm's
    vision_transformer.py, eva.py, deit.py and naflexvit.py."""
    from vitexport.model.config import get_preset, preset_entry
    from vitexport.model.families import family_of, preset_names

    if as_json:
        entries = {name: preset_entry(name) for name in preset_names()}
        echo(json.dumps({name: args if kind == "vit" else {"model_class": kind, **args}
                         for name, (kind, args) in entries.items()}, indent=2), block=True)
        return
    for name in preset_names():
        cfg = get_preset(name)
        h, w = cfg.img_hw
        echo(
            f"{name:40s} {family_of(cfg):16s} img {h if h == w else fmt_hw((h, w))}  patch {cfg.patch_size}  "
            f"dim {cfg.embed_dim}  depth {cfg.depth}  heads {cfg.num_heads}  prefix {cfg.num_prefix_tokens}  "
            f"pool {cfg.global_pool or 'none'}"
        )
