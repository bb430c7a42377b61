"""Small configs that together use every model option: what the TorchScript allowlist is derived from.

TorchScript admission (`vitexport.security.torchscript_policy`) accepts only code that vitexport's own
exports contain, so the configs the allowlist is derived from must reach every code path a config can
select. They live here, in the library, so that the allowlist tool (`scripts/gen_torchscript_allowlist.py`)
needs no test code; the tests build the same models.

- `OPTION_CONFIGS`: small models (depth 2, width 32-64, timm keyword arguments) in which every option
  of the model issue appears: geometry, tokens, pooling, norms and biases.
- `LAYER_CONFIGS`: layer choices that no configuration family's representative uses.
- `family_config`: each family's representative (`vitexport.model.families`: timm's VisionTransformer, Eva, the
  distilled DeiT, NaFlexViT) shrunk to depth 2 with timm's own keyword overrides, geometry varied across families.
- `CLASS_CONFIGS`: code paths of the other classes no family representative takes (no prefix token before the
  rotary tokens; NaFlexViT's conv embedding).
- `EXPORT_VARIANTS`: a fixed-size and an unpadded export; `OUTPUT_VARIANTS`: exports returning features and tokens.
- `export_cases` is all of them with the output each export returns (`export_configs` the configs);
  `uncovered` names any value of `option_values` none of the plain ViT configs uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vitexport.model import config as _config
from vitexport.model.config import ViTConfig, get_preset
from vitexport.model.families import FAMILIES
from vitexport.model.names import LAYER_FIELDS, vit_layer_names

# Every option of the model issue appears in at least one config; all are small (depth 2, dim 32-64).
OPTION_CONFIGS: dict[str, dict[str, Any]] = {
    # the spec's example: 28x28, P=8, 3x3 native grid, CLS token
    "spec_cls": dict(img_size=28, patch_size=8, in_chans=1, num_classes=10, embed_dim=32, depth=2, num_heads=2),
    # non-square native grid (3x5), registers without pos-embed rows, LayerScale, qk_norm, avg pool + fc_norm
    "reg_noembed": dict(
        img_size=(24, 40), patch_size=8, num_classes=7, embed_dim=32, depth=2, num_heads=4, reg_tokens=4,
        no_embed_class=True, init_values=0.1, qk_norm=True, global_pool="avg",
    ),
    # no class token, rectangular patches, registers with pos-embed rows, avgmax, pre-norm (no conv bias)
    "nocls_avgmax": dict(
        img_size=32, patch_size=(8, 4), num_classes=5, embed_dim=48, depth=2, num_heads=3, class_token=False,
        reg_tokens=2, global_pool="avgmax", pre_norm=True, fc_norm=False, qkv_bias=False,
    ),
    # max pooling, one register, no final norm, mlp_ratio 3
    "max_nofinal": dict(
        img_size=20, patch_size=5, in_chans=2, num_classes=3, embed_dim=40, depth=2, num_heads=5, reg_tokens=1,
        global_pool="max", final_norm=False, mlp_ratio=3.0,
    ),
    # features only (num_classes=0) and no pooling: output (B, T, D)
    "features_nopool": dict(
        img_size=30, patch_size=6, num_classes=0, global_pool="", embed_dim=48, depth=2, num_heads=3,
        init_values=1e-2,
    ),
    # token pooling with fc_norm forced on, patch 16, 1 head, odd mlp ratio
    "token_fcnorm": dict(
        img_size=64, patch_size=16, num_classes=4, embed_dim=64, depth=2, num_heads=1, fc_norm=True, mlp_ratio=2.5,
    ),
}
# Layer choices no family representative makes (vitexport names; timm takes classes for these).
LAYER_CONFIGS: dict[str, dict[str, Any]] = {
    "glu_embednorm": dict(img_size=(20, 28), patch_size=4, num_classes=6, embed_dim=32, depth=2, num_heads=2,
                          mlp_layer="glu", act_layer="silu", embed_norm_layer="layernorm", norm_eps=1e-5),
}
# Families: timm's representative shrunk with its own keyword overrides.
FAMILY_BASE: dict[str, Any] = dict(depth=2, embed_dim=32, num_heads=2, img_size=(24, 40), patch_size=8,
                                   num_classes=5)
# The other classes, wider (rotary tables need a head width divisible by 4); NaFlexViT's table 3x5, the native grid.
CLASS_BASE: dict[str, dict[str, Any]] = {
    "eva": dict(embed_dim=64, num_heads=4),
    "deit_distilled": dict(embed_dim=48, num_heads=3),
    "naflexvit": dict(embed_dim=64, num_heads=4, pos_embed_grid_size=(3, 5)),
}
# Geometry varied across families: non-square native grids, rectangular patches, 1 channel, features only.
FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {
    "vit": dict(img_size=28, in_chans=1),
    "clip": dict(patch_size=(8, 6), num_heads=4),
    "siglip": dict(num_classes=0, reg_tokens=2),  # the MAP head attends over patch tokens only
    "siglip2": dict(img_size=(30, 20), patch_size=5, class_token=True),
    "aimv2": dict(img_size=(28, 36), num_heads=4),
    "xp": dict(num_heads=4, num_classes=0),
    "diff-attention": dict(embed_dim=48, num_heads=3),
    "swiglu-packed": dict(patch_size=7, img_size=21),
    "eva": dict(mlp_ratio=3.0),
    "eva02-split": dict(img_size=(40, 24)),
    "eva02-post-norm": dict(mlp_ratio=3.0),
    "dinov3-swiglu": dict(mlp_ratio=2.9),  # a SwiGLU width timm aligns to 8
    "pe-core": dict(attn_pool_num_heads=4),
    "pe-spatial": dict(img_size=(32, 24)),
    "sapiens2": dict(num_kv_heads=(4, 2)),  # grouped-query attention, per block
    "naflex-ar": dict(pos_embed_grid_size=(4, 4)),  # aspect-preserving tables are square
    "naflex-radio-v3": dict(pos_embed_grid_size=(6, 6)),
    "naflex-radio-v4": dict(pos_embed_grid_size=(6, 6), mlp_ratio=3.0),
}
# Code paths of the other classes no family representative takes: (family whose shrunk config they change, change).
CLASS_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "pe-core-nocls": ("pe-core", dict(class_token=False)),  # rotary on every token: no prefix to skip
    "naflex-conv": ("naflex", dict(embed_proj_type="conv", patchify_channels_last=False)),
}
# Export variants: (the option config they start from, what they change).
EXPORT_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "fixed-size": ("spec_cls", dict(img_size=32, dynamic_img_size=False, dynamic_img_pad=False)),
    "unpadded": ("spec_cls", dict(dynamic_img_pad=False)),
}


# Exports that return another output than the default: (the config they export, the output).
OUTPUT_VARIANTS: dict[str, tuple[str, str]] = {
    "features": ("spec_cls", "features"),
    "tokens": ("spec_cls", "tokens"),
    "dinov3-tokens": ("family-dinov3", "tokens"),
}


def family_args(name: str) -> dict[str, Any]:
    """timm keyword overrides that shrink family ``name``'s representative (depth 2, small width)."""
    family = next(f for f in FAMILIES if f.name == name)
    return {**FAMILY_BASE, **CLASS_BASE.get(family.model_class, {}), **FAMILY_OVERRIDES.get(name, {})}


