"""`vitexport predict`: classify images with an exported model."""

from __future__ import annotations

import json

import click

from vitexport.cli.app import cli
from vitexport.cli.options import ONE_ENGINE, fmt_hw, limit_options


@cli.command("predict")
@click.argument("model_path", metavar="MODEL", type=str)
@click.argument("images", nargs=-1, required=True, type=str)
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--provider", type=click.Choice(ONE_ENGINE), default="auto",
              show_default=True, help="Engine: auto (ONNX Runtime's CUDA when usable, else cpu), cpu, cuda, tensorrt, "
                                      "openvino (CPU, f32) or reference (ONNX's reference evaluator: slow).")
@limit_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array, one object per image.")
def predict_cmd(model_path, images, top_k, provider, max_tokens, max_memory_gb, as_json) -> None:
    """Classify images of any size with an exported ONNX model, on any engine."""
    from vitexport.security.images import image_size, read_image
    from vitexport.serving.predictor import Predictor

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
            click.echo(f"{path}  {fmt_hw(p.size)}  features {tuple(p.output.shape)}")
            continue
        best = ", ".join(f"{t['label'] if t['label'] is not None else t['index']} {t['score']:.3f}" for t in p.top_k)
        click.echo(f"{path}  {fmt_hw(p.size)}  {best}")
