"""Every position scheme and layout of timm's Eva, distilled DeiT and NaFlexViT matches timm in PyTorch and TorchScript.

One representative per scheme (tests/helpers/families.py): the real entrypoint shrunk to depth 2, the
same random weights in both models, compared at sizes that exercise each rule (native, non-square,
not multiples of the patch, smaller than one patch, larger than native) with batch 3 and batch 1.
The ONNX side is tests/unit/model/test_family_onnx.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from tests.helpers.families import REPRESENTATIVES, SIZES, TOL, pair, rel_err
from vitexport._util.errors import ConfigError
from vitexport.model.config import ViTConfig, get_preset
from vitexport.model.family_config import DistilledConfig, EvaConfig, NaFlexConfig, config_from_dict

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


@pytest.mark.parametrize("name", sorted(REPRESENTATIVES))
@torch.no_grad()
def test_representative_matches_timm_in_pytorch_and_torchscript(name: str) -> None:
    ours, ref = pair(name)
    assert list(ours.state_dict()) == list(ref.state_dict())  # timm's keys, in timm's order
    scripted = torch.jit.script(ours)
    gen = torch.Generator().manual_seed(1)
    for i, (h, w) in enumerate(SIZES):
        x = torch.randn(3, ours.config.in_chans, h, w, generator=gen)
        expected = ref(x)
        assert rel_err(ours(x), expected) <= TOL, (name, h, w)
        assert rel_err(ours(x[:1]), expected[:1]) <= TOL, (name, h, w)
        if i % 2:  # TorchScript at half the sizes: non-multiple, 1x1, larger
            assert rel_err(scripted(x), expected) <= TOL, (name, h, w)
    x = torch.randn(2, ours.config.in_chans, 17, 45, generator=gen)
    assert rel_err(ours.forward_head(ours.forward_features(x), pre_logits=True),
                   ref.forward_head(ref.forward_features(x), pre_logits=True)) <= TOL, name


@pytest.mark.parametrize("name", ["eva02", "rope-mixed-ape", "dinov3"])
@torch.no_grad()
def test_fixed_size_model_matches_timm_at_its_size(name: str) -> None:
    """``dynamic_img_size=False``: timm caches the rotary table of the native grid and adds the table as stored;
    the same numbers, and other sizes are refused."""
    import timm

    from tests.helpers.families import overrides
    from tests.helpers.models import perturb_
    from vitexport.model.eva import Eva

    fixed = {**overrides(name), "dynamic_img_size": False, "dynamic_img_pad": False}
    ours = perturb_(Eva(get_preset(REPRESENTATIVES[name][0], **fixed)), 5).eval()
    ref = timm.create_model(REPRESENTATIVES[name][0], pretrained=False, **fixed).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 3, *ours.config.img_hw, generator=torch.Generator().manual_seed(6))
    assert rel_err(ours(x), ref(x)) <= TOL
    assert rel_err(torch.jit.script(ours)(x), ref(x)) <= TOL
    with pytest.raises(Exception, match="doesn't match model"):
        ours(torch.randn(1, 3, 32, 40))


@torch.no_grad()
def test_every_parameter_changes_the_output() -> None:
    """The comparisons above can fail: a wrong rotary table, register or head changes the logits."""
    ours, ref = pair("sapiens2")
    x = torch.randn(2, 3, 17, 45, generator=torch.Generator().manual_seed(2))
    expected = ref(x)
    for key in ("blocks.0.attn.q_norm.weight", "reg_token", "blocks.1.gamma_1", "blocks.1.attn.k_proj.bias"):
        state = ours.state_dict()
        state[key] = state[key] + 0.05
        changed, _ = pair("sapiens2")
        changed.load_state_dict(state)
        assert rel_err(changed(x), expected) > 10 * TOL, key


@pytest.mark.parametrize("name", ["dinov3", "eva02", "rope-mixed", "naflex-siglip"])
@torch.no_grad()
def test_half_precision_model_matches_timms(name: str) -> None:
    """timm computes sin/cos in float32 whatever the model's dtype (its RoPE buffers stay float32 when the model
    is cast) and resamples tables in float32; a float16 model here gives timm's float16 outputs."""
    ours, ref = pair(name)
    ours, ref = ours.half(), ref.half()
    rope = getattr(ours, "rope", None)
    assert rope is None or all(b.dtype == torch.float32 for b in rope.buffers())
    x = torch.randn(2, 3, 17, 45, generator=torch.Generator().manual_seed(3)).half()
    out = ours(x)
    assert out.dtype == torch.float16 and torch.equal(out, ref(x)), name


# ---------------------------------------------------------------------------
# configs: timm's defaults, timm's asserts, and what cannot be built exactly is refused by name
# ---------------------------------------------------------------------------
def test_config_defaults_are_timms() -> None:
    import dataclasses
    import inspect

    from timm.models.eva import Eva
    from timm.models.naflexvit import NaFlexVitCfg

    eva = {k: p.default for k, p in inspect.signature(Eva.__init__).parameters.items()}
    for f in dataclasses.fields(EvaConfig):
        if f.name in eva and f.name not in ("dynamic_img_size", "dynamic_img_pad", "norm_layer"):
            assert f.default == eva[f.name], f.name
    naflex = {f.name: f.default for f in dataclasses.fields(NaFlexVitCfg)}
    for f in dataclasses.fields(NaFlexConfig):
        if f.name in naflex and f.name != "dynamic_img_pad":
            assert f.default == naflex[f.name], f.name
    assert EvaConfig().dynamic_img_size and EvaConfig().dynamic_img_pad and NaFlexConfig().dynamic_img_pad


