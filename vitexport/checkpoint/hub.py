"""timm's hub ``config.json``: model arguments, preprocessing and labels, every field checked.

A hub config comes from a download, not from the user's hand: a field of the wrong type
(``pretrained_cfg`` as a list, ``label_names`` as a number, ``mean`` with strings) is a
`ConfigError` naming the field and the form timm writes, never a ``TypeError`` from deep
inside. Torch-free.
"""

from __future__ import annotations

from typing import Any

from vitexport._util.errors import ConfigError
from vitexport.onnx.metadata import labels_list, preprocess_dict, shown


def is_hub_layout(data: dict[str, Any]) -> bool:
    return "model_args" in data or "pretrained_cfg" in data


def _bad(field: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"config.json: {field} must be {expected}, got {shown(value)}; fix the file")


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(key, "an object", value)
    return value


def _input_size(pcfg: dict[str, Any]) -> dict[str, Any]:
    size = pcfg.get("input_size")
    if size is None:
        return {}
    if not (isinstance(size, (list, tuple)) and len(size) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise _bad("pretrained_cfg.input_size", "[channels, height, width] of positive integers", size)
    return {"in_chans": size[0], "img_size": (size[1], size[2])}


def _preprocess(pcfg: dict[str, Any]) -> dict[str, Any] | None:
    if pcfg.get("mean") is None or pcfg.get("std") is None:
        return None
    preprocess = {"scale": 1 / 255, "mean": pcfg["mean"], "std": pcfg["std"]}
    preprocess_dict(preprocess, "config.json pretrained_cfg")  # finite numbers, non-zero std
    preprocess.update(mean=[float(v) for v in pcfg["mean"]], std=[float(v) for v in pcfg["std"]])
    if pcfg.get("interpolation"):
        if not isinstance(pcfg["interpolation"], str):
            raise _bad("pretrained_cfg.interpolation", "a string such as \"bicubic\"", pcfg["interpolation"])
        preprocess["interpolation"] = pcfg["interpolation"]
    return preprocess


def hub_config(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None, list[str] | None]:
    """timm's hub ``config.json`` -> (model args, preprocess, labels)."""
    args: dict[str, Any] = {}
    if data.get("architecture"):
        if not isinstance(data["architecture"], str):
            raise _bad("architecture", "a string such as \"vit_base_patch16_224\"", data["architecture"])
        args["architecture"] = data["architecture"]
    pcfg = _object(data, "pretrained_cfg")
    args.update(_input_size(pcfg))
    for key in ("num_classes", "global_pool"):
        if key in data:
            args[key] = data[key]
    args.update(_object(data, "model_args"))
    labels = labels_list(data.get("label_names") or pcfg.get("label_names"), "config.json label_names")
    return args, _preprocess(pcfg), labels


__all__ = ["hub_config", "is_hub_layout"]
