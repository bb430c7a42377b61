"""The layers of the dynamic-pad ViT, written once with timm's state_dict keys.

Importing this package registers every layer under its name (`vitexport.model.registry`):

- `embed`: padding to the patch grid, positional-embedding resampling, the patch embedding;
- `norm`: LayerNorm and RMSNorm; `mlp`: activations, LayerScale, MLP variants;
- `attention`: self-attention, differential attention, the MAP (latent-query) pooling head;
- `blocks`: the transformer blocks timm's ``VisionTransformer`` takes as ``block_fn``;
- `rope_attention`, `eva_blocks`: timm's ``Eva`` attention (rotary) and blocks; `tokens`: prefix tokens and pooling.
"""

from vitexport.model.layers.attention import Attention, AttentionPoolLatent, DiffAttention
from vitexport.model.layers.blocks import Block, block_attn, block_mlp, model_norm
from vitexport.model.layers.embed import PatchEmbed, pad_to_patch, padded_size, resample_abs_pos_embed
from vitexport.model.layers.eva_blocks import EvaBlock, EvaBlockPostNorm
from vitexport.model.layers.mlp import GELUTanh, GluMlp, LayerScale, Mlp, QuickGELU, SwiGLU, SwiGLUPacked
from vitexport.model.layers.norm import LAYER_NORM_EPS, RmsNorm, norm_factory
from vitexport.model.layers.rope_attention import AttentionRope, EvaAttention

__all__ = [
    "LAYER_NORM_EPS",
    "Attention",
    "AttentionPoolLatent",
    "AttentionRope",
    "Block",
    "DiffAttention",
    "EvaAttention",
    "EvaBlock",
    "EvaBlockPostNorm",
    "GELUTanh",
    "GluMlp",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "QuickGELU",
    "RmsNorm",
    "SwiGLU",
    "SwiGLUPacked",
    "block_attn",
    "block_mlp",
    "model_norm",
    "norm_factory",
    "pad_to_patch",
    "padded_size",
    "resample_abs_pos_embed",
]
