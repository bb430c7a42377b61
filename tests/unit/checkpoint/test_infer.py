"""Shape inference (`vitexport.checkpoint.infer`), on ``{key: shape}`` alone: every registered layer is recognised
from the keys it writes, the geometry from the shapes, and a preset is corrected only by what the weights state."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest
import torch

from vitexport._util.errors import ConfigError
from vitexport.checkpoint.infer import (
    PACKED_MLP,
    infer_block_args,
    infer_config_args,
    merge_shape_facts,
    mlp_ratio_for,
    shapes_of,
)
from vitexport.model.config import ViTConfig, get_preset, preset_args, presets_of_class
from vitexport.model.family_config import EvaConfig, config_from_dict
from vitexport.model.family_models import model_for
from vitexport.model.names import FUSED, PACKED, ROTARY, has_trait, layer_names, vit_layer_names
from vitexport.model.vit import VisionTransformer

BASE = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=5)


def shapes(args: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of ``args``' model, in the order torch saves them (nothing allocated)."""
    with torch.device("meta"):
        return shapes_of(VisionTransformer(ViTConfig(**args)).state_dict())


def layouts() -> list[dict[str, Any]]:
    """Every registered block of a plain ViT with every attention and MLP it takes, and each norm (Eva's rotary
    layers: `test_evas_rotary_layers_are_refused_by_their_keys`)."""
    out = []
    for block, attn, mlp, norm in itertools.product(*(vit_layer_names(k) for k in ("block", "attn", "mlp", "norm"))):
        if has_trait("block", block, FUSED) and (attn, mlp) != ("attn", "mlp"):
            continue  # a fused block has its own MLP and attention (the config refuses others)
        out.append(dict(block_fn=block, attn_layer=attn, mlp_layer=mlp, norm_layer=norm))
    return out


@pytest.mark.parametrize("layout", layouts(), ids=lambda d: "-".join(d.values()))
def test_every_registered_layer_is_recognised_from_its_keys(layout: dict[str, Any]) -> None:
    args = {**BASE, **layout, "qk_norm": True}  # qk-norm stores the head width: num_heads is inferred exactly
    found = infer_block_args(shapes(args), BASE["embed_dim"])
    expected = dict(layout, mlp_layer=PACKED_MLP if has_trait("mlp", layout["mlp_layer"], PACKED)
                    else layout["mlp_layer"])  # which half of a packed MLP gates is not in the weights
    if has_trait("block", layout["block_fn"], FUSED):
        expected.pop("mlp_layer"), expected.pop("attn_layer")
    assert {k: found.get(k) for k in expected} == expected
    assert found["num_heads"] == BASE["num_heads"] and found["qk_norm"] is True
    assert int(BASE["embed_dim"] * found["mlp_ratio"]) == ViTConfig(**args).mlp_hidden


@pytest.mark.parametrize("flags", [
    dict(qkv_bias=False, proj_bias=False),
    dict(scale_attn_norm=True, scale_mlp_norm=True),
    dict(init_values=0.1),
    dict(embed_norm_layer="rmsnorm", norm_layer="rmsnorm"),
])
def test_biases_norms_and_layer_scale_are_read_from_the_keys(flags: dict[str, Any]) -> None:
    found = infer_block_args(shapes({**BASE, **flags}), BASE["embed_dim"])
    for key, value in flags.items():
        assert (found.get(key) == value) if isinstance(value, str) else (bool(found.get(key)) == bool(value)), key


@pytest.mark.parametrize(("dim", "hidden"), [(64, 256), (64, 170), (1408, 6144), (1024, 2816), (48, 255), (7, 1)])
def test_mlp_ratio_is_the_smallest_that_gives_the_width(dim: int, hidden: int) -> None:
    ratio = mlp_ratio_for(dim, hidden)
    assert int(dim * ratio) == hidden
    assert int(dim * math.nextafter(ratio, 0.0)) < hidden


@pytest.mark.parametrize("args", [
    dict(BASE, reg_tokens=3, no_embed_class=True, global_pool="avg", fc_norm=True),
    dict(BASE, class_token=False, global_pool="avg", fc_norm=False, in_chans=1, patch_size=(8, 4), img_size=(32, 16)),
    dict(BASE, img_size=40, num_classes=0, global_pool="token"),
])
def test_geometry_from_shapes_alone(args: dict[str, Any]) -> None:
    """The same from tensors and from ``{key: shape}``: inference reads nothing but shapes."""
    with torch.device("meta"):
        sd = VisionTransformer(ViTConfig(**args)).state_dict()
    inferred, notes = infer_config_args(sd)
    assert inferred == infer_config_args(shapes_of(sd))[0]
    cfg = ViTConfig(**{**inferred, "num_heads": args["num_heads"]})
    want = ViTConfig(**args)
    for key in ("embed_dim", "depth", "in_chans", "patch_size", "num_classes", "class_token", "reg_tokens",
                "no_embed_class", "global_pool", "grid_size", "use_fc_norm"):
        assert getattr(cfg, key) == getattr(want, key), key
    assert any("native grid inferred" in n for n in notes)


