"""timm's ``VisionTransformerDistilled`` (the distilled DeiTs) at any input size, with timm's state_dict keys.

The dynamic-pad ViT (`vitexport.model.vit`) with a distillation token (``dist_token``) after the class
token (its prefix tokens), both with rows in the position table (``[cls, dist, patches]``), and a second head
(``head_dist``) on the distillation token. At inference timm averages the two heads' logits,
``(head(x[:, 0]) + head_dist(x[:, 1])) / 2``, and the two tokens for ``pre_logits``; pooling and
``fc_norm`` are not applied (timm's distilled head reads the tokens directly).
"""

# No `from __future__ import annotations` here: TorchScript needs evaluated annotations.

from typing import Any, List, Optional

import torch
from torch import nn

from vitexport.model.family_config import DistilledConfig
from vitexport.model.vit import VisionTransformer


class VisionTransformerDistilled(VisionTransformer):
    """timm's ``VisionTransformerDistilled``: see `DistilledConfig` for options."""

    def __init__(self, config: Optional[DistilledConfig] = None, **kwargs: Any) -> None:
        if config is None:
            config = DistilledConfig(**kwargs)
        elif kwargs:
            config = config.replace(**kwargs)
        super().__init__(config)  # the position table has rows for both tokens: config.num_prefix_tokens == 2
        D = config.embed_dim
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D))
        self.head_dist = nn.Linear(D, config.num_classes) if config.num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.dist_token, std=0.02)
        if isinstance(self.head_dist, nn.Linear):
            nn.init.trunc_normal_(self.head_dist.weight, std=0.02)
            nn.init.zeros_(self.head_dist.bias)

    def _prefix_tokens(self, batch: int) -> List[torch.Tensor]:
        assert self.cls_token is not None  # a distilled DeiT always has both tokens
        return [self.cls_token.expand(batch, -1, -1), self.dist_token.expand(batch, -1, -1)]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x, x_dist = x[:, 0], x[:, 1]
        if pre_logits:
            return (x + x_dist) / 2
        return (self.head(x) + self.head_dist(x_dist)) / 2


__all__ = ["VisionTransformerDistilled"]
