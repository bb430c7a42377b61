"""timm's hub ``config.json`` (`vitexport.checkpoint.hub`): model arguments, preprocessing and labels; a field of
the wrong type is a one-line `ConfigError` naming the field, never a TypeError from deep inside."""

from __future__ import annotations

from typing import Any

import pytest

from vitexport._util.errors import ConfigError
from vitexport.checkpoint.hub import hub_config, is_hub_layout
from vitexport.model.config import ViTConfig

HUB: dict[str, Any] = {
    "architecture": "vit_small_patch16_224",
    "num_classes": 3,
    "global_pool": "avg",
    "model_args": {"depth": 2, "img_size": 96},
    "pretrained_cfg": {"input_size": [1, 64, 48], "mean": [0.5], "std": [0.25], "interpolation": "bicubic",
                       "label_names": ["unused: the top-level label_names win"]},
    "label_names": ["cat", "dog", "eel"],
}


def test_model_args_preprocess_and_labels() -> None:
    args, preprocess, labels = hub_config(HUB)
    # model_args come last: they win over pretrained_cfg's input size, as in timm
    assert args == {"architecture": "vit_small_patch16_224", "in_chans": 1, "img_size": 96, "num_classes": 3,
                    "global_pool": "avg", "depth": 2}
    assert preprocess == {"scale": 1 / 255, "mean": [0.5], "std": [0.25], "interpolation": "bicubic"}
    assert labels == ["cat", "dog", "eel"]
    cfg = ViTConfig.from_dict(args)
    assert (cfg.embed_dim, cfg.depth, cfg.img_hw, cfg.in_chans) == (384, 2, (96, 96), 1)


def test_optional_fields_may_be_missing() -> None:
    args, preprocess, labels = hub_config({"pretrained_cfg": {"input_size": [3, 30, 40],
                                                              "label_names": ["a", "b"]}})
    assert args == {"in_chans": 3, "img_size": (30, 40)} and preprocess is None and labels == ["a", "b"]
    assert hub_config({"model_args": {}}) == ({}, None, None)


def test_hub_layout_is_told_from_plain_keyword_arguments() -> None:
    assert is_hub_layout(HUB) and is_hub_layout({"model_args": {}}) and is_hub_layout({"pretrained_cfg": {}})
    assert not is_hub_layout({"architecture": "vit_small_patch16_224", "depth": 2})


@pytest.mark.parametrize(("change", "field"), [
    ({"pretrained_cfg": ["not", "an", "object"]}, "pretrained_cfg"),
    ({"model_args": "depth=2"}, "model_args"),
    ({"architecture": 7}, "architecture"),
    ({"pretrained_cfg": {"input_size": [3, 224]}}, "pretrained_cfg.input_size"),
    ({"pretrained_cfg": {"input_size": [3, 0, 224]}}, "pretrained_cfg.input_size"),
    ({"pretrained_cfg": {"input_size": [3, True, 224]}}, "pretrained_cfg.input_size"),
    ({"pretrained_cfg": {"mean": ["a"], "std": [1.0]}}, "mean"),
    ({"pretrained_cfg": {"mean": [0.5], "std": [0.0]}}, "std"),
    ({"pretrained_cfg": {"mean": [0.5], "std": [0.5], "interpolation": 3}}, "pretrained_cfg.interpolation"),
    ({"label_names": 12}, "label_names"),
])
def test_a_field_of_the_wrong_type_is_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        hub_config({**HUB, **change})
    message = str(info.value)
    assert "\n" not in message and field in message, message
