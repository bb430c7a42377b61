"""`vitexport info`: describe a checkpoint or an exported model (`vitexport.serving.info`'s typed results)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from vitexport.cli.app import cli, echo
from vitexport.cli.options import SIZE, fmt_hw

if TYPE_CHECKING:
    from vitexport.serving.info import ArtifactInfo, CheckpointInfo, OnnxGraphInfo, SizeGeometry


def _print_preprocess_and_labels(preprocess: dict | None, labels: list[str] | None, count_first: bool) -> None:
    if preprocess:
        p = preprocess
        echo(f"preprocess     scale {p.get('scale')}, mean {p.get('mean')}, std {p.get('std')}")
    if labels and count_first:  # an exported model: how many, then the first ten
        echo(f"labels         {len(labels)}: {', '.join(labels[:10])}")
    elif labels:
        shown = ", ".join(labels[:10]) + (f", ... ({len(labels)})" if len(labels) > 10 else "")
        echo(f"labels         {shown}")


def _print_checkpoint_info(info: CheckpointInfo) -> None:
    cfg, prefix = info.config, info.prefix_tokens
    echo(f"checkpoint     {info.path}")
    echo(f"format         {info.format} (config from {info.config_source})")
    echo(f"sha256         {info.sha256}")
    if cfg.get("architecture"):
        echo(f"architecture   {cfg['architecture']}")
    echo(f"parameters     {info.parameters:,}")
    echo(f"native size    {fmt_hw(info.img_size)}, patch {fmt_hw(info.patch_size)}, "
               f"grid {fmt_hw(info.native_grid)}")
    echo(f"prefix tokens  {prefix.total} (class token: {'yes' if prefix.class_token else 'no'}, "
               f"registers: {prefix.registers}); pos_embed rows: {info.pos_embed_rows}")
    echo(f"dynamic        img_size={cfg['dynamic_img_size']}, img_pad={cfg['dynamic_img_pad']}")
    if info.head:  # a release format: what the model's output is
        echo(f"output         {info.head} head: equals {info.reference} at the native size")
    _print_preprocess_and_labels(info.preprocess, info.labels, count_first=False)
    for note in info.notes:
        echo(f"note           {note}")
    echo("config         " + json.dumps({k: v for k, v in cfg.items() if k != "architecture"}))
    _print_sizes(info.sizes)


def _print_sizes(sizes: list[SizeGeometry] | None) -> None:
    for s in sizes or []:
        echo(
            f"size {fmt_hw(s.input_size)}: padded {fmt_hw(s.padded_size)}, grid {fmt_hw(s.grid)}, "
            f"{s.num_patches} patches, sequence length {s.seq_len} "
            f"(pos-embed resampled {fmt_hw(s.resampled_from)} -> {fmt_hw(s.grid)})"
        )


def _print_graph(graph: OnnxGraphInfo) -> None:
    echo(f"opset          {graph.opset}")
    for name, dims in {**graph.inputs, **graph.outputs}.items():
        echo(f"tensor         {name} [{', '.join(str(d) for d in dims)}]")
    if graph.external_data:
        echo(f"external data  {', '.join(graph.external_data)}")
    ops = ", ".join(f"{k} {v}" for k, v in graph.op_counts.items())
    echo(f"ops            {graph.nodes} nodes: {ops}")


def _random_text(random: dict) -> str:
    """How an artifact with random weights says so (`vitexport onnx --preset NAME --random-weights`)."""
    return (f"random (seed {random.get('seed')}, preset {random.get('architecture')}): the architecture runs, "
            "its outputs mean nothing")


def _print_artifact_info(info: ArtifactInfo) -> None:
    meta = info.metadata
    echo(f"{info.kind:14s} {info.path} ({info.bytes / 1e6:.2f} MB)")
    if info.graph is not None:
        _print_graph(info.graph)
    if not meta:
        echo("metadata       none (not exported by vitexport)")
        return
    echo(f"exported by    vitexport {meta.get('version')} (torch {meta.get('torch_version')}, "
               f"onnx {meta.get('onnx_version')}, onnxscript {meta.get('onnxscript_version')})")
    echo(f"dynamic axes   {json.dumps(meta.get('dynamic_axes'))}")
    if meta.get("static_size"):
        echo(f"static size    {fmt_hw(meta['static_size'])}")
    echo(f"dtype          {meta.get('dtype')}")
    if info.graph is not None:  # exports before the portable form carry no "resample" key: they hold a Resize
        echo(f"resampling     {meta.get('resample', 'resize')}")
    echo(f"patch / grid   patch {fmt_hw(meta['patch_size'])}, native grid {fmt_hw(meta['native_grid'])}, "
               f"prefix tokens {meta['num_prefix_tokens']}")
    _print_preprocess_and_labels(meta.get("preprocess"), meta.get("labels"), count_first=True)
    echo(f"source sha256  {meta.get('source_sha256') or 'none (not exported from a file)'}")
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    # what the checkpoint's own output (its head's, or the pooled features without one) equals; not for another output
    same_output = meta.get("output", "logits") == ("features" if source.get("head") == "none" else "logits")
    if source.get("head") and same_output:
        echo(f"source         {source.get('format')}: {source['head']} head, equals {source.get('reference')} "
                   "at the native size")
    if meta.get("random_weights"):
        echo(f"weights        {_random_text(meta['random_weights'])}")
    echo("config         " + json.dumps(meta.get("config")))
    _print_sizes(info.sizes)


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

    described = describe_file(model_path, config=config, use_ema=use_ema, sizes=sizes)
    if as_json:
        echo(json.dumps(described.to_json(), indent=2), block=True)
    elif described.kind == "checkpoint":
        _print_checkpoint_info(described)
    else:
        _print_artifact_info(described)
