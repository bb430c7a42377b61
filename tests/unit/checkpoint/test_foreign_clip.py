"""OpenAI CLIP / open_clip image towers: timm's own conversion on the same weights, and open_clip's forward.

Models are open_clip CLIPs built locally (small towers, a one-layer text tower) with random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers.foreign import TOL, assert_same_state_dict, build, images, rel_err, timm_model
from tests.helpers.models import perturb_
from vitexport._util.errors import CheckpointError, ConfigError
from vitexport.checkpoint.foreign import clip as fclip
from vitexport.checkpoint.foreign.common import complete_args
from vitexport.checkpoint.foreign.detect import convert_state_dict, detect_format

open_clip = pytest.importorskip("open_clip",
                                reason="open_clip_torch is a test dependency (pip install open-clip-torch)")

TEXT = dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
# open_clip model configs: the OpenAI rule (QuickGELU, width/64 heads), open_clip's defaults with another
# head width, and a tower with average pooling, GELU-tanh, eps 1e-6 and a non-square image.
CONFIGS: dict[str, dict[str, Any]] = {
    "openai_rule": dict(embed_dim=24, quick_gelu=True,
                        vision_cfg=dict(image_size=40, layers=2, width=128, patch_size=8)),
    "gelu_head_width": dict(embed_dim=16, vision_cfg=dict(image_size=36, layers=2, width=64, head_width=16,
                                                          patch_size=12, mlp_ratio=3.0)),
    "avg_tanh_nonsquare": dict(embed_dim=16, vision_cfg=dict(
        image_size=(32, 48), layers=2, width=48, head_width=24, patch_size=8, pool_type="avg",
        act_kwargs={"approximate": "tanh"}, norm_kwargs={"eps": 1e-6})),
}


def make_clip(model_cfg: dict[str, Any], seed: int = 0) -> Any:
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(embed_dim=model_cfg["embed_dim"], vision_cfg=model_cfg["vision_cfg"],
                                 text_cfg=TEXT, quick_gelu=model_cfg.get("quick_gelu", False))
    return perturb_(model, seed).eval()


def hub_config(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """What open_clip's push_to_hf_hub writes as open_clip_config.json."""
    return {"model_cfg": {**model_cfg, "text_cfg": TEXT},
            "preprocess_cfg": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic"}}


def native_size(model_cfg: dict[str, Any]) -> tuple[int, int]:
    size = model_cfg["vision_cfg"]["image_size"]
    return (size, size) if isinstance(size, int) else size


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_clip_tower_equals_open_clip_encode_image(name: str) -> None:
    """At the native size: forward = encode_image, pre_logits = the pooled output before the projection,
    forward_features = ln_post'd tokens (open_clip's output_tokens)."""
    model_cfg = CONFIGS[name]
    ref = make_clip(model_cfg, seed=1)
    converted = fclip.convert_openai_clip(ref.state_dict(), hub_config(model_cfg))
    assert converted.format == "open_clip" and converted.head == "projection" and not converted.unknown
    ours = build(converted)
    x = images(3, *native_size(model_cfg))
    assert rel_err(ours(x), ref.encode_image(x)) <= TOL
    ref.visual.output_tokens = True
    proj, ref.visual.proj = ref.visual.proj, None
    pooled, tokens = ref.visual(x)
    ref.visual.proj = proj
    assert rel_err(ours.forward_head(ours.forward_features(x), pre_logits=True), pooled) <= TOL
    if model_cfg["vision_cfg"].get("pool_type", "tok") == "tok":
        assert rel_err(ours.forward_features(x)[:, 1:], tokens) <= TOL
    assert converted.preprocess == {"scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
                                    "interpolation": "bicubic"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@torch.no_grad()
def test_clip_mapping_is_timms(name: str) -> None:
    """timm's checkpoint_filter_fn on the same state dict gives the same keys and tensors, bit for bit;
    and at other sizes vitexport equals timm's dynamic-pad model with those weights."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    model_cfg = CONFIGS[name]
    sd = make_clip(model_cfg, seed=2).state_dict()
    converted = fclip.convert_openai_clip(sd, hub_config(model_cfg))
    ref = timm_model(converted)
    expected = checkpoint_filter_fn(dict(sd), ref)
    assert_same_state_dict(converted.state_dict, expected)
    ref.load_state_dict(expected)
    ours = build(converted)
    h, w = native_size(model_cfg)
    for size in ((h + 5, w - 3), (2 * h + 1, w // 2 + 1), (7, 9)):
        x = images(2, *size)
        assert rel_err(ours(x), ref(x)) <= TOL, size


@torch.no_grad()
def test_openai_rule_from_an_explicit_config() -> None:
    """OpenAI's clip builds QuickGELU, width/64 heads, eps 1e-5, class-token pooling: given so, a bare
    ``visual.*`` state dict equals open_clip's OpenAI-style model (open_clip builds OpenAI weights that way)."""
    model_cfg = CONFIGS["openai_rule"]
    ref = make_clip(model_cfg, seed=4)
    converted = convert_state_dict(ref.state_dict())
    assert converted is not None and converted.format == "openai-clip"
    assert set(converted.unknown) == {"act_layer", "num_heads", "norm_eps", "global_pool"}
    explicit = {"act_layer": "quick_gelu", "num_heads": 128 // 64, "norm_eps": 1e-5, "global_pool": "token"}
    x = images(2, 40, 40)
    assert rel_err(build(converted, explicit)(x), ref.encode_image(x)) <= TOL
    wrong = build(converted, {**explicit, "act_layer": "gelu"})  # the guess the refusal below avoids
    assert rel_err(wrong(x), ref.encode_image(x)) > 10 * TOL


def test_bare_state_dict_refuses_and_names_the_openai_presets() -> None:
    with torch.device("meta"):  # ViT-B/16 shapes without memory
        model = open_clip.model.CLIP(embed_dim=512, vision_cfg=dict(image_size=224, layers=12, width=768,
                                                                     patch_size=16), text_cfg=TEXT)
    converted = convert_state_dict(model.state_dict())
    with pytest.raises(ConfigError, match=r"act_layer, num_heads, norm_eps, global_pool not stored") as err:
        complete_args(converted)
    assert "vit_base_patch16_clip_quickgelu_224" in str(err.value) and "\n" not in str(err.value)
    args = complete_args(converted, {"architecture": "vit_base_patch16_clip_quickgelu_224"})
    assert args["num_classes"] == 512 and args["img_size"] == 224


def test_explicit_config_contradicting_the_weights_is_refused() -> None:
    converted = fclip.convert_openai_clip(make_clip(CONFIGS["openai_rule"]).state_dict())
    with pytest.raises(ConfigError, match=r"contradicts the file: depth=12 \(the file has 2\)"):
        complete_args(converted, {"architecture": "vit_base_patch16_clip_quickgelu_224", "depth": 12})


# ---------------------------------------------------------------------------
# open_clip towers that are timm models
# ---------------------------------------------------------------------------
TIMM_TOWERS: dict[str, dict[str, Any]] = {
    "linear_avg": dict(timm_model_name="vit_tiny_patch16_224", timm_pool="avg", timm_proj="linear"),
    "none_map": dict(timm_model_name="vit_tiny_patch16_224", timm_pool="map", timm_proj="none"),
}


@pytest.mark.slow  # open_clip builds timm's full ViT-Ti/16 trunk (no size options): ~5 s each
@pytest.mark.parametrize("name", sorted(TIMM_TOWERS))
@torch.no_grad()
def test_timm_tower_equals_open_clip_and_timms_mapping(name: str) -> None:
    from timm.models.vision_transformer import checkpoint_filter_fn

    model_cfg = dict(embed_dim=16, vision_cfg=dict(image_size=224, **TIMM_TOWERS[name]))
    ref = make_clip(model_cfg, seed=5)
    sd = ref.state_dict()
    assert detect_format(sd) == "open_clip-timm"
    converted = fclip.convert_open_clip_timm(sd, hub_config(model_cfg))
    ours = build(converted)
    x = images(2, 224, 224)
    assert rel_err(ours(x), ref.encode_image(x)) <= TOL
    expected = checkpoint_filter_fn(dict(sd), timm_model(converted))
    assert_same_state_dict(converted.state_dict, expected)


def test_timm_tower_without_its_config_needs_the_architecture() -> None:
    model_cfg = dict(embed_dim=16, vision_cfg=dict(image_size=224, **TIMM_TOWERS["none_map"]))
    with torch.device("meta"):
        sd = open_clip.model.CLIP(embed_dim=16, vision_cfg=model_cfg["vision_cfg"], text_cfg=TEXT).state_dict()
    converted = fclip.convert_open_clip_timm(sd)
    assert converted.args == {"num_classes": 0} and converted.head == "none"
    with pytest.raises(ConfigError, match="architecture not stored"):
        complete_args(converted)


@pytest.mark.parametrize(("vision", "message"), [
    (dict(timm_pool="abs_attn", timm_proj="linear"), "timm_pool='abs_attn'"),
    (dict(timm_pool="avg", timm_proj="mlp"), "timm_proj='mlp'"),
    (dict(timm_pool="avg", timm_proj="linear", timm_proj_bias=True), "timm_proj_bias=True"),
    (dict(timm_model_name="eva02_tiny_patch14_224"), "timm_model_name 'eva02_tiny_patch14_224'"),
])
def test_timm_tower_heads_timm_does_not_map_are_refused(vision: dict[str, Any], message: str) -> None:
    sd = {"visual.trunk.pos_embed": torch.zeros(1, 197, 192)}
    cfg = {"model_cfg": {"embed_dim": 16, "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", **vision}}}
    with pytest.raises(CheckpointError, match=message) as err:
        fclip.convert_open_clip_timm(sd, cfg)
    assert "\n" not in str(err.value)


def test_timm_tower_projection_bias_in_the_weights_is_refused() -> None:
    sd = {"visual.trunk.pos_embed": torch.zeros(1, 5, 8), "visual.head.proj.weight": torch.zeros(4, 8),
          "visual.head.proj.bias": torch.zeros(4)}
    with pytest.raises(CheckpointError, match="has a bias"):
        fclip.convert_open_clip_timm(sd)


# ---------------------------------------------------------------------------
# open_clip towers vitexport cannot build exactly: refused by name
# ---------------------------------------------------------------------------
BASE = dict(image_size=32, layers=2, width=64, head_width=32, patch_size=8)


@pytest.mark.parametrize(("vision", "message"), [
    (dict(ls_init_value=0.1), "unmapped"),  # ls_1.gamma: timm's conversion leaves it
    (dict(qk_norm=True), "unmapped"),
    (dict(scale_fc=True), "unmapped"),
    (dict(attentional_pool=True, attn_pooler_queries=4, attn_pooler_heads=2), "attentional pooler"),
    (dict(no_ln_pre=True), "no ln_pre"),
])
def test_open_clip_variants_are_refused_from_the_weights(vision: dict[str, Any], message: str) -> None:
    sd = make_clip(dict(embed_dim=16, vision_cfg={**BASE, **vision})).state_dict()
    with pytest.raises(CheckpointError, match=message) as err:
        fclip.convert_openai_clip(sd)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("vision", "message"), [
    (dict(final_ln_after_pool=True), "final_ln_after_pool=True"),
    (dict(ls_init_value=0.1), "ls_init_value=0.1"),
    (dict(pool_type="none"), "pool_type 'none'"),
    (dict(act_kwargs={"approximate": "erf"}), "act_kwargs"),
    (dict(norm_kwargs={"eps": 1e-6, "elementwise_affine": False}), "norm_kwargs"),
    (dict(some_new_option=1), "some_new_option"),
    (dict(width=96), "disagrees with the weights: width 96"),
])
def test_open_clip_config_options_are_refused(vision: dict[str, Any], message: str) -> None:
    sd = make_clip(dict(embed_dim=16, vision_cfg=BASE)).state_dict()
    cfg = {"model_cfg": {"embed_dim": 16, "vision_cfg": {**BASE, **vision}}}
    with pytest.raises(CheckpointError, match=message) as err:
        fclip.convert_openai_clip(sd, cfg)
    assert "\n" not in str(err.value)


def test_non_square_table_takes_the_configs_image_size_and_checks_it() -> None:
    model_cfg = CONFIGS["avg_tanh_nonsquare"]  # 32x48, patch 8: 4x6 positions
    sd = make_clip(model_cfg).state_dict()
    converted = fclip.convert_openai_clip(sd, hub_config(model_cfg))
    assert converted.args["img_size"] == (32, 48)
    bare = fclip.convert_openai_clip(sd)
    assert "img_size" in bare.unknown
    wrong = {"model_cfg": {**model_cfg, "vision_cfg": {**model_cfg["vision_cfg"], "image_size": 40}}}
    with pytest.raises(CheckpointError, match="image_size 40 does not give the 24 positions"):
        fclip.convert_openai_clip(sd, wrong)


def test_modified_resnet_clip_is_refused() -> None:
    sd = {"visual.layer1.0.conv1.weight": torch.zeros(4, 4, 1, 1), "visual.attnpool.positional_embedding":
          torch.zeros(50, 8)}
    with pytest.raises(CheckpointError, match="ModifiedResNet"):
        detect_format(sd)


@torch.no_grad()
def test_open_clip_folder(tmp_path: Path) -> None:
    """open_clip's hub layout: open_clip_config.json + open_clip_model.safetensors (or the .bin)."""
    import json

    from safetensors.torch import save_file

    from vitexport.checkpoint.foreign import read_open_clip_folder

    model_cfg = CONFIGS["gelu_head_width"]
    ref = make_clip(model_cfg, seed=6)
    (tmp_path / "open_clip_config.json").write_text(json.dumps(hub_config(model_cfg)))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "open_clip_model.safetensors")
    converted = read_open_clip_folder(tmp_path)
    x = images(2, 36, 36)
    assert rel_err(build(converted)(x), ref.encode_image(x)) <= TOL
    (tmp_path / "open_clip_model.safetensors").unlink()
    torch.save(ref.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    assert rel_err(build(read_open_clip_folder(tmp_path))(x), ref.encode_image(x)) <= TOL
