"""What every export shares: the result it returns, the metadata an artifact carries, the traced example
size, the output it produces and the model prepared in the export's dtype.

Every model class is read through its config (`vitexport.model.family_config` lists what each answers): the
patch, the native grid (NaFlexViT's: its position table's), the prefix tokens."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitexport import __version__
from vitexport._util.errors import UsageError
from vitexport._util.geometry import token_count
from vitexport.model.names import OUTPUTS, default_output
from vitexport.onnx.spec import IOSpec

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


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


def default_example_size(model: torch.nn.Module) -> tuple[int, int]:
    """A traced example that is neither the native size, nor square, nor a multiple of the patch.

    Args:
        model: the model to be traced (its native size and patch decide the example).
    """
    (h, w), (ph, pw) = model.config.img_hw, model.config.patch_hw
    eh, ew = h + ph + max(1, ph // 2), w + 2 * pw + max(1, pw // 2) + 1
    if eh == ew:
        ew += pw
    if not model.config.dynamic_img_pad:  # then inputs must be multiples of the patch
        eh, ew = (eh // ph) * ph, (ew // pw) * pw
        if eh == ew:
            ew += pw
    return eh, ew


def choose_output(model: torch.nn.Module, output: str | None) -> str:
    """The output an export produces: ``output`` (`vitexport.model.names.OUTPUTS`), by default the head's logits,
    or the pooled embedding for a model without a head; ``logits`` without a head is refused.

    Args:
        model: the model to export.
        output: ``logits``, ``features``, ``tokens`` or None (the default).
    """
    cfg = model.config
    if output is None:
        return default_output(cfg.num_classes)
    if output not in OUTPUTS:
        raise UsageError(f"output {output!r} is not supported; use one of {', '.join(OUTPUTS)}")
    if output == "logits" and cfg.num_classes == 0:
        raise UsageError("--output logits: this model has no classification head (num_classes=0), so its output is "
                          "already the pooled embedding; use --output features (or tokens)")
    return output


def output_shape(cfg: Any, output: str, spec: IOSpec, batch_size: int | None,
                 static_size: tuple[int, int] | None) -> list[int | str]:
    """The output's shape as the metadata records it: dynamic axes by name, fixed ones as numbers."""
    width = cfg.num_classes if output == "logits" else cfg.num_features
    shape: list[int | str] = [spec.output_axes.get(0) or batch_size or 1]
    if output == "tokens" or cfg.global_pool == "":
        if 1 in spec.output_axes:
            shape.append(spec.output_axes[1])
        else:
            h, w = static_size or cfg.img_hw
            shape.append(token_count(h, w, cfg.patch_hw, cfg.num_prefix_tokens, cfg.dynamic_img_pad))
    return [*shape, width]


def artifact_metadata(
    model: torch.nn.Module,
    spec: IOSpec,
    dtype: str,
    static_size: tuple[int, int] | None,
    batch_size: int | None,
    source_sha256: str | None,
    opset: int | None = None,
) -> dict[str, Any]:
    """The metadata every artifact carries (ONNX metadata_props, TorchScript extra file).

    Args:
        model: the exported model, inside ``model.producing(output)`` (its class, config, patch, grid, output,
            preprocessing and labels are recorded).
        spec: the artifact's input/output names and dynamic axes.
        dtype: the artifact's dtype name.
        static_size: the fixed HxW of a static export, else None.
        batch_size: the fixed batch of the export, else None (dynamic).
        source_sha256: the checkpoint's sha256 (default: the one the model was loaded with, if any).
        opset: the ONNX opset (None for TorchScript).
    """
    import onnx
    import onnxscript

    meta = model.meta or {}
    source = meta.get("source") or {}
    cfg = model.config
    return {
        "version": __version__,
        "model_class": cfg.CLASS,
        "config": cfg.to_dict(),
        "patch_size": list(cfg.patch_hw),
        "native_grid": list(cfg.grid_size),
        "num_prefix_tokens": cfg.num_prefix_tokens,
        "preprocess": meta.get("preprocess"),
        "labels": meta.get("labels") if model.output == "logits" else None,
        "input_name": spec.input_name,
        "output": model.output,
        "output_name": spec.output_name,
        "output_shape": output_shape(cfg, model.output, spec, batch_size, static_size),
        "dynamic_axes": spec.to_json(),
        "static_size": list(static_size) if static_size else None,
        "batch_size": batch_size,
        "dtype": dtype,
        "opset": opset,
        "source_sha256": source_sha256 or source.get("sha256"),
        # the checkpoint's format and, for a release format, its head and the library output it equals
        "source": {k: source[k] for k in ("format", "config_source", "head", "reference") if k in source} or None,
        "random_weights": _random_weights(source),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxscript_version": onnxscript.__version__,
    }


def _random_weights(source: dict[str, Any]) -> dict[str, Any] | None:
    """``{"seed": ..., "architecture": ...}`` for a model built with random weights (`create_model`), else None."""
    if source.get("weights") != "random":
        return None
    return {"seed": source.get("seed"), "architecture": source.get("architecture")}


def prepared_model(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """The model in eval mode and ``dtype``; a copy only when the dtype changes (ViT-B: 350 MB saved)."""
    if all(p.dtype == TORCH_DTYPES[dtype] for p in model.parameters()) and not model.training:
        return model
    return copy.deepcopy(model).eval().to(TORCH_DTYPES[dtype])


__all__ = ["TORCH_DTYPES", "ExportResult", "artifact_metadata", "choose_output", "default_example_size", "output_shape",
           "prepared_model"]
