"""What every export shares: the result it returns, the metadata an artifact carries, the traced example
size and the model prepared in the export's dtype."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitexport import __version__
from vitexport.model.vit import VisionTransformer
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


def default_example_size(model: VisionTransformer) -> tuple[int, int]:
    """A traced example that is neither the native size, nor square, nor a multiple of the patch.

    Args:
        model: the model to be traced (its native size and patch decide the example).
    """
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
    """The metadata every artifact carries (ONNX metadata_props, TorchScript extra file).

    Args:
        model: the exported model (its config, patch, grid, preprocessing and labels are recorded).
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


def prepared_model(model: VisionTransformer, dtype: str) -> VisionTransformer:
    """The model in eval mode and ``dtype``; a copy only when the dtype changes (ViT-B: 350 MB saved)."""
    if all(p.dtype == TORCH_DTYPES[dtype] for p in model.parameters()) and not model.training:
        return model
    return copy.deepcopy(model).eval().to(TORCH_DTYPES[dtype])


__all__ = ["TORCH_DTYPES", "ExportResult", "artifact_metadata", "default_example_size", "prepared_model"]
