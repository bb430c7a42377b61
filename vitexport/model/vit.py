"""The dynamic-pad Vision Transformer, with timm's state_dict keys and semantics.

Reads top to bottom: patch embedding (pad right/bottom, conv) -> prefix tokens and
positional embeddings (resampled to the input's grid) -> blocks -> norm -> pool -> head.
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations.

import logging
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from vitexport._util.errors import ConfigError
from vitexport._util.geometry import grid_size, input_geometry
from vitexport.model.base import ModelBase
from vitexport.model.config import ViTConfig
from vitexport.model.layers import AttentionPoolLatent, PatchEmbed, norm_factory, resample_abs_pos_embed
from vitexport.model.layers.tokens import join_prefix, pool_tokens
from vitexport.model.registry import build

logger = logging.getLogger(__name__)


class VisionTransformer(ModelBase):
    """timm's ``VisionTransformer`` restricted to what exports: see `ViTConfig` for options."""

    __constants__ = (*ModelBase.__constants__, "dynamic_img_size", "no_embed_class")

    def __init__(self, config: ViTConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        c = self._init_base(config, ViTConfig, kwargs)
        D = c.embed_dim
        norm_layer = norm_factory(c.norm_layer, c.norm_eps)  # as timm's norm_layer: dim -> module

        self.patch_embed = PatchEmbed(
            img_size=c.img_hw,
            patch_size=c.patch_hw,
            in_chans=c.in_chans,
            embed_dim=D,
            bias=not c.pre_norm,  # as timm: no conv bias when a pre-norm follows (CLIP)
            dynamic_img_pad=c.dynamic_img_pad,
            strict_img_size=not c.dynamic_img_size,
            norm=norm_factory(c.embed_norm_layer, c.embed_norm_eps)(D) if c.embed_norm_layer else None,
        )
        self._init_tokens(c, self.patch_embed.num_patches, c.reg_tokens)
        self.norm_pre = norm_layer(D) if c.pre_norm else nn.Identity()
        self.blocks = nn.Sequential(*[build("block", c.block_fn, c, i) for i in range(c.depth)])
        use_fc_norm = c.use_fc_norm
        self.norm = norm_layer(D) if c.final_norm and not use_fc_norm else nn.Identity()
        # 'map': a learned latent query attends over the patch tokens (SigLIP); timm's AttentionPoolLatent
        self.attn_pool = None
        if c.global_pool == "map":
            self.attn_pool = AttentionPoolLatent(D, c.num_heads, c.mlp_ratio, norm_layer, c.act_layer)
        self.fc_norm = norm_layer(D) if c.final_norm and use_fc_norm else nn.Identity()
        self.head = nn.Linear(D, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        self._init_linears()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)

    # ---- geometry ---------------------------------------------------------
    @torch.jit.ignore
    def grid_for(self, height: int, width: int) -> Tuple[int, int]:
        """Patch grid an input of this size produces (after padding when dynamic_img_pad)."""
        return grid_size(height, width, self.patch_embed.patch_size, self.patch_embed.dynamic_img_pad)

    @torch.jit.ignore
    def set_input_size(
        self,
        img_size: int | Tuple[int, int] | None = None,
        patch_size: int | Tuple[int, int] | None = None,
    ) -> None:
        """Make ``img_size`` the native size, resampling ``pos_embed`` permanently when the grid changes."""
        if patch_size is not None and ViTConfig(img_size=self.config.img_size, patch_size=patch_size).patch_hw != (
            self.patch_embed.patch_size
        ):
            raise NotImplementedError(
                "changing the patch size needs resampled patch-embedding weights, which vitexport does not do; "
                "re-train or convert the checkpoint with timm"
            )
        new_config = self.config.replace(img_size=img_size if img_size is not None else self.config.img_size)
        prev_grid = self.patch_embed.grid_size
        self.patch_embed.set_input_size(new_config.img_hw)
        new_grid = self.patch_embed.grid_size
        num_prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        num_new_tokens = self.patch_embed.num_patches + num_prefix
        if num_new_tokens != self.pos_embed.shape[1] or new_grid != prev_grid:
            with torch.no_grad():
                resampled = resample_abs_pos_embed(self.pos_embed, list(new_grid), list(prev_grid), num_prefix)
            self.pos_embed = nn.Parameter(resampled, requires_grad=self.pos_embed.requires_grad)
            logger.info("resampled position embedding %s -> %s", prev_grid, new_grid)
        self.config = new_config

    # ---- forward ----------------------------------------------------------
    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        B, gh, gw, D = x.shape
        pos_embed = self._grid_pos_embed(self.pos_embed, gh, gw)  # (1, [prefix +] gh*gw, D)
        x = x.reshape(B, gh * gw, D)  # (B, N, D)
        return join_prefix(x, self._prefix_tokens(B), pos_embed, self.no_embed_class)  # (B, prefix + N, D)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, gh, gw, D)
        x = self._pos_embed(x)  # (B, T, D)
        x = self.norm_pre(x)
        x = self.blocks(x)
        return self.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn_pool is not None:
            return self.attn_pool(x[:, self.num_prefix_tokens :])  # (B, D)
        return pool_tokens(x, self.global_pool, self.num_prefix_tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x)
        x = self.fc_norm(x)
        return x if pre_logits else self.head(x)


def create_model(config: Any = None, pretrained: bool = False, seed: Optional[int] = None,
                 **overrides: Any) -> nn.Module:
    """Build a randomly initialised model (eval mode) of any class from a config, a preset name of any class
    (timm's vision_transformer.py, eva.py, deit.py, naflexvit.py) or timm keyword arguments.

    vitexport builds architectures and downloads no weights: ``pretrained=True`` is refused with how to load a
    checkpoint instead. ``seed`` makes the random weights reproducible (the global torch RNG is left as it
    was); the model's ``meta`` records that its weights are random, and exports carry that in their metadata.
    """
    from vitexport.model.family_config import config_from_dict
    from vitexport.model.family_models import model_for

    if pretrained:
        name = config if isinstance(config, str) else "the architecture"
        raise ConfigError(
            f"vitexport downloads no weights, so it cannot build a pretrained {name}; fetch the checkpoint and "
            f"load it with vitexport.load_model(path) (or vitexport.load_model(path, config={{\"architecture\": "
            f"\"{name}\"}}) for weights alone), or leave pretrained out for random weights")
    if isinstance(config, str):
        config = config_from_dict({"architecture": config, **overrides})
    elif isinstance(config, dict):
        config = config_from_dict({**config, **overrides})
    elif config is None:
        config = config_from_dict(overrides)
    elif overrides:
        config = config.replace(**overrides)
    if seed is None:
        model = model_for(config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_for(config)
    model.meta = {"source": {"weights": "random", "seed": seed, "architecture": config.architecture}}
    return model


def infer_grid(model: nn.Module, height: int, width: int) -> Dict[str, Any]:
    """Geometry an input of ``height`` x ``width`` goes through: padded size, grid, tokens (any model class)."""
    c = model.config
    return input_geometry(height, width, c.patch_hw, c.dynamic_img_pad, c.num_prefix_tokens, c.grid_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["VisionTransformer", "count_parameters", "create_model", "infer_grid"]
