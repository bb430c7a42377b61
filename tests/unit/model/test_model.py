"""The dynamic-pad ViT equals timm's VisionTransformer(dynamic_img_size=True, dynamic_img_pad=True)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import CONFIGS, make_model, sweep_sizes, timm_model
from vitexport import ViTConfig, create_model
from vitexport._util.errors import ConfigError
from vitexport.model.vit import VisionTransformer, infer_grid

ATOL = 1e-5


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.mark.slow
@torch.no_grad()
def test_matches_timm_at_many_sizes(config_name: str) -> None:
    args = CONFIGS[config_name]
    model = make_model(args)
    ref = timm_model(args, model.state_dict())
    sizes = sweep_sizes(args)
    assert len(sizes) >= 10
    gen = torch.Generator().manual_seed(1)
    for h, w in sizes:
        x = torch.randn(3, model.config.in_chans, h, w, generator=gen)
        out = model(x)
        assert max_diff(out, ref(x)) <= ATOL, (config_name, h, w)
        assert max_diff(model(x[:1]), ref(x[:1])) <= ATOL, (config_name, h, w, "batch 1")
        # the outputs really depend on the input (weights are perturbed, not at init)
        assert max_diff(out[0], out[1]) > 1e-4


@torch.no_grad()
def test_features_only_shapes() -> None:
    args = CONFIGS["features_nopool"]
    model = make_model(args)
    out = model(torch.randn(2, 3, 31, 45))
    # 31x45 pads to 36x48, grid 6x8 = 48 patches + CLS
    assert out.shape == (2, 49, 48)
    assert model.forward_head(model.forward_features(torch.randn(1, 3, 6, 6)), pre_logits=True).shape == (1, 2, 48)


def test_spec_example_geometry() -> None:
    """28x28 input, P=8 -> padded 32x32, grid 4x4, 16 patches, 17 tokens; pos-embed 3x3 (10 rows) resampled."""
    model = make_model(CONFIGS["spec_cls"])
    assert model.pos_embed.shape == (1, 10, 32)  # 3x3 grid + CLS
    assert model.patch_embed.grid_size == (3, 3)
    geo = infer_grid(model, 28, 28)
    assert geo["padded_size"] == [32, 32]
    assert geo["grid"] == [4, 4]
    assert geo["num_patches"] == 16
    assert geo["seq_len"] == 17
    assert geo["resampled_from"] == [3, 3]
    tokens = model._pos_embed(model.patch_embed(torch.randn(1, 1, 28, 28)))
    assert tokens.shape == (1, 17, 32)  # embed_dim unchanged


@torch.no_grad()
def test_spec_example_pads_with_zeros_right_bottom() -> None:
    model = make_model(CONFIGS["spec_cls"])
    x = torch.randn(2, 1, 28, 28)
    padded = torch.zeros(2, 1, 32, 32)
    padded[:, :, :28, :28] = x
    assert torch.equal(model.patch_embed(x), model.patch_embed(padded))
    moved = torch.zeros(2, 1, 32, 32)
    moved[:, :, 4:, 4:] = x  # padding on the left/top instead must give something else
    assert not torch.allclose(model.patch_embed(x), model.patch_embed(moved))


@pytest.mark.parametrize("new_size", [(40, 24), (56, 56), (8, 72), (16, 48)])
@torch.no_grad()
def test_set_input_size_equals_dynamic_forward(new_size: tuple[int, int]) -> None:
    args = CONFIGS["reg_noembed"]  # non-square native grid 3x5
    model = make_model(args)
    ref_timm = timm_model(args, model.state_dict())
    x = torch.randn(3, 3, *new_size)
    before = model(x)
    model.set_input_size(new_size)
    ref_timm.set_input_size(new_size)
    gh, gw = new_size[0] // 8, new_size[1] // 8
    assert model.patch_embed.grid_size == (gh, gw)
    assert model.pos_embed.shape == (1, gh * gw, 32)  # no_embed_class: grid rows only
    assert torch.allclose(model.pos_embed, ref_timm.pos_embed, atol=1e-6, rtol=0)
    assert max_diff(model(x), before) <= ATOL
    assert max_diff(model(x), ref_timm(x)) <= ATOL
    assert model.config.img_hw == new_size


@torch.no_grad()
def test_set_input_size_not_multiple_matches_timm() -> None:
    """17x33 makes the native grid 2x4 (floor, as timm); a 17x33 input still pads to a 3x5 grid."""
    args = CONFIGS["reg_noembed"]
    model = make_model(args)
    ref_timm = timm_model(args, model.state_dict())
    model.set_input_size((17, 33))
    ref_timm.set_input_size((17, 33))
    assert model.patch_embed.grid_size == (2, 4)
    for hw in [(17, 33), (24, 40), (5, 70)]:
        x = torch.randn(3, 3, *hw)
        assert max_diff(model(x), ref_timm(x)) <= ATOL


@torch.no_grad()
def test_set_input_size_same_token_count_other_grid() -> None:
    """A 2x8 grid has as many tokens as 4x4 but must still be resampled."""
    args = dict(img_size=32, patch_size=8, num_classes=3, embed_dim=32, depth=1, num_heads=2)
    model = make_model(args)
    ref_timm = timm_model(args, model.state_dict())
    model.set_input_size((16, 64))
    ref_timm.set_input_size((16, 64))
    assert model.pos_embed.shape == (1, 17, 32)
    assert torch.allclose(model.pos_embed, ref_timm.pos_embed, atol=1e-6, rtol=0)
    assert not torch.allclose(model.pos_embed, make_model(args).pos_embed)


@torch.no_grad()
def test_set_input_size_same_grid_is_noop() -> None:
    model = make_model(CONFIGS["spec_cls"])
    pos = model.pos_embed.detach().clone()
    model.set_input_size((31, 30))  # grid still 3x3
    assert torch.equal(model.pos_embed, pos)
    assert model.config.img_hw == (31, 30)


@torch.no_grad()
def test_static_model_matches_timm_and_rejects_other_sizes() -> None:
    args = dict(CONFIGS["spec_cls"], img_size=32, dynamic_img_size=False, dynamic_img_pad=False)
    model = make_model(args)
    ref = timm_model(args, model.state_dict())
    x = torch.randn(3, 1, 32, 32)
    assert max_diff(model(x), ref(x)) <= ATOL
    with pytest.raises(AssertionError, match=r"Input height \(28\) doesn't match model \(32\)"):
        model(torch.randn(1, 1, 28, 32))


@torch.no_grad()
def test_dynamic_size_without_padding_needs_multiples() -> None:
    args = dict(CONFIGS["spec_cls"], dynamic_img_pad=False)
    model = make_model(args)
    ref = timm_model(args, model.state_dict())
    for hw in [(16, 40), (8, 8), (48, 24)]:
        x = torch.randn(3, 1, *hw)
        assert max_diff(model(x), ref(x)) <= ATOL
    with pytest.raises(AssertionError, match=r"Input height \(28\) should be divisible by patch size \(8\)\."):
        model(torch.randn(1, 1, 28, 28))


def test_models_default_to_dynamic() -> None:
    cfg = ViTConfig()
    assert cfg.dynamic_img_size and cfg.dynamic_img_pad


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(global_pool="token", class_token=False), "needs class_token"),
        (dict(global_pool="prr"), "global_pool 'prr' is not supported"),  # 'map' is built since the families work
        (dict(embed_dim=30, num_heads=4), "divisible by num_heads"),
        (dict(img_size=4, patch_size=8), "smaller than one patch"),
        (dict(depth=0), "depth must be a positive integer"),
        (dict(img_size=(1, 2, 3)), "img_size must be an int or"),
    ],
)
def test_invalid_configs_are_refused(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ViTConfig(**bad)


def test_unknown_option_suggests_closest() -> None:
    with pytest.raises(ConfigError, match=r"'num_head' \(did you mean 'num_heads'\?\)"):
        ViTConfig.from_dict({"num_head": 3})


def test_training_only_options_are_accepted() -> None:
    cfg = ViTConfig.from_dict({"drop_path_rate": 0.1, "embed_dim": 64, "num_heads": 2})
    assert cfg.embed_dim == 64


def test_config_round_trip() -> None:
    for args in CONFIGS.values():
        cfg = ViTConfig(**args)
        assert ViTConfig.from_dict(cfg.to_dict()) == cfg


def test_create_model_from_preset_with_overrides() -> None:
    model = create_model("vit_tiny_patch16_224", num_classes=3, depth=1)
    assert model.config.embed_dim == 192 and model.config.num_classes == 3 and len(model.blocks) == 1
    assert isinstance(model, VisionTransformer) and not model.training


def test_create_model_seed_is_reproducible_and_leaves_the_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = create_model("vit_tiny_patch16_224", seed=5, depth=1, num_classes=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    again = create_model("vit_tiny_patch16_224", seed=5, depth=1, num_classes=4)
    other = create_model("vit_tiny_patch16_224", seed=6, depth=1, num_classes=4)
    for name, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in first.state_dict().items() if v.numel() > 1)
    assert first.meta["source"] == {"weights": "random", "seed": 5, "architecture": "vit_tiny_patch16_224"}


def test_create_model_refuses_pretrained_with_the_way_to_load_weights() -> None:
    import vitexport

    with pytest.raises(ConfigError, match=r"downloads no weights.*vitexport\.load_model\(path"):
        vitexport.create_model("vit_tiny_patch16_224", pretrained=True)
    assert len(vitexport.create_model("vit_tiny_patch16_224", pretrained=False, depth=1).blocks) == 1
