"""Configuration families: the distinct layouts among timm's dynamic-size ViT architectures, per model class.

A family is one model class (`vitexport.model.names.MODEL_CLASSES`) with one layout. For timm's
``VisionTransformer``: what the blocks are made of (norm and its eps, activation, MLP, block type,
attention, scale norms, biases, pre-norm, the MAP head). For ``Eva``: the attention and its
projections, the MLP, post-norm blocks, the norm and its eps, the absolute table, the rotary scheme
(axial, DINOv3, mixed; its grid indexing), the attention pool. For ``NaFlexVit``: the position table
and how it is resampled, the activation. The distilled DeiT is one family. Sizes, tokens and pooling
flags vary within one. Every preset belongs to exactly one family (tests check it against timm),
and each family has one representative architecture that the tests run against timm in PyTorch,
ONNX and TorchScript.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from vitexport.model.config import FAMILY_PRESETS, LAYER_OPTIONS, PRESETS, get_preset

# The ViTConfig fields that define a family (besides global_pool == 'map'): every layer choice and layer option
# (vitexport.model.config.LAYER_OPTIONS), and pre_norm.
LAYOUT_FIELDS = (*LAYER_OPTIONS, "pre_norm")


class _Row(NamedTuple):
    representative: str
    description: str


@dataclass(frozen=True)
class Family:
    name: str
    representative: str  # a preset name
    description: str
    model_class: str = "vit"  # `vitexport.model.names.MODEL_CLASSES`


# Per model class (`vitexport.model.names.MODEL_CLASSES`): family name -> (representative preset, description).
_TABLE: dict[str, dict[str, _Row]] = {
    "vit": {  # timm's VisionTransformer (vision_transformer.py)
        "vit": _Row("vit_base_patch16_224",
                    "pre-norm blocks, LayerNorm eps 1e-6, GELU MLP: ViT, DeiT-3, DINOv2, registers, *_gap_*, FlexiViT, "
                    "EVA (this class), RADIO, InternViT, TIPSv2, SigLIP *_siglip_gap_* with GELU"),
        "clip": _Row("vit_base_patch16_clip_224", "CLIP: pre_norm, LayerNorm eps 1e-5, GELU"),
        "clip-quickgelu": _Row("vit_base_patch16_clip_quickgelu_224",
                               "CLIP with OpenAI's QuickGELU: pre_norm, LayerNorm eps 1e-5"),
        "siglip": _Row("vit_base_patch16_siglip_224", "SigLIP: attention-pool (MAP) head, GELU"),
        "siglip2": _Row("vit_so400m_patch16_siglip_256", "SigLIP 2 / giantopt: MAP head, GELU-tanh"),
        "siglip2-gap": _Row("vit_so400m_patch16_siglip_gap_256", "SigLIP 2 without the MAP head: GELU-tanh, avg pool"),
        "aimv2": _Row("aimv2_large_patch14_224",
                      "AIMv2: RMSNorm eps 1e-5 (also after the patch embedding), SwiGLU (SiLU), no projection biases"),
        "beit3": _Row("beit3_base_patch16_224", "BEiT3: LayerNorm eps 1e-5, scale norms in attention and MLP"),
        "xp": _Row("vit_base_patch16_xp_224",
                   "*_xp_*: parallel-scaling blocks, RMSNorm (also qk-norm), pre_norm, no qkv bias"),
        "parallel-scaling": _Row("vit_pwee_patch16_reg1_gap_256", "ViT-22B-style parallel-scaling blocks, LayerNorm"),
        "parallel-things": _Row("vit_base_patch16_18x2_224", "*_18x2_*: two parallel attention and MLP branches"),
        "res-post": _Row("vit_base_patch16_rpn_224", "*_rpn_*: residual post-norm blocks"),
        "diff-attention": _Row("vit_dwee_patch16_reg1_gap_256", "differential attention in pre-norm blocks"),
        "diff-parallel": _Row("vit_dpwee_patch16_reg1_gap_256", "parallel-scaling blocks with differential attention"),
        "swiglu-packed": _Row("vit_giant_patch14_dinov2",
                              "DINOv2 / TIPSv2 giant: packed SwiGLU MLP (one fc1, SiLU gate first)"),
    },
    "deit_distilled": {  # timm's VisionTransformerDistilled (deit.py)
        "deit-distilled": _Row("deit_tiny_distilled_patch16_224",
                               "DeiT distilled: a distillation token and a second head, averaged at inference"),
    },
    "eva": {  # timm's Eva (eva.py)
        "eva": _Row("eva_giant_patch14_224", "EVA-01: absolute table only, fused qkv with q/v biases, GELU MLP"),
        "eva02": _Row("eva02_small_patch14_224",
                      "EVA-02 tiny/small: axial RoPE on a reference grid + absolute table, packed SwiGLU"),
        "eva02-split": _Row("eva02_base_patch16_clip_224", "EVA-02 base/large and EVA-02 CLIP: separate q/k/v, "
                            "SwiGLU with its norm, axial RoPE + table"),
        "eva02-post-norm": _Row("eva02_enormous_patch14_clip_224", "EVA-02 CLIP enormous: residual post-norm blocks"),
        "dinov3": _Row("vit_small_patch16_dinov3_qkvb",
                       "DINOv3 / LingBot: normalized-coordinate RoPE, no table, 4 registers, layer scale"),
        "dinov3-swiglu": _Row("vit_huge_plus_patch16_dinov3", "DINOv3 huge+/7B: the same with SwiGLU (width aligned)"),
        "pe-core": _Row("vit_pe_core_base_patch16_224",
                        "Perception Encoder core: axial RoPE (xy) + table, attention pool over every token"),
        "pe-spatial": _Row("vit_pe_spatial_base_patch16_512", "Perception Encoder lang/spatial: no attention pool"),
        "rope-axial": _Row("vit_small_patch16_rope_224", "RoPE-ViT axial: rotary only"),
        "rope-axial-ape": _Row("vit_small_patch16_rope_ape_224", "RoPE-ViT axial with an absolute table"),
        "rope-mixed": _Row("vit_small_patch16_rope_mixed_224", "RoPE-ViT mixed: learned per-block frequencies"),
        "rope-mixed-ape": _Row("vit_small_patch16_rope_mixed_ape_224", "RoPE-ViT mixed with an absolute table"),
        "sbb-rope": _Row("vit_betwixt_patch16_rope_reg4_gap_256", "timm's SBB RoPE ViTs: registers, no class token"),
        "sapiens2": _Row("vit_base_patch16_sapiens2",
                         "Sapiens2: grouped-query attention, RMSNorm, q/k norm, attention-only layer scale"),
    },
    "naflexvit": {  # timm's NaFlexVit (naflexvit.py) on NCHW images
        "naflex": _Row("naflexvit_base_patch16_gap", "NaFlexViT: linear patches, bicubic table"),
        "naflex-ar": _Row("naflexvit_base_patch16_par_gap", "aspect-preserving table: a square resampled, cropped"),
        "naflex-factorized": _Row("naflexvit_base_patch16_parfac_gap", "row + column tables, linearly resampled"),
        "naflex-siglip": _Row("naflexvit_base_patch16_siglip", "SigLIP2-NaFlex: antialiased bilinear table, MAP head"),
        "naflex-radio-v3": _Row("naflexvit_base_patch16_radio_v3", "C-RADIO v3: bilinear, align_corners"),
        "naflex-radio-v4": _Row("naflexvit_so400m_patch16_radio_v4", "C-RADIO v3/v4: bilinear without antialias"),
    },
}
FAMILIES: tuple[Family, ...] = tuple(Family(name, representative, description, model_class)
                                     for model_class, rows in _TABLE.items()
                                     for name, (representative, description) in rows.items())


def _class_layout(cfg: Any) -> tuple[Any, ...]:
    """The values that define a family within the config's model class."""
    if cfg.CLASS == "eva":
        rope = (cfg.rope_type, cfg.rope_grid_indexing) if cfg.use_rot_pos_emb else None
        return (cfg.attn_type, cfg.qkv_fused, cfg.mlp_layer, cfg.use_post_norm, cfg.norm_layer, cfg.norm_eps,
                cfg.use_abs_pos_emb, rope, cfg.global_pool == "map")
    if cfg.CLASS == "naflexvit":
        return (cfg.pos_embed, cfg.pos_embed_interp_mode, cfg.pos_embed_antialias, cfg.pos_embed_align_corners,
                cfg.pos_embed_ar_preserving, cfg.act)
    return (*(getattr(cfg, f) for f in LAYOUT_FIELDS), cfg.global_pool == "map")


def layout(config: Any) -> tuple[Any, ...]:
    """The values that define a family: the model class and its layout, for a config of any class or a dict of timm
    keyword arguments (`vitexport.model.family_config.config_from_dict`)."""
    from vitexport.model.family_config import config_from_dict

    cfg = config_from_dict(config) if isinstance(config, dict) else config
    return (cfg.CLASS, *_class_layout(cfg))


_BY_LAYOUT: dict[tuple[Any, ...], str] = {}


def family_of(config: Any) -> str:
    """The family name of a config (or a dict of timm keyword arguments), or ``custom`` for a layout no timm
    architecture uses."""
    if not _BY_LAYOUT:
        _BY_LAYOUT.update({layout(get_preset(f.representative)): f.name for f in FAMILIES})
    return _BY_LAYOUT.get(layout(config), "custom")


def preset_names() -> list[str]:
    """Every preset of every class: vision_transformer.py's, then eva.py's, deit.py's and naflexvit.py's."""
    return [*PRESETS, *FAMILY_PRESETS]


def presets_in_family(name: str) -> list[str]:
    return [arch for arch in preset_names() if family_of(get_preset(arch)) == name]
