"""The family preset table is what timm builds: every eva.py, deit.py and naflexvit.py entrypoint, keys and shapes."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch

from vitexport.model.config import ViTConfig, get_preset
from vitexport.model.family_config import DistilledConfig, EvaConfig, NaFlexConfig
from vitexport.model.family_presets import FAMILY_PRESETS
from vitexport.model.vit import create_model


def gen_family_presets() -> ModuleType:
    import scripts.gen_family_presets

    return scripts.gen_family_presets


def test_table_is_what_installed_timm_builds() -> None:
    """Regenerating from timm gives the shipped table: every entrypoint of the three modules, nothing else."""
    import timm.models.deit
    import timm.models.eva
    import timm.models.naflexvit

    gen = gen_family_presets()
    names = {n for m in (timm.models.eva, timm.models.deit, timm.models.naflexvit) for n in gen.entrypoint_names(m)}
    assert names == set(FAMILY_PRESETS) and not any(n.startswith("test_") for n in names)
    assert gen.preset_table() == FAMILY_PRESETS
    classes = {entry["class"] for entry in FAMILY_PRESETS.values()}
    assert classes == {"eva", "deit_distilled", "vit", "naflexvit"}


def test_unknown_timm_option_stops_the_generator() -> None:
    gen = gen_family_presets()
    kind, kwargs = gen.recorded_call(gen.eva, "vit_pe_core_base_patch16_224")
    assert kind == "Eva" and gen.translate_eva(kwargs)["global_pool"] == "map"
    with pytest.raises(ValueError, match="rope_mrope_flavour"):
        gen.translate_eva({**kwargs, "rope_mrope_flavour": 1})


def depth_2(name: str) -> dict[str, Any]:
    """Overrides that build ``name`` at depth 2 (Sapiens2 lists its key/value heads per block: keep one of each)."""
    args = FAMILY_PRESETS[name]["args"]
    kv = args.get("num_kv_heads")
    return {"depth": 2, **({"num_kv_heads": [kv[0], kv[len(kv) // 2]]} if isinstance(kv, list) else {})}


@pytest.mark.parametrize("name", sorted(FAMILY_PRESETS))
def test_preset_builds_timm_state_dict_at_depth_2(name: str) -> None:
    import timm

    overrides = depth_2(name)
    with torch.device("meta"):
        ref = timm.create_model(name, pretrained=False, **overrides)
        ours = create_model(name, **overrides)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in ref.state_dict().items()]  # keys, shapes and timm's order
    assert ours.num_prefix_tokens == ref.num_prefix_tokens and ours.global_pool == ref.global_pool
    kind = FAMILY_PRESETS[name]["class"]
    config_class = {"eva": EvaConfig, "deit_distilled": DistilledConfig, "vit": ViTConfig, "naflexvit": NaFlexConfig}
    assert type(ours.config) is config_class[kind]
    if kind == "eva":
        assert ours.config.grid_size == tuple(ref.patch_embed.grid_size)
        assert (ours.rope is None) == (ref.rope is None) and ours.no_embed_class == ref.no_embed_class
    if kind == "naflexvit":
        assert ours.config.pos_grid == tuple(ref.embeds.pos_embed_grid_size)


def test_architecture_names_resolve_with_tags_and_hub_prefix() -> None:
    assert get_preset("timm/vit_small_patch16_dinov3.lvd1689m") == get_preset("vit_small_patch16_dinov3")
    deit = get_preset("deit_tiny_patch16_224")
    assert type(deit) is ViTConfig and deit.embed_dim == 192 and ViTConfig.from_dict(deit.to_dict()) == deit