SMALL: dict[str, Any] = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
REFUSED: list[tuple[type, dict[str, Any], str]] = [
    (EvaConfig, dict(rope_type="mrope", use_rot_pos_emb=True), "rope_type 'mrope' is not supported"),
    (EvaConfig, dict(rope_mrope_section=(8, 12, 12)), "rope_mrope_section=(8, 12, 12) is not supported"),
    (EvaConfig, dict(use_rot_pos_emb=True, num_heads=4, embed_dim=40), "head width divisible by 4"),
    (EvaConfig, dict(use_rot_pos_emb=True, rope_type="mixed", rope_rotate_half=True), "requires rope_rotate_half"),
    (EvaConfig, dict(num_kv_heads=1), "needs attn_type='rope', qkv_fused=False"),
    (EvaConfig, dict(num_kv_heads=[2, 2, 2]), "3 entries for depth 2"),
    (EvaConfig, dict(use_post_norm=True, qk_norm=True), "use_post_norm=True has no qk_norm"),
    (EvaConfig, dict(global_pool="token", class_token=False), "needs class_token=True"),
    (EvaConfig, dict(norm_layer="batchnorm"), "norm_layer 'batchnorm' is not supported"),
    (EvaConfig, dict(qkv_bias="false"), "qkv_bias must be true or false"),
    (EvaConfig, dict(rope_grid_indxing="xy"), "did you mean 'rope_grid_indexing'"),
    (DistilledConfig, dict(global_pool="avg"), "global_pool must be 'token'"),
    (DistilledConfig, dict(reg_tokens=1), "no register tokens"),
    (NaFlexConfig, dict(rope_type="axial"), "rope_type='axial' is not supported by vitexport for naflexvit"),
    (NaFlexConfig, dict(swiglu_mlp=True), "swiglu_mlp=True is not supported"),
    (NaFlexConfig, dict(pos_embed_interp_mode="area"), "pos_embed_interp_mode 'area' is not supported"),
    (NaFlexConfig, dict(pos_embed_antialias=False), "bicubic position resampling is built with"),
    (NaFlexConfig, dict(pos_embed_ar_preserving=True, pos_embed_grid_size=(3, 5)), "needs a square position"),
    (NaFlexConfig, dict(act_layer="relu"), "act_layer 'relu' is not supported"),
]


@pytest.mark.parametrize("cls, extra, message", REFUSED, ids=[m.split()[0] for _, _, m in REFUSED])
def test_options_that_cannot_be_built_exactly_are_refused(cls: type, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        cls.from_dict({**SMALL, **extra})


def test_training_only_and_no_effect_options_are_accepted() -> None:
    cfg = EvaConfig.from_dict({**SMALL, "drop_path_rate": 0.1, "rope_rescale_coords": 2.0, "head_init_scale": 0.1})
    assert cfg == EvaConfig(**SMALL)
    naflex = NaFlexConfig.from_dict({**SMALL, "pos_embed_use_grid_sample": True, "rope_temperature": 100.0,
                                     "weight_init": "jax"})
    assert naflex == NaFlexConfig(**SMALL)


def test_config_round_trips_through_its_dict() -> None:
    for name, extra in (("vit_base_patch16_sapiens2", {"num_kv_heads": [12, 6]}), ("vit_pe_core_base_patch16_224", {}),
                        ("naflexvit_base_patch16_radio_v3", {}), ("deit_base_distilled_patch16_384", {})):
        cfg = get_preset(name, depth=2, **extra)
        data = cfg.to_dict()
        assert data["architecture"] == name
        assert type(cfg).from_dict(data) == cfg, name
        assert config_from_dict(data) == cfg and type(config_from_dict(data)) is type(cfg), name
    custom = EvaConfig(**SMALL, use_rot_pos_emb=True, rope_type="dinov3").to_dict()  # no architecture: the class
    assert custom["model_class"] == "eva" and config_from_dict(custom) == EvaConfig.from_dict(custom)
    plain = get_preset("deit3_small_patch16_224", depth=2)
    assert config_from_dict(plain.to_dict()) == plain and "model_class" not in plain.to_dict()
    assert type(config_from_dict({"architecture": "deit_small_patch16_224"})) is ViTConfig
    with pytest.raises(ConfigError, match="a 'eva' config cannot build a 'naflexvit' model"):
        NaFlexConfig.from_dict(custom)
    with pytest.raises(ConfigError, match="unknown model_class 'swin'"):
        config_from_dict({"model_class": "swin"})
    with pytest.raises(ConfigError, match="is a 'naflexvit' architecture, not 'eva'"):
        EvaConfig.from_dict({"architecture": "naflexvit_base_patch16_gap"})
    with pytest.raises(ConfigError, match="did you mean 'vit_small_patch16_dinov3'"):
        get_preset("vit_smal_patch16_dinov3")
