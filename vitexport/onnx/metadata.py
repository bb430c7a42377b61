"""Checks of what an artifact (or a checkpoint) says about itself, before anything uses it.

An exported model's vitexport metadata drives the Predictor, verify and bench: its patch
size divides image sizes, its channel count shapes the input, its mean/std normalise it.
A file we did not write may carry any JSON there, so every field is checked here, with one
`error` class chosen by the caller and a message naming the field and the fix
(re-export the model). Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from vitexport._util.errors import CheckpointError, ConfigError, VitexportError
from vitexport.model.config import MAX_INT_OPTION
from vitexport.model.names import OUTPUTS

MAX_LABELS = 1_000_000
DTYPES = ("float32", "float16", "int8-dynamic", "int8-static")  # int8-static: QDQ, benchmarks/int8_bench.py


def shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_INT_OPTION


def _finite_numbers(value: Any, length: Sequence[int]) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) in length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def labels_list(value: Any, where: str, error: type[VitexportError] = ConfigError) -> list[str] | None:
    """Labels as a list of strings (a list, or an object {"0": name, ...}); None when absent or empty."""
    if value is None or value == [] or value == {}:
        return None
    if isinstance(value, dict):
        keys = list(value)
        if not all(isinstance(k, str) and k.isdigit() and len(k) < 10 for k in keys) or \
                sorted(int(k) for k in keys) != list(range(len(keys))):
            raise error(f"{where}: labels must be a list of strings or an object with the keys \"0\" .. \"N-1\", "
                        f"got {shown(value)}; fix or re-export the file")
        value = [value[str(i)] for i in range(len(keys))]
    if not isinstance(value, list) or len(value) > MAX_LABELS or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise error(f"{where}: labels must be a list of strings, got {shown(value)}; fix or re-export the file")
    return [str(v) for v in value]


def preprocess_dict(value: Any, where: str, channels: int | None = None,
                    error: type[VitexportError] = ConfigError) -> dict[str, Any] | None:
    """Preprocessing as {scale, mean, std[, interpolation]}: finite numbers, non-zero std, 1 or C values."""
    if value is None:
        return None
    lengths = (1, channels) if channels else (1, 2, 3, 4)
    fix = "; fix or re-export the file"
    if not isinstance(value, dict):
        raise error(f"{where}: preprocess must be an object with scale, mean and std, got {shown(value)}{fix}")
    scale = value.get("scale", 1 / 255)
    if not (_finite_numbers([scale], (1,)) and scale > 0):
        raise error(f"{where}: preprocess scale must be a positive number, got {shown(scale)}{fix}")
    for key in ("mean", "std"):
        if value.get(key) is not None and not _finite_numbers(value[key], lengths):
            raise error(f"{where}: preprocess {key} must be {' or '.join(map(str, lengths))} finite numbers, "
                        f"got {shown(value[key])}{fix}")
    if value.get("std") is not None and min(abs(v) for v in value["std"]) == 0:
        raise error(f"{where}: preprocess std must be non-zero, got {shown(value['std'])}{fix}")
    return value


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_positive_int(v) for v in value):
        return int(value[0]), int(value[1])
    return None


def _config(meta: dict[str, Any], where: str, error: type[VitexportError]) -> Any:
    """The model config of any class (`vitexport.model.family_config.config_from_dict`), or None."""
    from vitexport.model.family_config import config_from_dict

    if not meta.get("config"):
        return None
    try:
        return config_from_dict(meta["config"])
    except ConfigError as exc:
        raise error(f"{where}: its metadata config is invalid ({exc}); re-export the model") from exc


def _geometry(meta: dict[str, Any], where: str, error: type[VitexportError]) -> None:
    """Well-formed sizes (their agreement with the graph is verify's static check, a report, not an error)."""
    fix = "; re-export the model with vitexport"
    for key in ("patch_size", "native_grid", "static_size"):
        if meta.get(key) is not None and _pair(meta[key]) is None:
            raise error(f"{where}: metadata {key} must be [height, width] of positive integers, "
                        f"got {shown(meta[key])}{fix}")
    prefix = meta.get("num_prefix_tokens")
    if prefix is not None and not (isinstance(prefix, int) and not isinstance(prefix, bool) and prefix >= 0):
        raise error(f"{where}: metadata num_prefix_tokens must be a non-negative integer, got {shown(prefix)}{fix}")
    if meta.get("batch_size") is not None and not _positive_int(meta["batch_size"]):
        raise error(f"{where}: metadata batch_size must be a positive integer, got {shown(meta['batch_size'])}{fix}")
    if meta.get("output") is not None and meta["output"] not in OUTPUTS:
        raise error(f"{where}: metadata output must be one of {', '.join(OUTPUTS)}, got {shown(meta['output'])}{fix}")
    if "dtype" in meta and meta["dtype"] not in DTYPES:
        raise error(f"{where}: metadata dtype must be one of {', '.join(DTYPES)}, got {shown(meta['dtype'])}{fix}")


def _channels(cfg: Any, input_dims: Sequence[Any] | None, where: str,
              error: type[VitexportError]) -> None:
    if cfg is None or not input_dims:
        return
    if len(input_dims) != 4:
        raise error(f"{where}: its input has {len(input_dims)} dimensions, not N, C, H, W; re-export the model")
    channels = input_dims[1]
    if isinstance(channels, int) and channels > 0 and channels != cfg.in_chans:
        raise error(f"{where}: its metadata says {cfg.in_chans} input channels but the graph takes {channels}; "
                    "re-export the model")


def transformed_by_ort(meta: dict[str, Any]) -> str | None:
    """"quantized" or "optimized" when ONNX Runtime rewrote the artifact (its weights then no longer carry
    their PyTorch names, so PyTorch cannot be rebuilt from the file); None for a plain export."""
    return "quantized" if meta.get("quantization") else "optimized" if meta.get("optimized") else None


def check_metadata(meta: dict[str, Any], where: str, input_dims: Sequence[Any] | None = None,
                   error: type[VitexportError] = CheckpointError) -> dict[str, Any]:
    """``meta`` when every field present is usable and consistent with its config and the graph's input
    (``input_dims``: [N, C, H, W] with ints or names); ``error`` naming the first bad field otherwise."""
    if not isinstance(meta, dict):
        raise error(f"{where}: its vitexport metadata is not an object; re-export the model")
    cfg = _config(meta, where, error)
    _geometry(meta, where, error)
    _channels(cfg, input_dims, where, error)
    preprocess_dict(meta.get("preprocess"), f"{where} metadata", cfg.in_chans if cfg else None, error)
    labels_list(meta.get("labels"), f"{where} metadata", error)
    return meta


__all__ = ["check_metadata", "labels_list", "preprocess_dict", "shown", "transformed_by_ort"]