def family_config(name: str) -> Any:
    """The config of family ``name``'s representative (of its model class), shrunk (`family_args`)."""
    family = next(f for f in FAMILIES if f.name == name)
    return get_preset(family.representative, **family_args(name))


def class_config(name: str) -> Any:
    """A config of `CLASS_CONFIGS`: a family's shrunk representative, changed."""
    family, change = CLASS_CONFIGS[name]
    return family_config(family).replace(**change)


def export_configs() -> dict[str, Any]:
    """Every config whose export the TorchScript allowlist must admit, by name."""
    out: dict[str, Any] = {name: ViTConfig(**args) for name, args in {**OPTION_CONFIGS, **LAYER_CONFIGS}.items()}
    out.update({f"family-{family.name}": family_config(family.name) for family in FAMILIES})
    out.update({name: class_config(name) for name in CLASS_CONFIGS})
    out.update({name: ViTConfig(**{**OPTION_CONFIGS[base], **change})
                for name, (base, change) in EXPORT_VARIANTS.items()})
    return out


def export_cases() -> dict[str, tuple[Any, str | None]]:
    """Every export the TorchScript allowlist must admit: (config, output; None for the default), by name."""
    configs = export_configs()
    out: dict[str, tuple[Any, str | None]] = {name: (cfg, None) for name, cfg in configs.items()}
    out.update({f"output-{name}": (configs[base], output) for name, (base, output) in OUTPUT_VARIANTS.items()})
    return out


def option_values() -> dict[str, tuple[Any, ...]]:
    """For every `ViTConfig` option that selects code (a flag, a layer, a pooling, an optional part), the
    values it can take; numbers that only size tensors are left out, except where zero or None removes a part."""
    choices: dict[str, tuple[Any, ...]] = {name: (False, True) for name in _config.BOOL_FIELDS}
    choices.update({field: vit_layer_names(kind) for field, kind in LAYER_FIELDS.items()})  # the registry's names
    choices.update(global_pool=_config.GLOBAL_POOLS, embed_norm_layer=(None, *vit_layer_names("norm")),
                   fc_norm=(None, False, True))
    return choices


def _kind(name: str, value: Any) -> Any:
    """The code-selecting part of a value: zero or not, None or not, square or not, else the value itself."""
    if name in ("reg_tokens", "num_classes"):
        return value > 0
    if name == "init_values":
        return value is not None
    if name in ("img_size", "patch_size"):
        return isinstance(value, tuple)
    return value


PRESENCE = {"reg_tokens": (False, True), "num_classes": (False, True), "init_values": (False, True),
            "img_size": (False, True), "patch_size": (False, True)}  # zero/None/square, and not


def uncovered(configs: dict[str, Any]) -> dict[str, set[Any]]:
    """Option values (`option_values`, and zero/None/square or not for `PRESENCE`) that no plain ViT config uses
    (the other classes' code paths are their families' representatives and `CLASS_CONFIGS`)."""
    used: dict[str, set[Any]] = {}
    for cfg in configs.values():
        if type(cfg) is not ViTConfig:
            continue
        for f in dataclasses.fields(cfg):
            used.setdefault(f.name, set()).add(_kind(f.name, getattr(cfg, f.name)))
    wanted = {**option_values(), **PRESENCE}
    missing = {name: set(values) - used.get(name, set()) for name, values in wanted.items()}
    return {name: values for name, values in missing.items() if values}


__all__ = ["CLASS_BASE", "CLASS_CONFIGS", "EXPORT_VARIANTS", "FAMILY_BASE", "FAMILY_OVERRIDES", "LAYER_CONFIGS",
           "OPTION_CONFIGS", "OUTPUT_VARIANTS", "class_config", "export_cases", "export_configs", "family_args",
           "family_config", "option_values", "uncovered"]
