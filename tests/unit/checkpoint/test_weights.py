"""Weights checked against a config before the model is allocated (`vitexport.checkpoint.weights`): the one
state-dict fit check, the parameter count from the ``meta`` device, and refusals of tensors that are not what
they claim."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.helpers.models import CONFIGS, make_model
from vitexport._util.errors import CheckpointError
from vitexport.checkpoint.weights import (
    build_model,
    check_count,
    check_fits,
    check_tensors,
    expected_shapes,
    parameter_count,
)
from vitexport.model.config import ViTConfig, get_preset

ARGS = CONFIGS["reg_noembed"]


def state_dict(args: dict[str, Any] = ARGS) -> dict[str, torch.Tensor]:
    return make_model(args, seed=1).state_dict()


@pytest.mark.parametrize("args", [
    *CONFIGS.values(),
    get_preset("vit_base_patch16_xp_224", depth=3, embed_dim=64, num_heads=4).to_dict(),
    get_preset("vit_base_patch16_18x2_224", depth=2, embed_dim=32, num_heads=2).to_dict(),
    get_preset("aimv2_large_patch14_224", depth=2, embed_dim=32, num_heads=2, img_size=(28, 56)).to_dict(),
], ids=lambda a: a.get("architecture") or f"{a['embed_dim']}x{a['depth']}")
def test_expected_shapes_and_count_are_the_models_without_building_it(args: dict[str, Any]) -> None:
    cfg = ViTConfig.from_dict(args)
    model = build_model(cfg, make_model(cfg.to_dict()).state_dict(), "test")
    real = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert expected_shapes(cfg) == real
    assert parameter_count(cfg) == sum(p.numel() for p in model.parameters())


def test_fitting_weights_pass_and_build_the_same_model() -> None:
    sd = state_dict()
    cfg = ViTConfig(**ARGS)
    check_fits(cfg, sd, "test")
    model = build_model(cfg, sd, "test")
    assert not model.training and all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_one_error_lists_mismatched_missing_and_unexpected_keys() -> None:
    sd = state_dict()
    sd["head.weight"] = torch.zeros(9, 32)
    del sd["blocks.1.mlp.fc2.bias"]
    sd["blocks.1.extra"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        check_fits(ViTConfig(**ARGS), sd, "'w.pt'")
    message = str(info.value)
    assert "\n" not in message and message.startswith("weights in 'w.pt' do not fit the model config")
    for part in ("shape mismatch: head.weight (9, 32) vs model (7, 32)", "missing: blocks.1.mlp.fc2.bias",
                 "unexpected: blocks.1.extra", "--config"):
        assert part in message, message


def test_a_config_far_larger_than_the_weights_is_refused_by_count_without_listing_keys() -> None:
    """200,000 blocks from a 2-block state dict: refused from a one-block meta model, before any key is listed."""
    huge = ViTConfig(**{**ARGS, "depth": 200_000})
    with pytest.raises(CheckpointError, match=r"needs [\d,]+ parameters .* hold [\d,]+ values: they do not fit"):
        check_fits(huge, state_dict(), "test")
    with pytest.raises(CheckpointError, match="do not fit"):
        check_count(huge, state_dict(), "test")
    check_count(ViTConfig(**ARGS), state_dict(), "test")  # exactly enough values


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda: torch.zeros(4, dtype=torch.int64), "int64"),
    (lambda: torch.zeros(4, dtype=torch.bool), "bool"),
    (lambda: torch.zeros(4, dtype=torch.complex64), "complex64"),
    (lambda: torch.zeros(4, 4).to_sparse(), "sparse"),
    # quantized tensors: tests/unit/security/test_hostile_files.py (torch warns once per process when one is made,
    # and that test expects the warning)
], ids=lambda v: v if isinstance(v, str) else "")
def test_weights_that_are_not_dense_floats_are_refused_by_name(make: Any, fragment: str) -> None:
    sd = {"pos_embed": torch.zeros(1, 2, 3), "odd.weight": make()}
    with pytest.raises(CheckpointError, match=f"not dense floating-point tensors: odd.weight {fragment}"):
        check_tensors(sd, "test")
    check_tensors({"pos_embed": torch.zeros(1, 2, 3, dtype=torch.bfloat16)}, "test")  # every float dtype passes


def test_tensors_declaring_more_than_their_bytes_are_refused() -> None:
    with pytest.raises(CheckpointError, match="expanded with stride 0"):
        check_tensors({"w": torch.zeros(1, 8).expand(4096, 8)}, "test")
    base = torch.zeros(64)
    views = {f"w{i}": base[i : i + 32] for i in range(8)}  # 8 x 32 values through one storage of 64
    with pytest.raises(CheckpointError, match=r"views of .* shared storage"):
        check_tensors(views, "test")
    check_tensors({"a": base[:32], "b": base[32:]}, "test")  # views that split a storage are fine
