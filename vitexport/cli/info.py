"""`vitexport info`: describe a checkpoint or an exported model."""

from __future__ import annotations

import json

import click

from vitexport.cli.app import cli
from vitexport.cli.options import SIZE, fmt_hw


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
        f"native size    {fmt_hw(img)}, patch {fmt_hw(info['patch_size'])}, grid {fmt_hw(info['native_grid'])}"
    )
    click.echo(
        f"prefix tokens  {prefix['total']} (class token: {'yes' if prefix['class'] else 'no'}, "
        f"registers: {prefix['registers']}); pos_embed rows: {info['pos_embed_rows']}"
    )
    click.echo(
        f"dynamic        img_size={cfg['dynamic_img_size']}, img_pad={cfg['dynamic_img_pad']}"
    )
    if info.get("head"):  # a release format: what the model's output is
        click.echo(f"output         {info['head']} head: equals {info['reference']} at the native size")
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
            f"size {fmt_hw(s['input_size'])}: padded {fmt_hw(s['padded_size'])}, grid {fmt_hw(s['grid'])}, "
            f"{s['num_patches']} patches, sequence length {s['seq_len']} "
            f"(pos-embed resampled {fmt_hw(s['resampled_from'])} -> {fmt_hw(s['grid'])})"
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
        click.echo(f"static size    {fmt_hw(meta['static_size'])}")
    click.echo(f"dtype          {meta.get('dtype')}")
    if info["kind"] == "onnx":  # exports before the portable form carry no "resample" key: they hold a Resize
        click.echo(f"resampling     {meta.get('resample', 'resize')}")
    click.echo(f"patch / grid   patch {fmt_hw(meta['patch_size'])}, native grid {fmt_hw(meta['native_grid'])}, "
               f"prefix tokens {meta['num_prefix_tokens']}")
    if meta.get("preprocess"):
        p = meta["preprocess"]
        click.echo(f"preprocess     scale {p.get('scale')}, mean {p.get('mean')}, std {p.get('std')}")
    if meta.get("labels"):
        click.echo(f"labels         {len(meta['labels'])}: {', '.join(meta['labels'][:10])}")
    click.echo(f"source sha256  {meta.get('source_sha256')}")
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    if source.get("head"):
        click.echo(f"source         {source.get('format')}: {source['head']} head, equals {source.get('reference')} "
                   "at the native size")
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
    from vitexport.serving.info import describe_file

    data = describe_file(model_path, config=config, use_ema=use_ema, sizes=sizes)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif data["kind"] == "checkpoint":
        _print_checkpoint_info(data)
    else:
        _print_artifact_info(data)
