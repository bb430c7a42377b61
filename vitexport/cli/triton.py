"""`vitexport triton`: write a Triton Inference Server model repository for an exported model."""

from __future__ import annotations

import click

from vitexport.cli.app import cli, echo
from vitexport.security.limits import DEFAULT_MAX_TOKENS
from vitexport.serving.defaults import DEFAULT_MAX_BATCH, TRITON_BACKENDS, TRITON_KINDS


@cli.command("triton")
@click.argument("model_path", metavar="MODEL.onnx", type=str)
@click.option("-o", "--output", "repository", required=True, type=str,
              help="The model repository (created if missing; other models in it are left alone).")
@click.option("--name", help="Model name in the repository and in URLs (default: the file's stem).")
@click.option("--backend", type=click.Choice(TRITON_BACKENDS), default="onnxruntime", show_default=True,
              help="onnxruntime: Triton runs the graph (GPU deployments); python: Triton's Python backend runs "
                   "vitexport's Predictor (pixel_values or encoded images, as `vitexport serve`).")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=DEFAULT_MAX_BATCH, show_default=True,
              help="Triton's max_batch_size (a fixed-batch export gets 0 on onnxruntime: Triton does not batch it).")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Model instances (instance_group count).")
@click.option("--kind", type=click.Choice(TRITON_KINDS), default="cpu", show_default=True,
              help="Where instances run: KIND_CPU or KIND_GPU (python: ONNX Runtime's CUDA provider).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=DEFAULT_MAX_TOKENS, show_default=True,
              help="python: refuse images with more patches than this (onnxruntime: Triton does not check).")
@click.option("--force", is_flag=True, help="Replace an existing model folder of that name.")
def triton_cmd(model_path, repository, name, backend, max_batch_size, instances, kind, max_tokens, force) -> None:
    """Write a Triton model repository (config.pbtxt, the model, labels) for an exported ONNX model."""
    from vitexport.serving.triton.repository import write_repository

    if backend != "python" and max_tokens != DEFAULT_MAX_TOKENS:
        raise click.BadParameter("Triton's ONNX Runtime backend runs the graph without vitexport's limits; "
                                 "--max-tokens applies to --backend python", param_hint="--max-tokens")
    written = write_repository(model_path, repository, name, backend, max_batch_size, instances, kind,
                               max_tokens, force)
    config = written.config
    echo(f"wrote     {written.model_dir} ({backend} backend, max_batch_size {config.max_batch_size}, "
               f"{instances} x KIND_{kind.upper()})")
    for path in written.files:
        echo(f"          {path}")
    inputs = ", ".join(f"{t.name} {_kserve_type(t.data_type)} {list(t.dims)}" for t in config.inputs)
    outputs = ", ".join(f"{t.name} {_kserve_type(t.data_type)} {list(t.dims)}" for t in config.outputs)
    echo(f"inputs    {inputs}" + ("  (send one)" if len(config.inputs) > 1 else ""))
    echo(f"outputs   {outputs}")
    echo(f"serve     tritonserver --model-repository {written.root.resolve()}")
    if backend == "python":
        echo("needs     vitexport in Triton's Python (pip install vitexport in the server's image)")


def _kserve_type(data_type: str) -> str:
    """Triton's config type as the protocol names it (TYPE_FP32 -> FP32, TYPE_STRING -> BYTES)."""
    return "BYTES" if data_type == "TYPE_STRING" else data_type.removeprefix("TYPE_")
