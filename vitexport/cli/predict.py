"""`vitexport predict`: classify images with an exported model."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from vitexport.cli.app import CliError, cli, echo
from vitexport.cli.options import ONE_ENGINE, fmt_hw, limit_options
from vitexport.engines import DEFAULT_PROVIDER
from vitexport.serving.defaults import DEFAULT_TOP_K

if TYPE_CHECKING:
    from vitexport.serving.predictor import FilePrediction, PredictReport


def _key(item: FilePrediction) -> str:
    """How a row names its image: the file, a tar file's member, a Parquet file's row."""
    if item.member is not None:
        return f"{item.path}:{item.member}"
    return item.path if item.row is None else f"{item.path}[{item.row}]"


def _row(item: FilePrediction) -> str:
    p = item.prediction
    if p is None:
        return f"{_key(item)}  error: {item.error}"
    if not p.top_k:
        return f"{_key(item)}  {fmt_hw(p.size)}  {p.kind} {tuple(p.output.shape)}"
    best = ", ".join(f"{t['label'] if t['label'] is not None else t['index']} {t['score']:.3f}" for t in p.top_k)
    return f"{_key(item)}  {fmt_hw(p.size)}  {best}"


def _verdict(report: PredictReport, strict: bool) -> None:
    """Exit 1 when no image gave a result (or, with --strict, when any failed); a note when some failed."""
    failed, total = len(report.failed), len(report.files)
    if report.ignored:
        files = "file" if report.ignored == 1 else "files"
        echo(f"note: {report.ignored} {files} without an image suffix ignored in the folders given", err=True)
    if not failed:
        return
    first = report.failed[0]
    if failed == total or strict:
        named = ", ".join(map(repr, report.sources[:3])) + (", ..." if len(report.sources) > 3 else "")
        what = f"no image of {named} gave a result" if failed == total else "--strict: some images gave no result"
        raise CliError(f"{what}: {failed} of {total} failed (first: {_key(first)}: {first.error})", 1)
    echo(f"note: {failed} of {total} images failed (rows with an error); --strict makes that exit 1",
               err=True)


@cli.command("predict")
@click.argument("model_path", metavar="MODEL", type=str)
@click.argument("sources", metavar="IMAGE|FOLDER|GLOB...", nargs=-1, required=True, type=str)
@click.option("--top-k", type=click.IntRange(min=1), default=DEFAULT_TOP_K, show_default=True)
@click.option("--provider", type=click.Choice(ONE_ENGINE), default=DEFAULT_PROVIDER,
              show_default=True, help="Engine: auto (ONNX Runtime's CUDA when usable, else cpu), cpu, cuda, tensorrt, "
                                      "openvino (CPU, f32) or reference (ONNX's reference evaluator: slow).")
@click.option("--strict", is_flag=True, help="Exit 1 when any image gives no result (default: only when none does).")
@limit_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array, one object per image.")
def predict_cmd(model_path, sources, top_k, provider, strict, max_tokens, max_memory_gb, as_json) -> None:
    """Classify images of any size with an exported ONNX model, on any engine.

    Takes image files, folders (walked recursively), globs ('data/**/*.jpg', quoted), text files listing image
    paths, tar shards and Parquet files, as `vitexport batch` does. An image that cannot be read or run is a
    row with its error; the others go on.
    """
    from vitexport.serving.predictor import predict_files

    def show(item: FilePrediction) -> None:
        echo(_row(item))

    report = predict_files(model_path, list(sources), provider=provider, top_k=top_k, max_tokens=max_tokens,
                           max_memory_gb=max_memory_gb, on_result=None if as_json else show)
    if report.provider_note and len(report.failed) < len(report.files):  # said where results were computed
        echo(f"note: {report.provider_note}", err=True)
    if as_json:
        echo(json.dumps(report.to_json()))
    _verdict(report, strict)
