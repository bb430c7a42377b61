"""The layers of the dynamic-pad ViT, written once with timm's state_dict keys.

- `embed`: padding to the patch grid, positional-embedding resampling, the patch embedding;
- `norm`: LayerNorm and RMSNorm by name; `mlp`: activations, LayerScale, MLP variants;
- `attention`: self-attention, differential attention, the MAP (latent-query) pooling head;
- `blocks`: the transformer blocks timm's ``VisionTransformer`` takes as ``block_fn``.
"""

from vitexport.model.config import ATTN_LAYERS
from vitexport.model.layers.attention import Attention, AttentionPoolLatent, DiffAttention
from vitexport.model.layers.blocks import BLOCK_FNS, Block, BlockSpec, make_block
from vitexport.model.layers.embed import PatchEmbed, pad_to_patch, padded_size, resample_abs_pos_embed
from vitexport.model.layers.mlp import ACT_LAYERS, MLP_LAYERS, LayerScale, Mlp, QuickGELU, make_act, make_mlp
from vitexport.model.layers.norm import LAYER_NORM_EPS, NORM_LAYERS, RmsNorm, make_norm, norm_factory

__all__ = [
    "ACT_LAYERS",
    "ATTN_LAYERS",
    "BLOCK_FNS",
    "LAYER_NORM_EPS",
    "MLP_LAYERS",
    "NORM_LAYERS",
    "Attention",
    "AttentionPoolLatent",
    "Block",
    "BlockSpec",
    "DiffAttention",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "QuickGELU",
    "RmsNorm",
    "make_act",
    "make_block",
    "make_mlp",
    "make_norm",
    "norm_factory",
    "pad_to_patch",
    "padded_size",
    "resample_abs_pos_embed",
]
