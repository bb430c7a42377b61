"""Export pipelines: a checkpoint to an artifact (what `vitexport onnx` and `vitexport torchscript` do), a preset
built with random weights to an artifact (``--preset NAME --random-weights``), and an ONNX export followed by
ONNX Runtime's offline optimization (``--optimize``).

The exporters themselves (`onnx_export`, `torchscript_export`) only export; this module composes them
with loading and optimization, and checks every option and the output before the slow work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vitexport._util.errors import ConfigError, ExportOptionError, LimitError, UsageError
from vitexport._util.files import check_output, default_output
from vitexport._util.interrupt import scratch_folder
from vitexport.export.artifact import ExportResult, choose_output
from vitexport.export.onnx_export import export_onnx
from vitexport.export.optimize import check_optimize_provider, optimize_onnx, session_startup_seconds
from vitexport.export.options import ExportOptions
from vitexport.export.torchscript_export import export_torchscript
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
    model: Any,
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


def _check_format(to: str, optimize: str | None, options: dict[str, Any]) -> str:
    """The output suffix for ``to``, after checking the format and (ONNX) resolving the options in place."""
    if to not in EXPORT_FORMATS:
        raise ExportOptionError(f"cannot export to {to!r}; use onnx or torchscript")
    if to == "onnx":
        options.update(_options(optimize, options).export_kwargs())
    elif optimize is not None:
        raise ExportOptionError("--optimize applies to ONNX exports only; leave it out for TorchScript")
    return ".onnx" if to == "onnx" else ".ts"


def _export_model(model: Any, out: Path, to: str, img_size: tuple[int, int] | None, force: bool,
                  optimize: str | None, options: dict[str, Any]) -> ExportResult:
    """The export itself, once the model (of any class) is built and the output checked."""
    choose_output(model, options.get("output"))  # a head-less model refuses --output logits, first
    if img_size is not None:
        if not hasattr(model, "set_input_size"):
            raise UsageError(f"--img-size applies to timm's VisionTransformer only; this {type(model).__name__} model "
                             "runs inputs of any size as exported: leave --img-size out")
        # the new native grid's embeddings are computed at once: within the limits first
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


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
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
        out: the file to write (default: beside the checkpoint, ``.onnx`` or ``.ts``).
        to: ``onnx`` or ``torchscript``.
        config: the model config for checkpoints that do not carry one (a dict, a JSON file or JSON text).
        use_ema: load the EMA weights of a timm training checkpoint.
        img_size: first make this HxW the model's native size (``set_input_size``).
        force: replace an existing regular file at ``out``.
        optimize: ONNX only: write ONNX Runtime's offline-optimized graph for this provider (`export_optimized`).
        **options: the exporter's keyword arguments (`vitexport.export.onnx_export.export_onnx`,
            `vitexport.export.torchscript_export.export_torchscript`), ``output`` (logits, features, tokens) among
            them.
    """
    from vitexport.checkpoint.load import load_model

    suffix = _check_format(to, optimize, options)
    out = check_output(out if out is not None else default_output(checkpoint, suffix), force,
                       inputs=(checkpoint, config if isinstance(config, (str, os.PathLike)) else None))
    model = load_model(checkpoint, config=config, use_ema=use_ema)
    return _export_model(model, out, to, img_size, force, optimize, options)


BUILD_MEMORY_FACTOR = 3  # a preset's float32 weights, times this: the model, the exporter's copy, the written file


def _check_build_memory(cfg: Any, name: str) -> None:
    """Refuse a preset whose random weights and export would not fit in this machine's available memory."""
    from vitexport.checkpoint.weights import parameter_count

    need = parameter_count(cfg) * 4 * BUILD_MEMORY_FACTOR
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: no figure to check against
        return
    if need > available:
        raise LimitError(
            f"{name} has {parameter_count(cfg):,} parameters: building it with random weights and exporting it "
            f"takes about {need / 1e9:.1f} GB, and {available / 1e9:.1f} GB of memory is available here; "
            "export a smaller preset, or shrink this one, e.g. --config '{\"depth\": 2}'")


def export_preset(
    name: str,
    out: str | os.PathLike[str] | None = None,
    *,
    to: str = "onnx",
    random_weights: bool = False,
    seed: int = 0,
    config: Any = None,
    img_size: tuple[int, int] | None = None,
    force: bool = False,
    optimize: str | None = None,
    **options: Any,
) -> ExportResult:
    """Build a named architecture with random weights and export it (``vitexport onnx --preset NAME
    --random-weights``): does it export and run here, before any weights are fetched. The artifact's metadata
    records the random weights (``random_weights``: seed and preset).

    Args:
        name: a preset (``vitexport presets`` lists them; hub ids and tags name their base preset).
        out: the file to write (default: ``NAME.onnx`` or ``NAME.ts`` in the current folder).
        to: ``onnx`` or ``torchscript``.
        random_weights: must be True: vitexport downloads no weights, and random ones are used only when asked.
        seed: the random weights' seed.
        config: overrides of the preset's options (a dict, a JSON file or JSON text), e.g. ``{"depth": 2}``.
        img_size: first make this HxW the model's native size (``set_input_size``).
        force: replace an existing regular file at ``out``.
        optimize: refused: an optimized graph folds the weights, and random weights have no other copy to be
            verified against.
        **options: the exporter's keyword arguments, as for `export_checkpoint`.
    """
    from vitexport.model.config import get_preset, load_config_arg, preset_args, preset_key
    from vitexport.model.vit import create_model

    try:
        preset_args(name)  # the one preset lookup: an unknown name is a usage error here, with the closest name
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if not random_weights:
        raise UsageError(
            f"vitexport downloads no weights: add --random-weights to export {name} with random weights, or "
            f"export your checkpoint of it: vitexport {to} CHECKPOINT --config '{{\"architecture\": \"{name}\"}}'")
    if optimize is not None:
        raise ExportOptionError("--optimize folds the weights, and random weights have no other copy to verify "
                                "the optimized graph against; export the preset without it")
    overrides = load_config_arg(config) or {}
    if {"architecture", "arch"} & set(overrides):
        raise UsageError("with --preset, --config takes overrides of the preset's options (e.g. "
                         "'{\"depth\": 2}'); the architecture is --preset's")
    suffix = _check_format(to, None, options)
    out = check_output(out if out is not None else Path(preset_key(name) + suffix), force,
                       inputs=(config if isinstance(config, (str, os.PathLike)) else None,))
    cfg = get_preset(name, **overrides)
    _check_build_memory(cfg, name)
    return _export_model(create_model(cfg, seed=seed), out, to, img_size, force, None, options)


__all__ = ["EXPORT_FORMATS", "export_checkpoint", "export_optimized", "export_preset"]
