"""Export pipelines: a checkpoint to an artifact (what `vitexport onnx` and `vitexport torchscript` do), and an
ONNX export followed by ONNX Runtime's offline optimization (``--optimize``).

The exporters themselves (`onnx_export`, `torchscript_export`) only export; this module composes them
with loading and optimization, and checks every option and the output before the slow work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vitexport._util.errors import ExportOptionError
from vitexport._util.files import check_output, default_output
from vitexport._util.interrupt import scratch_folder
from vitexport.export.artifact import ExportResult
from vitexport.export.onnx_export import export_onnx
from vitexport.export.optimize import check_optimize_provider, optimize_onnx, session_startup_seconds
from vitexport.export.options import ExportOptions
from vitexport.export.torchscript_export import export_torchscript
from vitexport.model.vit import VisionTransformer
from vitexport.security.limits import DEFAULT_MAX_MEMORY_GB, DEFAULT_MAX_TOKENS, Limits
from vitexport.security.limits import check as check_limits

EXPORT_FORMATS = ("onnx", "torchscript")


def _options(optimize: str | None, kwargs: dict[str, Any]) -> ExportOptions:
    """The ONNX options in ``kwargs`` resolved and checked (taken out of ``kwargs``), ``optimize``'s provider too."""
    options = ExportOptions(**{k: kwargs.pop(k) for k in ("attention", "opset", "resample", "dtype") if k in kwargs},
                            optimize=optimize)
    if optimize is not None:
        check_optimize_provider(optimize)
    return options


def export_optimized(
    model: VisionTransformer,
    path: str | os.PathLike[str],
    optimize: str = "cpu",
    *,
    force: bool = False,
    **options: Any,
) -> ExportResult:
    """Export to ONNX, then write ONNX Runtime's offline-optimized graph for ``optimize`` at ``path``
    (``vitexport onnx --optimize``); the plain export lives only in a scratch folder beside ``path``.

    Args:
        model: the PyTorch model.
        path: the optimized .onnx file to write (refused if it exists, unless ``force``).
        optimize: the ONNX Runtime provider to optimize for, ``cpu`` or ``cuda`` (it must run here).
        force: replace an existing regular file at ``path``.
        **options: `vitexport.export.onnx_export.export_onnx`'s keyword arguments; ``attention`` defaults to
            ``mha`` for ``cpu`` (`vitexport.export.options.default_attention`).
    """
    resolved = _options(optimize, options)
    out = check_output(path, force)
    with scratch_folder(f".{out.name}.", out.parent) as folder:
        plain = Path(folder) / out.name
        result = export_onnx(model, plain, **resolved.export_kwargs(), **options)
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
    optimize: str | None = None,
    **options: Any,
) -> ExportResult:
    """Load a checkpoint and export it, as `vitexport onnx` and `vitexport torchscript` do.

    The output and every option are checked before the slow load.

    Args:
        checkpoint: the checkpoint file or folder (any format `vitexport.load_model` reads).
        output: the file to write (default: beside the checkpoint, ``.onnx`` or ``.ts``).
        to: ``onnx`` or ``torchscript``.
        config: the model config for checkpoints that do not carry one (a dict, a JSON file or JSON text).
        use_ema: load the EMA weights of a timm training checkpoint.
        img_size: first make this HxW the model's native size (``set_input_size``).
        force: replace an existing regular file at ``output``.
        optimize: ONNX only: write ONNX Runtime's offline-optimized graph for this provider (`export_optimized`).
        **options: the exporter's keyword arguments (`vitexport.export.onnx_export.export_onnx`,
            `vitexport.export.torchscript_export.export_torchscript`).
    """
    from vitexport.checkpoint.load import load_model

    if to not in EXPORT_FORMATS:
        raise ExportOptionError(f"cannot export to {to!r}; use onnx or torchscript")
    if to == "onnx":
        options.update(_options(optimize, options).export_kwargs())
    elif optimize is not None:
        raise ExportOptionError("--optimize applies to ONNX exports only; leave it out for TorchScript")
    suffix = ".onnx" if to == "onnx" else ".ts"
    out = check_output(output if output is not None else default_output(checkpoint, suffix), force,
                       inputs=(checkpoint, config if isinstance(config, (str, os.PathLike)) else None))
    model = load_model(checkpoint, config=config, use_ema=use_ema)
    if img_size is not None:  # the new native grid's embeddings are computed at once: within the limits first
        limits = Limits(options.get("max_tokens", DEFAULT_MAX_TOKENS),
                        options.get("max_memory_gb", DEFAULT_MAX_MEMORY_GB))
        native = model.config.replace(img_size=tuple(img_size))
        check_limits(native, [(*native.img_hw, 1)], limits, "--img-size")
        model.set_input_size(img_size)
    if to == "torchscript":
        return export_torchscript(model, out, force=force, **options)
    if optimize is not None:
        return export_optimized(model, out, optimize, force=force, **options)
    return export_onnx(model, out, force=force, **options)


__all__ = ["EXPORT_FORMATS", "export_checkpoint", "export_optimized"]
