"""ONNX export with dynamic batch, height and width: trace, write, check; nothing else.

The ONNX graph comes from ``torch.onnx.export(dynamo=True)`` (the only exporter that
emits antialiased bicubic Resize), traced from a non-native, non-square example so
that padding and resampling stay in the graph. Every graph is checked before it is
written; a failing graph never replaces anything. ONNX Runtime's offline optimization of the
result is a separate step (`vitexport.export.pipeline.export_optimized`).
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitexport import __version__
from vitexport._util.errors import ExportError, one_line
from vitexport._util.files import check_output, staged_output
from vitexport.export.artifact import (
    TORCH_DTYPES,
    ExportResult,
    artifact_metadata,
    choose_output,
    default_example_size,
    prepared_model,
)
from vitexport.export.attention import translation_table
from vitexport.export.defaults import DEFAULT_DTYPE
from vitexport.export.options import ExportOptions
from vitexport.model.names import DEFAULT_RESAMPLE, model_resample_form
from vitexport.model.vit import count_parameters
from vitexport.onnx.graph import check_graph, check_summary, inspect_graph, load_onnx
from vitexport.onnx.spec import IOSpec, encode_metadata, io_spec
from vitexport.security.limits import DEFAULT_MAX_MEMORY_GB, DEFAULT_MAX_TOKENS, Limits
from vitexport.security.limits import check as check_limits

logger = logging.getLogger(__name__)

TWO_GB = 2 * 1024**3


@dataclass(frozen=True)
class _Plan:
    """What one ONNX export traces: interface, sizes, example input."""

    spec: IOSpec
    dynamic_size: bool
    static_size: tuple[int, int] | None
    example_size: tuple[int, int]
    batch_size: int | None


def _plan(model: torch.nn.Module, batch_size: int | None, static_size: tuple[int, int] | None,
          example_size: tuple[int, int] | None, output: str) -> _Plan:
    if batch_size is not None and batch_size < 1:
        raise ExportError(f"batch size must be at least 1, got {batch_size}; or leave it dynamic")
    cfg = model.config
    dynamic_size = static_size is None and cfg.dynamic_img_size
    spec = io_spec(output, cfg.global_pool, dynamic_batch=batch_size is None, dynamic_size=dynamic_size)
    if static_size is None and not cfg.dynamic_img_size:
        static_size = cfg.img_hw  # a fixed-size model can only be exported at its size
    size = static_size or example_size or default_example_size(model)
    return _Plan(spec, dynamic_size, tuple(static_size) if static_size else None, tuple(size), batch_size)


def _trace(prepared: torch.nn.Module, plan: _Plan, options: ExportOptions):
    """torch.onnx.export(dynamo=True) of the prepared model; the exporter's chatter goes to the debug log."""
    batch = plan.batch_size or 2  # batch 1 would specialise the batch axis
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(batch, prepared.config.in_chans, *plan.example_size, generator=gen)
    example = example.to(TORCH_DTYPES[options.dtype])
    dims: dict[int, Any] = {}
    if plan.batch_size is None:
        dims[0] = torch.export.Dim("batch", min=1)
    if plan.dynamic_size:
        dims[2] = torch.export.Dim("height", min=1)
        dims[3] = torch.export.Dim("width", min=1)
    log = io.StringIO()
    try:
        with (contextlib.redirect_stdout(log), contextlib.redirect_stderr(log),
              prepared.resampling(model_resample_form(options.resample))):
            program = torch.onnx.export(
                prepared,
                (example,),
                dynamo=True,
                opset_version=options.opset,
                input_names=[plan.spec.input_name],
                output_names=[plan.spec.output_name],
                dynamic_shapes={"x": dims} if dims else None,
                optimize=False,  # keeps each weight as one initializer named by its state_dict key
                verbose=False,
                custom_translation_table=translation_table(options.attention),
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {one_line(exc, kind=True)}") from exc
    finally:
        logger.debug("exporter output:\n%s", log.getvalue())
    if program is None:
        raise ExportError("torch.onnx.export returned no program; update torch")
    return program


def _save_program(program: Any, staged: Path, metadata: dict[str, Any], spec: IOSpec, external: bool) -> None:
    for node in program.model.graph:  # exporter stack traces per node: half the file, no use at run time
        node.metadata_props.clear()
    _name_output_axes(program.model, spec)
    program.model.metadata_props.update(encode_metadata(metadata))
    program.model.doc_string = f"vitexport {__version__}: dynamic-pad ViT {json.dumps(metadata['config'])}"
    program.save(str(staged), external_data=external)


def export_onnx(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    dtype: str = DEFAULT_DTYPE,
    batch_size: int | None = None,
    static_size: tuple[int, int] | None = None,
    example_size: tuple[int, int] | None = None,
    force: bool = False,
    source_sha256: str | None = None,
    external_data: bool | None = None,
    attention: str | None = None,
    resample: str = DEFAULT_RESAMPLE,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
    output: str | None = None,
) -> ExportResult:
    """Export to ONNX with dynamic batch/height/width (unless fixed), check the graph, write atomically.

    Only exports: for ONNX Runtime's offline-optimized graph (``vitexport onnx --optimize``) use
    `vitexport.export.pipeline.export_optimized`. Models over 2 GB get their weights in one
    ``<name>.data`` file beside the model.

    Args:
        model: the PyTorch model of any class (`vitexport.load_model`, `vitexport.create_model`).
        path: the .onnx file to write (refused if it exists, unless ``force``).
        opset: ONNX opset (default: the lowest the attention form needs, at least 18; `ExportOptions`).
        dtype: ``float32`` or ``float16`` (weights and activations; the positional-embedding resampling still
            runs in float32, as timm does).
        batch_size: a fixed batch, or None for a dynamic batch axis.
        static_size: a fixed HxW graph instead of dynamic height and width.
        example_size: the traced example's HxW (only for tests of the graph checks: the default example is
            non-native and non-square).
        force: replace an existing regular file at ``path``.
        source_sha256: the checkpoint's sha256 for the metadata (default: the one the model was loaded with).
        external_data: weights in a ``.data`` file beside the model (default: only over 2 GB).
        attention: ``sdpa`` (standard ops, default), ``mha`` (ONNX Runtime's fused op) or ``onnx`` (opset 23).
        resample: ``portable`` (elementary ops, right on every runtime) or ``resize`` (one antialiased Resize;
            see `vitexport.model.resample`).
        max_tokens: refuse a traced example with more tokens per image (`vitexport.security.limits`).
        max_memory_gb: refuse a traced example whose estimated forward pass is larger.
        output: what the graph returns (`vitexport.model.names.OUTPUTS`): ``logits`` (the default with a head),
            ``features`` (the pooled embedding before the head, timm's ``forward_head(x, pre_logits=True)``) or
            ``tokens`` (every token after the final norm, ``forward_features``); named so in the graph and metadata.
    """
    options = ExportOptions(attention=attention, opset=opset, resample=resample, dtype=dtype)
    output = choose_output(model, output)
    out = check_output(path, force)
    plan = _plan(model, batch_size, static_size, example_size, output)
    check_limits(model.config, [(*plan.example_size, plan.batch_size or 2)], Limits(max_tokens, max_memory_gb),
                 "onnx export (the traced example)")
    start = time.perf_counter()
    with staged_output(out, force) as stage:
        prepared = prepared_model(model, options.dtype)
        with prepared.producing(output):
            program = _trace(prepared, plan, options)
            metadata = artifact_metadata(prepared, plan.spec, options.dtype, plan.static_size, batch_size,
                                         source_sha256, options.opset)
        metadata["attention"] = options.attention
        metadata["resample"] = options.resample
        weight_bytes = sum(p.numel() * p.element_size() for p in prepared.parameters())
        use_external = external_data if external_data is not None else weight_bytes > TWO_GB * 0.95
        _save_program(program, stage.file, metadata, plan.spec, use_external)
        del program, prepared
        gc.collect()
        checks = _check_onnx_file(stage.file, model, plan.spec, plan.dynamic_size)
        moved = stage.commit()
    seconds = time.perf_counter() - start
    logger.info("exported %s in %.1fs", out, seconds)
    return ExportResult(
        path=out, format="onnx", bytes=sum(p.stat().st_size for p in moved), seconds=seconds,
        parameters=count_parameters(model), io=plan.spec, opset=options.opset, dtype=options.dtype,
        static_size=plan.static_size, batch_size=batch_size, example_size=plan.example_size,
        external_data=moved[0] if len(moved) > 1 else None, checks=checks, metadata=metadata,
    )


def _name_output_axes(model: Any, spec: IOSpec) -> None:
    """Give dynamic output axes the declared names (the exporter writes expressions such as ``h*w + 1``)."""
    import onnx_ir as ir

    for value in model.graph.outputs:
        if value.shape is None:
            continue
        dims = list(value.shape)
        for axis, name in spec.output_axes.items():
            if axis < len(dims) and not isinstance(dims[axis], int):
                dims[axis] = ir.SymbolicDim(name)
        value.shape = ir.Shape(dims)


def _check_onnx_file(path: Path, model: torch.nn.Module, spec: IOSpec, dynamic_size: bool) -> list[str]:
    """Full ONNX checker, shape inference and the graph checks; raises ExportError on any failure."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"exported graph fails onnx.checker: {one_line(exc)}") from exc
    proto = load_onnx(path)
    try:
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ExportError(f"exported graph fails shape inference: {one_line(exc)}") from exc
    report = inspect_graph(proto, str(path))
    cfg = model.config
    problems = check_graph(
        report,
        spec,
        dynamic_size=dynamic_size,
        expect_resize=cfg.dynamic_img_size and cfg.has_pos_table,
        expect_pad=cfg.dynamic_img_pad,
        expect_rope=cfg.rotary,
    )
    if problems:
        raise ExportError("exported graph failed its checks, nothing written: " + "; ".join(problems))
    checks = ["onnx.checker full check", "shape inference (strict)", "input/output names and symbolic axes"]
    return checks + check_summary(report, dynamic_size)


__all__ = ["export_onnx"]
