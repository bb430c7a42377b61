"""The preset table is what timm builds: every VisionTransformer entrypoint, keys and shapes included."""

from __future__ import annotations

import functools
import importlib.util
from types import ModuleType

import pytest
import torch
from timm.layers import GluMlp

from tests.helpers.models import ROOT
from vitexport._util.errors import ConfigError
from vitexport.model.config import get_preset, preset_args
from vitexport.model.presets import PRESETS
from vitexport.model.vit import VisionTransformer


def gen_presets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_presets", ROOT / "scripts" / "gen_presets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_common_families_are_present() -> None:
    for name in [
        "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224",
        "vit_base_patch32_224", "vit_large_patch14_224", "vit_small_patch14_reg4_dinov2",
        "vit_base_patch16_reg4_gap_256", "vit_base_patch16_384", "vit_base_patch16_clip_224",
        "vit_large_patch14_clip_quickgelu_224", "vit_so400m_patch14_siglip_384", "aimv2_large_patch14_224",
        "flexivit_base", "beit3_base_patch16_224", "vit_base_patch16_18x2_224", "vit_base_patch16_rpn_224",
        "vit_base_patch16_xp_224", "eva_large_patch14_196",
    ]:
        assert name in PRESETS


def test_table_is_what_installed_timm_builds() -> None:
    """Regenerating from timm gives the shipped table: every entrypoint, the same keyword arguments."""
    gen = gen_presets()
    names = gen.entrypoint_names()
    assert len(names) >= 150 and not any(n.startswith("test_") for n in names)
    assert gen.preset_table() == PRESETS


def test_unknown_timm_option_stops_the_generator() -> None:
    gen = gen_presets()
    kwargs = gen.recorded_kwargs("vit_base_patch16_siglip_224")
    assert gen.translate(kwargs)["global_pool"] == "map"
    with pytest.raises(ValueError, match="pos_embed"):
        gen.translate({**kwargs, "pos_embed": "none"})
    with pytest.raises(ValueError, match="unknown act layer name 'relu'"):
        gen.translate({**kwargs, "act_layer": "relu"})
    with pytest.raises(ValueError, match="unknown mlp layer"):  # a layer the registry does not name
        gen.translate({**kwargs, "mlp_layer": functools.partial(GluMlp, gate_last=None)})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_timm_state_dict_at_depth_2(name: str) -> None:
    import timm

    with torch.device("meta"):
        ref = timm.create_model(name, pretrained=False, depth=2)
        ours = VisionTransformer(get_preset(name, depth=2))
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
