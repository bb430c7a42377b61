"""Prefix tokens and pooling, as timm's ViT classes do them (``VisionTransformer``, ``Eva``, ``NaFlexVit``).

- `join_prefix`: class/register tokens before the patch tokens, and the absolute table added in timm's
  order: after prepending when the table has prefix rows, before it when it has none (``no_embed_class``);
- `pool_tokens`: timm's ``global_pool_nlc``: the class token, or avg / max / avgmax over the patch tokens
  (every token with ``include_prefix``), or all tokens for ``''``.
"""

# No `from __future__ import annotations` here: TorchScript compiles these functions.

from typing import List, Optional

import torch


def join_prefix(x: torch.Tensor, prefix: List[torch.Tensor], pos_embed: Optional[torch.Tensor],
                no_embed_class: bool) -> torch.Tensor:
    """``(B, N, D)`` patches and ``(B, n, D)`` prefix tokens -> ``(B, prefix + N, D)`` with the table added."""
    if no_embed_class:
        if pos_embed is not None:
            x = x + pos_embed
        if len(prefix) > 0:
            x = torch.cat(prefix + [x], dim=1)
    else:
        if len(prefix) > 0:
            x = torch.cat(prefix + [x], dim=1)
        if pos_embed is not None:
            x = x + pos_embed
    return x


def pool_tokens(x: torch.Tensor, pool_type: str, num_prefix_tokens: int, include_prefix: bool = False) -> torch.Tensor:
    """timm ``global_pool_nlc``: ``(B, T, D)`` -> ``(B, D)`` (``(B, T, D)`` for ``pool_type=''``)."""
    if pool_type == "":
        return x
    if pool_type == "token":
        return x[:, 0]
    if not include_prefix:
        x = x[:, num_prefix_tokens:]
    if pool_type == "avg":
        return x.mean(dim=1)
    if pool_type == "max":
        return x.amax(dim=1)
    return 0.5 * (x.amax(dim=1) + x.mean(dim=1))  # avgmax


__all__ = ["join_prefix", "pool_tokens"]
