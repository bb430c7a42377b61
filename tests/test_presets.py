"""Every preset builds the same architecture (state-dict keys and shapes) as timm's model of that name."""

from __future__ import annotations

import pytest
import torch

from vitexport.config import get_preset, preset_args
from vitexport.errors import ConfigError
from vitexport.model import VisionTransformer
from vitexport.presets import PRESETS


def test_common_families_are_present() -> None:
    for name in [
        "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224",
        "vit_base_patch32_224", "vit_large_patch14_224", "vit_small_patch14_reg4_dinov2",
        "vit_base_patch16_reg4_gap_256", "vit_base_patch16_384",
    ]:
        assert name in PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_matches_timm_architecture(name: str) -> None:
    import timm

    with torch.device("meta"):
        ref = timm.create_model(name, pretrained=False)
        ours = VisionTransformer(get_preset(name))
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert our_shapes == ref_shapes
    assert ours.global_pool == ref.global_pool
    assert ours.config.grid_size == tuple(ref.patch_embed.grid_size)
    assert ours.num_prefix_tokens == ref.num_prefix_tokens
    assert ours.no_embed_class == ref.no_embed_class


def test_pretrained_tag_and_hub_prefix_resolve() -> None:
    assert preset_args("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k") == PRESETS["vit_base_patch16_224"]


def test_unknown_preset_suggests_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'vit_small_patch16_224'"):
        preset_args("vit_smal_patch16_224")
