"""ONNX and TorchScript export with dynamic batch, height and width.

The ONNX graph comes from ``torch.onnx.export(dynamo=True)`` (the only exporter that
emits antialiased bicubic Resize), traced from a non-native, non-square example so
that padding and resampling stay in the graph. Every graph is checked before it is
written; a failing graph never replaces anything.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitexport import __version__
from vitexport._util.errors import ExportError, one_line
from vitexport._util.files import check_output, default_output, staged_output
from vitexport._util.interrupt import scratch_folder
from vitexport.export.attention import ATTENTION_CHOICES, ATTENTION_MIN_OPSET, translation_table
from vitexport.export.optimize import check_optimize_provider
from vitexport.model.names import model_resample_form
from vitexport.model.vit import VisionTransformer, count_parameters
from vitexport.onnx.graph import check_graph, check_summary, inspect_graph, load_onnx
from vitexport.onnx.spec import (
    DEFAULT_OPSET,
    DEFAULT_RESAMPLE,
    MAX_OPSET,
    MIN_OPSET,
    RESAMPLE_FORMS,
    TORCHSCRIPT_EXTRA_FILE,
    IOSpec,
    encode_metadata,
    io_spec,
)
from vitexport.security.limits import DEFAULT_MAX_MEMORY_GB, DEFAULT_MAX_TOKENS, Limits
from vitexport.security.limits import check as check_limits

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16}
TWO_GB = 2 * 1024**3


@dataclass
class ExportResult:
    """What an export wrote and how it went."""

    path: Path
    format: str
    bytes: int
    seconds: float
    parameters: int
    io: IOSpec
    opset: int | None = None
    dtype: str = "float32"
    static_size: tuple[int, int] | None = None
    batch_size: int | None = None
    example_size: tuple[int, int] | None = None
    external_data: Path | None = None
    checks: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    optimized: str | None = None  # the provider an ONNX Runtime offline optimization was for


def default_example_size(model: VisionTransformer) -> tuple[int, int]:
    """A traced example that is neither the native size, nor square, nor a multiple of the patch."""
    (h, w), (ph, pw) = model.config.img_hw, model.patch_embed.patch_size
    eh, ew = h + ph + max(1, ph // 2), w + 2 * pw + max(1, pw // 2) + 1
    if eh == ew:
        ew += pw
    if not model.patch_embed.dynamic_img_pad:  # then inputs must be multiples of the patch
        eh, ew = (eh // ph) * ph, (ew // pw) * pw
        if eh == ew:
            ew += pw
    return eh, ew


def artifact_metadata(
    model: VisionTransformer,
    spec: IOSpec,
    dtype: str,
    static_size: tuple[int, int] | None,
    batch_size: int | None,
    source_sha256: str | None,
    opset: int | None = None,
) -> dict[str, Any]:
    """The metadata every artifact carries (ONNX metadata_props, TorchScript extra file)."""
    import onnx
    import onnxscript

    meta = model.meta or {}
    source = meta.get("source") or {}
    return {
        "version": __version__,
        "config": model.config.to_dict(),
        "patch_size": list(model.patch_embed.patch_size),
        "native_grid": list(model.patch_embed.grid_size),
        "num_prefix_tokens": model.num_prefix_tokens,
        "preprocess": meta.get("preprocess"),
        "labels": meta.get("labels"),
        "input_name": spec.input_name,
        "output_name": spec.output_name,
        "dynamic_axes": spec.to_json(),
        "static_size": list(static_size) if static_size else None,
        "batch_size": batch_size,
        "dtype": dtype,
        "opset": opset,
        "source_sha256": source_sha256 or source.get("sha256"),
        # the checkpoint's format and, for a release format, its head and the library output it equals
        "source": {k: source[k] for k in ("format", "config_source", "head", "reference") if k in source} or None,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxscript_version": onnxscript.__version__,
    }


def _check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"opset {opset} is not supported: antialiased bicubic Resize needs opset >= {MIN_OPSET} "
            f"(the exporter goes up to {MAX_OPSET}); use --opset {DEFAULT_OPSET}"
        )


def onnx_options(
    attention: str | None = None, opset: int | None = None, optimize: str | None = None
) -> tuple[str, int]:
    """(attention, opset) with the defaults filled in, checked together (and ``optimize``'s provider).

    Attention defaults to ``mha`` when optimizing for the CPU (measured faster there), else
    ``sdpa``; the opset defaults to the lowest that attention needs, and at least 18.
    """
    attention = attention or ("mha" if optimize == "cpu" else "sdpa")
    if attention not in ATTENTION_CHOICES:
        raise ExportError(f"attention {attention!r} is not supported; use one of {', '.join(ATTENTION_CHOICES)}")
    opset = opset if opset is not None else max(DEFAULT_OPSET, ATTENTION_MIN_OPSET[attention])
    _check_opset(opset)
    if opset < ATTENTION_MIN_OPSET[attention]:
        raise ExportError(
            f"attention={attention!r} needs opset >= {ATTENTION_MIN_OPSET[attention]}; pass --opset "
            f"{ATTENTION_MIN_OPSET[attention]} (its Resize-19 runs on CUDA only in recent onnxruntime-gpu) "
            "or use --attention mha"
        )
    if optimize is not None:
        check_optimize_provider(optimize)
    return attention, opset


def _check_resample(resample: str) -> None:
    if resample not in RESAMPLE_FORMS:
        raise ExportError(
            f"resample form {resample!r} is not supported; use {' or '.join(RESAMPLE_FORMS)} "
            f"(default {DEFAULT_RESAMPLE}: right on every runtime)"
        )


def _prepare(model: VisionTransformer, dtype: str) -> VisionTransformer:
    """The model in eval mode and ``dtype``; a copy only when the dtype changes (ViT-B: 350 MB saved)."""
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not supported; use float32 or float16")
    if all(p.dtype == DTYPES[dtype] for p in model.parameters()) and not model.training:
        return model
    return copy.deepcopy(model).eval().to(DTYPES[dtype])


@dataclass(frozen=True)
class _Plan:
    """What one ONNX export traces: interface, sizes, example input."""

    spec: IOSpec
    dynamic_size: bool
    static_size: tuple[int, int] | None
    example_size: tuple[int, int]
    batch_size: int | None


def _plan(model: VisionTransformer, batch_size: int | None, static_size: tuple[int, int] | None,
          example_size: tuple[int, int] | None) -> _Plan:
    if batch_size is not None and batch_size < 1:
        raise ExportError(f"batch size must be at least 1, got {batch_size}; or leave it dynamic")
    cfg = model.config
    dynamic_size = static_size is None and cfg.dynamic_img_size
    spec = io_spec(cfg.num_classes, cfg.global_pool, dynamic_batch=batch_size is None, dynamic_size=dynamic_size)
    if static_size is None and not cfg.dynamic_img_size:
        static_size = cfg.img_hw  # a fixed-size model can only be exported at its size
    size = static_size or example_size or default_example_size(model)
    return _Plan(spec, dynamic_size, tuple(static_size) if static_size else None, tuple(size), batch_size)


def _trace(prepared: VisionTransformer, plan: _Plan, opset: int, dtype: str, attention: str, resample: str):
    """torch.onnx.export(dynamo=True) of the prepared model; the exporter's chatter goes to the debug log."""
    batch = plan.batch_size or 2  # batch 1 would specialise the batch axis
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(batch, prepared.config.in_chans, *plan.example_size, generator=gen).to(DTYPES[dtype])
    dims: dict[int, Any] = {}
    if plan.batch_size is None:
        dims[0] = torch.export.Dim("batch", min=1)
    if plan.dynamic_size:
        dims[2] = torch.export.Dim("height", min=1)
        dims[3] = torch.export.Dim("width", min=1)
    log = io.StringIO()
    try:
        with (contextlib.redirect_stdout(log), contextlib.redirect_stderr(log),
              prepared.resampling(model_resample_form(resample))):
            program = torch.onnx.export(
                prepared,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[plan.spec.input_name],
                output_names=[plan.spec.output_name],
                dynamic_shapes={"x": dims} if dims else None,
                optimize=False,  # keeps each weight as one initializer named by its state_dict key
                verbose=False,
                custom_translation_table=translation_table(attention),
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
    model: VisionTransformer,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    dtype: str = "float32",
    batch_size: int | None = None,
    static_size: tuple[int, int] | None = None,
    example_size: tuple[int, int] | None = None,
    force: bool = False,
    source_sha256: str | None = None,
    external_data: bool | None = None,
    attention: str | None = None,
    optimize: str | None = None,
    resample: str = DEFAULT_RESAMPLE,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
) -> ExportResult:
    """Export to ONNX with dynamic batch/height/width (unless fixed), check the graph, write atomically.

    ``attention`` and ``opset`` default as `onnx_options` says. ``dtype="float16"`` converts
    weights and activations; positional-embedding resampling still runs in float32 (as timm
    does). ``resample="portable"`` writes that resampling with elementary ops (right on every
    runtime), ``"resize"`` as one antialiased Resize (see `vitexport.model.resample`). Models over
    2 GB get their weights in one ``<name>.data`` file beside the model.
    ``optimize="cpu"|"cuda"`` writes ONNX Runtime's offline-optimized graph instead (as
    ``vitexport onnx --optimize``). ``example_size`` is only for tests of the graph checks:
    the default example is non-native and non-square. The traced example (``static_size`` or the
    example size, at the batch traced) is checked against ``max_tokens`` and ``max_memory_gb``
    (`vitexport.security.limits`) before anything is traced.
    """
    attention, opset = onnx_options(attention, opset, optimize)
    _check_resample(resample)
    out = check_output(path, force)
    plan = _plan(model, batch_size, static_size, example_size)
    check_limits(model.config, [(*plan.example_size, plan.batch_size or 2)], Limits(max_tokens, max_memory_gb),
                 "onnx export (the traced example)")
    if optimize is not None:
        return _export_optimized(model, out, force, optimize, opset=opset, dtype=dtype, batch_size=batch_size,
                                 static_size=static_size, example_size=example_size, source_sha256=source_sha256,
                                 external_data=external_data, attention=attention, resample=resample,
                                 max_tokens=max_tokens, max_memory_gb=max_memory_gb)
    start = time.perf_counter()
    with staged_output(out, force) as stage:
        prepared = _prepare(model, dtype)
        program = _trace(prepared, plan, opset, dtype, attention, resample)
        metadata = artifact_metadata(prepared, plan.spec, dtype, plan.static_size, batch_size, source_sha256, opset)
        metadata["attention"] = attention
        metadata["resample"] = resample
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
        parameters=count_parameters(model), io=plan.spec, opset=opset, dtype=dtype, static_size=plan.static_size,
        batch_size=batch_size, example_size=plan.example_size,
        external_data=moved[0] if len(moved) > 1 else None, checks=checks, metadata=metadata,
    )


