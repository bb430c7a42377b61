"""transformers folders: vitexport's model equals transformers' own forward at the native size.

Each model is built locally (small config, random weights), saved with ``save_pretrained`` (the layout on the
Hub) and read back through `read_transformers_folder`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers.foreign import TOL, build, images, rel_err, timm_model
from tests.helpers.models import perturb_
from vitexport._util.errors import CheckpointError
from vitexport.checkpoint.foreign.detect import detect_format
from vitexport.checkpoint.foreign.hf import read_transformers_folder

T = pytest.importorskip("transformers", reason="transformers is a test dependency (pip install transformers)")

SMALL = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, image_size=32,
             patch_size=8)


def saved(model: Any, folder: Path, seed: int = 0) -> Any:
    perturb_(model, seed).eval()
    model.save_pretrained(folder)
    return model


def out(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else value.pooler_output


# name -> (build the transformers model, its output vitexport's forward equals, input size)
CASES: dict[str, tuple[Callable[[], Any], Callable[[Any, torch.Tensor], torch.Tensor], tuple[int, int]]] = {
    "vit_classifier": (lambda: T.ViTForImageClassification(T.ViTConfig(**SMALL, num_labels=5)),
                       lambda m, x: m(pixel_values=x).logits, (32, 32)),
    "vit_model_nonsquare_gelu_new": (
        lambda: T.ViTModel(T.ViTConfig(**{**SMALL, "image_size": [24, 40]}, hidden_act="gelu_new",
                                       layer_norm_eps=1e-6, qkv_bias=False)),
        lambda m, x: m(pixel_values=x).last_hidden_state[:, 0], (24, 40)),
    "deit_classifier": (lambda: T.DeiTForImageClassification(T.DeiTConfig(**SMALL, num_labels=3)),
                        lambda m, x: m(pixel_values=x).logits, (32, 32)),
    "deit_model": (lambda: T.DeiTModel(T.DeiTConfig(**SMALL)),
                   lambda m, x: m(pixel_values=x).last_hidden_state[:, 0], (32, 32)),
    "dinov2": (lambda: T.Dinov2Model(T.Dinov2Config(**{**SMALL, "image_size": 28, "patch_size": 7},
                                                    layerscale_value=0.5)),
               lambda m, x: m(pixel_values=x).pooler_output, (28, 28)),
    "dinov2_swiglu": (lambda: T.Dinov2Model(T.Dinov2Config(**{**SMALL, "image_size": 28, "patch_size": 7},
                                                           use_swiglu_ffn=True)),
                      lambda m, x: m(pixel_values=x).pooler_output, (28, 28)),
    "dinov2_registers": (
        lambda: T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(
            **{**SMALL, "image_size": 28, "patch_size": 7}, num_register_tokens=3)),
        lambda m, x: m(pixel_values=x).pooler_output, (28, 28)),
    "clip_vision_projection": (
        lambda: T.CLIPVisionModelWithProjection(T.CLIPVisionConfig(**SMALL, projection_dim=24)),
        lambda m, x: m(pixel_values=x).image_embeds, (32, 32)),
    "clip_vision_gelu": (lambda: T.CLIPVisionModel(T.CLIPVisionConfig(**SMALL, hidden_act="gelu")),
                         lambda m, x: m(pixel_values=x).pooler_output, (32, 32)),
    "clip_full": (
        lambda: T.CLIPModel(T.CLIPConfig(vision_config=SMALL, projection_dim=20, text_config=dict(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99))),
        lambda m, x: out(m.get_image_features(pixel_values=x)), (32, 32)),
    "siglip_vision": (lambda: T.SiglipVisionModel(T.SiglipVisionConfig(**SMALL)),
                      lambda m, x: m(pixel_values=x).pooler_output, (32, 32)),
    "siglip_full": (
        lambda: T.SiglipModel(T.SiglipConfig(vision_config=SMALL, text_config=dict(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99,
            bos_token_id=1, eos_token_id=2, pad_token_id=0))),
        lambda m, x: out(m.get_image_features(pixel_values=x)), (32, 32)),
}
# The whole token sequence vitexport's forward_features gives equals last_hidden_state for these.
TOKENS = {"vit_classifier": "vit", "deit_model": None, "dinov2": None, "dinov2_registers": None,
          "siglip_vision": None}


@pytest.mark.parametrize("name", sorted(CASES))
@torch.no_grad()
def test_transformers_folder_equals_transformers(name: str, tmp_path: Path) -> None:
    make, output, size = CASES[name]
    torch.manual_seed(0)
    ref = saved(make(), tmp_path, seed=1)
    converted = read_transformers_folder(tmp_path)
    ours = build(converted)
    x = images(3, *size)
    assert rel_err(ours(x), output(ref, x)) <= TOL
    if name in TOKENS:
        base = getattr(ref, TOKENS[name]) if TOKENS[name] else ref
        assert rel_err(ours.forward_features(x), base(pixel_values=x).last_hidden_state) <= TOL


@torch.no_grad()
def test_pytorch_model_bin_folder(tmp_path: Path) -> None:
    """A folder written by transformers 4 with pytorch_model.bin (read through vitexport's vetted pickle path)."""
    from safetensors.torch import load_file

    ref = saved(T.ViTForImageClassification(T.ViTConfig(**SMALL, num_labels=4)), tmp_path, seed=2)
    torch.save(load_file(tmp_path / "model.safetensors"), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    x = images(2, 32, 32)
    assert rel_err(build(read_transformers_folder(tmp_path))(x), ref(pixel_values=x).logits) <= TOL


def test_labels_and_preprocessing_come_with_the_folder(tmp_path: Path) -> None:
    config = T.ViTConfig(**SMALL, id2label={0: "cat", 1: "dog", 2: "eel"}, label2id={"cat": 0, "dog": 1, "eel": 2})
    saved(T.ViTForImageClassification(config), tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_rescale": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.5, 0.5],
        "rescale_factor": 1 / 255, "resample": 3}))
    converted = read_transformers_folder(tmp_path)
    assert converted.labels == ["cat", "dog", "eel"] and converted.head == "classifier"
    assert converted.preprocess == {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 0.5],
                                    "interpolation": "bicubic"}


