"""Configuration families: the distinct layer layouts among timm's ``VisionTransformer`` architectures.

A family is what the blocks are made of (norm and its eps, activation, MLP, block type,
attention, scale norms, biases, pre-norm, the MAP head); sizes, tokens and pooling flags
vary within one. Every preset belongs to exactly one family (tests check it against
timm), and each family has one representative architecture that the tests run against
timm in PyTorch, ONNX and TorchScript.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vitexport.model.config import LAYER_OPTIONS, ViTConfig
from vitexport.model.presets import PRESETS

# The ViTConfig fields that define a family (besides global_pool == 'map'): every layer choice and layer option
# (vitexport.model.config.LAYER_OPTIONS), and pre_norm.
LAYOUT_FIELDS = (*LAYER_OPTIONS, "pre_norm")


@dataclass(frozen=True)
class Family:
    name: str
    representative: str  # a preset name
    description: str


FAMILIES: tuple[Family, ...] = (
    Family("vit", "vit_base_patch16_224",
           "pre-norm blocks, LayerNorm eps 1e-6, GELU MLP: ViT, DeiT-3, DINOv2, registers, *_gap_*, FlexiViT, "
           "EVA (this class), RADIO, InternViT, TIPSv2, SigLIP *_siglip_gap_* with GELU"),
    Family("clip", "vit_base_patch16_clip_224", "CLIP: pre_norm, LayerNorm eps 1e-5, GELU"),
    Family("clip-quickgelu", "vit_base_patch16_clip_quickgelu_224",
           "CLIP with OpenAI's QuickGELU: pre_norm, LayerNorm eps 1e-5"),
    Family("siglip", "vit_base_patch16_siglip_224", "SigLIP: attention-pool (MAP) head, GELU"),
    Family("siglip2", "vit_so400m_patch16_siglip_256", "SigLIP 2 / giantopt: MAP head, GELU-tanh"),
    Family("siglip2-gap", "vit_so400m_patch16_siglip_gap_256", "SigLIP 2 without the MAP head: GELU-tanh, avg pool"),
    Family("aimv2", "aimv2_large_patch14_224",
           "AIMv2: RMSNorm eps 1e-5 (also after the patch embedding), SwiGLU (SiLU), no projection biases"),
    Family("beit3", "beit3_base_patch16_224", "BEiT3: LayerNorm eps 1e-5, scale norms in attention and MLP"),
    Family("xp", "vit_base_patch16_xp_224",
           "*_xp_*: parallel-scaling blocks, RMSNorm (also qk-norm), pre_norm, no qkv bias"),
    Family("parallel-scaling", "vit_pwee_patch16_reg1_gap_256", "ViT-22B-style parallel-scaling blocks, LayerNorm"),
    Family("parallel-things", "vit_base_patch16_18x2_224", "*_18x2_*: two parallel attention and MLP branches"),
    Family("res-post", "vit_base_patch16_rpn_224", "*_rpn_*: residual post-norm blocks"),
    Family("diff-attention", "vit_dwee_patch16_reg1_gap_256", "differential attention in pre-norm blocks"),
    Family("diff-parallel", "vit_dpwee_patch16_reg1_gap_256", "parallel-scaling blocks with differential attention"),
    Family("swiglu-packed", "vit_giant_patch14_dinov2",
           "DINOv2 / TIPSv2 giant: packed SwiGLU MLP (one fc1, SiLU gate first)"),
)


def layout(config: ViTConfig | dict[str, Any]) -> tuple[Any, ...]:
    """The values that define a family, for a config or a dict of timm keyword arguments."""
    cfg = config if isinstance(config, ViTConfig) else ViTConfig.from_dict(config)
    return (*(getattr(cfg, f) for f in LAYOUT_FIELDS), cfg.global_pool == "map")


_BY_LAYOUT: dict[tuple[Any, ...], str] = {}


def family_of(config: ViTConfig | dict[str, Any]) -> str:
    """The family name of a config, or ``custom`` for a layout no timm architecture uses."""
    if not _BY_LAYOUT:
        _BY_LAYOUT.update({layout(PRESETS[f.representative]): f.name for f in FAMILIES})
    return _BY_LAYOUT.get(layout(config), "custom")


def presets_in_family(name: str) -> list[str]:
    return [arch for arch, args in PRESETS.items() if family_of(args) == name]