def _export_optimized(model: VisionTransformer, out: Path, force: bool, optimize: str, **options: Any) -> ExportResult:
    """Export, then write ONNX Runtime's offline-optimized graph for ``optimize`` at ``out``."""
    from vitexport.export.optimize import optimize_onnx, session_startup_seconds

    with scratch_folder(f".{out.name}.", out.parent) as folder:
        plain = Path(folder) / out.name
        result = export_onnx(model, plain, **options)
        opt = optimize_onnx(plain, out, provider=optimize, force=force)
        before, after = session_startup_seconds(plain, optimize), session_startup_seconds(out, optimize)
    result.path, result.bytes, result.external_data = out, opt.bytes, opt.external_data
    result.seconds += opt.seconds
    result.optimized = optimize
    result.checks.append(
        f"ONNX Runtime {optimize} optimization (extended): {opt.details['nodes_before']} -> "
        f"{opt.details['nodes_after']} nodes, session start {before * 1e3:.0f} -> {after * 1e3:.0f} ms"
    )
    return result


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    to: str = "onnx",
    config: Any = None,
    use_ema: bool = False,
    img_size: tuple[int, int] | None = None,
    force: bool = False,
    **options: Any,
) -> ExportResult:
    """Load a checkpoint and export it (``to="onnx"`` or ``"torchscript"``), as the CLI commands do.

    The output (default: beside the checkpoint) and the options are checked before the slow
    load; ``img_size`` first makes that size the model's native one (``set_input_size``).
    """
    from vitexport.checkpoint.load import load_model

    if to not in ("onnx", "torchscript"):
        raise ExportError(f"cannot export to {to!r}; use onnx or torchscript")
    if to == "onnx":
        options["attention"], options["opset"] = onnx_options(
            options.get("attention"), options.get("opset"), options.get("optimize"))
    suffix = ".onnx" if to == "onnx" else ".ts"
    out = check_output(output if output is not None else default_output(checkpoint, suffix), force,
                       inputs=(checkpoint, config if isinstance(config, (str, os.PathLike)) else None))
    model = load_model(checkpoint, config=config, use_ema=use_ema)
    if img_size is not None:  # the new native grid's embeddings are computed at once: within the limits first
        limits = Limits(options.get("max_tokens", DEFAULT_MAX_TOKENS), options.get("max_memory_gb",
                                                                                   DEFAULT_MAX_MEMORY_GB))
        native = model.config.replace(img_size=tuple(img_size))
        check_limits(native, [(*native.img_hw, 1)], limits, "--img-size")
        model.set_input_size(img_size)
    if to == "onnx":
        return export_onnx(model, out, force=force, **options)
    return export_torchscript(model, out, force=force, **options)


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


