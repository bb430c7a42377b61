"""Input geometry of the dynamic-pad ViT in plain integers: padded size, patch grid, token count.

The tensor code (`vitexport.model.layers.pad_to_patch`, the exported graph) pads right/bottom by
``(P - H % P) % P``; these functions give the same numbers without torch, for reports, the
verify sweep, the Predictor's token limit and benchmarks. Without ``dynamic_img_pad`` the
patch convolution drops the remainder instead (``pad=False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def ceil_div(n: int, d: int) -> int:
    """``ceil(n / d)`` for positive integers, exactly."""
    return -(-n // d)


def padded_size(height: int, width: int, patch: Sequence[int], pad: bool = True) -> tuple[int, int]:
    """(height, width) after zero-padding right/bottom to multiples of the patch (cropped when not ``pad``)."""
    gh, gw = grid_size(height, width, patch, pad)
    return (gh * patch[0], gw * patch[1]) if pad else (height, width)


def grid_size(height: int, width: int, patch: Sequence[int], pad: bool = True) -> tuple[int, int]:
    """The patch grid an input produces: ceil division with padding, floor without."""
    ph, pw = int(patch[0]), int(patch[1])
    if pad:
        return ceil_div(height, ph), ceil_div(width, pw)
    return height // ph, width // pw


def token_count(height: int, width: int, patch: Sequence[int], prefix_tokens: int = 0, pad: bool = True) -> int:
    """Sequence length through the blocks: grid cells plus prefix tokens (class token, registers)."""
    gh, gw = grid_size(height, width, patch, pad)
    return gh * gw + prefix_tokens


def input_geometry(height: int, width: int, patch: Sequence[int], pad: bool, prefix_tokens: int,
                   native_grid: Sequence[int]) -> dict[str, Any]:
    """What an input of ``height`` x ``width`` goes through: padded size, grid, patches, sequence length, and the
    native grid its positional embeddings are resampled from (what `vitexport info --size` shows)."""
    gh, gw = grid_size(height, width, patch, pad)
    return {
        "input_size": [height, width],
        "padded_size": list(padded_size(height, width, patch, pad)),
        "grid": [gh, gw],
        "num_patches": gh * gw,
        "seq_len": gh * gw + prefix_tokens,
        "resampled_from": list(native_grid),
    }


__all__ = ["ceil_div", "grid_size", "input_geometry", "padded_size", "token_count"]
