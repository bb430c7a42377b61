"""DINOv2 as its repository saves it: timm's ``_convert_dinov2`` on the same weights, and a forward reference.

The repository (facebookresearch/dinov2) is not installed; its layout is written here from transformers' DINOv2
modules (whose computation is the repository's: the transformers port is checked against it upstream), named
as the repository names them: ``blocks.N.attn.qkv`` (q, k, v rows), ``ls1.gamma``, ``mlp.fc1`` or the fused
SwiGLU ``mlp.w12`` (gate rows first) / ``mlp.w3``, ``mask_token`` (1, D), ``register_tokens``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.helpers.foreign import TOL, assert_same_state_dict, build, images, rel_err, timm_model
from tests.helpers.models import perturb_
from tests.helpers.release import dinov2_repository_layout
from vitexport._util.errors import CheckpointError, ConfigError
from vitexport.checkpoint.foreign.common import complete_args
from vitexport.checkpoint.foreign.detect import convert_state_dict, detect_format
from vitexport.checkpoint.foreign.dinov2 import convert_dinov2

T = pytest.importorskip("transformers", reason="transformers is a test dependency (pip install transformers)")

SMALL = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=7,
             layerscale_value=0.5)


CASES = {
    "mlp": lambda: T.Dinov2Model(T.Dinov2Config(**SMALL)),
    "swiglu": lambda: T.Dinov2Model(T.Dinov2Config(**SMALL, use_swiglu_ffn=True)),
    "registers": lambda: T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(**SMALL, num_register_tokens=4)),
}


def model_and_weights(name: str, seed: int) -> tuple[Any, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    model = perturb_(CASES[name](), seed).eval()
    return model, dinov2_repository_layout(model)


@pytest.mark.parametrize("name", sorted(CASES))
@torch.no_grad()
def test_dinov2_repository_layout_equals_the_reference_forward(name: str) -> None:
    """forward = x_norm_clstoken (pooler_output), forward_features = every normalised token."""
    ref, sd = model_and_weights(name, seed=1)
    converted = convert_state_dict(sd)
    assert converted is not None and converted.format == "dinov2" and converted.head == "none"
    assert converted.unknown == ("num_heads",)  # width 48 is none of the repository's four architectures
    ours = build(converted, {"num_heads": 4})
    x = images(3, 28, 28)
    expected = ref(pixel_values=x)
    assert rel_err(ours(x), expected.pooler_output) <= TOL
    assert rel_err(ours.forward_features(x), expected.last_hidden_state) <= TOL


@pytest.mark.parametrize("name", sorted(CASES))
@torch.no_grad()
def test_dinov2_mapping_is_timms(name: str) -> None:
    """timm's checkpoint_filter_fn (its _convert_dinov2) on the same dict: the same keys and tensors."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    _, sd = model_and_weights(name, seed=2)
    converted = convert_dinov2(sd)
    ref = timm_model(converted, {"num_heads": 4})
    expected = checkpoint_filter_fn(dict(sd), ref)
    assert_same_state_dict(converted.state_dict, expected)
    assert "mask_token" in sd and "cls_token" in sd  # the caller's dict is left as it was
    ref.load_state_dict(expected)
    ours = build(converted, {"num_heads": 4})
    for size in ((28, 28), (33, 50), (5, 6), (70, 21)):
        x = images(2, *size)
        assert rel_err(ours(x), ref(x)) <= TOL, size


@pytest.mark.parametrize(("width", "heads"), [(384, 6), (768, 12), (1024, 16), (1536, 24)])
def test_the_repositorys_architectures_state_their_heads(width: int, heads: int) -> None:
    with torch.device("meta"):
        model = T.Dinov2Model(T.Dinov2Config(hidden_size=width, num_hidden_layers=1, num_attention_heads=heads,
                                             image_size=28, patch_size=14))
    converted = convert_dinov2(dinov2_repository_layout(model))
    assert converted.args["num_heads"] == heads and not converted.unknown
    assert complete_args(converted)["num_heads"] == heads


def test_other_widths_need_num_heads() -> None:
    _, sd = model_and_weights("mlp", seed=3)
    with pytest.raises(ConfigError, match="num_heads not stored"):
        complete_args(convert_dinov2(sd))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda sd: {k.replace("blocks.1.", "blocks.1.1.").replace("blocks.0.", "blocks.0.0."): v for k, v in sd.items()},
     "chunked"),
    (lambda sd: {**sd, "rope_embed.periods": torch.zeros(4), "storage_tokens": torch.zeros(1, 4, 48)}, "DINOv3"),
    (lambda sd: {k: v for k, v in sd.items() if not k.startswith("blocks.1.")} | {
        f"blocks.2.{k[9:]}": v for k, v in sd.items() if k.startswith("blocks.1.")}, "blocks \\[1\\] are missing"),
    (lambda sd: {k: v for k, v in sd.items() if k != "blocks.0.attn.proj.bias"}, "proj_bias=False but ffn_bias"),
])
def test_layouts_timm_does_not_map_are_refused(edit: Any, message: str) -> None:
    _, sd = model_and_weights("mlp", seed=4)
    with pytest.raises(CheckpointError, match=message) as err:
        convert_dinov2(edit(sd))
    assert "\n" not in str(err.value)


def test_detection_never_guesses_between_formats() -> None:
    _, sd = model_and_weights("mlp", seed=5)
    assert detect_format(sd) == "dinov2"
    sd["visual.class_embedding"] = torch.zeros(48)
    with pytest.raises(CheckpointError, match="match 2 release formats"):
        detect_format(sd)
    timm_sd: dict[str, Any] = {k: v for k, v in sd.items() if k not in ("mask_token", "visual.class_embedding")}
    assert detect_format(timm_sd) is None  # timm's own layout: the existing reader's business