def _check_onnx_file(path: Path, model: VisionTransformer, spec: IOSpec, dynamic_size: bool) -> list[str]:
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
    problems = check_graph(
        report,
        spec,
        dynamic_size=dynamic_size,
        expect_resize=model.config.dynamic_img_size,
        expect_pad=model.config.dynamic_img_pad,
    )
    if problems:
        raise ExportError("exported graph failed its checks, nothing written: " + "; ".join(problems))
    checks = ["onnx.checker full check", "shape inference (strict)", "input/output names and symbolic axes"]
    return checks + check_summary(report, dynamic_size)


def _script(prepared: VisionTransformer) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():  # torch.jit's deprecation notices are not the user's business here
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.script(prepared)
    except Exception as exc:
        raise ExportError(f"torch.jit.script failed: {one_line(exc, kind=True)}") from exc


def _check_scripted(staged: Path, prepared: VisionTransformer) -> str:
    """The archive must load on its own and reproduce eager PyTorch at a non-native size; the check's line."""
    cfg = prepared.config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(staged), map_location="cpu")
    size = default_example_size(prepared) if cfg.dynamic_img_size else cfg.img_hw
    x = torch.randn(2, cfg.in_chans, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (loaded(x) - prepared(x)).abs().max().item()
    if not diff <= 1e-5:
        raise ExportError(f"scripted model differs from eager PyTorch by {diff:.3g} at {size}; nothing written")
    return f"scripted == eager at {size[0]}x{size[1]} (max diff {diff:.2g})"


def export_torchscript(
    model: VisionTransformer,
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    source_sha256: str | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    max_memory_gb: float | None = DEFAULT_MAX_MEMORY_GB,
) -> ExportResult:
    """``torch.jit.script`` the model (shapes stay dynamic); config and metadata travel as an extra file.
    The round-trip check's example is checked against the limits first (`vitexport.security.limits`)."""
    out = check_output(path, force)
    size = default_example_size(model) if model.config.dynamic_img_size else model.config.img_hw
    check_limits(model.config, [(*size, 2)], Limits(max_tokens, max_memory_gb), "torchscript export (its check)")
    start = time.perf_counter()
    cfg = model.config
    spec = io_spec(cfg.num_classes, cfg.global_pool, dynamic_size=cfg.dynamic_img_size)
    with staged_output(out, force) as stage:
        prepared = _prepare(model, "float32")
        scripted = _script(prepared)
        metadata = artifact_metadata(prepared, spec, "float32", None, None, source_sha256)
        # Serialized in memory, written by Python: torch.jit.save's C++ writer finishes the zip in a destructor,
        # and a failed write there (a full disk, a quota) aborts the process, leaving the staging folder behind.
        archive = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(scripted, archive, _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(metadata)})
        stage.file.write_bytes(archive.getbuffer())
        del archive
        checked = _check_scripted(stage.file, prepared)
        moved = stage.commit()
    return ExportResult(
        path=out,
        format="torchscript",
        bytes=sum(p.stat().st_size for p in moved),
        seconds=time.perf_counter() - start,
        parameters=count_parameters(model),
        io=spec,
        checks=["torch.jit.load round trip", checked],
        metadata=metadata,
    )
