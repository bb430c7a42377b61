"""Build the model of any eva.py / deit.py / naflexvit.py architecture, or of one of their configs.

Phase 1 of wiring timm's other ViT classes in: `create_family_model` is what `vitexport.model.vit.create_model`
will do for these names once the preset tables are merged.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vitexport.model.config import ViTConfig
from vitexport.model.deit import VisionTransformerDistilled
from vitexport.model.eva import Eva
from vitexport.model.family_config import DistilledConfig, EvaConfig, NaFlexConfig, family_config
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


def create_family_model(config: Any, **overrides: Any) -> nn.Module:
    """A randomly initialised model from an architecture name of eva.py, deit.py or naflexvit.py (with timm
    keyword overrides), or from a config of `vitexport.model.family_config`."""
    if isinstance(config, str):
        config = family_config(config, **overrides)
    elif overrides:
        config = config.replace(**overrides)
    return model_for(config)


__all__ = ["MODEL_CLASSES", "create_family_model", "model_for"]