@torch.no_grad()
def test_other_sizes_follow_timm_not_transformers_interpolation(tmp_path: Path) -> None:
    """At other sizes vitexport is timm's dynamic-pad model; transformers' interpolate_pos_encoding (bicubic
    without antialias, floor grid) is another function, as the README says."""
    ref = saved(T.ViTForImageClassification(T.ViTConfig(**SMALL, num_labels=5)), tmp_path, seed=3)
    converted = read_transformers_folder(tmp_path)
    ours, timm_ref = build(converted), timm_model(converted)
    timm_ref.load_state_dict(converted.state_dict)
    x = images(2, 48, 64)  # a multiple of the patch: both see a 6x8 grid
    assert rel_err(ours(x), timm_ref(x)) <= TOL
    assert rel_err(ours(x), ref(pixel_values=x, interpolate_pos_encoding=True).logits) > 100 * TOL
    for size in ((45, 70), (5, 9)):  # not multiples: timm pads, transformers drops the remainder
        x = images(2, *size)
        assert rel_err(ours(x), timm_ref(x)) <= TOL, size


# ---------------------------------------------------------------------------
# refused by name
# ---------------------------------------------------------------------------
REFUSED: dict[str, tuple[Callable[[], Any], str]] = {
    "relu": (lambda: T.ViTModel(T.ViTConfig(**SMALL, hidden_act="relu")), "hidden_act 'relu'"),
    "deit_teacher": (lambda: T.DeiTForImageClassificationWithTeacher(T.DeiTConfig(**SMALL, num_labels=3)),
                     "DeiTForImageClassificationWithTeacher"),
    "dinov2_classifier": (lambda: T.Dinov2ForImageClassification(T.Dinov2Config(
        **{**SMALL, "image_size": 28, "patch_size": 7}, num_labels=3)), "Dinov2ForImageClassification"),
    "clip_classifier": (lambda: T.CLIPForImageClassification(T.CLIPConfig(vision_config=SMALL, text_config=dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99),
        num_labels=3)), "CLIPForImageClassification"),
    "siglip_no_head": (lambda: T.SiglipVisionModel(T.SiglipVisionConfig(**SMALL, vision_use_head=False)),
                       "vision_use_head=false"),
    "vit_mim": (lambda: T.ViTForMaskedImageModeling(T.ViTConfig(**SMALL, encoder_stride=8)),
                "keys vitexport does not map: decoder"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_transformers_models_vitexport_cannot_build_are_refused(name: str, tmp_path: Path) -> None:
    make, message = REFUSED[name]
    torch.manual_seed(0)
    make().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=message) as err:
        read_transformers_folder(tmp_path)
    assert "\n" not in str(err.value)


def _edit_config(folder: Path, **changes: Any) -> None:
    data = json.loads((folder / "config.json").read_text())
    data.update(changes)
    (folder / "config.json").write_text(json.dumps(data))


@pytest.mark.parametrize(("changes", "message"), [
    (dict(model_type="siglip2"), "model_type 'siglip2' is not a ViT vitexport maps"),
    (dict(hidden_size=64), "hidden_size 64 but the weights have 48"),
    (dict(num_attention_heads=5), "num_attention_heads 5"),
    (dict(image_size=40), "image_size 40 gives a 5x5 grid, but the positional table has 17 rows"),
    (dict(num_channels=1), "num_channels 1"),
    (dict(layer_norm_eps=0), "layer_norm_eps 0"),
])
def test_config_json_that_does_not_fit_is_refused(changes: dict[str, Any], message: str, tmp_path: Path) -> None:
    saved(T.ViTModel(T.ViTConfig(**SMALL)), tmp_path)
    _edit_config(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message):
        read_transformers_folder(tmp_path)


def test_sharded_and_bare_weights_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    saved(T.ViTModel(T.ViTConfig(**SMALL)), tmp_path)
    with pytest.raises(CheckpointError, match=r"transformers weights without their config\.json"):
        detect_format(load_file(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="sharded"):
        read_transformers_folder(tmp_path)
