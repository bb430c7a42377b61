"""Shared by the release-format tests: offline hubs, timm references, building and comparing models.

transformers and open_clip are test-only dependencies; importing this module makes every hub call fail
instead of downloading (models are built locally with random weights).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / open_clip import huggingface_hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from functools import partial
from typing import Any

import torch

from vitexport.checkpoint.foreign.common import Converted, complete_args
from vitexport.checkpoint.weights import build_model
from vitexport.model.config import ViTConfig

TOL = 1e-5  # relative to max(1, |reference|): float rounding only (measured ~1e-7)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape, (tuple(out.shape), tuple(ref.shape))
    return float((out - ref).abs().max() / max(1.0, ref.abs().max().item()))


def config_of(converted: Converted, explicit: dict[str, Any] | None = None) -> ViTConfig:
    return ViTConfig.from_dict(complete_args(converted, explicit))


def build(converted: Converted, explicit: dict[str, Any] | None = None) -> torch.nn.Module:
    """vitexport's model from a conversion, through the checked loader (every key and shape must fit)."""
    return build_model(config_of(converted, explicit), converted.state_dict, "the converted weights")


def timm_kwargs(cfg: ViTConfig) -> dict[str, Any]:
    """timm ``VisionTransformer`` keyword arguments for a vitexport config (layer names -> timm's layers)."""
    from timm.layers import SwiGLUPacked

    args = cfg.to_dict()
    args.pop("architecture", None)
    args["norm_layer"] = partial(torch.nn.LayerNorm, eps=args.pop("norm_eps", 1e-6))
    if args.pop("mlp_layer", "mlp") == "swiglu_packed":
        args["mlp_layer"] = SwiGLUPacked
    for key in ("embed_norm_eps", "embed_norm_layer", "block_fn", "attn_layer", "scale_attn_norm", "scale_mlp_norm"):
        args.pop(key, None)
    return args


def timm_model(converted: Converted, explicit: dict[str, Any] | None = None) -> torch.nn.Module:
    """timm's own dynamic-pad ViT of the converted config (random weights)."""
    from timm.models.vision_transformer import VisionTransformer

    kw = timm_kwargs(config_of(converted, explicit))
    kw.update(dynamic_img_size=True, dynamic_img_pad=True)
    return VisionTransformer(**kw).eval()


def assert_same_state_dict(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    """Every key, shape, dtype and value equal (bit for bit)."""
    assert sorted(ours) == sorted(ref), (sorted(set(ours) ^ set(ref)))
    for key, value in ref.items():
        mine = ours[key]
        assert mine.shape == value.shape and mine.dtype == value.dtype, (key, mine.shape, value.shape)
        assert torch.equal(mine, value), key


def images(batch: int, height: int, width: int, seed: int = 3, channels: int = 3) -> torch.Tensor:
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))