def test_what_the_shapes_cannot_say_is_refused() -> None:
    sd = shapes(BASE)
    with pytest.raises(ConfigError, match=r"no patch_embed\.proj\.weight"):
        infer_config_args({k: v for k, v in sd.items() if not k.startswith("patch_embed")})
    with pytest.raises(ConfigError, match=r"no blocks\.N\."):
        infer_config_args({k: v for k, v in sd.items() if not k.startswith("blocks.")})
    with pytest.raises(ConfigError, match="no pos_embed"):
        infer_config_args({k: v for k, v in sd.items() if k != "pos_embed"})
    with pytest.raises(ConfigError, match=r"\(non-square\)"):
        infer_config_args(shapes(dict(BASE, img_size=(24, 48))))  # 3x6 + 1 rows: 19, no square with or without


def test_a_preset_is_corrected_only_by_what_the_weights_state() -> None:
    """Classes, channels and a grid that does not fit the preset's come from the weights; the rest stays."""
    preset = preset_args("vit_small_patch16_224")
    weights = shapes(dict(preset, depth=1, img_size=384, num_classes=7, in_chans=1))
    merged = merge_shape_facts(preset, weights)
    assert (merged["num_classes"], merged["in_chans"], merged["img_size"]) == (7, 1, 384)
    assert {k: v for k, v in merged.items() if k not in ("num_classes", "in_chans", "img_size")} == {
        k: v for k, v in preset.items() if k not in ("num_classes", "in_chans", "img_size")}
    # a grid that fits the preset's pos_embed is kept, even when a square guess would differ (no prefix rows)
    keep = dict(preset, reg_tokens=4, no_embed_class=True, img_size=(256, 64))  # 16x4 rows: an 8x8 square too
    assert infer_config_args(shapes(dict(keep, depth=1)), check_layout=False)[0]["img_size"] == 128
    assert merge_shape_facts(keep, shapes(dict(keep, depth=1)))["img_size"] == (256, 64)


# ---------------------------------------------------------------------------
# timm's other classes: refused by the keys that show them, naming the presets they fit
# ---------------------------------------------------------------------------
ROTARY_LAYERS = [(kind, name) for kind in ("attn", "block") for name in layer_names(kind)
                 if has_trait(kind, name, ROTARY)]


@pytest.mark.parametrize(("kind", "name"), ROTARY_LAYERS, ids=lambda v: v)
def test_evas_rotary_layers_are_refused_by_their_keys(kind: str, name: str) -> None:
    """No rule builds Eva's layers from shapes (their rotary tables are not stored): the weights are refused, never
    read as a plain ViT."""
    choice = {"attn": {"attn_type": name}, "block": {"use_post_norm": name == "eva_post_norm"}}[kind]
    cfg = EvaConfig(**BASE, use_rot_pos_emb=True, use_abs_pos_emb=False, **choice)
    with torch.device("meta"):
        sd = model_for(cfg).state_dict()
    with pytest.raises(ConfigError, match="these weights are timm's Eva, not a plain ViT"):
        infer_config_args(shapes_of(sd))


@pytest.mark.parametrize("name", [
    "vit_small_patch16_dinov3", "eva02_small_patch14_224", "vit_small_patch16_rope_mixed_ape_224",
    "deit_tiny_distilled_patch16_224", "naflexvit_base_patch16_siglip",
])
def test_other_classes_are_refused_with_a_command_that_loads_them(name: str) -> None:
    """The suggested --config fits the weights exactly (the head too): checked on ``meta``, nothing allocated."""
    from vitexport.checkpoint.weights import expected_shapes

    with torch.device("meta"):
        weights = shapes_of(model_for(get_preset(name, num_classes=7)).state_dict())
    with pytest.raises(ConfigError) as info:
        infer_config_args(weights, file="w.pth")
    message = str(info.value)
    assert "\n" not in message and "not a plain ViT" in message
    config = json.loads(message.split("vitexport onnx w.pth --config '")[1].split("'")[0])
    assert config == {"architecture": name, "num_classes": 7}
    assert expected_shapes(config_from_dict(config)) == weights


@pytest.mark.slow  # a sweep over every preset of three model classes
def test_every_preset_of_another_class_is_refused_not_read_as_a_plain_vit() -> None:
    """Every eva.py / deit.py distilled / naflexvit.py preset (at depth 2): never built from its shapes."""
    for kind in ("eva", "deit_distilled", "naflexvit"):
        for name, args in presets_of_class(kind).items():
            kv = args.get("num_kv_heads")
            overrides = {"depth": 2, **({"num_kv_heads": kv[:2]} if isinstance(kv, list) else {})}
            with torch.device("meta"):
                weights = shapes_of(model_for(get_preset(name, **overrides)).state_dict())
            with pytest.raises(ConfigError, match=r"not a plain ViT|timm's Eva"):
                infer_config_args(weights)
