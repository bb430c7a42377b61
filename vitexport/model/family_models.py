"""The model class of each config class: `model_for` builds the model of any config (`vitexport.model.vit.create_model`
builds one from a name or timm keyword arguments; `vitexport.checkpoint.weights` on the ``meta`` device first)."""

from __future__ import annotations

from typing import Any

from torch import nn

from vitexport.model.config import ViTConfig
from vitexport.model.deit import VisionTransformerDistilled
from vitexport.model.eva import Eva
from vitexport.model.family_config import DistilledConfig, EvaConfig, NaFlexConfig
from vitexport.model.naflex import NaFlexVit
from vitexport.model.vit import VisionTransformer

# config class -> model class; DistilledConfig before its base ViTConfig
MODEL_CLASSES: tuple[tuple[type, type[nn.Module]], ...] = (
    (EvaConfig, Eva), (DistilledConfig, VisionTransformerDistilled), (NaFlexConfig, NaFlexVit),
    (ViTConfig, VisionTransformer),
)


def model_for(config: Any) -> nn.Module:
    """The randomly initialised model of ``config`` (eval mode)."""
    for config_cls, model_cls in MODEL_CLASSES:
        if isinstance(config, config_cls):
            return model_cls(config).eval()
    raise TypeError(f"no model class for a {type(config).__name__}")


__all__ = ["MODEL_CLASSES", "model_for"]
