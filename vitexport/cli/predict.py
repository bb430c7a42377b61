"""`vitexport predict`: classify images with an exported model."""

from __future__ import annotations

import json

import click

from vitexport.cli.app import cli
from vitexport.cli.options import ONE_ENGINE, fmt_hw, limit_options
from vitexport.engines import DEFAULT_PROVIDER
from vitexport.serving.defaults import DEFAULT_TOP_K


@cli.command("predict")
@click.argument("model_path", metavar="MODEL", type=str)
@click.argument("images", nargs=-1, required=True, type=str)
@click.option("--top-k", type=click.IntRange(min=1), default=DEFAULT_TOP_K, show_default=True)
@click.option("--provider", type=click.Choice(ONE_ENGINE), default=DEFAULT_PROVIDER,
              show_default=True, help="Engine: auto (ONNX Runtime's CUDA when usable, else cpu), cpu, cuda, tensorrt, "
                                      "openvino (CPU, f32) or reference (ONNX's reference evaluator: slow).")
@limit_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array, one object per image.")
def predict_cmd(model_path, images, top_k, provider, max_tokens, max_memory_gb, as_json) -> None:
    """Classify images of any size with an exported ONNX model, on any engine."""
    from vitexport.serving.predictor import predict_files

    report = predict_files(model_path, list(images), provider=provider, top_k=top_k, max_tokens=max_tokens,
                           max_memory_gb=max_memory_gb)
    if report.provider_note:
        click.echo(f"note: {report.provider_note}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    for item in report.files:
        p = item.prediction
        if not p.top_k:
            click.echo(f"{item.path}  {fmt_hw(p.size)}  {p.kind} {tuple(p.output.shape)}")
            continue
        best = ", ".join(f"{t['label'] if t['label'] is not None else t['index']} {t['score']:.3f}" for t in p.top_k)
        click.echo(f"{item.path}  {fmt_hw(p.size)}  {best}")
